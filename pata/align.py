"""Alignment of a target pose sequence to the source character: one similarity transform, optional retargeting."""
from __future__ import annotations

import logging

import numpy as np

from .skeleton import BONES, NECK, PRIMARY_MEASURES, R_SHOULDER, L_SHOULDER, NOSE, as_pose, as_sequence, \
    measures, mid_hip, present

logger = logging.getLogger(__name__)

MODES = ("similarity", "retarget")
N_ESTIMATE_FRAMES = 8  # how many leading non-empty target frames the transform is estimated from


def _anchors(pose: np.ndarray) -> dict[str, np.ndarray]:
    """Candidate anchor points of one pose, best first (neck and hips, then fallbacks)."""
    out = {}
    hip = mid_hip(pose)
    if pose[NECK, 2] > 0 and hip is not None:
        out["neck+hips"] = (pose[NECK, :2] + hip) / 2
    if pose[NECK, 2] > 0:
        out["neck"] = pose[NECK, :2].copy()
    if hip is not None:
        out["hips"] = hip
    if pose[R_SHOULDER, 2] > 0 and pose[L_SHOULDER, 2] > 0:
        out["shoulders"] = (pose[R_SHOULDER, :2] + pose[L_SHOULDER, :2]) / 2
    if pose[NOSE, 2] > 0:
        out["nose"] = pose[NOSE, :2].copy()
    return out


ANCHOR_ORDER = ("neck+hips", "neck", "hips", "shoulders", "nose")


def _check_mode(mode) -> str:
    if mode not in MODES:
        raise ValueError(f"mode: unknown mode {mode!r}. Fix: use one of {', '.join(MODES)}.")
    return mode


def estimate_similarity(source, targets) -> tuple[float, np.ndarray]:
    """One uniform scale ``s`` and translation ``t`` (``aligned = s * target + t``) for the whole sequence.

    The scale is the median ratio of body lengths measured in the source and in the first non-empty
    target frames (torso and legs; shoulders, hips, upper arms and head only when those are missing).
    The translation puts the target's neck/hip anchor on the source's (falling back to the neck, the
    hips, the shoulders, the nose, then the centroid of keypoints present in both).
    """
    src = as_pose(source, "source")
    seq = as_sequence(targets, "target")
    if not present(src).any():
        raise ValueError(
            "source: no person in the source pose (every keypoint is missing). Fix: use a source image in "
            "which the pose detector finds the character, or check that the source pose is connected."
        )
    filled = [i for i in range(len(seq)) if present(seq[i]).any()]
    if not filled:
        raise ValueError(
            "target: every target frame is empty (no person detected in any frame). Fix: check the target "
            "video or pose file and the pose detector's settings."
        )
    src_m = measures(src)
    # the first frames that show the person; all of them when those share no body length with the source
    for lead_idx in (filled[:N_ESTIMATE_FRAMES], filled):
        lead = seq[lead_idx]
        tgt_lists: dict[str, list[float]] = {}
        for pose in lead:
            for k, v in measures(pose).items():
                tgt_lists.setdefault(k, []).append(v)
        tgt_m = {k: float(np.median(v)) for k, v in tgt_lists.items()}
        common = [k for k in src_m if k in tgt_m]
        primary = [k for k in common if k in PRIMARY_MEASURES]
        used = primary or common
        if used:
            break
    if not used:
        raise ValueError(
            "source: cannot compare body sizes: the source and the first target frames share no measurable "
            "body length (torso, legs, shoulders, hips, upper arms or head). Fix: use a source pose that shows "
            "the neck and hips or shoulders, or a target sequence whose first frames show the same body parts."
        )
    scale = float(np.median([src_m[k] / tgt_m[k] for k in used]))

    src_a = _anchors(src)
    translation = None
    for name in ANCHOR_ORDER:
        if name not in src_a:
            continue
        hits = [a[name] for a in map(_anchors, lead) if name in a]
        if hits:
            translation = src_a[name] - scale * hits[0]
            logger.info("PATA: scale %.4f from %s; anchor %s", scale, ", ".join(used), name)
            break
    if translation is None:
        first = lead[0]
        both = present(src) & present(first)
        if both.any():
            translation = src[both, :2].mean(0) - scale * first[both, :2].mean(0)
        else:
            translation = src[present(src), :2].mean(0) - scale * first[present(first), :2].mean(0)
        logger.warning("PATA: neck, hips, shoulders and nose not shared; anchoring on keypoint centroids")
    return scale, np.asarray(translation, dtype=np.float64)


def apply_similarity(sequence: np.ndarray, scale: float, translation: np.ndarray) -> np.ndarray:
    """Apply ``s * xy + t`` to the present keypoints of a pose or sequence; missing stay [0, 0, 0]."""
    out = np.array(sequence, dtype=np.float64)
    mask = out[..., 2] > 0
    out[..., :2] = np.where(mask[..., None], out[..., :2] * scale + translation, 0.0)
    return out


def bone_lengths(pose: np.ndarray) -> np.ndarray:
    """Length of every bone in :data:`BONES` (NaN where an end is missing)."""
    out = np.full(len(BONES), np.nan)
    for i, (p, c) in enumerate(BONES):
        if pose[p, 2] > 0 and pose[c, 2] > 0:
            out[i] = np.hypot(*(pose[c, :2] - pose[p, :2]))
    return out


def retarget(source, aligned) -> np.ndarray:
    """Give every bone of each aligned frame the source's length, keeping the frame's bone direction.

    Walks the bone tree from the neck; a bone the source lacks keeps its aligned (target x scale) length.
    A keypoint whose parent is missing in a frame keeps its aligned position.
    """
    src = as_pose(source, "source")
    seq = as_sequence(aligned, "target")
    src_len = bone_lengths(src)
    out = seq.copy()
    for f in range(len(seq)):
        pose = seq[f]
        for i, (p, c) in enumerate(BONES):
            if not (pose[p, 2] > 0 and pose[c, 2] > 0):
                continue
            vec = pose[c, :2] - pose[p, :2]
            norm = float(np.hypot(*vec))
            length = src_len[i] if np.isfinite(src_len[i]) else norm
            if norm < 1e-9:
                continue
            out[f, c, :2] = out[f, p, :2] + vec / norm * length
    return out


def align_sequence(source, targets, mode: str = "similarity") -> np.ndarray:
    """Map the target sequence ``(M, 18, 3)`` into the source's frame; returns the aligned ``(M, 18, 3)``.

    ``mode="similarity"``: one uniform scale and translation for the whole sequence (never per frame).
    ``mode="retarget"``: that, then every bone gets the source character's length (TCAN-style).
    """
    _check_mode(mode)
    scale, translation = estimate_similarity(source, targets)
    aligned = apply_similarity(as_sequence(targets, "target"), scale, translation)
    if mode == "retarget":
        aligned = retarget(source, aligned)
    return aligned
