"""Synthetic poses for the PATA tests (not a test module): a standing person and a rigid-bone walk.

Loaded by path from the test modules (pytest runs with --import-mode=importlib, so tests/ is not on sys.path).
"""
from __future__ import annotations

import numpy as np

# A standing person on a 512 x 512 canvas (image-left is the person's right side).
BASE = np.array([
    [256, 100], [256, 150], [216, 150], [206, 210], [200, 265], [296, 150], [306, 210], [312, 265],
    [232, 270], [228, 350], [226, 430], [280, 270], [284, 350], [286, 430],
    [248, 92], [264, 92], [238, 96], [274, 96],
], dtype=np.float64)


def make_pose(xy=BASE, conf=0.9) -> np.ndarray:
    pose = np.zeros((18, 3))
    pose[:, :2] = xy
    pose[:, 2] = conf
    return pose


def rotate(pose: np.ndarray, pivot: int, chain, angle: float) -> None:
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    for j in chain:
        pose[j, :2] = pose[pivot, :2] + rot @ (pose[j, :2] - pose[pivot, :2])


def walk(n=24, step=3.0, swing=0.4, period=16) -> np.ndarray:
    """A rigid-bone walk: arms and legs swing about shoulders/hips, the body drifts right."""
    frames = []
    for f in range(n):
        pose = make_pose()
        a = swing * np.sin(2 * np.pi * f / period)
        rotate(pose, 2, (3, 4), a)
        rotate(pose, 5, (6, 7), -a)
        rotate(pose, 8, (9, 10), -a)
        rotate(pose, 11, (12, 13), a)
        pose[:, 0] += step * f
        frames.append(pose)
    return np.stack(frames)


def scaled(seq, s, t):
    out = np.array(seq, dtype=np.float64)
    ok = out[..., 2] > 0
    out[..., :2] = np.where(ok[..., None], out[..., :2] * s + t, 0.0)
    return out
