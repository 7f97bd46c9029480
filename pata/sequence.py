"""The PATA pipeline: repair, align, transition, concatenate; and carrying hands and face along."""
from __future__ import annotations

import numpy as np

from .align import apply_similarity, estimate_similarity, _check_mode, retarget
from .repair import repair_sequence
from .skeleton import L_WRIST, NOSE, R_WRIST, as_pose, as_sequence
from .transition import ease_in_out, transition

PART_ANCHORS = {"hand_left": L_WRIST, "hand_right": R_WRIST, "face": NOSE}


def build_sequence(source, targets, n_transition: int, mode: str = "similarity", repair: bool = True) -> np.ndarray:
    """Source pose, ``n_transition`` transition frames, then the aligned targets: ``(1 + n_transition + M, 18, 3)``.

    Frame 0 is ``source`` exactly. With ``repair`` the targets are repaired (swaps, jumps, gaps, light
    smoothing) before alignment; frames with no person are then filled from their neighbours.
    """
    return build_sequence_with_parts(source, targets, n_transition, mode, repair)[0]


def build_sequence_with_parts(source, targets, n_transition: int, mode: str = "similarity", repair: bool = True,
                              source_parts: dict | None = None, target_parts: dict | None = None):
    """:func:`build_sequence`, also returning hands/face ``{"hand_left", "hand_right", "face"}`` for every
    output frame (None where neither input has that part).

    Parts follow their anchor keypoint (wrists, nose): target parts take the similarity transform and
    then ride along with their anchor's retargeting shift; during the transition each part keeps its
    shape from the nearer end and moves with its anchor.
    """
    _check_mode(mode)
    src = as_pose(source, "source")
    seq = as_sequence(targets, "target")
    if not (src[:, 2] > 0).any():
        raise ValueError(
            "source: no person in the source pose (every keypoint is missing). Fix: use a source image in "
            "which the pose detector finds the character, or check that the source pose is connected."
        )
    if not (seq[..., 2] > 0).any():
        raise ValueError(
            "target: every target frame is empty (no person detected in any frame). Fix: check the target "
            "video or pose file and the pose detector's settings."
        )
    if repair:
        seq = repair_sequence(seq)
    scale, shift = estimate_similarity(src, seq)
    similar = apply_similarity(seq, scale, shift)
    aligned = retarget(src, similar) if mode == "retarget" else similar
    trans = transition(src, aligned[0], n_transition)
    body = np.concatenate([src[None], trans, aligned], axis=0)

    parts_out = {}
    n = n_transition
    weights = ease_in_out((np.arange(n) + 1) / (n + 1)) if n else np.zeros(0)
    for key, anchor in PART_ANCHORS.items():
        sp = None if not source_parts or source_parts.get(key) is None else np.asarray(source_parts[key], float)[0]
        tp = None if not target_parts or target_parts.get(key) is None else np.asarray(target_parts[key], float)
        if sp is None and tp is None:
            parts_out[key] = None
            continue
        k = len(sp) if sp is not None else tp.shape[1]
        if sp is not None and tp is not None and tp.shape[1] != k:
            tp = None
        out = np.zeros((len(body), k, 3))
        if sp is not None:
            out[0] = sp
        if tp is not None:
            moved = apply_similarity(tp, scale, shift)
            for f in range(len(aligned)):
                if aligned[f, anchor, 2] > 0 and similar[f, anchor, 2] > 0:
                    moved[f] = _shift(moved[f], aligned[f, anchor, :2] - similar[f, anchor, :2])
            out[1 + n:] = moved
        for i, w in enumerate(weights):
            end, end_pose = (sp, src) if w < 0.5 else (out[1 + n] if tp is not None else None, aligned[0])
            if end is None or trans[i, anchor, 2] <= 0 or end_pose[anchor, 2] <= 0:
                continue
            out[1 + i] = _shift(end, trans[i, anchor, :2] - end_pose[anchor, :2])
        parts_out[key] = out
    return body, parts_out


def _shift(pts: np.ndarray, delta: np.ndarray) -> np.ndarray:
    out = pts.copy()
    ok = out[:, 2] > 0
    out[ok, :2] += delta
    return out
