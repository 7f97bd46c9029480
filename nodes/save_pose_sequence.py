"""Save Pose Sequence node: POSE_KEYPOINT to an OpenPose / DWPose JSON file in ComfyUI's output folder."""
from __future__ import annotations

import os

from ._common import CATEGORY, input_error, node_errors

DISPLAY_NAME = "Save Pose Sequence"


def _output_file(filename_prefix: str) -> tuple[str, str, str]:
    """(full path, file name, subfolder) of the next ``<prefix>_<counter>_.json`` in ComfyUI's output folder,
    numbered as ComfyUI's Save Image numbers its files."""
    import folder_paths

    out_dir = folder_paths.get_output_directory()
    try:
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, out_dir)
    except Exception:  # ComfyUI raises a bare Exception for a prefix that leaves the output folder
        raise input_error(DISPLAY_NAME, "filename_prefix", f"{filename_prefix!r} points outside ComfyUI's output "
                          "folder", "use a relative name such as PoseAnimate/pose") from None
    file = f"{name}_{counter:05}_.json"
    return os.path.join(folder, file), file, subfolder


class PoseAnimateSavePoseSequence:
    """Writes a pose sequence (POSE_KEYPOINT) to a JSON file that Load Pose Sequence reads back."""

    DESCRIPTION = ("Saves a pose sequence (POSE_KEYPOINT, e.g. PATA Align's aligned_pose or a DWPose Estimator "
                   "output) as OpenPose/DWPose JSON (a list of frames, each {people, canvas_width, canvas_height}) "
                   "in ComfyUI's output folder, numbered like Save Image's files. Put the file in the input folder "
                   "to load it again with Load Pose Sequence, or use it in other pose tools.")
    CATEGORY = f"{CATEGORY}/Pose"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    RETURN_NAMES = ()
    OUTPUT_TOOLTIPS = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pose": ("POSE_KEYPOINT", {"tooltip": "The pose sequence to save (one entry per frame)."}),
                "filename_prefix": ("STRING", {"default": "PoseAnimate/pose", "tooltip":
                                    "File name prefix inside ComfyUI's output folder; may name subfolders. "
                                    "The file becomes <prefix>_00001_.json, counting up like Save Image."}),
            },
        }

    def save(self, pose, filename_prefix="PoseAnimate/pose"):
        from .. import pata

        if not isinstance(filename_prefix, str) or not filename_prefix.strip():
            raise input_error(DISPLAY_NAME, "filename_prefix", "is empty", "give a name such as PoseAnimate/pose")
        path, file, subfolder = _output_file(filename_prefix.strip())
        with node_errors(DISPLAY_NAME, {"pose": "pose"}):
            pata.save_pose_json(pose, path, "pose")
        return {"ui": {"pose_files": [{"filename": file, "subfolder": subfolder, "type": "output"}]}}
