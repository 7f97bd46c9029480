"""PATA Align node: align a target pose sequence to the source character and render it for ControlNet."""
from __future__ import annotations

import logging

import numpy as np

from ..pipeline import FULL
from ._common import CATEGORY, input_error, node_errors

logger = logging.getLogger(__name__)

DISPLAY_NAME = "PATA Align"
MODES = ("similarity", "retarget")


def _scale_parts(parts: dict, sx: float, sy: float) -> dict:
    out = {}
    for key, arr in parts.items():
        if arr is None:
            out[key] = None
            continue
        arr = np.array(arr, dtype=np.float64)
        arr[..., 0] *= sx
        arr[..., 1] *= sy
        out[key] = arr
    return out


class PoseAnimatePATAAlign:
    """Pose-aware target alignment (PATA) of a pose sequence to the source character."""

    DESCRIPTION = ("Aligns a target pose sequence to the character of the source image: one similarity "
                   "transform (scale + position) for the whole sequence, optional bone-length retargeting to "
                   "the source body, temporal repair of bad detections, and smooth transition frames from the "
                   "source pose to the first target pose. Frame 0 is the source pose, then the transition "
                   "frames, then the aligned targets; the IMAGE output is rendered for an OpenPose ControlNet.")
    CATEGORY = f"{CATEGORY}/Pose"
    FUNCTION = "align"
    RETURN_TYPES = ("POSE_KEYPOINT", "IMAGE", "INT")
    RETURN_NAMES = ("aligned_pose", "pose_images", "frame_count")
    OUTPUT_TOOLTIPS = (
        "The aligned sequence as POSE_KEYPOINT (pixel coordinates of the output canvas): source, transition, "
        "targets.",
        "OpenPose renderings of every frame (frame 0 = source pose), for Pose-Aware Inversion (image 0) and "
        "Pose Embedding Optimize (the whole batch).",
        "Number of frames N + 1 = 1 + transition frames + target frames.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "source_pose": ("POSE_KEYPOINT", {"tooltip": "Pose of the character in the source image, e.g. "
                                                             "from DWPose Estimator on that image (its first "
                                                             "frame is used)."}),
                "target_pose": ("POSE_KEYPOINT", {"tooltip": "The pose sequence to follow, from Load Pose "
                                                             "Sequence or a pose estimator run on a video."}),
                "transition_frames": ("INT", {"default": FULL.transition_frames, "min": 0, "max": 120,
                                              "tooltip": "Frames inserted between the source pose and the "
                                                         "first target pose (interpolated bone angles, "
                                                         "ease-in-out)."}),
                "mode": (list(MODES), {"default": FULL.pata_mode,
                                       "tooltip": "similarity: scale and move the targets as a whole to the "
                                                  "source character. retarget: also give every bone the "
                                                  "source character's length (keeps its proportions)."}),
                "repair": ("BOOLEAN", {"default": FULL.repair,
                                       "tooltip": "Repair the target detections: fill short gaps, reject "
                                                  "single-frame jumps, fix left/right swaps (a turn to the "
                                                  "back is kept), light smoothing. Its thresholds follow the "
                                                  "sequence's own motion, so clean motion passes through at "
                                                  "any frame count."}),
                "width": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                                  "tooltip": "Width of the output canvas in pixels; 0 = the source pose's "
                                             "canvas. Use your source image's width."}),
                "height": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                                   "tooltip": "Height of the output canvas in pixels; 0 = the source pose's "
                                              "canvas. Use your source image's height."}),
            },
            "optional": {
                "draw_hands_and_face": ("BOOLEAN", {"default": True,
                                                    "tooltip": "Also draw hand and face keypoints when the "
                                                               "poses have them."}),
            },
        }

    def align(self, source_pose, target_pose, transition_frames, mode, repair, width, height,
              draw_hands_and_face=True):
        import torch

        from .. import pata, pipeline

        node = DISPLAY_NAME
        if mode not in MODES:
            raise input_error(node, "mode", f"unknown mode {mode!r}", f"choose one of {', '.join(MODES)}")
        if transition_frames < 0:
            raise input_error(node, "transition_frames", "must be 0 or more", "set 0 for no transition")
        if width < 0 or height < 0:
            raise input_error(node, "width/height", "sizes must be positive, or 0 for the source canvas",
                              "set the size of your source image")
        with node_errors(node, {"source": "source_pose", "target": "target_pose"}):
            src_seq, src_w, src_h, src_parts = pata.from_pose_keypoint(source_pose, "source_pose", with_parts=True)
            tgt_seq, _, _, tgt_parts = pata.from_pose_keypoint(target_pose, "target_pose", with_parts=True)
            if len(src_seq) > 1:
                logger.info("%s: source_pose holds %d frames; using the first as the source pose", node,
                            len(src_seq))
            src_parts = {k: None if v is None else v[:1] for k, v in src_parts.items()}
            body, parts = pipeline.align_poses(src_seq[0], tgt_seq, transition_frames=int(transition_frames),
                                               mode=mode, repair=bool(repair), source_parts=src_parts,
                                               target_parts=tgt_parts)
        out_w = int(width) or int(round(src_w))
        out_h = int(height) or int(round(src_h))
        sx, sy = out_w / src_w, out_h / src_h
        if sx != 1.0 or sy != 1.0:
            body = body.copy()
            body[..., 0] *= sx
            body[..., 1] *= sy
            parts = _scale_parts(parts, sx, sy)
        with node_errors(node):
            images = pata.render_pose(body, out_w, out_h, parts if draw_hands_and_face else None)
            keypoints = pata.to_pose_keypoint(body, out_w, out_h, parts)
        logger.info("%s: %d frames (1 source + %d transition + %d targets), %dx%d, mode %s", node, len(body),
                    transition_frames, len(tgt_seq), out_w, out_h, mode)
        return keypoints, torch.from_numpy(images), len(body)
