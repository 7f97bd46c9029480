"""StickWorld metrics on generated frames, using what the world knows: the character's palette, the clean
background, and the body region of every target pose.

All images are float arrays ``(H, W, 3)`` in 0..1, masks boolean ``(H, W)``.

* ``pose_iou``: IoU of the generated character's region (pixels that match the character's palette better than
  the clean background, see ``character_region``) with the target pose's body region. Higher is better.
* ``identity_distance``: total-variation distance between soft colour histograms of the generated frame inside
  the target body region and of the source inside its own mask (0 = same colours in the same proportions, 1 =
  disjoint). Lower is better.
* ``background_error``: mean absolute error against the clean source background outside the (dilated) target
  body region. Lower is better.
* ``temporal_change``: mean absolute frame-to-frame change outside both frames' (dilated) body regions. Lower is
  better.
"""
from __future__ import annotations

import cv2
import numpy as np

HIST_BINS = 4
MATCH_DISTANCE = 0.25


def dilate(mask: np.ndarray, pixels: int = 1) -> np.ndarray:
    if pixels <= 0:
        return mask.astype(bool)
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def character_region(image: np.ndarray, palette: np.ndarray, background: np.ndarray,
                     max_distance: float = MATCH_DISTANCE) -> np.ndarray:
    """Pixels whose colour lies within ``max_distance`` of a palette colour and nearer to it than to the clean
    background at that pixel."""
    d_pal = np.linalg.norm(image[:, :, None, :] - palette[None, None], axis=-1).min(-1)
    d_bg = np.linalg.norm(image - background, axis=-1)
    return (d_pal < max_distance) & (d_pal < d_bg)


def pose_iou(region: np.ndarray, target: np.ndarray) -> float:
    union = np.logical_or(region, target).sum()
    return float(np.logical_and(region, target).sum() / union) if union else 1.0


def colour_histogram(pixels: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Soft (trilinear) colour histogram of ``pixels`` (K, 3) in 0..1, normalised to sum 1."""
    hist = np.zeros((bins,) * 3)
    if len(pixels) == 0:
        return hist.reshape(-1)
    pos = np.clip(pixels, 0, 1) * (bins - 1)
    lo = np.floor(pos).astype(int).clip(0, bins - 2) if bins > 1 else np.zeros_like(pos, int)
    frac = pos - lo
    for corner in range(8):
        off = np.array([(corner >> k) & 1 for k in range(3)])
        w = np.prod(np.where(off, frac, 1 - frac), axis=1)
        idx = np.minimum(lo + off, bins - 1)
        np.add.at(hist, (idx[:, 0], idx[:, 1], idx[:, 2]), w)
    return (hist / hist.sum()).reshape(-1)


def identity_distance(image: np.ndarray, target_mask: np.ndarray, source: np.ndarray,
                      source_mask: np.ndarray) -> float:
    a = colour_histogram(image[target_mask])
    b = colour_histogram(source[source_mask])
    return float(0.5 * np.abs(a - b).sum())


def background_error(image: np.ndarray, background: np.ndarray, target_mask: np.ndarray, margin: int = 1) -> float:
    outside = ~dilate(target_mask, margin)
    return float(np.abs(image - background)[outside].mean()) if outside.any() else 0.0


def temporal_change(frames: np.ndarray, masks: np.ndarray, margin: int = 1) -> float:
    """Mean over consecutive pairs of the mean absolute change outside both frames' dilated body regions."""
    if len(frames) < 2:
        return 0.0
    values = []
    for a, b, ma, mb in zip(frames[:-1], frames[1:], masks[:-1], masks[1:]):
        outside = ~(dilate(ma, margin) | dilate(mb, margin))
        if outside.any():
            values.append(float(np.abs(a - b)[outside].mean()))
    return float(np.mean(values)) if values else 0.0


def score_sequence(frames: np.ndarray, target_masks: np.ndarray, palette: np.ndarray, background: np.ndarray,
                   source: np.ndarray, source_mask: np.ndarray) -> dict:
    """All four metrics for generated target frames ``(N, H, W, 3)`` with their body regions ``(N, H, W)``."""
    ious, ids, bgs = [], [], []
    for img, m in zip(frames, target_masks):
        ious.append(pose_iou(character_region(img, palette, background), m))
        ids.append(identity_distance(img, m, source, source_mask))
        bgs.append(background_error(img, background, m))
    return {"pose_iou": float(np.mean(ious)), "identity": float(np.mean(ids)), "background": float(np.mean(bgs)),
            "temporal": temporal_change(frames, target_masks)}
