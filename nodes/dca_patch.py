"""DCA Patch Model: a clone of MODEL whose self-attention runs DCAM (and MGDM when masks are given)."""
from __future__ import annotations

import re

from ..pipeline import FULL, MGDM_MODES
from ._common import CATEGORY, input_error, node_errors

NODE = "DCA Patch Model"
BLOCK_CHOICES = ["all output blocks", "SD1.5 output 3-11", "custom"]
_NAMES = ("input", "middle", "output")


def parse_block_list(text: str) -> list[tuple[str, int]]:
    """``"output 3-11, input 7, 5"`` -> [("output", 3), ..., ("input", 7), ("output", 5)].

    Entries are separated by commas or semicolons; each is an optional block name (input / middle / output,
    default output, and a name carries over to later bare numbers) followed by a number or a range ``a-b``.
    """
    out, name = [], "output"
    for raw in re.split(r"[,;]", text or ""):
        item = raw.strip().lower()
        if not item:
            continue
        m = re.fullmatch(r"(?:(input|middle|output)(?:[ _]?blocks?)?\s*)?(\d+)(?:\s*-\s*(\d+))?", item)
        if not m:
            raise ValueError(f"custom_blocks: cannot read {raw.strip()!r}; write block numbers or ranges with an "
                             "optional block name, e.g. 'output 3-11' or 'output 6, 7, 8'")
        name = m.group(1) or name
        lo = int(m.group(2))
        hi = int(m.group(3)) if m.group(3) else lo
        if hi < lo:
            raise ValueError(f"custom_blocks: range {raw.strip()!r} runs backwards; write it as {hi}-{lo}")
        out += [(name, i) for i in range(lo, hi + 1)]
    if not out:
        raise ValueError("custom_blocks: empty; list the blocks, e.g. 'output 3-11'")
    return list(dict.fromkeys(out))


def select_blocks(unet, blocks: str, custom_blocks: str) -> list:
    """The ``blocks`` argument for DCAPatch from the node's choice, checked against the UNet's attention blocks."""
    from ..attention.blocks import attention_block_ids

    available = {}
    for name in _NAMES:
        try:
            available[name] = attention_block_ids(unet, name)
        except AttributeError:
            available[name] = []
    have = ", ".join(f"{n} {i}" for n in _NAMES for i in available[n]) or "none"
    if blocks == "all output blocks":
        if not available["output"]:
            raise ValueError(f"model: it has no self-attention in its output blocks (attention blocks: {have}); "
                             "use an SD1.5 or SDXL checkpoint")
        return [("output", i) for i in available["output"]]
    if blocks == "SD1.5 output 3-11":
        from ..pipeline import SD15

        chosen = [("output", i) for i in available["output"] if ("output", i) in SD15.dca_blocks]
        if not chosen:
            raise ValueError(f"blocks: this model has no attention in output blocks 3-11 (attention blocks: {have});"
                             " choose 'all output blocks'")
        return chosen
    if blocks == "custom":
        chosen = parse_block_list(custom_blocks)
        missing = [f"{n} {i}" for n, i in chosen if i not in available[n]]
        if missing:
            raise ValueError(f"custom_blocks: {', '.join(missing)} has no self-attention in this model; blocks with "
                             f"attention: {have}")
        return chosen
    raise ValueError(f"blocks: unknown choice {blocks!r}; use one of {BLOCK_CHOICES}")


class PoseAnimateDCAPatchModel:
    DESCRIPTION = (
        "Returns a clone of MODEL whose self-attention in the chosen blocks runs PoseAnimate's dual consistency "
        "attention (DCAM): every frame attends to the first (source) frame, the previous frame and itself with "
        "the three weights. With a MASK batch (one mask per frame, frame 0 = source) mask-guided decoupling "
        "(MGDM) keeps character and background attention apart. Use it with Sample Frames, or with ComfyUI's "
        "own samplers on a latent batch whose first latent is the source frame."
    )
    CATEGORY = f"{CATEGORY}/Attention"
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A patched clone of the input MODEL (the input is not changed).",)

    @classmethod
    def INPUT_TYPES(cls):
        weight = {"min": 0.0, "max": 1.0, "step": 0.01}
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.5 or SDXL-family MODEL (LoRAs and other patches are kept)."}),
                "first_frame_weight": ("FLOAT", {"default": FULL.weights[0], **weight, "tooltip":
                                       "λ1, weight of attention to the source frame (identity, background). The "
                                       "three weights are relative: they are divided by their sum."}),
                "previous_frame_weight": ("FLOAT", {"default": FULL.weights[1], **weight, "tooltip":
                                          "λ2, weight of attention to the previous frame (temporal smoothness)."}),
                "own_frame_weight": ("FLOAT", {"default": FULL.weights[2], **weight, "tooltip":
                                     "λ3, weight of the frame's own self-attention (follows the new pose)."}),
                "blocks": (BLOCK_CHOICES, {"default": FULL.blocks, "tooltip":
                           "Where DCAM acts: every UNet output (decoder) block with attention, SD1.5's "
                           "output blocks 3-11, or the list in custom_blocks."}),
                "custom_blocks": ("STRING", {"default": "output 3-11", "tooltip":
                                  "Used when blocks is 'custom': block numbers or ranges with an optional name, "
                                  "e.g. 'output 6-11' or 'output 3, 4, 5, middle 0'."}),
            },
            "optional": {
                "masks": ("MASK", {"tooltip": "Optional character masks, one per frame (frame 0 = source), e.g. "
                                   "from Cross-Attention Mask Extract; turns on MGDM."}),
                "mgdm": (list(MGDM_MODES), {"default": FULL.mgdm, "tooltip":
                         "How masks decouple character and background (MGDM): 'exclude' lets character pixels "
                         "attend only to character pixels (and background to background); 'multiply' is the "
                         "paper's formulation, keys and values multiplied by the masks."}),
            },
        }

    def patch(self, model, first_frame_weight, previous_frame_weight, own_frame_weight, blocks, custom_blocks,
              masks=None, mgdm=FULL.mgdm):
        from .. import pipeline
        from .host.stages import host_attention

        weights = (float(first_frame_weight), float(previous_frame_weight), float(own_frame_weight))
        unet = getattr(getattr(model, "model", None), "diffusion_model", None)
        if unet is None or not hasattr(model, "clone"):
            raise input_error(NODE, "model", "is not a diffusion MODEL", "connect the MODEL output of a checkpoint "
                              "loader (or of a LoRA loader)")
        with node_errors(NODE, {"weights": "first_frame_weight", "masks": "masks", "mgdm": "mgdm"}):
            if masks is not None:
                masks = pipeline.check_masks(masks, masks.shape[0] if getattr(masks, "ndim", 0) == 3 else 1)
            selection = select_blocks(unet, blocks, custom_blocks)
            dca = pipeline.make_dca(weights, masks=masks, blocks=selection, mgdm=mgdm, attention_fn=host_attention())
            patched, _ = pipeline.patch_model(model, dca=dca)
        return (patched,)
