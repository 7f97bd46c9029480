"""Pose-Aware Inversion node: DDIM-invert the source latent under its pose, then optimise one unconditional
embedding per step so that CFG sampling reproduces the source (PACM stages 1 and 2)."""
from __future__ import annotations

import logging

from ..pipeline import NODE_DEFAULTS
from ._common import CATEGORY, node_errors, node_inputs
from .host.stages import NEGATIVE_TOOLTIP, control_inputs
from .host.types import image_to_hints, latent_samples

log = logging.getLogger(__name__)

DISPLAY_NAME = "Pose-Aware Inversion"


class PoseAnimatePoseAwareInversion:
    """PACM stages 1 + 2 on the user's SD1.5 or SDXL-family MODEL and OpenPose CONTROL_NET."""

    DESCRIPTION = ("Inverts the source image's latent with DDIM under its own pose (guidance 1), then runs "
                   "pose-aware null-text inversion: per step, a few Adam iterations on the unconditional "
                   "embedding so that CFG sampling with the pose ControlNet lands back on the source. Outputs "
                   "the inversion for Pose Embedding Optimize / Sample Frames and a reconstruction to preview.")
    CATEGORY = f"{CATEGORY}/PACM"
    FUNCTION = "invert"
    RETURN_TYPES = ("POSEANIMATE_INVERSION", "LATENT")
    RETURN_NAMES = ("inversion", "reconstruction")
    OUTPUT_TOOLTIPS = (
        "Inverted trajectory Z_0..Z_T, per-step source embeddings, sampling sigmas and the source pose.",
        "The source re-sampled from Z_T with CFG and the optimised embeddings (decode it to check the "
        "inversion: it should look like the source).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.5 or SDXL-family model (SDXL, Illustrious, Pony, NoobAI; LoRAs "
                                               "welcome), detected from the model. Use the unpatched model here, "
                                               "not the output of DCA Patch Model."}),
                "control_net": ("CONTROL_NET", {"tooltip": "An OpenPose ControlNet of the model's family "
                                                           "(SD1.5: control_v11p_sd15_openpose; SDXL: e.g. xinsir "
                                                           "controlnet-openpose-sdxl-1.0)."}),
                "latent": ("LATENT", {"tooltip": "The source image encoded with 'VAE Encode' (one image)."}),
                "positive": ("CONDITIONING", {"tooltip": "The prompt describing the source image "
                                                         "('CLIP Text Encode')."}),
                "source_pose": ("IMAGE", {"tooltip": "The source image's pose, rendered as an OpenPose image. "
                                                     "With a batch, image 0 is used (PATA Align puts the "
                                                     "source pose first)."}),
                "steps": ("INT", {"default": NODE_DEFAULTS.steps, "min": 1, "max": 1000,
                                  "tooltip": "DDIM steps (ComfyUI 'ddim_uniform' schedule); every later PACM "
                                             "stage uses the same timesteps."}),
                "cfg": ("FLOAT", {"default": NODE_DEFAULTS.cfg, "min": 1.0, "max": 30.0, "step": 0.1,
                                  "tooltip": "Classifier-free guidance scale the embeddings are optimised for "
                                             "and that sampling will use."}),
                "inner_steps": ("INT", {"default": NODE_DEFAULTS.inversion_inner_steps, "min": 0, "max": 100,
                                        "tooltip": "Adam iterations per step on the unconditional embedding. "
                                                   "0 = negative-prompt inversion: no optimisation, the prompt in "
                                                   "the unconditional slot; 5 = the paper (workflow 'full'). The "
                                                   "defaults of this node are the fast preset's (workflow 'fast')."}),
                "early_stop": ("FLOAT", {"default": NODE_DEFAULTS.early_stop, "min": 0.0, "max": 1.0, "step": 1e-6,
                                         "tooltip": "Stop a step's iterations once the loss is under "
                                                    "early_stop + step * 2e-5 (null-text inversion's rule). "
                                                    "Needs inner_steps >= 1."}),
                **control_inputs(),
            },
            "optional": {
                "negative": ("CONDITIONING", {"tooltip": NEGATIVE_TOOLTIP}),
            },
        }

    def invert(self, model, control_net, latent, positive, source_pose, steps, cfg, inner_steps, early_stop,
               control_strength=1.0, control_start=0.0, control_end=1.0, negative=None):
        import comfy.model_management as mm

        from .. import pipeline
        from .host import ComfyProgress, plain, read_conditioning
        from .host.stages import stage_denoiser

        node = DISPLAY_NAME
        samples = latent_samples(latent, node, "latent")
        hints = image_to_hints(source_pose, node, "source_pose")
        if hints.shape[0] > 1:
            log.info("%s: source_pose holds %d images; using image 0 as the source pose", node, hints.shape[0])
        cond = read_conditioning(positive, negative, node, pose_controlnet=control_net is not None)
        inputs = node_inputs(type(self))
        with node_errors(node, inputs):
            pipeline.check_pose_canvas([8 * v for v in samples.shape[-2:]], hints.shape[-2:], "source_pose")
            control = pipeline.ControlSettings(float(control_strength), float(control_start), float(control_end))
        den = stage_denoiser(model, control_net, cond, node, control=control)
        z0 = plain(den.model.process_latent_in(samples.to(den.device, den.dtype)))
        with node_errors(node, inputs):
            inv = pipeline.invert(den, z0, plain(cond.context), plain(hints[:1]), control=control, steps=int(steps),
                                  cfg=float(cfg), inner_steps=int(inner_steps), early_stop=float(early_stop),
                                  extra_cond=den.adm, uncond_extra_cond=den.uncond_adm, callback=ComfyProgress())
        out = den.model.process_latent_out(inv.reconstruction[None]).to(mm.intermediate_device())
        return (inv.to(mm.intermediate_device()), {"samples": out})
