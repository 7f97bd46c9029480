"""Load Pose Sequence node: a POSE_KEYPOINT / OpenPose JSON file from ComfyUI's input folder or the bundled
examples."""
from __future__ import annotations

import hashlib
import os
import pathlib

from ._common import CATEGORY, input_error, node_errors

DISPLAY_NAME = "Load Pose Sequence"
EXAMPLES_DIR = pathlib.Path(__file__).resolve().parents[1] / "assets" / "poses"
EXAMPLE_PREFIX = "examples/"


def _input_dir() -> str | None:
    try:
        import folder_paths
    except ImportError:  # outside ComfyUI: only the bundled examples are listed
        return None
    return folder_paths.get_input_directory()


def _choices() -> list[str]:
    files = []
    root = _input_dir()
    if root and os.path.isdir(root):
        for dirpath, _, names in os.walk(root):
            for n in names:
                if n.lower().endswith(".json"):
                    files.append(os.path.relpath(os.path.join(dirpath, n), root).replace(os.sep, "/"))
    files.sort()
    examples = sorted(EXAMPLE_PREFIX + p.name for p in EXAMPLES_DIR.glob("*.json"))
    return files + examples


def resolve_pose_file(pose_file: str) -> str:
    """Path of a listed pose file: ``examples/<name>`` is bundled, anything else is under the input folder."""
    if pose_file.startswith(EXAMPLE_PREFIX):
        path = EXAMPLES_DIR / pose_file[len(EXAMPLE_PREFIX):]
        if path.parent == EXAMPLES_DIR and path.is_file():
            return str(path)
    root = _input_dir()
    if root:
        path = os.path.realpath(os.path.join(root, pose_file))
        if path.startswith(os.path.realpath(root) + os.sep) and os.path.exists(path):
            return path
    raise input_error(DISPLAY_NAME, "pose_file", f"{pose_file!r} was not found",
                      "put the JSON file in ComfyUI's input folder and refresh, or pick a bundled example")


class PoseAnimateLoadPoseSequence:
    """Loads a pose sequence (POSE_KEYPOINT) from a JSON file."""

    DESCRIPTION = ("Loads a pose sequence from a JSON file in ComfyUI's input folder, or one of the bundled "
                   "examples (examples/...): POSE_KEYPOINT JSON as written by comfyui_controlnet_aux's "
                   "pose estimators, or OpenPose JSON (one list of frames).")
    CATEGORY = f"{CATEGORY}/Pose"
    FUNCTION = "load"
    RETURN_TYPES = ("POSE_KEYPOINT", "INT")
    RETURN_NAMES = ("pose", "frame_count")
    OUTPUT_TOOLTIPS = ("The pose sequence, one frame per entry, for PATA Align's target_pose.",
                       "Number of poses output (after the frames setting).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pose_file": (_choices(), {"tooltip": "A .json file from ComfyUI's input folder, or a bundled "
                                                      "example (examples/...)."}),
            },
            "optional": {
                "frames": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip":
                           "Take this many poses evenly from the file (first and last included); 0 = every "
                           "pose. The paper animates 16 frames: 12 poses + 3 PATA transition frames + the source."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, pose_file, frames=0):
        try:
            path = resolve_pose_file(pose_file)
        except ValueError:
            return ""
        return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()

    @classmethod
    def VALIDATE_INPUTS(cls, pose_file, frames=0):
        try:
            resolve_pose_file(pose_file)
        except ValueError as exc:
            return str(exc)
        return True

    def load(self, pose_file, frames=0):
        from .. import pata, pipeline

        path = resolve_pose_file(pose_file)
        with node_errors(DISPLAY_NAME, {"frames": "frames"}):
            data = pata.load_pose_json(path, "pose_file")
            pata.from_pose_keypoint(data, "pose_file")  # validate now, with this node's name in any error
            data = [data[i] for i in pipeline.sample_poses(list(range(len(data))), int(frames))]
        return data, len(data)
