"""The PACM stages, one function each, owned once: the ComfyUI nodes and StickWorld call these and nothing else to
run a stage.

    invert              stages 1 + 2: DDIM inversion, pose-aware inversion -> StagedInversion (POSEANIMATE_INVERSION)
    optimise            stage 3: per-frame pose-aware embeddings -> pacm.PoseEmbeddings
    capture_attention   a sampling pass that records the subject's cross-attention -> maps
    sample              stage 4: every frame, in windows -> latents

Each checks its inputs once (the rules of ``pipeline.steps``), prepares the stage on its host (``pipeline.runner``:
gradient support, memory, loading), and runs the engine in the host's engine mode. A parameter keeps its node
input's name from the node to the engine (``window_size``, ``frames_per_batch``, ``inner_steps``, ...). The host is
a ``pipeline.contract.Denoiser`` that is also a ``pipeline.runner.StageHost`` (``nodes.host.ComfyDenoiser``,
``testing.tiny_unet.TinyDenoiser``); the engine sees it through ``contract.checked``.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch

from ._layers import attention, pacm
from .contract import PatchableModel, checked
from .defaults import SCHEDULES
from .errors import argument_error
from .runner import Stage, prepare
from .steps import check_masks, check_schedule, check_uncond_pose, patch_model
from .types import ControlSettings, StagedInversion

Callback = Callable[[str, int, int], None]


def _shape(latent: torch.Tensor) -> tuple:
    """One sample's latent shape (1, C, h, w) from a latent, a batch of latents or a trajectory."""
    return (1,) + tuple(latent.shape[-3:])


def invert(host, latent: torch.Tensor, cond: torch.Tensor, hint: torch.Tensor | None, *, control: ControlSettings,
           steps: int, cfg: float, inner_steps: int, early_stop: float = 1e-5, extra_cond: dict | None = None,
           uncond_extra_cond: dict | None = None, callback: Callback | None = None, **engine) -> StagedInversion:
    """PACM stages 1 + 2: DDIM inversion of the source ``latent`` under its pose ``hint`` (guidance 1), then
    pose-aware inversion (``inner_steps`` Adam iterations per step on the unconditional embedding, 0 = negative-prompt
    inversion) for CFG ``cfg``. ``control`` (the pose ControlNet's settings the host was built with) and
    ``extra_cond`` / ``uncond_extra_cond`` (what the host conditions each CFG side with besides the text, e.g.
    SDXL's pooled output) ride in the result for the later stages. ``engine`` passes further keyword arguments to
    both engine calls (e.g. ``counts``)."""
    _check_engine(engine, pacm.ddim_invert, pacm.pose_aware_inversion)
    check_schedule(inner_steps, early_stop=early_stop)
    prepare(host, Stage("invert", _shape(latent), grad=int(inner_steps) > 0))
    model = checked(host)
    with host.engine():
        inv = pacm.ddim_invert(model, latent, cond, hint, steps=int(steps), callback=callback,
                               **_only(engine, pacm.ddim_invert))
        result = pacm.pose_aware_inversion(model, inv, cfg=float(cfg), inner_steps=int(inner_steps),
                                           early_stop=float(early_stop), callback=callback,
                                           **_only(engine, pacm.pose_aware_inversion))
    return StagedInversion.of(result, control, extra_cond, uncond_extra_cond)


def optimise(host, inversion: StagedInversion, hints: torch.Tensor | None, *, inner_steps: int,
             schedule: str = "inner iterations", optimize_steps: int = 0, warm_start: bool = False,
             adaptive: float = 0.0, keyframe_interval: int = 1, frames_per_batch: int = 0,
             callback: Callback | None = None, **engine) -> pacm.PoseEmbeddings:
    """PACM stage 3: per-frame pose-aware embeddings for the target poses ``hints`` (frames 1..N), with the named
    optimisation ``schedule`` (``pipeline.SCHEDULES``) and the inversion's ``lr`` / ``early_stop``;
    ``optimize_steps`` > 0 optimises only the first (noisiest) steps; ``warm_start`` starts each frame from the
    previous frame's embeddings (frames then run one per call unless ``frames_per_batch`` says otherwise);
    ``adaptive`` > 0 stops a frame's iterations once one lowers its loss by less than that fraction;
    ``keyframe_interval`` k > 1 optimises every k-th frame (and the last) and interpolates the others' embeddings;
    ``frames_per_batch``: frames per gradient pass, 0 = from free memory."""
    if not isinstance(inversion, StagedInversion):
        raise argument_error("inversion", f"expected the StagedInversion of pipeline.invert, got "
                             f"{type(inversion).__name__}", "pass what pipeline.invert returned")
    check_schedule(inner_steps, schedule=schedule, optimize_steps=optimize_steps, warm_start=warm_start,
                   adaptive=adaptive, keyframe_interval=keyframe_interval)
    n = int(hints.shape[0]) if hints is not None else int(engine.get("frames") or 0)
    optimised = len(pacm.keyframe_indices(max(n, 1), int(keyframe_interval)))
    if warm_start and not frames_per_batch:
        frames_per_batch = 1  # each frame starts from its predecessor: one frame per gradient pass
    frames_per_batch = prepare(host, Stage("optimise", _shape(inversion.trajectory), grad=int(inner_steps) > 0,
                                           frames=optimised), int(frames_per_batch), "frames_per_batch")
    with host.engine():
        return pacm.optimize_pose_embeddings(
            checked(host), inversion, hints, inner_steps=int(inner_steps), lr=inversion.lr,
            early_stop=inversion.early_stop, mode=SCHEDULES[schedule].mode,
            optimize_steps=int(optimize_steps) or None, warm_start=bool(warm_start),
            adaptive=float(adaptive) or None, keyframe_interval=int(keyframe_interval),
            frames_per_batch=frames_per_batch, callback=callback, **engine)


def sample(host, inversion: pacm.InversionResult, embeddings: pacm.PoseEmbeddings | None, *, window_size: int = 0,
           masks: torch.Tensor | None = None, uncond_pose: str = "target", hold_masks: torch.Tensor | None = None,
           callback: Callback | None = None, **engine) -> torch.Tensor:
    """PACM stage 4: frames 0..N from Z_T (``(N + 1, C, h, w)`` latents), ``window_size`` frames per model call
    (0 = from free memory). ``masks`` (``(N + 1, H, W)``, :func:`check_masks`) override the DCA patch's own;
    ``uncond_pose`` is the pose of the unconditional rows (:func:`check_uncond_pose`); ``hold_masks``
    (``pipeline.hold_masks``) holds each frame's background to the source's inversion trajectory outside them."""
    hints = engine.get("hints")
    targets = embeddings.frames if embeddings is not None else 0 if hints is None else int(hints.shape[0])
    frames = 1 + targets
    if masks is not None:
        masks = check_masks(masks, frames)
    cfg = engine.get("cfg")
    cfg = float(cfg if cfg is not None else embeddings.cfg if embeddings is not None else inversion.cfg)
    check_uncond_pose(uncond_pose, cfg, inversion.hint is not None,
                      optimised=embeddings is not None and int(embeddings.settings.get("inner_steps", 0)) > 0)
    window_size = prepare(host, Stage("sample", _shape(inversion.trajectory), frames=frames, samples_per_frame=2),
                          int(window_size), "window_size")
    with host.engine():
        return pacm.sample_frames(checked(host), inversion, embeddings, window_size=window_size, masks=masks,
                                  uncond_pose=uncond_pose, hold_masks=hold_masks, callback=callback, **engine)


class _CaptureDone(Exception):
    """Raised from the sampling callback once the requested steps are captured."""


def capture_attention(model: PatchableModel, make_host: Callable[[PatchableModel], object],
                      inversion: pacm.InversionResult, embeddings: pacm.PoseEmbeddings, positions: list[int], *,
                      factors=None, window_size: int = 0, capture_steps: int = 0,
                      callback: Callback | None = None, attention_fn=None, **engine) -> torch.Tensor:
    """Sample the frames once with a cross-attention capture patch on a clone of ``model`` (its self-attention
    as it is: plain on an unpatched model) and return the subject tokens' mean maps ``(N + 1, h, w)``.

    ``make_host(patched)`` gives the host (Denoiser and StageHost) over the patched clone; ``window_size`` frames
    per model call (0 = from free memory); ``capture_steps`` > 0 stops after that many of the inversion's steps
    (the character's layout is set early); ``factors``: the layer grids to read (e.g. (4, 2) for SD1.5 and SDXL,
    None = every resolution); ``attention_fn``: the host's attention function."""
    frames = embeddings.frames + 1
    store = attention.AttentionMapStore()
    patch = attention.CrossAttentionCapture(positions, store=store, factors=factors, attention=attention_fn)
    patched, _ = patch_model(model, capture=patch)
    host = make_host(patched)
    window_size = prepare(host, Stage("capture", _shape(inversion.trajectory), frames=frames, samples_per_frame=2),
                          int(window_size), "window_size")
    steps = inversion.steps
    captured = min(int(capture_steps), steps) if int(capture_steps) > 0 else steps
    windows = -(-frames // window_size)

    def stop_early(stage, done, total):
        if callback is not None:
            callback(stage, min(done, captured * windows), captured * windows)
        if done >= captured * windows and captured < steps:
            raise _CaptureDone

    with host.engine():
        try:
            pacm.sample_frames(checked(host), inversion, embeddings, window_size=window_size, callback=stop_early,
                               **engine)
        except _CaptureDone:
            pass
    recorded = store.frames()
    if recorded[:frames] != list(range(frames)):
        raise argument_error("model", f"the subject's attention was captured for frames {recorded} of 0..{frames - 1}"
                             "; the model's cross-attention layers were not reached",
                             "connect an SD1.5 or SDXL MODEL whose cross-attention is not replaced by another patch")
    return store.maps(range(frames)).float().cpu()


def _only(kwargs: dict, fn) -> dict:
    """The keyword arguments ``fn`` accepts (engine extras such as ``counts`` go to every stage that takes them)."""
    names = inspect.signature(fn).parameters
    return {k: v for k, v in kwargs.items() if k in names}


def _check_engine(kwargs: dict, *fns) -> None:
    """Refuse keyword arguments that none of the engine calls takes (a misspelt one would vanish)."""
    known = set().union(*(inspect.signature(fn).parameters for fn in fns))
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"unknown engine arguments {unknown}; {', '.join(f.__name__ for f in fns)} take {sorted(known)}")
