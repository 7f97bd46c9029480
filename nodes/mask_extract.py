"""Cross-Attention Mask Extract: per-frame character masks from the subject word's cross-attention (MGDM).

Runs the frame sampling of PACM stage 4 once with a cross-attention capture patch on a clone of MODEL, reads
the attention of the subject token(s) for every frame, and thresholds the maps into one MASK per frame
(frame 0 = source). The masks feed DCA Patch Model (or Sample Frames) to turn on mask-guided decoupling.
"""
from __future__ import annotations

from ._common import CATEGORY, PoseAnimateError, input_error, node_errors

NODE = "Cross-Attention Mask Extract"


class _StopSampling(Exception):
    """Raised from the progress callback once enough steps are captured."""


def _overlay(frames_hw, masks):
    """Preview (F, H, W, 3): the normalised attention map in red/yellow, the mask outline in white."""
    import torch
    import torch.nn.functional as F

    maps = frames_hw.float()
    lo = maps.flatten(1).min(1).values.view(-1, 1, 1)
    hi = maps.flatten(1).max(1).values.view(-1, 1, 1)
    maps = (maps - lo) / (hi - lo).clamp_min(1e-8)
    img = torch.stack([maps, maps.pow(2), 0.25 * masks], dim=-1)
    pad = F.max_pool2d(masks[:, None], 3, 1, 1)[:, 0] - masks  # 1-pixel outline outside the mask
    img = torch.where(pad[..., None] > 0, torch.ones_like(img), img)
    return img.clamp(0, 1)


class PoseAnimateCrossAttentionMaskExtract:
    DESCRIPTION = (
        "Finds the character in every frame from where the subject word of the prompt looks (cross-attention): "
        "samples the frames once with a capture patch on a copy of MODEL, averages the subject token's "
        "attention per frame and thresholds it into masks, one per frame (frame 0 = source). Connect the masks "
        "to DCA Patch Model to turn on mask-guided decoupling (MGDM). Costs about one Sample Frames run; "
        "capture_steps stops early."
    )
    CATEGORY = f"{CATEGORY}/Attention"
    FUNCTION = "extract"
    RETURN_TYPES = ("MASK", "IMAGE")
    RETURN_NAMES = ("masks", "preview")
    OUTPUT_TOOLTIPS = (
        "Character masks (N + 1, H, W) in {0, 1} at image size, frame 0 = source.",
        "Attention heat maps of the subject with the mask outline, one per frame, to check the masks.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The SD1.5 model (unpatched, or from DCA Patch Model without "
                                    "masks). It is cloned; the input is not changed."}),
                "control_net": ("CONTROL_NET", {"tooltip": "The OpenPose ControlNet used for the inversion."}),
                "clip": ("CLIP", {"tooltip": "The checkpoint's CLIP; only its tokenizer is used, to find the "
                                  "subject word's tokens in the prompt."}),
                "embeddings": ("POSEANIMATE_EMBEDDINGS", {"tooltip": "Output of Pose Embedding Optimize."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                           "The positive prompt exactly as encoded for the inversion (the same text as the "
                           "positive CLIP Text Encode)."}),
                "subject": ("STRING", {"default": "person", "tooltip":
                            "Word(s) of the prompt naming the character, e.g. 'knight' or 'girl, dress'; "
                            "their tokens' attention becomes the mask."}),
                "threshold": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 0.99, "step": 0.01, "tooltip":
                              "Mask threshold on the per-frame normalised attention (0..1); 0 = automatic "
                              "(Otsu)."}),
                "capture_steps": ("INT", {"default": 0, "min": 0, "max": 1000, "tooltip":
                                  "Sample only this many of the inversion's steps while capturing (the "
                                  "character's layout is set early); 0 = all steps."}),
                "window_size": ("INT", {"default": 0, "min": 0, "max": 4096, "tooltip":
                                "Frames per model call; 0 = auto: as many frames per call as fit in free "
                                "memory. Smaller uses less memory and captures the same maps."}),
                "dilate": ("INT", {"default": 1, "min": 0, "max": 64, "tooltip":
                           "Grow each mask by this many latent pixels (8 image pixels each) to cover the "
                           "character's edges."}),
            },
            "optional": {
                "source_mask": ("MASK", {"tooltip": "Optional mask of the character in the source image (e.g. "
                                         "from a segmentation node); replaces the attention mask of frame 0."}),
                "positive": ("CONDITIONING", {"tooltip": "Optional: the positive CONDITIONING given to the other "
                                              "PACM nodes. Only the ControlNets applied to it ('Apply "
                                              "ControlNet') are used, on the cond half of each call, so the "
                                              "capture samples exactly what Sample Frames samples."}),
            },
        }

    def extract(self, model, control_net, clip, embeddings, prompt, subject, threshold, capture_steps,
                window_size, dilate, source_mask=None, positive=None):
        import torch
        import torch.nn.functional as F

        from ..attention import (AttentionMapStore, CrossAttentionCapture, find_token_positions, install_patches,
                                 masks_from_attention_maps)
        from ..pacm import sample_frames
        from .embedding_optimize import inversion_denoiser
        from .host import ComfyProgress, conditioning_context, conditioning_control, engine_mode, plain, plain_fields
        from .host.memory import resolve_window
        from .host.types import check_embeddings, check_same_prompt

        check_embeddings(embeddings, NODE)
        if not isinstance(prompt, str) or not prompt.strip():
            raise input_error(NODE, "prompt", "is empty", "paste the positive prompt used for the inversion")
        words = [w.strip() for w in (subject or "").split(",") if w.strip()]
        if not words:
            raise input_error(NODE, "subject", "is empty", "name the character as it appears in the prompt, e.g. "
                              "'knight'")
        tokenizer = getattr(clip, "tokenizer", None)
        if tokenizer is None:
            raise input_error(NODE, "clip", "has no tokenizer", "connect the CLIP output of Load Checkpoint")
        try:
            positions = find_token_positions(tokenizer, prompt, words)
        except ValueError as exc:
            raise input_error(NODE, "subject", str(exc).split(": ", 1)[-1],
                              f"use words that appear in the prompt {prompt.strip()[:80]!r}") from None
        if not positions:
            raise input_error(NODE, "subject", f"none of {words} appears in the prompt",
                              "use a word of the prompt that names the character")

        inversion, poses = embeddings.inversion, embeddings.poses
        frames = embeddings.frames
        latent_hw = tuple(inversion.trajectory.shape[-2:])
        image_hw = (latent_hw[0] * 8, latent_hw[1] * 8)
        steps = inversion.steps
        capture = int(capture_steps) if int(capture_steps) > 0 else steps
        capture = min(capture, steps)

        store = AttentionMapStore()
        unet_cfg = getattr(getattr(getattr(model, "model", None), "model_config", None), "unet_config", {}) or {}
        # SD1.5 (4 levels): the character's layout is clearest at 1/4 and 1/2 of the latent size; a UNet with
        # fewer levels (tiny test models) is read at every resolution it has.
        factors = (4, 2) if len(unet_cfg.get("channel_mult", (1, 2, 4, 4))) >= 3 else None
        with node_errors(NODE):
            cap = CrossAttentionCapture(positions, store=store, factors=factors)
            patched = model.clone()
            installed = install_patches(patched, capture=cap)
        if not installed:
            raise input_error(NODE, "model", "has no cross-attention layers to read",
                              "connect an SD1.5 MODEL")
        extra = None
        if positive is not None:
            check_same_prompt(conditioning_context(positive, NODE, "positive"), inversion.cond, NODE, "positive")
            extra = conditioning_control(positive)
        # the window is sized on the unpatched model: a CUDA probe must not record attention maps
        w = resolve_window(inversion_denoiser(inversion, model, control_net, NODE, extra), window_size, frames,
                           (1,) + tuple(inversion.trajectory.shape[1:]), context=inversion.cond,
                           hint_hw=None if poses.hints is None else tuple(poses.hints.shape[-2:]))
        den = inversion_denoiser(inversion, patched, control_net, NODE, extra)
        windows = -(-frames // w)
        progress = ComfyProgress()

        def callback(stage, done, total):
            progress(stage, min(done, capture * windows), capture * windows)
            if done >= capture * windows and capture < steps:
                raise _StopSampling

        den.load(den.memory_per_frame((1,) + tuple(inversion.trajectory.shape[1:])) * 2 * w)
        with node_errors(NODE), engine_mode():
            try:
                sample_frames(den, plain_fields(inversion.to(den.device)), plain_fields(poses.to(den.device)),
                              window=w, callback=callback)
            except _StopSampling:
                pass
        recorded = store.frames()
        if recorded[:frames] != list(range(frames)):
            raise PoseAnimateError(f"{NODE}: captured the subject's attention for frames {recorded} of 0..{frames - 1};"
                                   " the model's cross-attention layers were not reached. Fix: connect an SD1.5 "
                                   "MODEL (its cross-attention must not be replaced by another patch).")
        maps = store.maps(range(frames)).float().cpu()
        with node_errors(NODE):
            masks = masks_from_attention_maps(maps, threshold="otsu" if threshold <= 0 else float(threshold),
                                              size=latent_hw, dilate=int(dilate))
        masks = F.interpolate(masks[:, None].float(), size=image_hw, mode="nearest")[:, 0]
        if source_mask is not None:
            if not isinstance(source_mask, torch.Tensor) or source_mask.ndim not in (2, 3):
                raise input_error(NODE, "source_mask", "expected a MASK", "connect a MASK output or leave it empty")
            src = source_mask if source_mask.ndim == 3 else source_mask[None]
            src = F.interpolate(src[:1, None].float(), size=image_hw, mode="bilinear", align_corners=False)[:, 0]
            masks[0] = (src[0] >= 0.5).float()
        heat = F.interpolate(maps[:, None], size=image_hw, mode="bilinear", align_corners=False)[:, 0]
        return (plain(masks.contiguous()), _overlay(heat, masks))
