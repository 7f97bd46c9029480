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
    then ride along with their anchor's move by repair and retargeting; during the transition each part keeps its
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
    detected = seq  # as given: the parts sit on these anchors
    if repair:
        seq = repair_sequence(seq)
    scale, shift = estimate_similarity(src, seq)
    similar = apply_similarity(seq, scale, shift)
    aligned = retarget(src, similar) if mode == "retarget" else similar
    # The transition heads for the first target frame that shows the person (leading empty frames, kept
    # when repair is off, would otherwise fade the whole body out).
    first = int(np.flatnonzero((aligned[..., 2] > 0).any(axis=1))[0])
    trans = transition(src, aligned[first], n_transition)
    body = np.concatenate([src[None], trans, aligned], axis=0)

    parts_out = {}
    n = n_transition
    weights = ease_in_out((np.arange(n) + 1) / (n + 1)) if n else np.zeros(0)
    for key, anchor in PART_ANCHORS.items():
        sp = _part(source_parts, key, "source_parts", None)
        tp = _part(target_parts, key, "target_parts", len(seq))
        if sp is None and tp is None:
            parts_out[key] = None
            continue
        if sp is not None:
            sp = sp[0]
        if sp is not None and tp is not None and tp.shape[1] != len(sp):
            # e.g. a 68-point face against a 70-point one (68 + pupils): keep the points both have
            k = min(len(sp), tp.shape[1])
            sp, tp = sp[:k], tp[:, :k]
        k = len(sp) if sp is not None else tp.shape[1]
        out = np.zeros((len(body), k, 3))
        if sp is not None:
            out[0] = sp
        if tp is not None:
            moved = apply_similarity(tp, scale, shift)
            # a part rides on its anchor from where the detector put the anchor (repair may have moved it) to
            # where it ends up, so repair and retargeting carry the part along
            placed = apply_similarity(detected, scale, shift)
            for f in range(len(aligned)):
                ref = placed if detected[f, anchor, 2] > 0 else similar
                if aligned[f, anchor, 2] > 0 and ref[f, anchor, 2] > 0:
                    moved[f] = _shift(moved[f], aligned[f, anchor, :2] - ref[f, anchor, :2])
            out[1 + n:] = moved
        tp_end = out[1 + n + first] if tp is not None and (out[1 + n + first, :, 2] > 0).any() else None
        for i, w in enumerate(weights):
            # the part keeps the shape of the nearer end that has it, riding on its anchor; a part present at
            # one end only fades in or out like the body keypoints
            if sp is not None and (tp_end is None or w < 0.5):
                end, end_pose, fade = sp, src, (1.0 if tp_end is not None else 1.0 - w)
            elif tp_end is not None:
                end, end_pose, fade = tp_end, aligned[first], (1.0 if sp is not None else w)
            else:
                continue
            if trans[i, anchor, 2] <= 0 or end_pose[anchor, 2] <= 0:
                continue
            moved_end = _shift(end, trans[i, anchor, :2] - end_pose[anchor, :2])
            moved_end[:, 2] *= fade
            out[1 + i] = moved_end
        parts_out[key] = out
    return body, parts_out


def _part(parts: dict | None, key: str, name: str, frames: int | None) -> np.ndarray | None:
    """One part ``(F, K, 3)`` from a parts dict (None when absent); a single ``(K, 3)`` is one frame."""
    if not parts or parts.get(key) is None:
        return None
    arr = np.array(parts[key], dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[1] == 0:
        raise ValueError(f"{name}: {key} must be keypoints of shape (frames, K, 3) as (x, y, confidence), got "
                         f"shape {arr.shape}. Fix: pass the parts as read by from_pose_keypoint(..., with_parts=True).")
    if frames is not None and len(arr) != frames:
        raise ValueError(f"{name}: {key} has {len(arr)} frames but the target has {frames}. Fix: pass the parts "
                         "read from the same POSE_KEYPOINT data as the target poses.")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: {key} holds NaN or infinite values. Fix: re-run pose detection, or mark the "
                         "points missing as [0, 0, 0].")
    arr[arr[..., 2] <= 0] = 0.0
    return arr


def _shift(pts: np.ndarray, delta: np.ndarray) -> np.ndarray:
    out = pts.copy()
    ok = out[:, 2] > 0
    out[ok, :2] += delta
    return out
