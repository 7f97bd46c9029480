"""Hands and face through PATA Align on every bundled sequence (issue 18): after alignment and retargeting (repair
on, as the workflows run it) each hand stays on its wrist and the face on the head, at the character's scale.

The bundled sequences carry bodies only, so the test gives every frame hands and a face the way DWPose writes
them: a 21-point hand whose point 0 is the wrist, a 68-point face around the nose, both sized to the body, and
no face where the nose is hidden (the back view of `turn`)."""
from __future__ import annotations

import numpy as np
import pytest

from poseanimate import pata, pipeline
from poseanimate.nodes.load_pose_sequence import PoseAnimateLoadPoseSequence
from poseanimate.nodes.pata_align import PoseAnimatePATAAlign

LOAD = PoseAnimateLoadPoseSequence()
ALIGN = PoseAnimatePATAAlign()
RNG = np.random.default_rng(18)
HAND = np.vstack([[0.0, 0.0], RNG.uniform(-0.35, 0.35, (20, 2))])  # in body scales, point 0 on the wrist
FACE = RNG.uniform(-0.25, 0.25, (68, 2))  # in body scales, around the nose


def _with_parts(data):
    """POSE_KEYPOINT frames with hands on the wrists and a face on the nose (where the nose is seen)."""
    seq, w, h = pata.from_pose_keypoint(data)
    scale = pata.body_scale(seq)
    parts = {}
    for key, anchor, shape in (("hand_left", 7, HAND), ("hand_right", 4, HAND), ("face", 0, FACE)):
        arr = np.zeros((len(seq), len(shape), 3))
        seen = seq[:, anchor, 2] > 0
        arr[seen, :, :2] = seq[seen, anchor, None, :2] + shape * scale
        arr[seen, :, 2] = 0.8
        parts[key] = arr
    return pata.to_pose_keypoint(seq, w, h, parts), scale


def _spread(pts):
    ok = pts[:, 2] > 0
    return float(np.sqrt(((pts[ok, :2] - pts[ok, :2].mean(0)) ** 2).sum(1).mean()))


@pytest.mark.parametrize("frames", [12, 0])
@pytest.mark.parametrize("name", ["walk", "turn", "dance", "wave"])
@pytest.mark.parametrize("mode", ["retarget", "similarity"])
def test_hands_and_face_stay_attached_at_the_characters_scale(name, frames, mode):
    source, _ = LOAD.load("examples/character.json")
    target, _ = LOAD.load(f"examples/{name}.json", frames)
    target, target_scale = _with_parts(target)
    n = 3
    aligned, _, count = ALIGN.align(source, target, n, mode, True, 0, 0)
    body, w, h, parts = pata.from_pose_keypoint(aligned, with_parts=True)
    tgt_body, _, _, tgt_parts = pata.from_pose_keypoint(target, with_parts=True)
    src_body = pata.from_pose_keypoint(source)[0][0]
    scale = pata.estimate_similarity(src_body, pata.repair_sequence(tgt_body))[0]  # PATA scales the repaired targets
    assert count == len(body) == 1 + n + len(tgt_body)
    for f in range(1 + n, len(body)):
        t = f - 1 - n
        for key, anchor in (("hand_left", 7), ("hand_right", 4), ("face", 0)):
            got, given = parts[key][f], tgt_parts[key][t]
            if not (given[:, 2] > 0).any():
                assert not (got[:, 2] > 0).any(), (key, f)  # no part appears where the detector gave none
                continue
            assert body[f, anchor, 2] > 0
            where = f"{name}/{frames} {mode} frame {f} {key}"
            if key != "face":
                # the hand's wrist point is the body's wrist
                assert np.hypot(*(got[0, :2] - body[f, anchor, :2])) < 1e-6, where
            else:
                # the face keeps its place on the head: the same offset from the nose, scaled like the body
                want = (given[:, :2] - tgt_body[t, anchor, :2]) * scale
                np.testing.assert_allclose(got[:, :2] - body[f, anchor, :2], want, atol=1e-6, err_msg=where)
            # at the character's scale: the part's size over the body's is what it was in the driving sequence
            assert _spread(got) == pytest.approx(_spread(given) * scale, rel=1e-6), where
    # the character's scale is the source's: body_scale(aligned) / body_scale(target) is the similarity scale
    # (retarget also gives every bone the character's length, within a few percent of it)
    ratio = pata.body_scale(body[1 + n:]) / pata.body_scale(tgt_body)
    assert ratio == pytest.approx(scale, rel=0.15 if mode == "retarget" else 0.02)
    assert pata.body_scale(src_body) > 0 and target_scale > 0 and w > 0 and h > 0


def test_a_hand_follows_its_wrist_when_repair_moves_the_wrist():
    """Repair mends the body (here a one-frame wrist jump); the hand the detector put on the jumped wrist goes
    with the mended wrist instead of staying where the glitch was."""
    source, _ = LOAD.load("examples/character.json")
    target, _ = LOAD.load("examples/walk.json")
    seq, w, h = pata.from_pose_keypoint(target)
    height = pata.body_height(seq)
    seq[20, 7, :2] += [0.2 * height, -0.1 * height]
    target, _ = _with_parts(pata.to_pose_keypoint(seq, w, h))
    body, parts = pipeline.align_poses(pata.from_pose_keypoint(source)[0][0], pata.from_pose_keypoint(target)[0],
                                       transition_frames=0, mode="retarget", repair=True,
                                       target_parts=pata.from_pose_keypoint(target, with_parts=True)[3])
    f = 1 + 20
    assert np.hypot(*(parts["hand_left"][f, 0, :2] - body[f, 7, :2])) < 1e-6
