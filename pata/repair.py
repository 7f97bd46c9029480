"""Temporal repair of a detected pose sequence: swaps, single-frame jumps, gaps, light smoothing."""
from __future__ import annotations

import logging

import numpy as np

from .skeleton import LR_GROUPS, N_BODY, as_sequence, body_scale

logger = logging.getLogger(__name__)


def fix_swaps(seq: np.ndarray, scale: float) -> tuple[np.ndarray, int]:
    """Undo left/right swaps: swap a group (arm, leg, eyes+ears) when that matches the previous frame
    much better than keeping it. Returns the fixed sequence and how many swaps were undone."""
    out = seq.copy()
    count = 0
    last = out[0].copy()  # the latest known position of every keypoint
    for f in range(1, len(out)):
        pose = out[f]
        for right, left in LR_GROUPS:
            r, lft = list(right), list(left)
            keep = swap = 0.0
            n = 0
            for a, b in zip(r, lft):
                for j, same, other in ((a, a, b), (b, b, a)):
                    if pose[j, 2] > 0 and last[same, 2] > 0 and last[other, 2] > 0:
                        keep += np.hypot(*(pose[j, :2] - last[same, :2]))
                        swap += np.hypot(*(pose[j, :2] - last[other, :2]))
                        n += 1
            if n and keep > 0.15 * scale * n and swap < 0.5 * keep:
                pose[r + lft] = pose[lft + r].copy()
                count += 1
        ok = pose[:, 2] > 0
        last[ok] = pose[ok]
    return out, count


def reject_jumps(seq: np.ndarray, scale: float, fraction: float = 0.3) -> tuple[np.ndarray, int]:
    """Mark a keypoint missing in a frame where it jumps away from both neighbours by more than
    ``fraction * scale`` while the neighbours agree (a one-frame glitch, not fast motion)."""
    out = seq.copy()
    thr = fraction * scale
    count = 0
    for f in range(1, len(seq) - 1):
        prev, cur, nxt = seq[f - 1], seq[f], seq[f + 1]
        ok = (prev[:, 2] > 0) & (cur[:, 2] > 0) & (nxt[:, 2] > 0)
        d_prev = np.hypot(*(cur[:, :2] - prev[:, :2]).T)
        d_next = np.hypot(*(cur[:, :2] - nxt[:, :2]).T)
        d_nb = np.hypot(*(prev[:, :2] - nxt[:, :2]).T)
        jump = ok & (d_prev > thr) & (d_next > thr) & (d_nb < 0.5 * np.minimum(d_prev, d_next))
        out[f, jump] = 0.0
        count += int(jump.sum())
    return out, count


def fill_gaps(seq: np.ndarray, max_gap: int = 8) -> tuple[np.ndarray, int]:
    """Linearly interpolate runs of at most ``max_gap`` missing frames between two present frames."""
    out = seq.copy()
    count = 0
    for j in range(N_BODY):
        idx = np.flatnonzero(seq[:, j, 2] > 0)
        for a, b in zip(idx[:-1], idx[1:]):
            if 1 < b - a <= max_gap + 1:
                for f in range(a + 1, b):
                    t = (f - a) / (b - a)
                    out[f, j, :2] = (1 - t) * seq[a, j, :2] + t * seq[b, j, :2]
                    out[f, j, 2] = min(seq[a, j, 2], seq[b, j, 2])
                    count += 1
    return out, count


def _savgol_weights(window: int, order: int) -> np.ndarray:
    x = np.arange(window) - window // 2
    basis = np.vander(x, order + 1, increasing=True)
    return np.linalg.pinv(basis)[0]  # value of the fitted polynomial at the centre


def smooth(seq: np.ndarray, window: int = 5, order: int = 2) -> np.ndarray:
    """Savitzky-Golay smoothing (window 5, quadratic) of each keypoint over its frames; frames whose
    whole window is present are smoothed, others kept. A quadratic fit keeps real fast motion."""
    out = seq.copy()
    w = _savgol_weights(window, order)
    h = window // 2
    for j in range(N_BODY):
        ok = seq[:, j, 2] > 0
        for f in range(h, len(seq) - h):
            if ok[f - h:f + h + 1].all():
                out[f, j, :2] = w @ seq[f - h:f + h + 1, j, :2]
    return out


def repair_sequence(sequence, max_gap: int = 8, jump_fraction: float = 0.3, smoothing: bool = True) -> np.ndarray:
    """Repair a target sequence ``(F, 18, 3)``: undo left/right swaps, drop single-frame jumps larger than
    ``jump_fraction`` of the body scale, fill gaps up to ``max_gap`` frames (empty frames included), then
    lightly smooth. Returns a new array; an unrepairable sequence (no body scale) is returned cleaned."""
    seq = as_sequence(sequence, "target")
    scale = body_scale(seq)
    if scale <= 0 or len(seq) < 2:
        return seq
    seq, n_swap = fix_swaps(seq, scale)
    seq, n_jump = reject_jumps(seq, scale, jump_fraction)
    seq, n_fill = fill_gaps(seq, max_gap)
    if smoothing:
        seq = smooth(seq)
    logger.info("PATA repair: %d left/right swaps undone, %d jumps rejected, %d points filled",
                n_swap, n_jump, n_fill)
    return seq
