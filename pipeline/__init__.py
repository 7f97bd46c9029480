"""The PoseAnimate recipe, once: named steps above the engine layers (``pata``, ``attention``, ``pacm``), shared
by the ComfyUI nodes and the StickWorld benchmark, with the contracts they run on and the settings that ship.

    steps      check_subject, check_pose_canvas, sample_poses, align_poses, invert, optimise, capture_attention,
               body_prior, build_masks, check_masks, check_uncond_pose, make_dca, patch_model, sample  (pipeline.steps)
    contract   Denoiser, PatchableModel, PoseAnimateOptions, check_poseanimate_options  (pipeline.contract)
    defaults   Recipe, FULL, FAST, FULL_SDXL  (pipeline.defaults)
    errors     argument_error, split_argument, input_message, node_message  (pipeline.errors)
    runner     run_stage, Stage, StageHost, MemoryPolicy, MEMORY, ControlSettings, StagedInversion
               (pipeline.runner: one stage runner for the nodes and StickWorld)

The pipeline may import the three engine layers; they never import it. It never imports ComfyUI, ``nodes/``,
``testing/`` or ``stickworld/``.
"""
from .contract import MGDM_MODES, Denoiser, PatchableModel, PoseAnimateOptions, check_poseanimate_options
from .defaults import FAST, FULL, FULL_SDXL, MASK_SOURCES, NODE_DEFAULTS, Recipe
from .errors import argument_error, input_message, node_message, split_argument
from .runner import MEMORY, ControlSettings, MemoryPolicy, Stage, StagedInversion, StageHost, run_stage
from .steps import (SCHEDULES, align_poses, body_prior, build_masks, capture_attention, check_masks, check_schedule,
                    check_uncond_pose, UNCOND_POSES,
                    check_pose_canvas, check_subject, hold_masks, invert, make_dca, optimise, patch_model, sample, sample_poses)

__all__ = [
    "FAST", "FULL", "FULL_SDXL", "MASK_SOURCES", "NODE_DEFAULTS", "MGDM_MODES", "SCHEDULES", "Denoiser", "PatchableModel", "PoseAnimateOptions",
    "Recipe", "align_poses", "argument_error", "body_prior", "build_masks", "capture_attention", "check_masks",
    "check_pose_canvas", "check_schedule", "hold_masks", "check_uncond_pose", "UNCOND_POSES", "check_subject", "check_poseanimate_options", "input_message", "invert", "make_dca",
    "node_message", "optimise", "patch_model", "sample", "sample_poses", "split_argument",
    "MEMORY", "ControlSettings", "MemoryPolicy", "Stage", "StagedInversion", "StageHost", "run_stage",
]
