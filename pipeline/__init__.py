"""The PoseAnimate recipe, once: the PACM stages and the named steps around them, above the engine layers
(``pata``, ``attention``, ``pacm``), shared by the ComfyUI nodes and the StickWorld benchmark, with the contracts they
run on, the values they hand on, the model families they know and the settings that ship.

    stages     invert, optimise, capture_attention, sample: one function per PACM stage  (pipeline.stages)
    steps      check_subject, check_pose_canvas, check_schedule, check_uncond_pose, sample_poses, align_poses,
               body_prior, hold_masks, build_masks, check_masks, make_dca, patch_model  (pipeline.steps)
    runner     prepare, Stage, StageHost, MemoryPolicy, MEMORY: checks, memory and loading of a stage
               (pipeline.runner)
    types      StagedInversion, PACMEmbeddings, ControlSettings: POSEANIMATE_INVERSION / _EMBEDDINGS  (pipeline.types)
    families   ModelFamily, FAMILIES, SD15, SDXL: one profile per model family  (pipeline.families)
    contract   Denoiser, PatchableModel, PoseAnimateOptions, check_poseanimate_options  (pipeline.contract)
    defaults   Recipe, FULL, FAST, FULL_SDXL, SCHEDULES  (pipeline.defaults)
    errors     argument_error, split_argument, input_message, node_message  (pipeline.errors)

The pipeline may import the three engine layers; they never import it. It never imports ComfyUI, ``nodes/``,
``testing/`` or ``stickworld/``.
"""
from .contract import MGDM_MODES, Denoiser, PatchableModel, PoseAnimateOptions, check_poseanimate_options
from .defaults import FAST, FULL, FULL_SDXL, MASK_SOURCES, NODE_DEFAULTS, SCHEDULES, Recipe, Schedule
from .errors import argument_error, input_message, node_message, split_argument
from .families import FAMILIES, SD15, SDXL, ModelFamily
from .runner import MEMORY, MemoryPolicy, Stage, StageHost, prepare
from .stages import capture_attention, invert, optimise, sample
from .steps import (UNCOND_POSES, align_poses, body_prior, build_masks, check_masks, check_pose_canvas,
                    check_schedule, check_subject, check_uncond_pose, hold_masks, hold_masks_from_images, HOLD_SOURCES,
                    make_dca, patch_model, sample_poses)
from .types import ControlSettings, PACMEmbeddings, StagedInversion

__all__ = [
    "FAST", "FULL", "FULL_SDXL", "MASK_SOURCES", "NODE_DEFAULTS", "MGDM_MODES", "SCHEDULES", "Schedule", "Recipe",
    "Denoiser", "PatchableModel", "PoseAnimateOptions", "check_poseanimate_options",
    "argument_error", "input_message", "node_message", "split_argument",
    "FAMILIES", "SD15", "SDXL", "ModelFamily",
    "MEMORY", "MemoryPolicy", "Stage", "StageHost", "prepare",
    "capture_attention", "invert", "optimise", "sample",
    "UNCOND_POSES", "align_poses", "body_prior", "build_masks", "check_masks", "check_pose_canvas", "check_schedule",
    "check_subject", "check_uncond_pose", "hold_masks", "hold_masks_from_images", "HOLD_SOURCES", "make_dca", "patch_model", "sample_poses",
    "ControlSettings", "PACMEmbeddings", "StagedInversion",
]
