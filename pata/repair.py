"""Temporal repair of a detected pose sequence: swaps, single-frame jumps, gaps, light smoothing."""
from __future__ import annotations

import logging

import numpy as np

from .skeleton import L_ANKLE, L_EAR, L_ELBOW, L_EYE, L_HIP, L_KNEE, L_SHOULDER, L_WRIST, LR_GROUPS, N_BODY, NOSE, \
    R_ANKLE, R_EAR, R_ELBOW, R_EYE, R_HIP, R_KNEE, R_SHOULDER, R_WRIST, as_sequence, body_scale

logger = logging.getLogger(__name__)


# Single joints a detector swaps on their own, parents first: (right, right's parent, left, left's parent).
JOINT_PAIRS = (
    (R_ELBOW, R_SHOULDER, L_ELBOW, L_SHOULDER), (R_KNEE, R_HIP, L_KNEE, L_HIP),
    (R_WRIST, R_ELBOW, L_WRIST, L_ELBOW), (R_ANKLE, R_KNEE, L_ANKLE, L_KNEE),
)

# How far a repair may trust frame-to-frame continuity, in multiples of the sequence's own motion (the median
# frame-to-frame move of the keypoint or group): a clean sequence subsampled to a few frames moves a lot between
# frames, and that motion must never read as a fault. Measured on the bundled sequences subsampled from 6 frames
# to all (benchmarks/bench_repair.py): clean motion stays under 1.9 times its median move; faults of a fifth of
# the body height on a dense sequence are 4 times and more.
MOTION_FACTOR = 2.5
SMOOTH_LIMIT = 0.05  # smoothing moves a keypoint by at most this fraction of the body scale (jitter, not motion)


def _steps(xy: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Per keypoint, the median frame-to-frame move over the frame pairs where it is present in both (0 if none)."""
    step = np.hypot(*(xy[1:] - xy[:-1]).transpose(2, 0, 1))
    both = ok[1:] & ok[:-1]
    return np.array([float(np.median(step[both[:, j], j])) if both[:, j].any() else 0.0 for j in range(xy.shape[1])])


def _facing(pose: np.ndarray) -> int:
    """+1 when the face is seen (nose, or both eyes), -1 for a back view (no nose or eyes, an ear), 0 unknown."""
    if pose[NOSE, 2] > 0 or (pose[R_EYE, 2] > 0 and pose[L_EYE, 2] > 0):
        return 1
    if pose[R_EYE, 2] <= 0 and pose[L_EYE, 2] <= 0 and (pose[R_EAR, 2] > 0 or pose[L_EAR, 2] > 0):
        return -1
    return 0


# The root pairs of each group in LR_GROUPS, tried in order: they sit apart on a rigid part of the body (shoulders,
# hips, eyes or else ears), so a detector's swap of the whole group moves them while clean motion rarely crosses them.
ROOT_PAIRS = (((R_SHOULDER, L_SHOULDER),), ((R_HIP, L_HIP),), ((R_EYE, L_EYE), (R_EAR, L_EAR)))


def _root_pair(*poses: np.ndarray, group: int) -> tuple[int, int] | None:
    """The group's first root pair present in every pose given, or None."""
    for r, l in ROOT_PAIRS[group]:
        if all(p[r, 2] > 0 and p[l, 2] > 0 for p in poses):
            return r, l
    return None


def _side_order(pose: np.ndarray, group: int, scale: float) -> int:
    """Which way the labels put a group's root pair against the way the person faces: +1 when the right one is on
    the image's left for a face seen from the front (or on the image's right for a back view), -1 the other way
    round, 0 when the face or the pair does not say (a profile, a point missing)."""
    facing = _facing(pose)
    pair = _root_pair(pose, group=group)
    if not facing or pair is None:
        return 0
    dx = pose[pair[1], 0] - pose[pair[0], 0]
    if abs(dx) < 0.15 * scale:
        return 0
    return facing * (1 if dx > 0 else -1)


def _runs(mask: np.ndarray) -> list[np.ndarray]:
    """The runs of consecutive True frames of a boolean mask, as index arrays."""
    idx = np.flatnonzero(mask)
    return [r for r in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1) if len(r)]


def fix_swaps(seq: np.ndarray, scale: float) -> tuple[np.ndarray, int]:
    """Undo left/right swaps of whole groups (arms, legs, eyes+ears).

    Continuity: for each group, walk the frames keeping the latest known positions in frame 0's labelling; a frame
    whose swapped labels match those much better than its own (by more than the group's own frame-to-frame motion
    allows) is flipped relative to frame 0. The labelling most frames agree on wins, so a swapped first frame is
    fixed too instead of flipping the rest.
    Orientation: the labelling is kept in any frame where the group's root pair (shoulders, hips; eyes) sits the way
    the sequence's person faces over the whole sequence (right on the image's left when the face is seen, on the
    image's right in a back view), so a turn to the back is never "undone".
    Returns the fixed sequence and how many group swaps were undone.
    """
    out = seq.copy()
    count = 0
    xy, ok_all = seq[..., :2], seq[..., 2] > 0
    steps = _steps(xy, ok_all)
    for group, (right, left) in enumerate(LR_GROUPS):
        idx = list(right) + list(left)
        flip = list(left) + list(right)
        motion = float(np.mean(steps[idx]))
        thr = max(0.15 * scale, MOTION_FACTOR * motion)
        # the sequence's own orientation: the root pair's order against the facing, over every frame that shows it
        order = np.array([_side_order(p, group, scale) for p in seq])
        usual = int(np.sign(order.sum()))
        parity = np.zeros(len(seq), dtype=bool)  # labels flipped relative to frame 0's
        last = seq[0].copy()  # latest known positions, in frame 0's labelling
        for f in range(1, len(seq)):
            pose = seq[f]
            keep = swap = 0.0
            n = 0
            for j, o in zip(idx, flip):
                if pose[j, 2] > 0 and last[j, 2] > 0 and last[o, 2] > 0:
                    keep += np.hypot(*(pose[j, :2] - last[j, :2]))
                    swap += np.hypot(*(pose[j, :2] - last[o, :2]))
                    n += 1
            # a detector swaps a whole group root and all, while limbs of clean motion cross with their roots apart:
            # the root pair must sit closer to the other side's latest positions too
            pair = _root_pair(pose, last, group=group)
            roots = pair is not None and (
                np.hypot(*(pose[pair[0], :2] - last[pair[1], :2])) + np.hypot(*(pose[pair[1], :2] - last[pair[0], :2]))
                < np.hypot(*(pose[pair[0], :2] - last[pair[0], :2])) + np.hypot(*(pose[pair[1], :2] - last[pair[1], :2])))
            # last holds frame 0's labelling, so this says whether frame f is flipped relative to frame 0
            parity[f] = bool(n) and roots and keep > thr * n and swap < 0.5 * keep
            relabelled = pose.copy()
            if parity[f]:
                relabelled[idx] = pose[flip]
            ok = relabelled[:, 2] > 0
            last[ok] = relabelled[ok]
        shown = (seq[:, idx, 2] > 0).any(axis=1)
        if parity[shown].sum() * 2 > shown.sum():
            parity = ~parity  # frame 0 was the odd one out
        # a run of frames whose labels agree with the sequence's orientation more often than not is kept (a turn,
        # not a swap); a run the orientation cannot judge (profile views, no face) follows continuity
        suspect = parity & shown
        for run in _runs(suspect):
            if usual and (order[run] == usual).sum() > (order[run] == -usual).sum():
                continue
            for f in run:
                out[f, idx] = seq[f, flip]
                count += 1
    return out, count


def fix_joint_swaps(seq: np.ndarray, scale: float) -> tuple[np.ndarray, int]:
    """Undo swaps of single joints (elbows, knees, wrists, ankles) that leave the rest of the limb in place:
    swap a pair in a frame when that gives both joints their usual bone length to their parents (the
    median over the sequence) while the given labels do not. Returns the fixed sequence and the count."""
    out = seq.copy()
    count = 0
    for j, pj, o, po in JOINT_PAIRS:
        ok = (out[:, [j, pj, o, po], 2] > 0).all(axis=1)
        if ok.sum() < 3:
            continue
        def length(a, b):
            return np.hypot(*(out[:, a, :2] - out[:, b, :2]).T)
        ref_j, ref_o = np.median(length(j, pj)[ok]), np.median(length(o, po)[ok])
        keep = np.abs(length(j, pj) - ref_j) + np.abs(length(o, po) - ref_o)
        swap = np.abs(length(o, pj) - ref_j) + np.abs(length(j, po) - ref_o)
        for f in np.flatnonzero(ok & (keep > 0.2 * scale) & (swap < 0.5 * keep)):
            out[f, [j, o]] = out[f, [o, j]]
            count += 1
    return out, count


def reject_jumps(seq: np.ndarray, scale: float, fraction: float = 0.3) -> tuple[np.ndarray, int]:
    """Mark a keypoint missing in a frame where it sits more than ``fraction * scale`` away from where its
    neighbours put it (their midpoint; at the first and last frame, the extrapolation of the next two),
    further than the neighbours move themselves, and more than ``MOTION_FACTOR`` times the keypoint's own
    median frame-to-frame move: a one-frame glitch, not fast motion (steady fast motion passes through the
    midpoint, a move that lasts two frames or more moves a neighbour too, and a sequence sampled sparsely
    moves that much every frame)."""
    out = seq.copy()
    ok_all = seq[..., 2] > 0
    thr = np.maximum(fraction * scale, MOTION_FACTOR * _steps(seq[..., :2], ok_all))
    count = 0
    n = len(seq)
    for f in range(n):
        if 0 < f < n - 1:
            a, b = f - 1, f + 1
            pred = (seq[a, :, :2] + seq[b, :, :2]) / 2
            span = np.hypot(*(seq[a, :, :2] - seq[b, :, :2]).T)
        elif n >= 3:
            a, b = (1, 2) if f == 0 else (n - 2, n - 3)
            pred = 2 * seq[a, :, :2] - seq[b, :, :2]
            span = 2 * np.hypot(*(seq[a, :, :2] - seq[b, :, :2]).T)
        else:
            continue
        ok = ok_all[f] & ok_all[a] & ok_all[b]
        dev = np.hypot(*(seq[f, :, :2] - pred).T)
        # an extrapolation strays about twice as far from smooth motion as an interpolation
        jump = ok & (dev > (thr if 0 < f < n - 1 else 2 * thr)) & (dev > span)
        out[f, jump] = 0.0
        count += int(jump.sum())
    return out, count


FACE = (NOSE, R_EYE, L_EYE, R_EAR, L_EAR)


def fill_gaps(seq: np.ndarray, max_gap: int = 8, detected: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Linearly interpolate runs of at most ``max_gap`` missing frames between two present frames. A face point
    (nose, eyes, ears) is filled only in frames that show no face point at all, or where ``detected`` ``(F, 18)``
    says the detector gave it (a rejected jump): a missing ear or eye beside a seen one is the head turned (the
    detector rightly leaves it out), not a detection lost."""
    out = seq.copy()
    count = 0
    no_face = ~(seq[:, list(FACE), 2] > 0).any(axis=1)
    if detected is not None:
        no_face = no_face[:, None] | detected
    else:
        no_face = np.repeat(no_face[:, None], N_BODY, axis=1)
    for j in range(N_BODY):
        idx = np.flatnonzero(seq[:, j, 2] > 0)
        for a, b in zip(idx[:-1], idx[1:]):
            if 1 < b - a <= max_gap + 1:
                for f in range(a + 1, b):
                    if j in FACE and not no_face[f, j]:
                        continue
                    t = (f - a) / (b - a)
                    out[f, j, :2] = (1 - t) * seq[a, j, :2] + t * seq[b, j, :2]
                    out[f, j, 2] = min(seq[a, j, 2], seq[b, j, 2])
                    count += 1
    return out, count


def hold_ends(seq: np.ndarray, max_gap: int = 8) -> tuple[np.ndarray, int]:
    """Fill up to ``max_gap`` wholly empty frames at the start and the end of the sequence with the nearest
    frame that shows the person (a detector that finds the person a few frames late or loses them early)."""
    out = seq.copy()
    filled = np.flatnonzero((seq[..., 2] > 0).any(axis=1))
    if not len(filled):
        return out, 0
    first, last = int(filled[0]), int(filled[-1])
    lead = range(max(0, first - max_gap), first)
    tail = range(last + 1, min(len(seq), last + 1 + max_gap))
    for f in lead:
        out[f] = seq[first]
    for f in tail:
        out[f] = seq[last]
    return out, len(lead) + len(tail)


def _savgol_weights(window: int, order: int) -> np.ndarray:
    x = np.arange(window) - window // 2
    basis = np.vander(x, order + 1, increasing=True)
    return np.linalg.pinv(basis)[0]  # value of the fitted polynomial at the centre


def smooth(seq: np.ndarray, window: int = 5, order: int = 2, limit: float | None = None) -> np.ndarray:
    """Savitzky-Golay smoothing (window 5, quadratic) of each keypoint over its frames; frames whose
    whole window is present are smoothed, others kept. A quadratic fit keeps real fast motion. With ``limit``
    (pixels) no keypoint moves further than that: smoothing removes detector jitter, and a larger correction
    is the fit failing to follow motion the frames sample sparsely, not noise."""
    out = seq.copy()
    w = _savgol_weights(window, order)
    h = window // 2
    for j in range(N_BODY):
        ok = seq[:, j, 2] > 0
        for f in range(h, len(seq) - h):
            if ok[f - h:f + h + 1].all():
                delta = w @ seq[f - h:f + h + 1, j, :2] - seq[f, j, :2]
                size = float(np.hypot(*delta))
                if limit is not None and size > limit:
                    delta *= limit / size
                out[f, j, :2] = seq[f, j, :2] + delta
    return out


def repair_sequence(sequence, max_gap: int = 8, jump_fraction: float = 0.3, smoothing: bool = True) -> np.ndarray:
    """Repair a target sequence ``(F, 18, 3)``: undo left/right swaps (of whole limbs, then of single
    joints), drop single-frame jumps larger than ``jump_fraction`` of the body scale, fill gaps up to
    ``max_gap`` frames (empty frames included), hold the nearest person frame over up to ``max_gap`` empty
    frames at either end, then lightly smooth.
    Returns a new array; an unrepairable sequence (no body scale) is returned cleaned."""
    seq = as_sequence(sequence, "target")
    if isinstance(max_gap, bool) or not isinstance(max_gap, (int, np.integer)) or max_gap < 0:
        raise ValueError(f"max_gap: must be a whole number of frames >= 0, got {max_gap!r}. Fix: use 0 to fill "
                         "no gaps, or the longest gap to fill (8 by default).")
    if not (isinstance(jump_fraction, (int, float, np.floating)) and np.isfinite(jump_fraction)
            and jump_fraction > 0):
        raise ValueError(f"jump_fraction: must be a positive number (a fraction of the body scale), got "
                         f"{jump_fraction!r}. Fix: use about 0.3; larger values reject fewer jumps.")
    scale = body_scale(seq)
    if scale <= 0 or len(seq) < 2:
        return seq
    seq, n_swap = fix_swaps(seq, scale)
    seq, n_joint = fix_joint_swaps(seq, scale)
    n_swap += n_joint
    detected = seq[..., 2] > 0
    seq, n_jump = reject_jumps(seq, scale, jump_fraction)
    seq, n_fill = fill_gaps(seq, max_gap, detected)
    seq, n_hold = hold_ends(seq, max_gap)
    if smoothing:
        seq = smooth(seq, limit=SMOOTH_LIMIT * scale)
    logger.info("PATA repair: %d left/right swaps undone, %d jumps rejected, %d points filled, "
                "%d empty end frames held", n_swap, n_jump, n_fill, n_hold)
    return seq
