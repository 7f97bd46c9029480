"""PATA: pose-aware target alignment for PoseAnimate (pure numpy + OpenCV).

Poses are OpenPose 18-keypoint bodies ``(18, 3)`` of ``(x, y, confidence)`` in pixels; sequences are
``(F, 18, 3)``; confidence 0 means missing. The public functions below keep their names and argument
orders for outside scripts.
"""
from .align import align_sequence, estimate_similarity, retarget
from .keypoints import from_pose_keypoint, load_pose_json, save_pose_json, to_pose_keypoint
from .prior import body_prior
from .render import COLORS, LIMB_SEQ, render_pose
from .repair import repair_sequence
from .sequence import build_sequence, build_sequence_with_parts
from .skeleton import BONES, KEYPOINT_NAMES, body_height, body_scale
from .transition import transition

__all__ = [
    "align_sequence", "transition", "build_sequence", "render_pose", "from_pose_keypoint", "to_pose_keypoint",
    "build_sequence_with_parts", "estimate_similarity", "retarget", "repair_sequence", "load_pose_json",
    "save_pose_json",
    "BONES", "KEYPOINT_NAMES", "LIMB_SEQ", "COLORS", "body_height", "body_scale", "body_prior",
]
