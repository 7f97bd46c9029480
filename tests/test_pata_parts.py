"""PATA hands and face: carried through alignment, retargeting and the transition on their anchors."""
from __future__ import annotations

import numpy as np
import pytest

import pata


def _load_poses():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).with_name("pata_poses.py")
    spec = importlib.util.spec_from_file_location("pata_test_poses", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_poses = _load_poses()
walk, make_pose, scaled = _poses.walk, _poses.make_pose, _poses.scaled

RNG = np.random.default_rng(1)
HAND_OFFSETS = RNG.uniform(-15, 15, (21, 2))
FACE_OFFSETS = RNG.uniform(-12, 12, (70, 2))


def _parts_on(seq):
    """Hands on the wrists (left hand on the left wrist, 7) and a face on the nose, for every frame."""
    n = len(seq)
    hand = np.zeros((n, 21, 3))
    hand[..., :2] = seq[:, 7, None, :2] + HAND_OFFSETS
    hand[..., 2] = 0.8
    face = np.zeros((n, 70, 3))
    face[..., :2] = seq[:, 0, None, :2] + FACE_OFFSETS
    face[..., 2] = 0.7
    return {"hand_left": hand, "hand_right": None, "face": face}


@pytest.mark.parametrize("mode", ["similarity", "retarget"])
def test_parts_follow_their_anchors(mode):
    targets = walk(10)
    s, t = 1.5, np.array([-80.0, -60.0])
    source = scaled(targets[3:4], s, t)[0]
    source[:, :2] += np.linspace(-6, 6, 18)[:, None]  # not exactly a target frame, so retargeting moves things
    sparts = {k: (None if v is None else v[:1]) for k, v in _parts_on(source[None]).items()}
    tparts = _parts_on(targets)
    n = 4
    s = pata.estimate_similarity(source, targets)[0]  # about 1.5: the source is not exactly a scaled frame
    assert s == pytest.approx(1.5, rel=0.02)
    body, parts = pata.build_sequence_with_parts(source, targets, n, mode=mode, repair=False,
                                                 source_parts=sparts, target_parts=tparts)
    np.testing.assert_array_equal(body, pata.build_sequence(source, targets, n, mode=mode, repair=False))
    assert parts["hand_right"] is None
    assert parts["hand_left"].shape == (1 + n + 10, 21, 3) and parts["face"].shape == (1 + n + 10, 70, 3)
    np.testing.assert_array_equal(parts["hand_left"][0], sparts["hand_left"][0])  # frame 0: the source's own
    for f in range(1 + n + 10):
        for key, anchor, offsets in (("hand_left", 7, HAND_OFFSETS), ("face", 0, FACE_OFFSETS)):
            rel = parts[key][f, :, :2] - body[f, anchor, :2]
            # the source's shape in frame 0 and the first half of the transition, then the scaled target's
            want = offsets if f < 1 + n // 2 else offsets * s
            np.testing.assert_allclose(rel, want, atol=1e-6, err_msg=f"{key} frame {f}")
            assert (parts[key][f, :, 2] > 0).all()


def test_part_at_one_end_fades_and_never_sits_at_origin():
    targets = walk(6)
    source = make_pose()
    tparts = _parts_on(targets)
    body, parts = pata.build_sequence_with_parts(source, targets, 6, repair=False, target_parts=tparts)
    conf = parts["hand_left"][1:7, :, 2].max(axis=1)
    assert np.all(np.diff(conf) > 0) and conf[0] < 0.3 * 0.8
    for f in range(1, 7):
        pts = parts["hand_left"][f]
        ok = pts[:, 2] > 0
        assert ok.all() and (pts[ok, :2] > 100).all()
    np.testing.assert_allclose(parts["hand_left"][7:, :, 2], 0.8)
    # and the other way round: a source hand the targets lack fades out
    sparts = {"hand_left": _parts_on(source[None])["hand_left"]}
    body, parts = pata.build_sequence_with_parts(source, targets, 6, repair=False, source_parts=sparts)
    conf = parts["hand_left"][1:7, :, 2].max(axis=1)
    assert np.all(np.diff(conf) < 0) and (parts["hand_left"][7:] == 0).all()


def test_face_sizes_68_and_70_meet_on_68():
    targets = walk(4)
    source = make_pose()
    sface = _parts_on(source[None])["face"][:, :68]
    tface = _parts_on(targets)["face"]
    _, parts = pata.build_sequence_with_parts(source, targets, 2, source_parts={"face": sface},
                                              target_parts={"face": tface})
    assert parts["face"].shape == (1 + 2 + 4, 68, 3) and (parts["face"][..., 2] > 0).all()


def test_bad_parts_are_named():
    targets = walk(4)
    tparts = _parts_on(targets)
    tparts["hand_left"] = tparts["hand_left"][:3]
    with pytest.raises(ValueError, match=r"^target_parts: hand_left has 3 frames but the target has 4.*Fix:"):
        pata.build_sequence_with_parts(make_pose(), targets, 2, target_parts=tparts)
    with pytest.raises(ValueError, match=r"^source_parts: face must be keypoints of shape .*Fix:"):
        pata.build_sequence_with_parts(make_pose(), targets, 2, source_parts={"face": np.zeros((1, 70, 2))})
    bad = _parts_on(targets)
    bad["face"][1, 3, 0] = np.nan
    with pytest.raises(ValueError, match=r"^target_parts: face holds NaN"):
        pata.build_sequence_with_parts(make_pose(), targets, 2, target_parts=bad)


def test_parts_survive_the_pose_keypoint_round_trip_through_build():
    targets = walk(5)
    tparts = _parts_on(targets)
    data = pata.to_pose_keypoint(targets, 512, 512, parts=tparts, normalized=True)
    seq, w, h, parts = pata.from_pose_keypoint(data, with_parts=True)
    body, out_parts = pata.build_sequence_with_parts(make_pose(), seq, 3, target_parts=parts)
    back = pata.to_pose_keypoint(body, w, h, parts=out_parts)
    assert len(back) == 1 + 3 + 5
    assert back[0]["people"][0]["hand_left_keypoints_2d"] == [0.0] * 63  # the source had no hands
    assert back[0]["people"][0]["hand_right_keypoints_2d"] is None
    assert len(back[-1]["people"][0]["face_keypoints_2d"]) == 210
