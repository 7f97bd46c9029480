"""Cross-Attention Mask Extract: per-frame character masks from the subject word's cross-attention (MGDM).

Runs the frame sampling of PACM stage 4 once with a cross-attention capture patch on a clone of MODEL, reads
the attention of the subject token(s) for every frame, and thresholds the maps into one MASK per frame
(frame 0 = source). The masks feed DCA Patch Model (or Sample Frames) to turn on mask-guided decoupling.
"""
from __future__ import annotations

import torch.nn.functional as F

from ..pipeline import FULL
from ._common import CATEGORY, input_error, node_errors, node_inputs
from .host.stages import NEGATIVE_TOOLTIP

NODE = "Cross-Attention Mask Extract"
LAZY = ("embeddings", "source_mask", "pose_keypoint", "positive", "negative")  # not needed for the subject check


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
        "attention per frame and thresholds it into masks, one per frame (frame 0 = source). With the frames' "
        "poses connected, each mask is united with a body prior drawn from the skeleton (the limbs that "
        "low-resolution attention misses). Connect the masks to DCA Patch Model to turn on mask-guided "
        "decoupling (MGDM). Costs about one Sample Frames run; capture_steps stops early. The subject is "
        "checked against the prompt before the earlier PACM nodes run."
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
                "model": ("MODEL", {"tooltip": "The SD1.5 or SDXL model (unpatched, or from DCA Patch Model without "
                                    "masks). It is cloned; the input is not changed."}),
                "control_net": ("CONTROL_NET", {"tooltip": "The OpenPose ControlNet used for the inversion."}),
                "clip": ("CLIP", {"tooltip": "The checkpoint's CLIP; only its tokenizer is used, to find the "
                                  "subject word's tokens in the prompt."}),
                "embeddings": ("POSEANIMATE_EMBEDDINGS", {"lazy": True,
                                                          "tooltip": "Output of Pose Embedding Optimize."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                           "The positive prompt exactly as encoded for the inversion (the same text as the "
                           "positive CLIP Text Encode)."}),
                "subject": ("STRING", {"default": "person", "tooltip":
                            "Word(s) of the prompt naming the character, e.g. 'knight' or 'girl, dress'; "
                            "their tokens' attention becomes the mask."}),
                "threshold": ("FLOAT", {"default": FULL.threshold, "min": 0.0, "max": 0.99, "step": 0.01, "tooltip":
                              "Mask threshold on the per-frame normalised attention (0..1); 0 = automatic "
                              "(Otsu)."}),
                "capture_steps": ("INT", {"default": FULL.capture_steps, "min": 0, "max": 1000, "tooltip":
                                  "Sample only this many of the inversion's steps while capturing (the "
                                  "character's layout is set early); 0 = all steps."}),
                "window_size": ("INT", {"default": 0, "min": 0, "max": 4096, "tooltip":
                                "Frames per model call; 0 = auto: as many frames per call as fit in free "
                                "memory. Smaller uses less memory and captures the same maps."}),
                "dilate": ("INT", {"default": FULL.dilate, "min": 0, "max": 64, "tooltip":
                           "Grow each mask by this many latent pixels (8 image pixels each) to cover the "
                           "character's edges."}),
            },
            "optional": {
                "source_mask": ("MASK", {"lazy": True, "tooltip": "Optional mask of the character in the source image (1 = "
                                         "character; e.g. a cut-out's alpha through 'Invert Mask', or a "
                                         "segmentation node); replaces the mask of frame 0. An empty or full mask "
                                         "(a picture without alpha) is ignored."}),
                "pose_keypoint": ("POSE_KEYPOINT", {"lazy": True, "tooltip": "The frames' poses (PATA Align's 'aligned_pose', "
                                                   "source first): each mask is united with a body prior drawn "
                                                   "from the skeleton, so thin limbs stay in the character."}),
                "positive": ("CONDITIONING", {"lazy": True, "tooltip": "Optional: the positive CONDITIONING given to the other "
                                              "PACM nodes (checked to be the inversion's prompt). Only the "
                                              "ControlNets applied to it ('Apply ControlNet') are used, on the cond "
                                              "rows of each call, so the capture samples exactly what Sample Frames "
                                              "samples."}),
                "negative": ("CONDITIONING", {"lazy": True, "tooltip": NEGATIVE_TOOLTIP + " Needs positive."}),
            },
        }

    def check_lazy_status(self, clip=None, prompt="", subject="", **inputs):
        """Runs as soon as the MODEL, CONTROL_NET, CLIP and prompt are known. Every input that depends on PACM
        work (``embeddings``, and ``source_mask``, ``pose_keypoint``, ``positive`` when connected) is lazy, so this
        node becomes ready no later than Pose-Aware Inversion, and ComfyUI runs it first while the 'Mask check'
        preview hangs off it: a subject that is not in the prompt stops the graph before any model work."""
        self._positions(clip, prompt, subject)
        return [name for name in LAZY if name in inputs and inputs[name] is None]

    @staticmethod
    def _positions(clip, prompt, subject) -> list:
        from .. import pipeline

        tokenizer = getattr(clip, "tokenizer", None)
        try:
            return pipeline.check_subject(tokenizer, prompt, subject)
        except ValueError as exc:
            if str(exc).startswith("tokenizer: "):
                raise input_error(NODE, "clip", "has no tokenizer",
                                  "connect the CLIP output of Load Checkpoint") from None
            with node_errors(NODE, {"prompt": "prompt", "subject": "subject"}):
                raise

    def extract(self, model, control_net, clip, embeddings, prompt, subject, threshold, capture_steps,
                window_size, dilate, source_mask=None, pose_keypoint=None, positive=None, negative=None):
        from .. import pata, pipeline
        from ..pipeline.families import FAMILIES
        from .host import ComfyProgress, Conditioning, model_family, plain, plain_fields, read_conditioning
        from .host.stages import check_embeddings, host_attention, stage_denoiser

        check_embeddings(embeddings, NODE)
        positions = self._positions(clip, prompt, subject)  # also refuses an empty prompt or subject
        inversion, poses = embeddings.inversion, embeddings.poses
        frames = embeddings.frames
        latent_hw = tuple(inversion.trajectory.shape[-2:])
        image_hw = (latent_hw[0] * 8, latent_hw[1] * 8)
        prior = None
        if pose_keypoint is not None:
            with node_errors(NODE, {"pose_keypoint": "pose_keypoint"}):
                seq, width, height = pata.from_pose_keypoint(pose_keypoint, "pose_keypoint")
                if len(seq) != frames:
                    raise ValueError(f"pose_keypoint: {len(seq)} poses for {frames} frames. Fix: connect the "
                                     "'aligned_pose' output of the PATA Align that made these frames' poses")
                pipeline.check_pose_canvas(image_hw, (round(height), round(width)), "pose_keypoint")
                prior = pipeline.body_prior(seq, (round(height), round(width)))
        if source_mask is not None and (not hasattr(source_mask, "ndim") or source_mask.ndim not in (2, 3)):
            raise input_error(NODE, "source_mask", "expected a MASK", "connect a MASK output or leave it empty")
        if negative is not None and positive is None:
            raise input_error(NODE, "negative", "is read together with positive (the ControlNets of each CFG side)",
                              "connect the positive CONDITIONING too, or disconnect negative")
        cond = (read_conditioning(positive, negative, NODE, control_net is not None) if positive is not None else
                Conditioning(context=inversion.cond.detach().cpu().float()[None]))
        family = FAMILIES[model_family(model, NODE, "model")]
        unet_cfg = getattr(getattr(getattr(model, "model", None), "model_config", None), "unet_config", {}) or {}
        # the family's mask layers (SD1.5, SDXL: 1/4 and 1/2 of the latent size); a UNet with fewer levels (tiny
        # test models) is read at every resolution it has
        factors = family.mask_factors if len(unet_cfg.get("channel_mult", (1, 2, 4, 4))) >= 3 else None

        def host(patched):  # the capture's patched clone, with the inversion's settings and the same conditioning
            return stage_denoiser(patched, control_net, cond, NODE, inversion=inversion, frames=frames)

        with node_errors(NODE, node_inputs(type(self))):
            maps = pipeline.capture_attention(
                model, host, plain_fields(inversion), plain_fields(poses), positions, factors=factors,
                window_size=int(window_size), capture_steps=int(capture_steps), callback=ComfyProgress(),
                attention_fn=host_attention())
        with node_errors(NODE, {"source_mask": "source_mask", "threshold": "threshold", "dilate": "dilate"}):
            masks = pipeline.build_masks(maps, size=image_hw, latent_size=latent_hw, threshold=float(threshold),
                                         dilate=int(dilate), prior=prior,
                                         source_mask=plain(source_mask))
        heat = F.interpolate(maps[:, None], size=image_hw, mode="bilinear", align_corners=False)[:, 0]
        return (plain(masks.contiguous()), _overlay(heat, masks))
