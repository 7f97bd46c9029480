"""The OpenPose 18-keypoint body: names, the one bone table, validation helpers and body scale.

A pose is an array ``(18, 3)`` of ``(x, y, confidence)`` in pixels; a sequence is ``(F, 18, 3)``.
Confidence 0 means missing (and such points are stored as ``[0, 0, 0]``).
"""
from __future__ import annotations

import numpy as np

N_BODY = 18
N_HAND = 21

KEYPOINT_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)
NOSE, NECK, R_SHOULDER, R_ELBOW, R_WRIST, L_SHOULDER, L_ELBOW, L_WRIST = range(8)
R_HIP, R_KNEE, R_ANKLE, L_HIP, L_KNEE, L_ANKLE, R_EYE, L_EYE, R_EAR, L_EAR = range(8, 18)
ROOT = NECK

# The kinematic tree rooted at the neck, as (parent, child) pairs with every parent listed before its
# children. Retargeting, transitions and repair all walk this one table.
BONES = (
    (NECK, NOSE), (NOSE, R_EYE), (R_EYE, R_EAR), (NOSE, L_EYE), (L_EYE, L_EAR),
    (NECK, R_SHOULDER), (R_SHOULDER, R_ELBOW), (R_ELBOW, R_WRIST),
    (NECK, L_SHOULDER), (L_SHOULDER, L_ELBOW), (L_ELBOW, L_WRIST),
    (NECK, R_HIP), (R_HIP, R_KNEE), (R_KNEE, R_ANKLE),
    (NECK, L_HIP), (L_HIP, L_KNEE), (L_KNEE, L_ANKLE),
)

# Left/right groups that a detector can swap as a whole: (right indices, left indices).
LR_GROUPS = (
    ((R_SHOULDER, R_ELBOW, R_WRIST), (L_SHOULDER, L_ELBOW, L_WRIST)),
    ((R_HIP, R_KNEE, R_ANKLE), (L_HIP, L_KNEE, L_ANKLE)),
    ((R_EYE, R_EAR), (L_EYE, L_EAR)),
)
FLIP = np.arange(N_BODY)
for _right, _left in LR_GROUPS:
    FLIP[list(_right)] = _left
    FLIP[list(_left)] = _right
del _right, _left


def present(pose: np.ndarray) -> np.ndarray:
    """Boolean mask of the keypoints that are there (confidence > 0), for a pose or a sequence."""
    return pose[..., 2] > 0


def as_pose(value, name: str) -> np.ndarray:
    """Validate one body pose ``(18, 3)`` (a one-frame sequence is accepted) and return a float64 copy."""
    arr = np.array(value, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != (N_BODY, 3):
        raise ValueError(
            f"{name}: expected one OpenPose body pose of shape (18, 3) as (x, y, confidence), got shape "
            f"{arr.shape}. Fix: pass a single frame of the 18-keypoint body."
        )
    _check_finite(arr, name)
    return _clean(arr)


def as_sequence(value, name: str) -> np.ndarray:
    """Validate a body sequence ``(F, 18, 3)`` (one pose is promoted to one frame); float64 copy."""
    arr = np.array(value, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (N_BODY, 3) or arr.shape[0] == 0:
        raise ValueError(
            f"{name}: expected a pose sequence of shape (frames, 18, 3) with at least one frame, got shape "
            f"{arr.shape}. Fix: pass OpenPose 18-keypoint body poses as (x, y, confidence)."
        )
    _check_finite(arr, name)
    return _clean(arr)


def _check_finite(arr: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        where = np.argwhere(bad)[0]
        frame = f"frame {where[0]}, " if arr.ndim == 3 else ""
        raise ValueError(
            f"{name}: NaN or infinite value at {frame}keypoint {where[-2]} "
            f"({KEYPOINT_NAMES[where[-2]]}). Fix: re-run pose detection, or mark the point missing as [0, 0, 0]."
        )


def _clean(arr: np.ndarray) -> np.ndarray:
    """Missing points (confidence <= 0) become exactly [0, 0, 0]."""
    missing = arr[..., 2] <= 0
    arr[missing] = 0.0
    return arr


def _dist(pose: np.ndarray, a: int, b: int) -> float | None:
    if pose[a, 2] > 0 and pose[b, 2] > 0:
        return float(np.hypot(*(pose[a, :2] - pose[b, :2])))
    return None


def mid_hip(pose: np.ndarray) -> np.ndarray | None:
    """Midpoint of the two hips, or None unless both are present."""
    if pose[R_HIP, 2] > 0 and pose[L_HIP, 2] > 0:
        return (pose[R_HIP, :2] + pose[L_HIP, :2]) / 2
    return None


def measures(pose: np.ndarray) -> dict[str, float]:
    """Named body lengths of one pose (only those measurable): torso and legs first, then fallbacks."""
    out: dict[str, float] = {}
    hip = mid_hip(pose)
    if pose[NECK, 2] > 0 and hip is not None:
        out["torso"] = float(np.hypot(*(pose[NECK, :2] - hip)))
    for key, (a, b) in {
        "right_thigh": (R_HIP, R_KNEE), "right_shin": (R_KNEE, R_ANKLE),
        "left_thigh": (L_HIP, L_KNEE), "left_shin": (L_KNEE, L_ANKLE),
        "shoulders": (R_SHOULDER, L_SHOULDER), "hips": (R_HIP, L_HIP),
        "right_upper_arm": (R_SHOULDER, R_ELBOW), "left_upper_arm": (L_SHOULDER, L_ELBOW),
        "head": (NECK, NOSE),
    }.items():
        d = _dist(pose, a, b)
        if d is not None:
            out[key] = d
    return {k: v for k, v in out.items() if v > 1e-6}


PRIMARY_MEASURES = ("torso", "right_thigh", "right_shin", "left_thigh", "left_shin")

# Rough ratios of each measure to the torso length, used to express any measure as a body scale.
_TORSO_RATIO = {
    "torso": 1.0, "right_thigh": 0.8, "left_thigh": 0.8, "right_shin": 0.8, "left_shin": 0.8,
    "shoulders": 0.6, "hips": 0.4, "right_upper_arm": 0.55, "left_upper_arm": 0.55, "head": 0.45,
}


def body_scale(sequence: np.ndarray) -> float:
    """A robust body size in pixels (about the neck-to-mid-hip length) for a pose or a sequence.

    Returns 0.0 when nothing can be measured.
    """
    seq = sequence[None] if sequence.ndim == 2 else sequence
    values = []
    for pose in seq:
        m = measures(pose)
        est = [v / _TORSO_RATIO[k] for k, v in m.items()]
        if est:
            values.append(float(np.median(est)))
    return float(np.median(values)) if values else 0.0


def body_height(sequence: np.ndarray) -> float:
    """The body's height in pixels for a pose or a sequence: the median over frames of the vertical extent of the
    present keypoints (eyes to ankles for a standing person, about 0.9 of its height). 0.0 when nothing can be
    measured."""
    seq = sequence[None] if sequence.ndim == 2 else sequence
    spans = [float(np.ptp(pose[pose[:, 2] > 0, 1])) for pose in seq if (pose[:, 2] > 0).sum() >= 2]
    return float(np.median(spans)) if spans else 0.0
