"""OpenPose-style rendering with ControlNet's exact limb list and colours (as controlnet_aux draws them)."""
from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np

from .skeleton import as_sequence

# ControlNet's OpenPose body drawing (annotator/openpose/util.py draw_bodypose), 1-based keypoint indices.
LIMB_SEQ = (
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10),
    (10, 11), (2, 12), (12, 13), (13, 14), (2, 1), (1, 15), (15, 17),
    (1, 16), (16, 18), (3, 17), (6, 18),
)
COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
STICK_WIDTH = 4
JOINT_RADIUS = 4
MAX_COORD = 1e6  # coordinates are clipped to +-this many pixels before drawing
LIMB_DIM = 0.6  # limbs are drawn at colour x 0.6, joints at full colour
# ControlNet 1.1 (and controlnet_aux's OpenPose / DWPose drawing) draws only the first 17 limbs: the last two
# (shoulders to ears) are listed but never drawn, so an OpenPose ControlNet never saw them in training.
N_DRAWN_LIMBS = 17
DRAWN_LIMBS = tuple(zip(LIMB_SEQ[:N_DRAWN_LIMBS], COLORS))

HAND_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
    (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)
# controlnet_aux passes the float colours hsv * 255 to OpenCV, which rounds them to the nearest integer.
HAND_COLORS = tuple(
    tuple(int(math.floor(c * 255 + 0.5)) for c in colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1.0, 1.0))
    for i in range(len(HAND_EDGES))
)


def draw_body(canvas: np.ndarray, pose: np.ndarray, min_confidence: float = 0.3) -> np.ndarray:
    """Draw one body pose ``(18, 3)`` in pixels onto an RGB uint8 canvas, in place (and return it)."""
    ok = pose[:, 2] >= min_confidence
    # far off-canvas points (garbage detections) would overflow OpenCV's int coordinates
    pose = pose.copy()
    pose[:, :2] = np.clip(pose[:, :2], -MAX_COORD, MAX_COORD)
    for (a, b), color in DRAWN_LIMBS:
        i, j = a - 1, b - 1
        if not (ok[i] and ok[j]):
            continue
        ys = np.array([pose[i, 0], pose[j, 0]])  # controlnet_aux names x "Y" and y "X"
        xs = np.array([pose[i, 1], pose[j, 1]])
        m_x, m_y = xs.mean(), ys.mean()
        length = ((xs[0] - xs[1]) ** 2 + (ys[0] - ys[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(xs[0] - xs[1], ys[0] - ys[1]))
        polygon = cv2.ellipse2Poly((int(m_y), int(m_x)), (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, [int(float(c) * LIMB_DIM) for c in color])
    for k, color in enumerate(COLORS):
        if ok[k]:
            cv2.circle(canvas, (int(pose[k, 0]), int(pose[k, 1])), JOINT_RADIUS, color, thickness=-1)
    return canvas


def draw_hand(canvas: np.ndarray, hand: np.ndarray, min_confidence: float = 0.3) -> np.ndarray:
    """Draw one 21-point hand as controlnet_aux does (HSV-coloured edges, blue joints)."""
    ok = (hand[:, 2] >= min_confidence) & (hand[:, 0] > 0.01) & (hand[:, 1] > 0.01)
    hand = np.clip(hand, -MAX_COORD, MAX_COORD)
    for (a, b), color in zip(HAND_EDGES, HAND_COLORS):
        if ok[a] and ok[b]:
            cv2.line(canvas, (int(hand[a, 0]), int(hand[a, 1])), (int(hand[b, 0]), int(hand[b, 1])), color,
                     thickness=2)
    for k in np.flatnonzero(ok):
        cv2.circle(canvas, (int(hand[k, 0]), int(hand[k, 1])), 4, (0, 0, 255), thickness=-1)
    return canvas


def draw_face(canvas: np.ndarray, face: np.ndarray, min_confidence: float = 0.3) -> np.ndarray:
    """Draw face keypoints as white dots (controlnet_aux's draw_facepose)."""
    ok = (face[:, 2] >= min_confidence) & (face[:, 0] > 0.01) & (face[:, 1] > 0.01)
    face = np.clip(face, -MAX_COORD, MAX_COORD)
    for k in np.flatnonzero(ok):
        cv2.circle(canvas, (int(face[k, 0]), int(face[k, 1])), 3, (255, 255, 255), thickness=-1)
    return canvas


def _check_size(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name}: the canvas {name} must be a whole number of pixels > 0, got {value!r}. "
                         f"Fix: give a positive {name} (or 0 on the node to use the source canvas).")
    return int(value)


def _check_part(value, key: str, frames: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[0] != frames or arr.shape[2] != 3:
        raise ValueError(f"parts: {key} must be keypoints of shape ({frames}, K, 3) for the {frames} frames, got "
                         f"shape {arr.shape}. Fix: pass the parts returned with the sequence.")
    if not np.isfinite(arr).all():
        raise ValueError(f"parts: {key} holds NaN or infinite values. Fix: mark such points missing as [0, 0, 0].")
    return arr


def render_pose(sequence, width: int, height: int, parts: dict | None = None,
                min_confidence: float = 0.3) -> np.ndarray:
    """Render a body sequence ``(F, 18, 3)`` (pixels) as float32 images ``(F, height, width, 3)`` in 0..1.

    ``parts`` optionally holds ``"hand_left"``, ``"hand_right"`` ``(F, 21, 3)`` and ``"face"`` ``(F, K, 3)``
    arrays (or None); keypoints below ``min_confidence`` are not drawn.
    """
    seq = as_sequence(sequence, "sequence")
    w = _check_size(width, "width")
    h = _check_size(height, "height")
    parts = {k: _check_part(parts[k], k, len(seq)) for k in ("hand_left", "hand_right", "face")
             if parts and parts.get(k) is not None}
    out = np.zeros((len(seq), h, w, 3), dtype=np.float32)
    for f, pose in enumerate(seq):
        canvas = np.zeros((h, w, 3), dtype=np.uint8)
        draw_body(canvas, pose, min_confidence)
        for key in ("hand_left", "hand_right"):
            if parts.get(key) is not None:
                draw_hand(canvas, np.asarray(parts[key][f], dtype=np.float64), min_confidence)
        if parts.get("face") is not None:
            draw_face(canvas, np.asarray(parts["face"][f], dtype=np.float64), min_confidence)
        out[f] = canvas.astype(np.float32) / 255.0
    return out
