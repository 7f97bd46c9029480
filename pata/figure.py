"""A 3-D stick figure posed by joint angles and projected to an OpenPose 18-keypoint body.

Used by ``scripts/make_example_poses.py`` (the bundled sequences) and by StickWorld (random training poses).
Angles are in degrees; lengths in torso units (neck to mid-hip = 1).
"""
from __future__ import annotations

import math

import numpy as np

# Body proportions in torso units (neck to mid-hip = 1).
ADULT = {"upper_arm": 0.55, "forearm": 0.5, "thigh": 0.82, "shin": 0.8, "shoulder": 0.36, "hip": 0.18,
         "neck_nose": 0.36}


def _dir(abd: float, flex: float, side: int) -> np.ndarray:
    """Unit limb direction: abd (deg) lifts sideways from hanging down, flex (deg) swings toward the viewer."""
    a, f = math.radians(abd), math.radians(flex)
    return np.array([side * math.sin(a) * math.cos(f), math.cos(a) * math.cos(f), math.sin(f)])


def body3d(p: dict, prop: dict = ADULT) -> tuple[np.ndarray, np.ndarray]:
    """3-D keypoints (18, 3) with y down and z toward the viewer, the body facing the viewer. ``p`` holds joint angles in degrees:
    r/l_shoulder (abd, flex), r/l_elbow (abd, flex) for the forearm, r/l_hip, r/l_knee likewise,
    head_yaw, lean (sideways, deg), and crouch (torso drop in torso units)."""
    k = np.zeros((18, 3))
    lean = math.radians(p.get("lean", 0.0))
    up = np.array([math.sin(lean), -math.cos(lean), 0.0])  # from hips to neck
    hip_c = np.array([0.0, 1.0 + p.get("crouch", 0.0), 0.0])
    k[1] = hip_c + up  # neck
    side_axis = np.array([math.cos(lean), math.sin(lean), 0.0])
    for side, sh, el, wr, hp, kn, an, key in ((-1, 2, 3, 4, 8, 9, 10, "r"), (1, 5, 6, 7, 11, 12, 13, "l")):
        k[sh] = k[1] + side * prop["shoulder"] * side_axis + np.array([0, 0.03, 0])
        k[el] = k[sh] + prop["upper_arm"] * _dir(*p.get(f"{key}_shoulder", (12, 0)), side)
        k[wr] = k[el] + prop["forearm"] * _dir(*p.get(f"{key}_elbow", (8, 10)), side)
        k[hp] = hip_c + side * prop["hip"] * side_axis
        k[kn] = k[hp] + prop["thigh"] * _dir(*p.get(f"{key}_hip", (3, 0)), side)
        k[an] = k[kn] + prop["shin"] * _dir(*p.get(f"{key}_knee", (2, 0)), side)
    yaw = math.radians(p.get("head_yaw", 0.0))
    head = k[1] + up * prop["neck_nose"]
    offsets = {0: (0.0, 0.0, 0.12), 14: (-0.08, -0.08, 0.1), 15: (0.08, -0.08, 0.1),
               16: (-0.16, -0.02, -0.02), 17: (0.16, -0.02, -0.02)}
    for j, (x, y, z) in offsets.items():
        k[j] = head + np.array([x * math.cos(yaw) + z * math.sin(yaw), y, -x * math.sin(yaw) + z * math.cos(yaw)])
    return k


def project(k: np.ndarray, yaw: float, centre: tuple[float, float], px: float, offset=(0.0, 0.0)) -> np.ndarray:
    """Turn the body by ``yaw`` degrees about the vertical through the mid-hip and project to pixels."""
    a = math.radians(yaw)
    c = k.copy()
    hip = (k[8] + k[11]) / 2
    c[:, 0] = (k[:, 0] - hip[0]) * math.cos(a) + (k[:, 2] - hip[2]) * math.sin(a)
    c[:, 2] = -(k[:, 0] - hip[0]) * math.sin(a) + (k[:, 2] - hip[2]) * math.cos(a)
    out = np.zeros((18, 3))
    out[:, 0] = centre[0] + offset[0] + px * c[:, 0]
    out[:, 1] = centre[1] + offset[1] + px * (k[:, 1] - 1.0)
    out[:, 2] = 1.0
    head = c[1]
    # face points turned away from the viewer are not detected
    for j in (0, 14, 15):
        if c[j, 2] - head[2] < 0.0:
            out[j] = 0.0
    for j in (16, 17):
        if c[j, 2] - head[2] < -0.12:
            out[j] = 0.0
    return out
