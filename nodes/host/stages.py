"""Host glue shared by the PACM node files (node files never import each other): the ControlNet widgets, the
POSEANIMATE_INVERSION check, and the Denoiser every later stage builds with the inversion's ControlNet settings."""
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


def check_inversion(inversion, node: str, input_name: str = "inversion"):
    """A POSEANIMATE_INVERSION from Pose-Aware Inversion, or a clear error."""
    from ...pacm import InversionResult

    if not isinstance(inversion, InversionResult):
        raise input_error(node, input_name, f"expected a POSEANIMATE_INVERSION, got {type(inversion).__name__}",
                          "connect the 'inversion' output of Pose-Aware Inversion")
    return inversion


def inversion_denoiser(inversion, model, control_net, node: str, extra_control=None):
    """A ComfyDenoiser over ``model`` and ``control_net`` with the ControlNet strength and start/end percent
    the inversion ran with (its typed ``control``) and its extra conditioning (SDXL's pooled output and sizes),
    so every later stage conditions exactly as the inversion did."""
    from ...pipeline.runner import ControlSettings
    from .adapter import ComfyDenoiser

    ctrl = getattr(inversion, "control", None) or ControlSettings()
    den = ComfyDenoiser(model, control_net, strength=ctrl.strength, start_percent=ctrl.start, end_percent=ctrl.end,
                        extra_control=extra_control, adm=getattr(inversion, "extra_cond", None), node=node)
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
