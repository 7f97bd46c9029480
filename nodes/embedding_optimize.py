"""Pose Embedding Optimize node: per target pose, optimise the unconditional embeddings so that each frame
keeps the source's appearance (PACM stage 3, the paper's Alg. 1), all frames batched."""
from __future__ import annotations

import logging

from ..pipeline import NODE_DEFAULTS, SCHEDULES
from ._common import CATEGORY, node_errors, node_inputs
from .host.stages import NEGATIVE_TOOLTIP, check_inversion
from .host.types import image_to_hints

log = logging.getLogger(__name__)

DISPLAY_NAME = "Pose Embedding Optimize"
SCHEDULE_TOOLTIP = "How the embeddings are optimised at each step. " + " ".join(
    f"'{s.name}': {s.tooltip}." for s in SCHEDULES.values())


class PoseAnimatePoseEmbeddingOptimize:
    """PACM stage 3 over the user's MODEL and CONTROL_NET."""

    DESCRIPTION = ("For every target pose, starts from the source's inversion and optimises that frame's "
                   "unconditional embeddings step by step so that sampling under the new pose stays close to "
                   "the source (pose-aware embedding optimisation). Frames run together in micro-batches; "
                   "the result is the same as optimising each frame alone.")
    CATEGORY = f"{CATEGORY}/PACM"
    FUNCTION = "optimize"
    RETURN_TYPES = ("POSEANIMATE_EMBEDDINGS",)
    RETURN_NAMES = ("embeddings",)
    OUTPUT_TOOLTIPS = ("Per-frame, per-step embeddings for the target poses, together with the inversion "
                       "(everything Sample Frames needs).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "inversion": ("POSEANIMATE_INVERSION", {"tooltip": "Output of Pose-Aware Inversion."}),
                "model": ("MODEL", {"tooltip": "The same SD1.5 or SDXL model as for the inversion (unpatched)."}),
                "control_net": ("CONTROL_NET", {"tooltip": "The same OpenPose ControlNet as for the inversion; "
                                                           "its strength/start/end come from the inversion."}),
                "positive": ("CONDITIONING", {"tooltip": "The same prompt as for the inversion."}),
                "poses": ("IMAGE", {"tooltip": "Pose images from PATA Align: image 0 is the source pose, "
                                               "images 1..N are the target frames."}),
                "inner_steps": ("INT", {"default": NODE_DEFAULTS.inner_steps, "min": 0, "max": 100,
                                        "tooltip": "Adam iterations per step and frame (1 with schedule 'algorithm "
                                                   "1': one gradient step per step). 0 = no optimisation: every "
                                                   "frame keeps the source's embeddings; 5 with 'inner iterations' "
                                                   "= the paper (workflow 'full'). The defaults of this node are "
                                                   "the fast preset's (workflow 'fast')."}),
                "frames_per_batch": ("INT", {"default": 0, "min": 0, "max": 4096,
                                             "tooltip": "Frames optimised together; 0 = choose from free GPU "
                                                        "memory. Lower it if you run out of memory."}),
            },
            "optional": {
                "schedule": (list(SCHEDULES), {"default": NODE_DEFAULTS.schedule, "tooltip": SCHEDULE_TOOLTIP}),
                "optimize_steps": ("INT", {"default": NODE_DEFAULTS.optimize_steps, "min": 0, "max": 1000, "tooltip":
                                   "Optimise only the first (noisiest) steps, which set pose and layout, and reuse "
                                   "the last embedding for the rest; 0 = every step. Needs inner_steps >= 1."}),
                "warm_start": ("BOOLEAN", {"default": NODE_DEFAULTS.warm_start, "tooltip":
                               "Start each frame from the previous frame's optimised embeddings instead of the "
                               "source's. Frames are then optimised in order: with frames_per_batch 0 it uses "
                               "one frame per batch. Needs inner_steps >= 1."}),
                "adaptive": ("FLOAT", {"default": NODE_DEFAULTS.adaptive, "min": 0.0, "max": 0.99, "step": 0.01, "tooltip":
                             "Stop a frame's iterations at a step once one lowers its loss by less than this "
                             "fraction (needs inner_steps >= 1 and schedule 'inner iterations'); 0 = off (only the "
                             "early_stop threshold of the inversion applies)."}),
                "keyframe_interval": ("INT", {"default": NODE_DEFAULTS.keyframe_interval, "min": 1, "max": 64, "tooltip":
                                      "Optimise every k-th frame (and the last) and give each frame between the "
                                      "embeddings interpolated from its neighbours (the source counts as the first): "
                                      "about 1/k of the optimisation's model passes. 1 = every frame. Needs "
                                      "inner_steps >= 1."}),
                "negative": ("CONDITIONING", {"tooltip": NEGATIVE_TOOLTIP}),
            },
        }

    def optimize(self, inversion, model, control_net, positive, poses, inner_steps, frames_per_batch,
                 schedule=NODE_DEFAULTS.schedule, optimize_steps=NODE_DEFAULTS.optimize_steps,
                 warm_start=NODE_DEFAULTS.warm_start, adaptive=NODE_DEFAULTS.adaptive,
                 keyframe_interval=NODE_DEFAULTS.keyframe_interval, negative=None):
        import comfy.model_management as mm

        from .. import pipeline
        from .host import ComfyProgress, plain, plain_fields, read_conditioning
        from .host.stages import stage_denoiser

        node = DISPLAY_NAME
        inversion = check_inversion(inversion, node)
        hints = image_to_hints(poses, node, "poses", min_count=2)
        cond = read_conditioning(positive, negative, node, pose_controlnet=control_net is not None)
        inputs = node_inputs(type(self))
        with node_errors(node, inputs):
            pipeline.check_pose_canvas([8 * v for v in inversion.trajectory.shape[-2:]], hints.shape[-2:], "poses")
        src = inversion.hint
        if src is not None and (src.shape[-2:] != hints.shape[-2:]
                                or (src.float().cpu() - hints[0]).abs().mean() > 0.05):
            log.warning("%s: poses[0] differs from the inversion's source pose; PATA Align puts the source "
                        "pose first, and frames 1..N are used as targets", node)
        den = stage_denoiser(model, control_net, cond, node, inversion=inversion, frames=hints.shape[0])
        with node_errors(node, inputs):
            poses_emb = pipeline.optimise(
                den, plain_fields(inversion.to(den.device)), plain(hints[1:]), inner_steps=int(inner_steps),
                schedule=schedule, optimize_steps=int(optimize_steps), warm_start=bool(warm_start),
                adaptive=float(adaptive), keyframe_interval=int(keyframe_interval),
                frames_per_batch=int(frames_per_batch), callback=ComfyProgress())
        return (pipeline.PACMEmbeddings(inversion=inversion, poses=poses_emb.to(mm.intermediate_device())),)
