"""The PACM "Denoiser" protocol over ComfyUI's MODEL + CONTROL_NET (see DEVELOPERS.md).

``ComfyDenoiser(model, control_net, ...)`` is what the PoseAnimate PACM nodes hand to ``pacm``:

* ``__call__(x, sigma, context, hint, transformer_options)`` returns the x0 prediction of the user's MODEL
  (with its LoRAs, model patches, e.g. the DCA patch, ``model_function_wrapper`` and its APPLY_MODEL /
  DIFFUSION_MODEL wrappers, merged as ComfyUI merges them at sampling time) through ``BaseModel.apply_model``,
  with the ControlNet's residuals computed from ``hint`` exactly as ComfyUI's samplers do (hint resized by the
  ControlNet itself, strength, start/end percent via sigma). The ControlNets of the positive CONDITIONING
  (``cond_control``) act on the cond rows (``cond_or_uncond`` 0), those of the negative (``uncond_control``) on
  the uncond rows, as a KSampler runs each side with its own conditioning; SDXL's pooled output and sizes
  likewise per side.
* ``combine_cfg(x0_cond, x0_uncond, cfg, x, sigma)`` combines the two CFG sides as ComfyUI's ``cfg_function``
  does, through the MODEL's ``sampler_cfg_function`` (RescaleCFG, ...) where it has one.
* ``grad_context()`` makes backward into ``context`` work inside ComfyUI's ``torch.inference_mode()`` and
  whatever way the host stores weights (inference tensors, per-call casts, lowvram, dynamic VRAM): it leaves
  inference mode, routes the weight-bearing layers through ``gradpath.host_layers`` (no weight is copied;
  backward fetches each layer's weights again through the host), and adds ControlNet residuals out of place
  through an ``output_block_patch`` (ComfyUI adds them in place, which autograd rejects). The shared model
  other nodes see is never written to.

Models are loaded through ``comfy.model_management.load_models_gpu`` and run in their own dtype:
``apply_model`` casts inputs to the UNet's dtype (or its manual-cast dtype for fp8/bf16 storage); the
returned x0 is float32 like everything ComfyUI's samplers see (``apply_model`` calls ``.float()`` on the
UNet output; tests/host/test_host_fp16.py checks both: the UNet's first conv sees fp16 for an fp16 model).
"""
from __future__ import annotations

import contextlib
import logging

import torch

from .checks import CONTEXT_DIMS, check_control_net, model_family
from .compat import prepare_state

log = logging.getLogger(__name__)

_CONTROL_KEY = "poseanimate_control"   # transformer_options key of the out-of-place residual stacks
_MERGED_KEYS = ("patches", "patches_replace")


def merge_transformer_options(patcher, engine_options: dict | None) -> dict:
    """The transformer_options one model call sees: the MODEL's own (patches, patches_replace, ...) copied, with
    the ModelPatcher's wrappers and callbacks merged into its own as ComfyUI merges them at sampling time
    (``sampler_helpers.prepare_model_patcher``; ``apply_model`` and the UNet read APPLY_MODEL and DIFFUSION_MODEL
    wrappers from here), then the engine's keys on top. Engine values go in by reference (``poseanimate.kv_carry``
    is written by the DCA patch and read back by the engine); engine patches are appended after the model's."""
    import comfy.patcher_extension as ext

    base = ext.copy_nested_dicts(patcher.model_options.get("transformer_options", {}))
    for name in ("wrappers", "callbacks"):
        ext.merge_nested_dicts(base.setdefault(name, {}), getattr(patcher, name, None) or {}, copy_dict1=False)
    for key, value in (engine_options or {}).items():
        if key in _MERGED_KEYS and isinstance(value, dict):
            merged = base.setdefault(key, {})
            for name, entry in value.items():
                if isinstance(entry, list):
                    merged[name] = list(merged.get(name, [])) + list(entry)
                elif isinstance(entry, dict):
                    merged[name] = {**merged.get(name, {}), **entry}
                else:
                    merged[name] = entry
        else:
            base[key] = value
    return base


_APPLIED_WRAPPERS = ("apply_model", "diffusion_model")  # WrappersMP kinds a model call applies; the rest: samplers


def _links(head) -> list:
    """The ControlNets of a chain (``previous_controlnet`` links), head first; [] for None."""
    out = []
    while head is not None:
        out.append(head)
        head = getattr(head, "previous_controlnet", None)
    return out


def _unique(items) -> list:
    """The non-None items, each object once, in order."""
    out = []
    for item in items:
        if item is not None and all(item is not o for o in out):
            out.append(item)
    return out


def _same_adm(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    return all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


def _name_of(fn) -> str:
    """``module.qualname`` of a function or callable object, for messages."""
    target = fn if hasattr(fn, "__qualname__") else type(fn)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(fn).__name__)}"


def _check_chunks(batch: int, cond_or_uncond) -> None:
    """A call's rows are ``len(cond_or_uncond)`` equal chunks (pacm's contract, as ComfyUI's batches): refuse
    anything else rather than give some rows another side's conditioning."""
    if not cond_or_uncond or batch % len(cond_or_uncond):
        raise ValueError(f"cond_or_uncond: a batch of {batch} rows is not {len(cond_or_uncond)} equal chunks "
                         f"({list(cond_or_uncond)}). Fix: give one entry per equal chunk of the batch")


def _pop_residual(stacks: dict, name: str):
    lst = stacks.get(name)
    if lst:
        return lst.pop()
    return None


def _add(h, r):
    """``h + r`` with the dtype semantics of ComfyUI's in-place ``h += r``; skip on shape mismatch as it does."""
    if r is None:
        return h
    try:
        return (h + r).to(h.dtype)
    except RuntimeError:
        log.warning("control could not be applied %s %s", tuple(h.shape), tuple(r.shape))
        return h


def _input_block_control(h, transformer_options):
    stacks = transformer_options.get(_CONTROL_KEY)
    if stacks is None:
        return h
    return _add(h, _pop_residual(stacks, "input"))


def _output_block_control(h, hsp, transformer_options):
    """Out-of-place twin of openaimodel.apply_control for 'middle' (before output block 0) and 'output'."""
    stacks = transformer_options.get(_CONTROL_KEY)
    if stacks is None:
        return h, hsp
    if not stacks.get("_middle_done"):
        stacks["_middle_done"] = True
        h = _add(h, _pop_residual(stacks, "middle"))
    return h, _add(hsp, _pop_residual(stacks, "output"))


def _merge_rows(control: dict | None, extra: dict, rows, b: int) -> dict:
    """``control`` (residuals over the whole batch of ``b``, or None) plus ``extra`` (residuals of the batch
    rows ``rows`` only, zero elsewhere), out of place, list entry by list entry as ComfyUI's control_merge."""
    out = {}
    for key in ("input", "middle", "output"):
        base = list((control or {}).get(key, []))
        add = list(extra.get(key, []))
        merged = []
        for i in range(max(len(base), len(add))):
            h = base[i] if i < len(base) else None
            r = add[i] if i < len(add) else None
            if r is None:
                merged.append(h)
                continue
            full = h.clone() if h is not None else r.new_zeros((b,) + tuple(r.shape[1:]))
            full = full.index_add(0, rows, r.to(full.dtype))
            merged.append(full)
        out[key] = merged
    return out


def install_out_of_place_control(transformer_options: dict, control: dict | None) -> dict:
    """Route ControlNet residuals through patches that add them out of place (autograd-safe).

    The patches go first in their lists so that other input/output block patches (FreeU, ...) see the
    controlled features exactly as with ComfyUI's in-place path. Returns ``transformer_options``."""
    if control is None:
        return transformer_options
    transformer_options[_CONTROL_KEY] = {k: list(control.get(k, [])) for k in ("input", "middle", "output")}
    patches = dict(transformer_options.get("patches", {}))
    patches["input_block_patch"] = [_input_block_control] + list(patches.get("input_block_patch", []))
    patches["output_block_patch"] = [_output_block_control] + list(patches.get("output_block_patch", []))
    transformer_options["patches"] = patches
    return transformer_options


def _plain(t):
    return t.clone() if t is not None and t.is_inference() else t


def plain_fields(obj):
    """A copy of a pacm result dataclass whose tensor fields went through :func:`plain`."""
    import dataclasses

    return dataclasses.replace(obj, **{f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)})


@contextlib.contextmanager
def engine_mode():
    """Where nodes run pacm: outside inference mode (so tensors pacm creates, e.g. the inversion
    trajectory it later uses as a loss target, are normal tensors) but without autograd, which only
    ``ComfyDenoiser.grad_context()`` switches on. Pass node inputs through :func:`plain` first."""
    with torch.inference_mode(False), torch.no_grad():
        yield


def plain(t):
    """A normal (non-inference) copy of an inference tensor, usable in autograd; other values unchanged.

    ComfyUI runs nodes under ``torch.inference_mode()``, so every tensor a node receives (latents,
    conditioning, images) is an inference tensor: autograd refuses to save one for backward even outside
    inference mode. Nodes pass their inputs through this before handing them to pacm."""
    if isinstance(t, torch.Tensor) and t.is_inference():
        with torch.inference_mode(False):
            return t.clone()
    return t


class ComfyDenoiser:
    """PACM's Denoiser over a ComfyUI MODEL (ModelPatcher) and an optional CONTROL_NET.

    Args:
        model: the MODEL (``comfy.model_patcher.ModelPatcher``), SD1.5 or SDXL family (detected, ``family``); its
            ``model_options`` (transformer patches, ``model_function_wrapper``, ``sampler_cfg_function``) and its
            APPLY_MODEL / DIFFUSION_MODEL wrappers apply to every call; what acts only inside ComfyUI's samplers
            (sampler-level wrappers, pre/post-CFG functions) is refused here, before any work
            (:meth:`check_sampling_options`).
        control_net: a CONTROL_NET (``comfy.controlnet.ControlBase``) or None; it is copied per call and
            never modified. It acts on every row, as 'Apply ControlNet' on both prompts.
        strength, start_percent, end_percent: as in ComfyUI's "Apply ControlNet" node.
        cond_control / uncond_control: the ControlNet chains of the positive / negative CONDITIONING ('Apply
            ControlNet'), on the cond / uncond rows (``conditioning.read_conditioning``).
        adm / uncond_adm: SDXL's pooled output and sizes of each side: every call gets
            ``y = encode_adm(pooled_output, width, height, ...)`` per row kind for its latent size, as a KSampler
            makes it (width/height default to the latent's pixel size; ``uncond_adm`` defaults to ``adm``).
            Ignored for SD1.5.
        node: display name of the calling node, for error messages.
    """

    def __init__(self, model, control_net=None, *, strength: float = 1.0, start_percent: float = 0.0,
                 end_percent: float = 1.0, cond_control=None, uncond_control=None, adm: dict | None = None,
                 uncond_adm: dict | None = None, node: str = "PoseAnimate"):

        self.node = node
        self.patcher = model
        self.family = model_family(model, node, "model")
        self.model = model.model
        self.context_dim = CONTEXT_DIMS[self.family]
        self.control_net = check_control_net(control_net, node, "control_net", self.family)
        self.cond_control, self.uncond_control = cond_control, uncond_control
        for chain, name in ((cond_control, "positive"), (uncond_control, "negative")):
            for link in _links(chain):
                check_control_net(link, node, name, self.family)
        sdxl = self.family == "SDXL"
        self.adm = dict(adm or {}) if sdxl else {}
        self.uncond_adm = (dict(uncond_adm) if uncond_adm is not None else dict(self.adm)) if sdxl else {}
        self._y: dict = {}
        self._warned_broadcast = False
        self._warned_attention = False
        self.strength = float(strength)
        self.percent_range = (float(start_percent), float(end_percent))
        self.device = model.load_device
        self.dtype = torch.float32
        # what the UNet computes in (apply_model casts the float32 inputs to it): the engine's loss scaling reads it
        self.compute_dtype = getattr(self.model, "manual_cast_dtype", None) or self.model.get_dtype()
        # as ComfyUI's samplers: the MODEL's object patches (e.g. 'ModelSamplingDiscrete') apply
        self.model_sampling = model.get_model_object("model_sampling")
        self.sigmas = plain(self.model_sampling.sigmas.detach().float().cpu())
        self._grad_depth = 0
        self._loaded = False
        self.calls = 0
        from .gradpath import GradAttention

        self.grad_attention = GradAttention()  # the attention of gradient passes (gradpath: any user backend)
        self._warned_override = False
        self.check_sampling_options()

    @property
    def cond_rows_differ(self) -> bool:
        """Whether cond rows may get something uncond rows with the same embedding and hint do not: different
        ControlNets or SDXL conditioning on the two sides, or any patch, wrapper or CFG function on the MODEL that
        PoseAnimate did not install (an IPAdapter-style attention patch may weigh the chunks differently). pacm then
        never evaluates a CFG pair as one row."""
        if self.cond_control is not self.uncond_control or not _same_adm(self.adm, self.uncond_adm):
            return True
        from ...attention import CrossAttentionCapture, DCAPatch

        options = self.patcher.model_options
        if any(k in options for k in ("model_function_wrapper", "sampler_cfg_function")):
            return True
        if any(table for table in (getattr(self.patcher, "wrappers", None) or {}).values()):
            return True
        to = options.get("transformer_options", {})
        patches = [fn for fns in (to.get("patches") or {}).values() for fn in fns]
        patches += [fn for table in (to.get("patches_replace") or {}).values() for fn in table.values()]
        return any(not isinstance(fn, (DCAPatch, CrossAttentionCapture)) for fn in patches)

    def check_sampling_options(self) -> None:
        """Refuse what a KSampler applies to this MODEL and these stages cannot: sampler-level wrappers (EasyCache,
        LazyCache, ...: they wrap ComfyUI's sampling loop, which the stages do not run), pre-CFG and post-CFG
        functions (PAG, SAG: they re-evaluate the model through ComfyUI's conditioning batches), a replaced
        ``calc_cond_batch``. The message names the function and the module that added it."""
        from .._common import input_error

        found = []
        sources = (getattr(self.patcher, "wrappers", None) or {},
                   self.patcher.model_options.get("transformer_options", {}).get("wrappers") or {})
        for wrappers in sources:
            for kind, table in wrappers.items():
                if kind in _APPLIED_WRAPPERS:
                    continue
                for key, fns in (table or {}).items():
                    found += [f"a {kind} wrapper '{key}' ({_name_of(fn)})" for fn in fns]
        options = self.patcher.model_options
        for key in ("sampler_pre_cfg_function", "sampler_post_cfg_function"):
            found += [f"a {key.split('_', 1)[1].replace('_function', '').replace('_', '-')} function "
                      f"({_name_of(fn)})" for fn in options.get(key, [])]
        if "sampler_calc_cond_batch_function" in options:
            found.append(f"a calc_cond_batch function ({_name_of(options['sampler_calc_cond_batch_function'])})")
        if found:
            raise input_error(self.node, "model", "the MODEL carries " + "; ".join(found) + ", which act only inside "
                              "ComfyUI's samplers (a step cache, guidance that re-runs the model through its "
                              "conditioning batches); the PACM stages call the model themselves and would drop them",
                              "connect the MODEL from before the node that added them (e.g. EasyCache, "
                              "LazyCache, Perturbed-Attention Guidance, Self-Attention Guidance)")

    def combine_cfg(self, x0_cond, x0_uncond, cfg: float, x, sigma):
        """Classifier-free guidance of two x0 predictions, as ComfyUI's ``cfg_function``: the MODEL's
        ``sampler_cfg_function`` (RescaleCFG, ...) where it has one, else ``uncond + cfg * (cond - uncond)``."""
        fn = self.patcher.model_options.get("sampler_cfg_function")
        if fn is None:
            return x0_uncond + cfg * (x0_cond - x0_uncond)
        if not isinstance(sigma, torch.Tensor):
            sigma = torch.full((x.shape[0],), float(sigma), device=x.device, dtype=x.dtype)
        # input_cond / input_uncond are ComfyUI's processed condition batches, which these stages do not build;
        # model_options a per-call clone, as a sampler hands its own (a function that writes into it changes nothing)
        from comfy.model_patcher import create_model_options_clone

        args = {"cond": x - x0_cond, "uncond": x - x0_uncond, "cond_scale": cfg, "timestep": sigma, "input": x,
                "sigma": sigma, "cond_denoised": x0_cond, "uncond_denoised": x0_uncond, "model": self.model,
                "model_options": create_model_options_clone(self.patcher.model_options), "input_cond": None,
                "input_uncond": None}
        return x - fn(args)

    # ---- memory -------------------------------------------------------------------------------------
    def _models(self) -> list:
        heads = _unique([self.control_net, self.cond_control, self.uncond_control])
        return _unique([self.patcher] + [m for head in heads for m in head.get_models()])

    def load(self, memory_required: int = 0) -> None:
        """Load the UNet (+ LoRA patches) and the ControlNet through ComfyUI's memory manager."""
        import comfy.model_management as mm

        if self._grad_depth:
            return  # never re-patch weights during a gradient pass
        mm.load_models_gpu(self._models(), memory_required=int(memory_required))
        self._loaded = True

    def check_grad_support(self, input_name: str = "model") -> None:
        """Refuse, before any work, a model whose layers the gradient path cannot differentiate through
        (quantised weight formats, unknown layer classes): see nodes/host/gradpath.py."""
        from .._common import input_error
        from .gradpath import FIXES, unsupported_layers

        from .compat import attention_override_supported, uses_dynamic_vram

        if not attention_override_supported():
            raise input_error(self.node, input_name, "this ComfyUI cannot switch its attention for a gradient pass "
                              "(no optimized_attention_override)", "update ComfyUI to 0.3.64 or later")
        self._warn_foreign_attention()
        links = _unique([self.control_net] + _links(self.cond_control) + _links(self.uncond_control))
        casts = any(getattr(m, "manual_cast_dtype", None) is not None for m in [self.model] + links)
        problems = unsupported_layers(self._modules(), casts or uses_dynamic_vram(self.patcher))
        problems += [("control_lora", f"a {type(c).__name__} (it builds its network from the UNet's weights on every "
                                      "call, out of the gradient path's reach)")
                     for c in links if type(c).__name__ == "ControlLora" or getattr(c, "control_model", 1) is None]
        if problems:
            shown = "; ".join(what for _, what in problems[:3])
            shown += f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            fixes = {**FIXES, "control_lora": "use a full ControlNet instead of a Control-LoRA"}
            fix = "; ".join(dict.fromkeys(fixes[cause] for cause, _ in problems))
            raise input_error(self.node, input_name,
                              f"the embedding optimisation cannot differentiate through this model: {shown}",
                              f"{fix}; or set inner_steps to 0 (no gradient pass)")

    def _warn_foreign_attention(self) -> None:
        """Warn (once per denoiser) about attention replace patches of other packs when the user's attention backend
        has no backward (sage, flash, xformers, ...): such a patch gets the gradient pass's attention switch in its
        ``extra_options``, but one that calls ``optimized_attention`` without passing them on runs that backend,
        whose gradient is missing or fails (nodes/host/gradpath.py)."""
        from comfy.ldm.modules import attention as host

        from ...attention import CrossAttentionCapture, DCAPatch

        with_backward = [getattr(host, n, None) for n in ("attention_pytorch", "attention_basic", "attention_sub_quad",
                                                          "attention_split")]
        if self._warned_attention or any(host.optimized_attention is f for f in with_backward if f is not None):
            return
        to = self.patcher.model_options.get("transformer_options", {})
        foreign = sorted({f"{kind} {_name_of(fn)}" for kind, table in (to.get("patches_replace") or {}).items()
                          if kind in ("attn1", "attn2") for fn in table.values()
                          if not isinstance(fn, (DCAPatch, CrossAttentionCapture))})
        if foreign:
            self._warned_attention = True
            log.warning("%s: the attention backend (%s) has no backward; the gradient passes switch ComfyUI's attention "
                        "to PyTorch's through transformer_options, which these attention patches must pass on to "
                        "optimized_attention to follow: %s. If the optimisation fails or its loss does not fall, start "
                        "ComfyUI with --use-pytorch-cross-attention", self.node,
                        getattr(host.optimized_attention, "__name__", "?"), "; ".join(foreign))

    def _ensure_loaded(self) -> None:
        import comfy.model_management as mm

        if self._grad_depth:
            return
        loaded = mm.loaded_models()
        if not self._loaded or any(all(m is not lm for lm in loaded) for m in self._models()):
            self.load()

    def free_memory(self) -> int:
        """Bytes free on the model's device (for choosing frame batch sizes)."""
        import comfy.model_management as mm

        return int(mm.get_free_memory(self.device))

    def estimate(self, latent_shape) -> int:
        """ComfyUI's estimate of one sample's working memory in a forward (``BaseModel.memory_required``, on the
        branch ComfyUI takes on this device); the runner's floor for forward passes (the StageHost protocol)."""
        return int(self.model.memory_required([1] + list(latent_shape[1:])))

    def working_memory(self, latent_shape, grad: bool) -> int:
        """Bytes one sample of a call holds at its peak, forward or forward+backward, from the family's measured
        profile (``pipeline.families``) at this latent size and compute dtype, with every ControlNet this denoiser
        may run on the sample (the StageHost protocol)."""
        from ...pipeline.families import FAMILIES

        pixels = int(latent_shape[-2]) * int(latent_shape[-1])
        size = torch.tensor([], dtype=self.compute_dtype).element_size()
        controlnets = max(len(_links(self.control_net)) + max(len(_links(self.cond_control)),
                                                               len(_links(self.uncond_control))), 1)
        return FAMILIES[self.family].working_memory(pixels, size, grad, controlnets)

    @contextlib.contextmanager
    def engine(self):
        """Where pacm runs (the StageHost protocol): :func:`engine_mode`, inside the MODEL's ``pre_run`` /
        ``cleanup`` as a sampler runs inside them (its ON_PRE_RUN and ON_CLEANUP callbacks)."""
        with engine_mode():
            try:
                self.patcher.pre_run()
                yield
            finally:
                self.patcher.cleanup()

    # ---- the protocol -------------------------------------------------------------------------------
    def _chain_for(self, head, ids, input_name: str = "positive"):
        """A per-call copy of a ControlNet chain of the CONDITIONING ('Apply ControlNet') for some rows.

        A one-image hint applies to every row. A hint batch is one image per frame (source first): ``ids`` is
        the global frame id of each of those rows (from ``poseanimate.row_frames`` or ``frame_ids``); without ids,
        ComfyUI's own batch broadcasting applies (with a warning)."""
        copies = []
        for link in _links(head):
            hint = link.cond_hint_original
            if isinstance(hint, torch.Tensor) and hint.shape[0] > 1:
                if ids is not None:
                    if max(ids) >= hint.shape[0]:
                        raise ValueError(
                            f"{input_name}: the ControlNet applied to this conditioning has {hint.shape[0]} images "
                            f"but frame {max(ids)} is being sampled. Fix: give it one image, or one per frame "
                            "(source first)")
                    hint = hint[list(ids)]
                elif not self._warned_broadcast:
                    self._warned_broadcast = True
                    log.warning("%s: a ControlNet on the conditioning has %d images; without frame ids they "
                                "are broadcast over the batch as ComfyUI does", self.node, hint.shape[0])
            c = link.copy()
            c.set_cond_hint(hint, link.strength, link.timestep_percent_range, vae=link.vae,
                            extra_concat=list(link.extra_concat_orig))
            copies.append(c)
        for c, prev in zip(copies, copies[1:]):
            c.set_previous_controlnet(prev)
        return copies[0] if copies else None

    @staticmethod
    def _row_frames(transformer_options: dict, chunks: list[int], rows_per_chunk: int = 1):
        """The global frame id of every row of the chunks ``chunks``, or None where the call does not say."""
        pa = transformer_options.get("poseanimate") or {}
        if pa.get("row_frames") is not None:  # one frame per chunk
            rows = list(pa["row_frames"])
            if rows_per_chunk != 1 or len(rows) != len(transformer_options.get("cond_or_uncond") or [0]):
                raise ValueError(f"row_frames: {len(rows)} frame ids for {len(transformer_options.get('cond_or_uncond') or [0])} "
                                 f"chunks of {rows_per_chunk} rows. Fix: give one frame id per one-frame chunk")
            return [int(rows[k]) for k in chunks]
        if pa.get("frame_ids") is not None:  # every chunk holds these frames
            return [int(f) for f in pa["frame_ids"]] * len(chunks)
        return None

    def check_frame_images(self, frames: int) -> None:
        """Refuse, before any work, a ControlNet on the positive or negative CONDITIONING whose image batch is
        neither one image (for every frame) nor one per frame (``frames``, the source first)."""
        from .._common import input_error

        for head, name in ((self.cond_control, "positive"), (self.uncond_control, "negative")):
            for link in _links(head):
                hint = getattr(link, "cond_hint_original", None)
                if isinstance(hint, torch.Tensor) and hint.shape[0] not in (1, frames):
                    raise input_error(self.node, name, f"the ControlNet applied to this conditioning has "
                                      f"{hint.shape[0]} images for {frames} frames",
                                      "give it one image, or one per frame (source first)")

    def check_context(self, context, input_name: str = "positive",
                      fix: str = "encode the prompt with the CLIP of the same checkpoint as the MODEL") -> None:
        """Refuse a text embedding whose width is not the MODEL's (an SD1.5 prompt on an SDXL model, or back), and
        an SDXL conditioning without its pooled output."""
        from .._common import input_error

        if context.shape[-1] != self.context_dim:
            other = next((f for f, d in CONTEXT_DIMS.items() if d == context.shape[-1]), "another model")
            raise input_error(self.node, input_name, f"the text embedding is {context.shape[-1]} wide ({other}) but "
                              f"the MODEL is {self.family} ({self.context_dim})", fix)
        for adm, name in ((self.adm, "positive"), (self.uncond_adm, "negative")):
            if self.family == "SDXL" and not isinstance(adm.get("pooled_output"), torch.Tensor):
                raise input_error(self.node, name, "the conditioning has no pooled output, which an SDXL model "
                                  "needs", "encode the prompt with the CLIP of your SDXL checkpoint ('CLIP Text "
                                  "Encode')")

    def _y_of(self, adm: dict, hw, side: str = "positive"):
        """SDXL's ``y`` (1, 2816) of one side's pooled output and sizes for a latent of size ``hw``."""
        key = (id(adm), hw)
        if key not in self._y:
            if not isinstance(adm.get("pooled_output"), torch.Tensor):
                raise ValueError(f"{side}: an SDXL model needs the conditioning's pooled output. Fix: encode the "
                                 "prompt with the CLIP of your SDXL checkpoint")
            kw = dict(adm)
            kw.setdefault("width", hw[1] * 8)
            kw.setdefault("height", hw[0] * 8)
            with torch.inference_mode(False), torch.no_grad():
                y = self.model.encode_adm(device=torch.device("cpu"), **{k: _plain(v) if isinstance(v, torch.Tensor)
                                                                          else v for k, v in kw.items()})
                self._y[key] = y[:1].detach().float().cpu().clone()
        return self._y[key]

    def adm_for(self, x, cond_or_uncond=(0,)):
        """SDXL's ``y`` (B, 2816) for a batch of latents ``x`` whose equal chunks (checked by ``__call__``) are
        ``cond_or_uncond`` (each side's pooled output and sizes, see the class docstring); None for SD1.5."""
        if self.family != "SDXL":
            return None
        hw = (int(x.shape[-2]), int(x.shape[-1]))
        n = len(cond_or_uncond)
        ys = [self._y_of(self.uncond_adm, hw, "negative") if kind == 1 else self._y_of(self.adm, hw)
              for kind in cond_or_uncond]
        return torch.cat([y.expand(x.shape[0] // n, -1) for y in ys]).to(x.device)

    def _run_control(self, head, x, sigma, context, n_chunks, transformer_options, y=None):
        ms = self.model_sampling
        head.pre_run(self.model, lambda p: ms.percent_to_sigma(p))
        cond = {"c_crossattn": context}
        if y is not None:
            cond["y"] = y
        try:
            return head.get_control(x, sigma, cond, n_chunks, transformer_options)
        finally:
            head.cleanup()

    def _control_for(self, x, sigma, context, hint, cond_or_uncond, transformer_options, y=None):
        """ControlNet residuals for one call: the pose ControlNet on every chunk; the ControlNets of the positive
        CONDITIONING on the cond chunks (``cond_or_uncond`` 0), those of the negative on the uncond chunks (1), zero
        elsewhere, as a KSampler runs each CFG side with its own conditioning."""
        b = x.shape[0]
        n_chunks = len(cond_or_uncond)
        control = None
        if self.control_net is not None and hint is not None:
            if hint.ndim != 4 or hint.shape[1] != 3:
                raise ValueError(f"hint: expected pose images (B, 3, H, W), got {tuple(hint.shape)}. Fix: pass RGB "
                                 "pose images, channels first")
            if hint.shape[0] != b:
                if b % hint.shape[0] == 0:
                    hint = hint.repeat(b // hint.shape[0], 1, 1, 1)
                else:
                    raise ValueError(f"hint: batch {hint.shape[0]} does not divide the latent batch {b}. Fix: pass "
                                     "one pose image per row, or one for all")
            c = self.control_net.copy()
            c.set_cond_hint(hint, self.strength, self.percent_range)
            control = self._run_control(c, x, sigma, context, n_chunks, transformer_options, y)
        size = b // n_chunks  # equal chunks: checked by __call__
        for kind, head, name in ((0, self.cond_control, "positive"), (1, self.uncond_control, "negative")):
            chunks = [k for k, cu in enumerate(cond_or_uncond) if cu == kind]
            if head is None or not chunks:
                continue
            rows = torch.cat([torch.arange(k * size, (k + 1) * size) for k in chunks]).to(x.device)
            to = dict(transformer_options)
            to["cond_or_uncond"] = [kind] * len(chunks)
            copy = self._chain_for(head, self._row_frames(transformer_options, chunks, size), name)
            ctx = context[rows] if context.shape[0] == b else context[:1].expand(rows.shape[0], -1, -1)
            part = self._run_control(copy, x[rows], sigma[rows], ctx, len(chunks), to,
                                     None if y is None else y[rows])
            if part is not None:
                control = _merge_rows(control, part, rows, b)
        return control

    def __call__(self, x, sigma, context, hint=None, transformer_options=None):
        """x0 prediction (float32, shape of x); see the module docstring and DEVELOPERS.md."""
        self._ensure_loaded()
        self.calls += 1
        dev = self.device
        x = x.to(dev, torch.float32)
        sigma = sigma.to(dev, torch.float32).reshape(-1)
        if sigma.shape[0] == 1 and x.shape[0] > 1:
            sigma = sigma.expand(x.shape[0])
        context = context.to(dev)
        if hint is not None:
            hint = hint.to(dev)
        if self._grad_depth:  # tensors from other nodes are inference tensors: autograd must not save them
            x, sigma = _plain(x), _plain(sigma)
            context = _plain(context)
            hint = _plain(hint)
        to = merge_transformer_options(self.patcher, transformer_options)
        cond_or_uncond = list(to.get("cond_or_uncond") or [0])
        _check_chunks(x.shape[0], cond_or_uncond)
        to["cond_or_uncond"] = cond_or_uncond
        n = len(cond_or_uncond)
        if "sigmas" not in to:
            to["sigmas"] = sigma[: x.shape[0] // n]
        to.setdefault("uuids", [None] * n)
        model_options = self.patcher.model_options
        prepare_state(self.patcher, sigma, model_options)  # ON_PREPARE_STATE callbacks, before control (calc_cond_batch)
        y = self.adm_for(x, cond_or_uncond)
        control = self._control_for(x, sigma, context, hint, cond_or_uncond, to, y)
        c = {"c_crossattn": context, "transformer_options": to}
        if y is not None:
            c["y"] = y
        if self._grad_depth:
            install_out_of_place_control(to, control)
            self._grad_attention_options(to)
        else:
            c["control"] = control
        if "model_function_wrapper" in model_options:
            return model_options["model_function_wrapper"](
                self.model.apply_model, {"input": x, "timestep": sigma, "c": c, "cond_or_uncond": cond_or_uncond})
        return self.model.apply_model(x, sigma, **c)

    def _grad_attention_options(self, to: dict) -> None:
        """A gradient pass attends through ``grad_attention`` whatever the user's backend (``gradpath``), also
        where another pack set its own ``optimized_attention_override`` (said once in the log)."""
        from .gradpath import OVERRIDE_KEY

        other = to.get(OVERRIDE_KEY)
        if other is not None and other is not self.grad_attention and not self._warned_override:
            self._warned_override = True
            log.info("%s: the MODEL's attention override %s is used in forward passes; the gradient passes attend "
                     "with PyTorch attention (they need a backward)", self.node, _name_of(other))
        to[OVERRIDE_KEY] = self.grad_attention

    def _modules(self) -> list:
        """The torch modules of the UNet and every ControlNet this denoiser runs."""
        return [self.model] + [m.model for m in self._models()[1:]]

    @contextlib.contextmanager
    def grad_context(self):
        """Autograd through __call__ into ``context``, inside or outside ComfyUI's inference mode.

        No weight is copied or replaced: the weight-bearing layers differentiate into their inputs through the
        weights the host serves them (``gradpath.host_layers``), and ControlNet residuals are added out of
        place. Every layer is put back on exit, whatever happens inside."""
        from .gradpath import host_layers

        if self._grad_depth:
            with torch.inference_mode(False), torch.enable_grad():
                yield self
            return
        self._ensure_loaded()
        with torch.inference_mode(False), torch.enable_grad(), host_layers(self._modules(), self.grad_attention):
            self._grad_depth += 1
            try:
                yield self
            finally:
                self._grad_depth -= 1
