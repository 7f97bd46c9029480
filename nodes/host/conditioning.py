"""What the PACM stages take from the positive and negative CONDITIONING, read once, the way a KSampler reads it;
everything a KSampler would honour that these stages cannot is refused by name, with the fix.

A KSampler evaluates each CFG side with its CONDITIONING: the positive's text, ControlNets and (SDXL) pooled output
and sizes on the cond rows, the negative's on the uncond rows ('Apply ControlNet' puts a ControlNet on both; the
deprecated 'Apply ControlNet (OLD)' marks the positive's ``control_apply_to_uncond``, which ComfyUI copies to a
negative without ControlNets). The PACM stages do the same, except for one thing the method replaces: the uncond rows'
text embedding is the optimised per-step embedding (started from the prompt), not the negative's text.

Supported per entry: the text embedding, ``pooled_output`` and SDXL's sizes, ``control`` /
``control_apply_to_uncond``, ``strength`` (one entry: it cancels, as in ComfyUI), a timestep range covering the
whole schedule. Refused: a second entry (Conditioning (Combine)), areas and masks, partial timestep ranges, hooks,
GLIGEN, unCLIP, inpainting concat conditioning and any key this module does not know.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .._common import input_error
from .checks import CONTEXT_DIMS

SIZE_KEYS = ("width", "height", "crop_w", "crop_h", "target_width", "target_height")
ADM_KEYS = ("pooled_output",) + SIZE_KEYS
# keys of a conditioning entry a KSampler acts on and these stages cannot honour: what made them, and the fix
_REFUSED = {
    "area": ("'Conditioning (Set Area)'", "remove the area node (PACM conditions the whole picture)"),
    "mask": ("'Conditioning (Set Mask)'", "remove the mask node (PACM conditions the whole picture)"),
    "mask_strength": ("'Conditioning (Set Mask)'", "remove the mask node"),
    "set_area_to_bounds": ("'Conditioning (Set Mask)'", "remove the mask node"),
    "hooks": ("hook nodes ('Create Hook LoRA', 'Set CLIP Hooks', 'Cond Set Props')",
              "apply the LoRA to the MODEL with 'Load LoRA' instead of a hook"),
    "gligen": ("'GLIGEN Textbox Apply'", "remove the GLIGEN node"),
    "unclip_conditioning": ("'unCLIP Conditioning'", "remove the unCLIP node"),
    "concat_latent_image": ("an inpainting conditioning node", "use a plain text conditioning"),
    "concat_mask": ("an inpainting conditioning node", "use a plain text conditioning"),
    "noise_augmentation": ("'unCLIP Conditioning'", "remove the unCLIP node"),
}
_ACCEPTED = set(ADM_KEYS) | {"control", "control_apply_to_uncond", "strength", "start_percent", "end_percent"}


@dataclass
class Conditioning:
    """The stages' view of the positive and negative CONDITIONING (see the module docstring).

    context: the positive's text embedding (1, L, D), float32 on the CPU; control / uncond_control: the ControlNet
    chains of the cond and of the uncond rows; adm / uncond_adm: SDXL's pooled output and sizes per side (the
    positive's on both when no negative is connected); negative_context: the negative's text embedding or None
    (unused by the stages: the method replaces it; the KSampler comparison reads it)."""

    context: object
    control: object = None
    uncond_control: object = None
    adm: dict = field(default_factory=dict)
    uncond_adm: dict = field(default_factory=dict)
    negative_context: object = None


def _entry(conditioning, node: str, input_name: str):
    """The single ``[tensor, dict]`` entry of a CONDITIONING, or a clear error."""
    import torch

    if not isinstance(conditioning, (list, tuple)) or len(conditioning) == 0:
        raise input_error(node, input_name, "the CONDITIONING is empty",
                          "connect the output of 'CLIP Text Encode' with your prompt")
    if len(conditioning) > 1:
        raise input_error(node, input_name, f"the CONDITIONING holds {len(conditioning)} entries ('Conditioning "
                          "(Combine)' or an area/timestep split); the PACM stages evaluate one prompt per CFG side",
                          "join the prompts into one entry with 'Conditioning (Concat)' or one 'CLIP Text Encode'")
    entry = conditioning[0]
    ctx = entry[0] if isinstance(entry, (list, tuple)) and len(entry) >= 1 else None
    if not isinstance(ctx, torch.Tensor) or ctx.ndim != 3:
        raise input_error(node, input_name, "the CONDITIONING holds no text embedding tensor",
                          "connect the output of 'CLIP Text Encode' with your prompt")
    if ctx.shape[-1] not in CONTEXT_DIMS.values():
        raise input_error(node, input_name, f"the text embedding is {ctx.shape[-1]} wide (SD1.5 CLIP: 768, SDXL "
                          "CLIP-L + CLIP-G: 2048)", "encode the prompt with the CLIP of your SD1.5 or SDXL checkpoint")
    options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
    _check_options(options, node, input_name)
    pooled = options.get("pooled_output")
    if ctx.shape[0] != 1 or (isinstance(pooled, torch.Tensor) and pooled.shape[0] != 1):
        raise input_error(node, input_name, f"the CONDITIONING holds a batch of {ctx.shape[0]} text embeddings; the PACM "
                          "stages evaluate one prompt per CFG side", "encode one prompt ('CLIP Text Encode')")
    return ctx, options


def _check_options(options: dict, node: str, input_name: str) -> None:
    for key, value in options.items():
        if value is None or key in ("start_percent", "end_percent"):
            continue
        if key in _REFUSED:
            made_by, fix = _REFUSED[key]
            raise input_error(node, input_name, f"the CONDITIONING carries '{key}' from {made_by}, which a KSampler "
                              "honours and the PACM stages cannot", fix)
        if key not in _ACCEPTED:
            raise input_error(node, input_name, f"the CONDITIONING carries '{key}', an option the PACM stages do not "
                              "know and would drop", "connect the conditioning without the node that added it")
    start = float(options.get("start_percent") or 0.0)
    end = float(1.0 if options.get("end_percent") is None else options["end_percent"])
    if start > 0.0 or end < 1.0:
        raise input_error(node, input_name, f"the CONDITIONING acts only from {start:g} to {end:g} of the schedule "
                          "('Conditioning Set Timestep Range'); the PACM stages evaluate it at every step",
                          "remove the timestep range node")
    if "strength" in options and float(options["strength"]) == 0:
        # one entry per side: a KSampler divides the entry's output by its own strength, so any other value cancels
        raise input_error(node, input_name, "the CONDITIONING's strength is 0, which gives it no weight (a KSampler "
                          "would get a zero prediction for this side)", "set the strength above 0")


def _context(ctx):
    import torch

    with torch.inference_mode(False):  # a normal tensor: pacm may optimise embeddings started from it
        return ctx.detach().to(device="cpu", dtype=torch.float32).clone()


def read_conditioning(positive, negative, node: str, pose_controlnet: bool = True) -> Conditioning:
    """The :class:`Conditioning` of a stage's ``positive`` and optional ``negative`` inputs, or a clear error.

    ``pose_controlnet``: whether the stage runs its own pose ControlNet on both CFG sides, which in KSampler terms
    puts a ControlNet on the negative: ComfyUI then does not copy a ``control_apply_to_uncond`` ControlNet of the
    positive to it (``samplers.apply_empty_x_to_equal_area`` copies only to a negative without ControlNets)."""
    ctx, pos = _entry(positive, node, "positive")
    out = Conditioning(context=_context(ctx), control=pos.get("control"),
                       adm={k: pos[k] for k in ADM_KEYS if pos.get(k) is not None})
    apply_to_uncond = bool(pos.get("control_apply_to_uncond")) and out.control is not None and not pose_controlnet
    if negative is None:
        out.uncond_adm = dict(out.adm)
        out.uncond_control = out.control if apply_to_uncond else None
        return out
    nctx, neg = _entry(negative, node, "negative")
    out.negative_context = _context(nctx)
    out.uncond_adm = {k: neg[k] for k in ADM_KEYS if neg.get(k) is not None}
    out.uncond_control = neg.get("control")
    if out.uncond_control is None and apply_to_uncond:
        out.uncond_control = out.control  # ComfyUI copies it to a negative without ControlNets
    return out
