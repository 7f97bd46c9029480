"""Body prior: where a character's body is, rendered from its skeleton as limb capsules scaled to the body.

Cross-attention maps of a low-resolution UNet miss thin limbs; the target pose is known, so the region the
body's own limbs cover is a cheap, exact-in-geometry prior for the character mask. Widths are fractions of the
body's torso length (neck to mid-hip, :func:`pata.skeleton.body_scale`), rough human proportions: what a
person's clothes or hair add beyond them (a dress, a cape, long hair, a held object) is left to the
cross-attention map.
"""
from __future__ import annotations

import cv2
import numpy as np

from .skeleton import (L_ANKLE, L_ELBOW, L_HIP, L_KNEE, L_SHOULDER, L_WRIST, NECK, NOSE, R_ANKLE, R_ELBOW, R_HIP,
                       R_KNEE, R_SHOULDER, R_WRIST, as_sequence, body_scale)

# Capsule widths (full width) in torso lengths, and the head's radius.
ARM_WIDTH = 0.25
LEG_WIDTH = 0.30
NECK_WIDTH = 0.20
HEAD_RADIUS = 0.25
LIMBS = (
    ((R_SHOULDER, R_ELBOW), ARM_WIDTH), ((R_ELBOW, R_WRIST), ARM_WIDTH),
    ((L_SHOULDER, L_ELBOW), ARM_WIDTH), ((L_ELBOW, L_WRIST), ARM_WIDTH),
    ((R_HIP, R_KNEE), LEG_WIDTH), ((R_KNEE, R_ANKLE), LEG_WIDTH),
    ((L_HIP, L_KNEE), LEG_WIDTH), ((L_KNEE, L_ANKLE), LEG_WIDTH),
    ((NECK, NOSE), NECK_WIDTH),
)
TORSO = (R_SHOULDER, L_SHOULDER, L_HIP, R_HIP)
SUPERSAMPLE = 4


def body_prior(sequence, width: int, height: int, grow: float = 1.0) -> np.ndarray:
    """Body masks ``(F, height, width)`` float32 in {0, 1} for a pose sequence ``(F, 18, 3)`` in pixels.

    Per frame: a capsule along every present limb (arms, legs, neck), the torso polygon (shoulders and hips,
    widened by a leg width) and a disc for the head at the nose, all sized from the sequence's torso length
    times ``grow``. A frame with no measurable body gets an empty mask. Drawn at 4x and area-averaged, then
    thresholded at 0.5.
    """
    seq = as_sequence(sequence, "poses")
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected a positive image size in pixels, got {value!r}. "
                             "Fix: pass an integer >= 1")
    if not np.isfinite(grow) or grow <= 0:
        raise ValueError(f"grow: expected a positive factor (1 = the default proportions), got {grow!r}. "
                         "Fix: pass a number > 0, e.g. 1")
    torso = body_scale(seq) * float(grow)
    out = np.zeros((len(seq), height, width), np.float32)
    if torso <= 0:
        return out
    s = SUPERSAMPLE
    for f, pose in enumerate(seq):
        canvas = np.zeros((height * s, width * s), np.uint8)
        ok = pose[:, 2] > 0
        pts = pose[:, :2] * s

        def pt(i):
            return tuple(int(round(v)) for v in pts[i])

        for (a, b), w in LIMBS:
            if ok[a] and ok[b]:
                cv2.line(canvas, pt(a), pt(b), 255, max(1, int(round(w * torso * s))), cv2.LINE_8)
        corners = [i for i in TORSO if ok[i]]
        if len(corners) >= 3:
            poly = np.array([pt(i) for i in corners], np.int32)
            cv2.fillPoly(canvas, [poly], 255)
            cv2.polylines(canvas, [poly], True, 255, max(1, int(round(LEG_WIDTH * torso * s))))
        if ok[NOSE]:
            cv2.circle(canvas, pt(NOSE), max(1, int(round(HEAD_RADIUS * torso * s))), 255, -1)
        small = cv2.resize(canvas.astype(np.float32) / 255.0, (width, height), interpolation=cv2.INTER_AREA)
        out[f] = (small >= 0.5).astype(np.float32)
    return out
