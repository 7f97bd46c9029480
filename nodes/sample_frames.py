"""Sample Frames node: DDIM-sample the source frame and every target frame from Z_T with their pose-aware
embeddings, through the (DCA-patched) MODEL, in windows (PACM stage 4)."""
from __future__ import annotations

from ..pipeline import NODE_DEFAULTS, UNCOND_POSES
from ._common import CATEGORY, node_errors
from .host.stages import inversion_denoiser
from .host.types import check_embeddings, check_same_prompt

DISPLAY_NAME = "Sample Frames"


class PoseAnimateSampleFrames:
    """PACM stage 4 over the user's (DCA-patched) MODEL and CONTROL_NET."""

    DESCRIPTION = ("Samples every frame from the inverted noise Z_T with its pose and its optimised "
                   "embeddings, on the same timesteps as the inversion. Frame 0 is the source "
                   "(reconstructed); frames 1..N follow the target poses. Connect the MODEL from DCA Patch "
                   "Model so frames attend to the source and the previous frame. Long sequences run in "
                   "windows with the same result and flat memory.")
    CATEGORY = f"{CATEGORY}/PACM"
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("N + 1 latents, frame 0 = source, ready for 'VAE Decode'.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The SD1.5 or SDXL model patched by DCA Patch Model (the unpatched model "
                                               "also works, without cross-frame attention)."}),
                "control_net": ("CONTROL_NET", {"tooltip": "The same OpenPose ControlNet as for the inversion; "
                                                           "its strength/start/end come from the inversion."}),
                "positive": ("CONDITIONING", {"tooltip": "The same prompt as for the inversion."}),
                "embeddings": ("POSEANIMATE_EMBEDDINGS", {"tooltip": "Output of Pose Embedding Optimize."}),
                "window_size": ("INT", {"default": 0, "min": 0, "max": 4096,
                                        "tooltip": "Frames per model call; 0 = auto: as many frames per call "
                                                   "as fit in free memory. Smaller windows use less memory "
                                                   "and give the same frames."}),
            },
            "optional": {
                "masks": ("MASK", {"tooltip": "Optional character masks, one per frame (source first), e.g. "
                                              "from Cross-Attention Mask Extract; they override the DCA "
                                              "patch's own masks."}),
                "uncond_pose": (list(UNCOND_POSES), {
                    "default": NODE_DEFAULTS.uncond_pose,
                    "tooltip": "The pose the unconditional (CFG) rows see. 'target': each frame's own pose, as "
                               "ComfyUI applies a ControlNet. 'source': the source's pose for every frame, so CFG "
                               "pushes each frame from the source's pose towards its own (keeps guidance with "
                               "negative-prompt inversion; strong at high CFG). Needs cfg above 1."}),
            },
        }

    def sample(self, model, control_net, positive, embeddings, window_size=0, masks=None,
               uncond_pose=NODE_DEFAULTS.uncond_pose):
        import comfy.model_management as mm

        from .. import pipeline
        from ..pipeline.runner import Stage, run_stage
        from .host import ComfyProgress, conditioning_context, conditioning_control, plain, plain_fields

        node = DISPLAY_NAME
        check_embeddings(embeddings, node)
        inversion, poses = embeddings.inversion, embeddings.poses
        frames = embeddings.frames
        ctx = conditioning_context(positive, node, "positive")
        check_same_prompt(ctx, inversion.cond, node, "positive")
        with node_errors(node, {"masks": "masks", "uncond_pose": "uncond_pose"}):
            mask = None if masks is None else pipeline.check_masks(masks, frames, "masks")
            pipeline.check_uncond_pose(uncond_pose, poses.cfg, inversion.hint is not None)
        den = inversion_denoiser(inversion, model, control_net, node, conditioning_control(positive))
        stage = Stage("sample", (1,) + tuple(inversion.trajectory.shape[1:]), frames=frames, samples_per_frame=2,
                      frames_per_call=int(window_size))

        def body(window):
            out = pipeline.sample(den, plain_fields(inversion.to(den.device)), plain_fields(poses.to(den.device)),
                                  window=window, masks=plain(mask), uncond_pose=uncond_pose, callback=ComfyProgress())
            return den.model.process_latent_out(out)

        with node_errors(node):
            out = run_stage(den, stage, body)
        return ({"samples": out.to(mm.intermediate_device())},)
