"""Host glue shared by the PACM node files (node files never import each other): the ControlNet widgets, the
POSEANIMATE_INVERSION / _EMBEDDINGS checks, the Denoiser each stage runs on (with the inversion's ControlNet settings
and SDXL conditioning for every stage after it), and the attention function for the pack's own patches."""
from __future__ import annotations

from .._common import input_error


def control_inputs() -> dict:
    """The ControlNet strength / start / end widgets (as in ComfyUI's 'Apply ControlNet')."""
    return {
        "control_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01,
                                       "tooltip": "Strength of the pose ControlNet, as in 'Apply ControlNet'. "
                                                  "Later PACM nodes reuse this value."}),
        "control_start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                    "tooltip": "Fraction of the schedule (0 = first, noisiest step) where the "
                                               "ControlNet starts acting."}),
        "control_end": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                  "tooltip": "Fraction of the schedule where the ControlNet stops acting."}),
    }


NEGATIVE_TOOLTIP = ("Optional: the negative CONDITIONING, as a KSampler takes it. Its ControlNets ('Apply ControlNet' "
                    "on both prompts) act on the unconditional CFG rows, as in a KSampler (SDXL: also its pooled "
                    "output and sizes). Its text is not used: PoseAnimate replaces the unconditional text embedding "
                    "by its own per-step embedding, optimised from the prompt.")


def check_inversion(inversion, node: str, input_name: str = "inversion"):
    """A POSEANIMATE_INVERSION from Pose-Aware Inversion, or a clear error."""
    from ...pipeline.types import StagedInversion

    if not isinstance(inversion, StagedInversion):
        raise input_error(node, input_name, f"expected a POSEANIMATE_INVERSION, got {type(inversion).__name__}",
                          "connect the 'inversion' output of Pose-Aware Inversion")
    return inversion


def check_embeddings(embeddings, node: str, input_name: str = "embeddings"):
    """A POSEANIMATE_EMBEDDINGS from Pose Embedding Optimize, or a clear error."""
    from ...pipeline.types import PACMEmbeddings

    if not isinstance(embeddings, PACMEmbeddings):
        raise input_error(node, input_name, f"expected POSEANIMATE_EMBEDDINGS, got {type(embeddings).__name__}",
                          "connect the output of Pose Embedding Optimize")
    return embeddings


def stage_denoiser(model, control_net, conditioning, node: str, *, control=None, inversion=None,
                   frames: int | None = None):
    """The ComfyDenoiser a stage runs on: ``model`` and ``control_net`` with the CONDITIONING's ControlNets on each
    CFG side (``conditioning``: ``conditioning.read_conditioning``). The inversion stage gives its ``control``
    settings; every later stage gives the ``inversion``, whose ControlNet settings and SDXL conditioning it repeats
    exactly, after checking that its prompt (and negative, where connected) is the inversion's, and its ``frames``
    (the source included), which each conditioning ControlNet's images must cover (one image, or one per frame)
    before any work."""
    import torch

    from .adapter import ComfyDenoiser
    from .types import check_same_prompt

    if inversion is None:
        adm, uncond_adm = conditioning.adm, conditioning.uncond_adm
    else:
        check_same_prompt(conditioning.context, inversion.cond, node, "positive")
        control, adm, uncond_adm = inversion.control, inversion.extra_cond, inversion.uncond_extra_cond
        pooled = conditioning.uncond_adm.get("pooled_output") if conditioning.negative_context is not None else None
        stored = uncond_adm.get("pooled_output")
        if isinstance(pooled, torch.Tensor) and isinstance(stored, torch.Tensor) and (
                pooled.shape != stored.shape or not torch.allclose(pooled.float().cpu(), stored.float().cpu(),
                                                                   rtol=1e-3, atol=1e-4)):
            raise input_error(node, "negative", "this negative's pooled output is not the one Pose-Aware Inversion "
                              "used", "connect the same negative CONDITIONING as on Pose-Aware Inversion")
    den = ComfyDenoiser(model, control_net, strength=control.strength, start_percent=control.start,
                        end_percent=control.end, cond_control=conditioning.control,
                        uncond_control=conditioning.uncond_control, adm=adm, uncond_adm=uncond_adm, node=node)
    if frames is not None:
        den.check_frame_images(int(frames))
    if inversion is None:
        den.check_context(conditioning.context)
    else:
        den.check_context(inversion.cond, "model", fix="connect a MODEL of the same family (SD1.5 or SDXL) as on "
                                                       "Pose-Aware Inversion")
    return den


def host_attention():
    """ComfyUI's ``optimized_attention`` (the function its own attention layers call, honouring its attention
    options), for the DCA and capture patches, wrapped so that masked calls (MGDM) reach an attention that honours
    masks (:class:`MaskSafeAttention`); None where ComfyUI is absent (the unit tests), i.e. torch SDPA."""
    try:
        from comfy.ldm.modules.attention import optimized_attention
    except ImportError:
        return None
    from .compat import mask_attention

    return MaskSafeAttention(optimized_attention, mask_attention(optimized_attention))


class MaskSafeAttention:
    """``fn(q, k, v, heads, mask=None, **kw)``: unmasked calls go to ``plain`` (the user's backend, with every
    option, an ``optimized_attention_override`` from another pack included); masked calls go to ``masked``, an
    attention that honours masks (``compat.mask_attention``), without another pack's override, which may drop
    them. The gradient passes' own override (``gradpath.GradAttention``: PyTorch attention) honours masks and stays."""

    def __init__(self, plain, masked):
        self.plain, self.masked = plain, masked

    def __call__(self, q, k, v, heads, mask=None, **kwargs):
        if mask is None:
            return self.plain(q, k, v, heads, **kwargs)
        from .gradpath import OVERRIDE_KEY, GradAttention

        options = kwargs.get("transformer_options") or {}
        other = options.get(OVERRIDE_KEY)
        if other is not None and not isinstance(other, GradAttention):
            kwargs["transformer_options"] = {k: v for k, v in options.items() if k != OVERRIDE_KEY}
        return self.masked(q, k, v, heads, mask=mask, **kwargs)
