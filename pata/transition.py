"""Transition frames from the source pose to the first aligned target pose, by bone angles along the tree."""
from __future__ import annotations

import numpy as np

from .skeleton import BONES, N_BODY, ROOT, as_pose


def ease_in_out(t: np.ndarray | float) -> np.ndarray:
    """Cosine ease-in-out on [0, 1]: zero speed at both ends."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(t, 0.0, 1.0))


def _wrap(angle: float) -> float:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _polar(vec: np.ndarray) -> tuple[float, float]:
    return float(np.hypot(*vec)), float(np.arctan2(vec[1], vec[0]))


def interpolate(source: np.ndarray, target: np.ndarray, w: float) -> np.ndarray:
    """The pose at ease weight ``w`` (0 = source, 1 = target), interpolating bone angles along the tree.

    Bone lengths and angles interpolate; the root (neck) moves linearly. A keypoint present at one end
    only keeps that end's bone (angle and length) on its moving parent and fades its confidence in or
    out. A keypoint whose parent is missing moves with the centroid of the keypoints both poses share.
    """
    a_ok = source[:, 2] > 0
    b_ok = target[:, 2] > 0
    both = a_ok & b_ok
    out = np.zeros((N_BODY, 3))
    placed = np.zeros(N_BODY, dtype=bool)

    if both.any():
        ca, cb = source[both, :2].mean(0), target[both, :2].mean(0)
    else:
        ca = source[a_ok, :2].mean(0) if a_ok.any() else np.zeros(2)
        cb = target[b_ok, :2].mean(0) if b_ok.any() else ca
        if not a_ok.any():
            ca = cb
    centre = (1 - w) * ca + w * cb

    def free(j: int) -> None:  # no placed parent: linear if in both, else ride along with the centroid
        if both[j]:
            out[j, :2] = (1 - w) * source[j, :2] + w * target[j, :2]
        elif a_ok[j]:
            out[j, :2] = source[j, :2] + centre - ca
        else:
            out[j, :2] = target[j, :2] + centre - cb
        placed[j] = True

    def conf(j: int) -> float:
        if both[j]:
            return (1 - w) * source[j, 2] + w * target[j, 2]
        return (1 - w) * source[j, 2] if a_ok[j] else w * target[j, 2]

    if a_ok[ROOT] or b_ok[ROOT]:
        free(ROOT)
    for p, c in BONES:
        if not (a_ok[c] or b_ok[c]):
            continue
        bone_a = a_ok[p] and a_ok[c]
        bone_b = b_ok[p] and b_ok[c]
        if placed[p] and (bone_a or bone_b):
            if bone_a and bone_b:
                la, ta = _polar(source[c, :2] - source[p, :2])
                lb, tb = _polar(target[c, :2] - target[p, :2])
                length = (1 - w) * la + w * lb
                angle = ta + w * _wrap(tb - ta)
            elif bone_a:
                length, angle = _polar(source[c, :2] - source[p, :2])
            else:
                length, angle = _polar(target[c, :2] - target[p, :2])
            out[c, :2] = out[p, :2] + length * np.array([np.cos(angle), np.sin(angle)])
            placed[c] = True
        else:
            free(c)
    for j in range(N_BODY):
        if (a_ok[j] or b_ok[j]) and not placed[j]:
            free(j)
        out[j, 2] = conf(j) if placed[j] else 0.0
    out[out[:, 2] <= 0] = 0.0
    return out


def transition(source, target, n_frames: int) -> np.ndarray:
    """``n_frames`` poses ``(n_frames, 18, 3)`` going from ``source`` to ``target``, both ends excluded.

    Frame ``k`` (1-based) sits at ease-in-out weight ``ease(k / (n_frames + 1))``.
    """
    src = as_pose(source, "source")
    tgt = as_pose(target, "target")
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 0:
        raise ValueError(
            f"transition_frames: must be a whole number >= 0, got {n_frames!r}. Fix: use 0 for no transition "
            "or a positive frame count."
        )
    n = int(n_frames)
    out = np.zeros((n, N_BODY, 3))
    for k in range(n):
        out[k] = interpolate(src, tgt, float(ease_in_out((k + 1) / (n + 1))))
    return out
