"""The contracts the recipe runs on: the model as the engine sees it (``Denoiser``), the model as the attention
patches are installed on it (``PatchableModel``), and the typed ``transformer_options["poseanimate"]`` dict.

The engine (``pacm``) and the patches (``attention``) never import this module (pure layers do not import the
pipeline); they follow these contracts by construction, and ``tests/test_pipeline.py`` checks every
``poseanimate`` dict the engine hands to a patch against :func:`check_poseanimate_options`.
"""
from __future__ import annotations

from typing import Any, ContextManager, Protocol, TypedDict, runtime_checkable

import torch

from ._layers import attention

MGDM_MODES = attention.MGDM_MODES  # "exclude" (the node's default), "multiply" (the paper's formulation)


@runtime_checkable
class Denoiser(Protocol):
    """The model as ``pacm`` sees it (DEVELOPERS.md, "the model as pacm sees it").

    ``nodes.host.ComfyDenoiser`` implements it over ComfyUI's MODEL + CONTROL_NET; ``testing.tiny_unet``'s
    ``TinyDenoiser`` over the test / StickWorld UNet.
    """

    device: torch.device
    dtype: torch.dtype
    sigmas: torch.Tensor  # (1000,) the model's discrete sigma table, ascending

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor, hint: torch.Tensor | None,
                 transformer_options: dict) -> torch.Tensor:
        """x0 prediction, same shape as x (sigma space, x = x0 + sigma * eps, not pre-scaled)."""

    def grad_context(self) -> ContextManager:
        """Inside it, autograd flows through ``__call__`` into ``context``."""


@runtime_checkable
class PatchableModel(Protocol):
    """What :func:`pipeline.patch_model` installs attention patches on: ComfyUI's ``ModelPatcher`` (and the test
    UNet's ``TinyDenoiser``, which mirrors it). ``model.diffusion_model`` is the UNet, walked for its blocks."""

    model: Any

    def clone(self) -> "PatchableModel":
        """A copy that shares the weights and owns its patches."""

    def set_model_attn1_replace(self, patch, block_name: str, number: int, transformer_index: int | None = None):
        """Replace self-attention in a block."""

    def set_model_attn2_replace(self, patch, block_name: str, number: int, transformer_index: int | None = None):
        """Replace cross-attention in a block."""


class PoseAnimateOptions(TypedDict, total=False):
    """``transformer_options["poseanimate"]``: what the engine tells the attention patches (DEVELOPERS.md,
    "Contract: DCAM windows"). Every key is optional.

    frame_ids: global frame indices of the frames in each chunk (every chunk holds the same frames in the same
        order); frame 0 is the source and comes first when present.
    kv_carry: a dict the DCA patch reads and writes during windowed sampling, fresh for every step; key
        ``(block_name, block_id, block_index, chunk_kind)``, value ``{"first": (k, v), "prev": (k, v)}``.
    row_frames: where every chunk holds one frame (stages 1-3): the global frame id of each chunk's frame, so
        that per-frame images of other ControlNets (on the positive conditioning) reach the right rows; the
        attention patches ignore it.
    masks: ``(N, H, W)`` character masks in [0, 1] by global frame id; override the patch's own.
    mgdm: ``"exclude"`` or ``"multiply"``; overrides the patch's own MGDM formulation.
    """

    frame_ids: list[int]
    row_frames: list[int]
    kv_carry: dict
    masks: torch.Tensor
    mgdm: str


def check_poseanimate_options(options: dict) -> PoseAnimateOptions:
    """Validate a ``poseanimate`` dict against :class:`PoseAnimateOptions`; return it. ``ValueError`` names the key."""
    if not isinstance(options, dict):
        raise ValueError(f"poseanimate: expected a dict, got {type(options).__name__}. "
                         "Fix: pass a dict with PoseAnimateOptions keys")
    unknown = set(options) - set(PoseAnimateOptions.__annotations__)
    if unknown:
        raise ValueError(f"poseanimate: unknown keys {sorted(unknown)}. Fix: use only the contract's keys "
                         f"{sorted(PoseAnimateOptions.__annotations__)}")
    ids = options.get("frame_ids")
    if ids is not None:
        ids = list(ids)
        if not ids or len(set(ids)) != len(ids) or min(ids) < 0 or 0 in ids[1:]:
            raise ValueError(f"frame_ids: {ids} must be distinct non-negative frame ids with frame 0 (if any) first. "
                             "Fix: list each frame once, the source frame 0 (if present) first")
    rows = options.get("row_frames")
    if rows is not None and (not list(rows) or min(rows) < 0):
        raise ValueError(f"row_frames: {rows} must list one non-negative frame id per chunk. "
                         "Fix: give the global frame id of each one-frame chunk")
    if "kv_carry" in options and not isinstance(options["kv_carry"], dict):
        raise ValueError("kv_carry: expected a dict shared by the windows of one step. "
                         "Fix: pass a new dict for every step, the same one to each of its windows")
    masks = options.get("masks")
    if masks is not None and (not isinstance(masks, torch.Tensor) or masks.ndim != 3):
        raise ValueError("masks: expected an (N, H, W) tensor of character masks by global frame id. "
                         "Fix: pass a torch tensor with one mask per frame id, or leave the key out")
    if masks is not None and ids is not None and masks.shape[0] <= max(ids):
        raise ValueError(f"masks: {masks.shape[0]} masks do not cover frame {max(ids)}. "
                         f"Fix: pass one mask per frame id 0..{max(ids)}")
    if "mgdm" in options and options["mgdm"] not in MGDM_MODES:
        raise ValueError(f"mgdm: expected one of {MGDM_MODES}, got {options['mgdm']!r}. "
                         "Fix: set one of those, or leave the key out")
    return options  # type: ignore[return-value]


class CheckedDenoiser:
    """A Denoiser that checks the ``poseanimate`` dict of every call against :class:`PoseAnimateOptions` before
    handing the call on (the pipeline steps wrap the host's Denoiser in it, so the contract between pacm and the
    attention patches is checked on the shipped path, not only by tests). Everything else is the wrapped
    Denoiser's."""

    def __init__(self, model):
        self.wrapped = model

    def __call__(self, x, sigma, context, hint=None, transformer_options=None):
        options = (transformer_options or {}).get("poseanimate")
        if options is not None:
            check_poseanimate_options(options)
        return self.wrapped(x, sigma, context, hint, transformer_options)

    def __getattr__(self, name):
        return getattr(self.__dict__["wrapped"], name)


def checked(model):
    """``model`` wrapped in :class:`CheckedDenoiser` (once)."""
    return model if isinstance(model, CheckedDenoiser) else CheckedDenoiser(model)
