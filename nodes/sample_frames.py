"""Sample Frames node: DDIM-sample the source frame and every target frame from Z_T with their pose-aware
embeddings, through the (DCA-patched) MODEL, in windows (PACM stage 4)."""
from __future__ import annotations

from ..pipeline import NODE_DEFAULTS, UNCOND_POSES
from ._common import CATEGORY, input_error, node_errors, node_inputs
from .host.stages import NEGATIVE_TOOLTIP, check_embeddings

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
                               "negative-prompt inversion; strong at high CFG). Needs cfg above 1 and embeddings "
                               "made with inner_steps 0."}),
                "hold_background": ("BOOLEAN", {
                    "default": NODE_DEFAULTS.hold_background,
                    "tooltip": "Hold the background from the source (a static camera): outside the source's and "
                               "each frame's body, every frame follows the source's inversion at every step, so the "
                               "background stays the source's. The bodies are drawn from pose_keypoint's skeletons "
                               "when it is connected, else from the pose images (a little wider)."}),
                "pose_keypoint": ("POSE_KEYPOINT", {
                    "tooltip": "The frames' poses (PATA Align's 'aligned_pose', source first): hold_background draws "
                               "the bodies from them."}),
                "hold_dilate": ("INT", {
                    "default": NODE_DEFAULTS.hold_dilate, "min": 0, "max": 64,
                    "tooltip": "Latent pixels (8 image pixels each) the held background keeps clear of the bodies, "
                               "for hair and clothes beyond the skeleton's body. Needs hold_background."}),
                "negative": ("CONDITIONING", {"tooltip": NEGATIVE_TOOLTIP}),
            },
        }

    def sample(self, model, control_net, positive, embeddings, window_size=0, masks=None,
               uncond_pose=NODE_DEFAULTS.uncond_pose, hold_background=NODE_DEFAULTS.hold_background,
               pose_keypoint=None, hold_dilate=NODE_DEFAULTS.hold_dilate, negative=None):
        import comfy.model_management as mm

        from .. import pata, pipeline
        from ..attention import DCAPatch
        from .host import ComfyProgress, plain, plain_fields, read_conditioning
        from .host.stages import stage_denoiser

        node = DISPLAY_NAME
        check_embeddings(embeddings, node)
        inversion, poses = embeddings.inversion, embeddings.poses
        latent_hw = tuple(inversion.trajectory.shape[-2:])
        cond = read_conditioning(positive, negative, node, pose_controlnet=control_net is not None)
        inputs = node_inputs(type(self))
        if masks is not None and not any(isinstance(fn, DCAPatch) for fn in _attn1_patches(model)):
            raise input_error(node, "masks", "this MODEL has no DCA patch, so the masks would do nothing (they steer "
                              "the DCA patch's MGDM)", "connect the MODEL from DCA Patch Model, or disconnect masks")
        hold = None
        with node_errors(node, inputs):
            if not hold_background and (pose_keypoint is not None or int(hold_dilate) != NODE_DEFAULTS.hold_dilate):
                raise ValueError(f"{'pose_keypoint' if pose_keypoint is not None else 'hold_dilate'}: is used only "
                                 "with hold_background. Fix: turn hold_background on, or disconnect it / set it back "
                                 f"to {NODE_DEFAULTS.hold_dilate}")
            if hold_background and pose_keypoint is None:  # the bodies from the embeddings' pose images
                if inversion.hint is None or poses.hints is None:
                    raise ValueError("hold_background: needs the frames' poses (pose images or pose_keypoint). Fix: "
                                     "run the PACM nodes with the pose ControlNet's images, or connect PATA Align's "
                                     "'aligned_pose' to pose_keypoint")
                hold = pipeline.hold_masks_from_images(poses.hints.float().cpu(), latent_hw, dilate=int(hold_dilate),
                                                       source=inversion.hint.float().cpu())
            elif hold_background:
                seq, width, height = pata.from_pose_keypoint(pose_keypoint, "pose_keypoint")
                if len(seq) != embeddings.frames:
                    raise ValueError(f"pose_keypoint: {len(seq)} poses for {embeddings.frames} frames. Fix: connect the "
                                     "'aligned_pose' output of the PATA Align that made these frames' poses")
                canvas = (round(height), round(width))
                pipeline.check_pose_canvas((latent_hw[0] * 8, latent_hw[1] * 8), canvas, "pose_keypoint")
                hold = pipeline.hold_masks(seq, canvas, latent_hw, dilate=int(hold_dilate))
        den = stage_denoiser(model, control_net, cond, node, inversion=inversion,
                             frames=embeddings.frames)
        with node_errors(node, inputs):
            out = pipeline.sample(den, plain_fields(inversion.to(den.device)), plain_fields(poses.to(den.device)),
                                  window_size=int(window_size), masks=plain(masks), uncond_pose=uncond_pose,
                                  hold_masks=hold, callback=ComfyProgress())
        out = den.model.process_latent_out(out)
        return ({"samples": out.to(mm.intermediate_device())},)


def _attn1_patches(model) -> list:
    """The self-attention replace patches of a MODEL (where DCA Patch Model puts its patch)."""
    to = (getattr(model, "model_options", None) or {}).get("transformer_options", {})
    return list(((to.get("patches_replace") or {}).get("attn1") or {}).values())
