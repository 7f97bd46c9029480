"""PACM engine (pure torch): DDIM inversion, pose-aware inversion, pose-aware embedding optimisation and frame
sampling for PoseAnimate, in ComfyUI's sigma space (x = x0 + sigma * eps; the model returns x0).

Public API: ``ddim_invert``, ``pose_aware_inversion``, ``optimize_pose_embeddings``, ``sample_frames``,
the result types ``InversionResult`` / ``PoseEmbeddings``, the evaluation counter ``EvalCount`` and the schedule helper ``ddim_uniform_sigmas``.
See ``docs/pacm.md``. The model is reached only through the ``Denoiser`` protocol of DEVELOPERS.md.
"""
from .engine import (UNCOND_POSES, ddim_invert, keyframe_indices, optimize_pose_embeddings, pose_aware_inversion,
                     sample_frames)
from .results import EvalCount, InversionResult, PoseEmbeddings
from .schedule import ddim_uniform_sigmas, sd15_sigma_table

__all__ = [
    "ddim_invert",
    "pose_aware_inversion",
    "optimize_pose_embeddings",
    "sample_frames",
    "keyframe_indices",
    "UNCOND_POSES",
    "InversionResult",
    "PoseEmbeddings",
    "EvalCount",
    "ddim_uniform_sigmas",
    "sd15_sigma_table",
]
