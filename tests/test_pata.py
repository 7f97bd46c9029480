"""PATA core: alignment, retargeting, transitions, the built sequence (issue 2, "Done when").

Pure layer imported top-level as ``pata`` (tests/conftest.py puts the repository root on sys.path).
"""
from __future__ import annotations

import numpy as np
import pytest

import pata
from pata.align import bone_lengths
from pata.skeleton import BONES

def _load_poses():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).with_name("pata_poses.py")
    spec = importlib.util.spec_from_file_location("pata_test_poses", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_poses = _load_poses()
BASE, make_pose, _rotate, walk, scaled = _poses.BASE, _poses.make_pose, _poses.rotate, _poses.walk, _poses.scaled


def rel_bone_error(pose, reference):
    a, b = bone_lengths(pose), bone_lengths(reference)
    ok = np.isfinite(a) & np.isfinite(b)
    assert ok.sum() >= 10
    return np.abs(a[ok] - b[ok]) / b[ok]


# ----------------------------------------------------------------------------------------------- alignment

@pytest.mark.parametrize("s, t", [(2.0, (-100.0, 37.5)), (0.55, (140.0, 220.0)), (1.0, (0.0, 0.0))])
def test_alignment_recovers_known_scale_and_translation(s, t):
    targets = walk(20)
    source = scaled(targets[:1], s, np.array(t))[0]  # the source is the first frame scaled and shifted
    scale, shift = pata.estimate_similarity(source, targets)
    assert scale == pytest.approx(s, rel=1e-6)
    np.testing.assert_allclose(shift, t, atol=1e-6)
    aligned = pata.align_sequence(source, targets)
    expected = scaled(targets, s, np.array(t))  # the whole sequence, one transform
    assert np.abs(aligned[..., :2] - expected[..., :2]).max() < 1.0
    np.testing.assert_allclose(aligned[0, :, :2], source[:, :2], atol=1e-6)
    np.testing.assert_array_equal(aligned[..., 2], targets[..., 2])


def test_alignment_is_one_transform_not_per_frame():
    # the target grows over time (walks towards the camera); per-frame scaling would undo that
    targets = np.stack([scaled(make_pose()[None], 1 + 0.02 * f, np.zeros(2))[0] for f in range(12)])
    source = make_pose()
    aligned = pata.align_sequence(source, targets)
    ratio = pata.body_scale(aligned[-1]) / pata.body_scale(aligned[0])
    assert ratio == pytest.approx(pata.body_scale(targets[-1]) / pata.body_scale(targets[0]), rel=1e-6)


def test_alignment_falls_back_without_neck_or_hips():
    targets = walk(10)
    s, t = 1.5, np.array([20.0, -40.0])
    source = scaled(targets[:1], s, t)[0]
    for missing in ([1], [8, 11], [1, 8, 11]):
        src = source.copy()
        src[missing] = 0
        aligned = pata.align_sequence(src, targets)
        expected = scaled(targets, s, t)
        assert np.abs(aligned[..., :2] - expected[..., :2]).max() < 1.0, missing


def test_alignment_without_any_shared_length_is_a_clear_error():
    src = np.zeros((18, 3))
    src[0] = [100, 100, 1]  # a nose only
    tgt = make_pose()[None]
    with pytest.raises(ValueError) as err:
        pata.align_sequence(src, tgt)
    msg = str(err.value)
    assert msg.startswith("source:") and "Fix:" in msg


def test_unknown_mode_names_mode():
    with pytest.raises(ValueError, match=r"^mode: .*similarity, retarget"):
        pata.align_sequence(make_pose(), walk(3), mode="affine")
    with pytest.raises(ValueError, match=r"^mode: "):
        pata.build_sequence(make_pose(), walk(3), 2, mode="bogus")


# --------------------------------------------------------------------------------------------- retargeting

def _character() -> np.ndarray:
    """A differently proportioned character: long legs, short arms, big head, elsewhere on the canvas."""
    out = make_pose()
    out[1, :2] = BASE[1]
    for p, c in BONES:
        f = {(1, 0): 1.3, (2, 3): 0.8, (3, 4): 0.8, (5, 6): 0.8, (6, 7): 0.8,
             (8, 9): 1.25, (9, 10): 1.25, (11, 12): 1.25, (12, 13): 1.25}.get((p, c), 1.0)
        out[c, :2] = out[p, :2] + f * (BASE[c] - BASE[p])
    return scaled(out[None], 1.4, np.array([-60.0, -50.0]))[0]


def test_retarget_gives_every_bone_the_source_length():
    source = _character()
    targets = walk(16)
    out = pata.align_sequence(source, targets, mode="retarget")
    for f in range(len(out)):
        assert rel_bone_error(out[f], source).max() < 0.01, f
    # and the bone directions are the target's
    for f in (0, 5, 11):
        for i, (p, c) in enumerate(BONES):
            u = targets[f, c, :2] - targets[f, p, :2]
            v = out[f, c, :2] - out[f, p, :2]
            cos = u @ v / np.linalg.norm(u) / np.linalg.norm(v)
            assert cos > 1 - 1e-9, (f, i)


def test_retarget_bone_missing_in_source_keeps_scaled_target_length():
    source = _character()
    source[4] = 0  # no right wrist in the source
    targets = walk(4)
    sim = pata.align_sequence(source, targets, mode="similarity")
    ret = pata.align_sequence(source, targets, mode="retarget")
    i = BONES.index((3, 4))
    np.testing.assert_allclose(bone_lengths(ret[2])[i], bone_lengths(sim[2])[i], rtol=1e-9)
    assert ret[2, 4, 2] > 0


# ---------------------------------------------------------------------------------------------- transition

def test_transition_shape_ends_excluded_and_neighbours_close():
    a = make_pose()
    b = walk(9)[8]
    b[:, :2] += [30, -10]
    tr = pata.transition(a, b, 8)
    assert tr.shape == (8, 18, 3)
    assert not np.allclose(tr[0], a) and not np.allclose(tr[-1], b)
    # ease-in-out: the first and last steps are small compared with the middle one
    step = lambda x, y: np.abs(x[:, :2] - y[:, :2]).max()  # noqa: E731
    assert step(tr[0], a) < step(tr[4], tr[3])
    assert step(tr[-1], b) < step(tr[4], tr[3])
    # a long transition ends (both sides) arbitrarily close to the two poses
    long = pata.transition(a, b, 400)
    assert step(long[0], a) < 0.5 and step(long[-1], b) < 0.5
    assert pata.transition(a, b, 0).shape == (0, 18, 3)


def test_transition_keeps_bone_lengths_when_ends_share_them():
    source = _character()
    aligned = pata.align_sequence(source, walk(12), mode="retarget")
    target = aligned[6].copy()
    target[:, :2] += [40, 25]  # and it has moved
    for pose in pata.transition(source, target, 10):
        assert rel_bone_error(pose, source).max() < 0.02


def test_transition_rotating_limb_does_not_shrink():
    a = make_pose()
    b = make_pose()
    _rotate(b, 2, (3, 4), np.pi * 0.9)  # the right arm swings almost all the way up
    tr = pata.transition(a, b, 7)
    for pose in tr:
        assert rel_bone_error(pose, a).max() < 0.02
    # raw linear interpolation would shrink that arm a lot; the tree walk must not
    mid = tr[3]
    assert np.hypot(*(mid[4, :2] - mid[2, :2])) > 0.98 * np.hypot(*(a[4, :2] - a[2, :2]))


def test_points_at_one_end_only_fade_and_never_come_from_origin():
    a = make_pose()
    b = make_pose()
    b[:, :2] += [100, 0]
    a[[16, 17, 4]] = 0  # ears and right wrist only in the target
    b[[7, 13]] = 0  # left wrist and ankle only in the source
    tr = pata.transition(a, b, 9)
    conf_in = tr[:, [16, 17, 4], 2]
    conf_out = tr[:, [7, 13], 2]
    assert np.all(np.diff(conf_in, axis=0) > 0) and np.all(np.diff(conf_out, axis=0) < 0)
    assert conf_in[0].max() < 0.3 * 0.9 and conf_out[-1].max() < 0.3 * 0.9
    for pose in tr:
        ok = pose[:, 2] > 0
        assert np.all(pose[ok, :2] > 80), "a keypoint flew in from (0, 0)"
        # a fading point rides on its parent at its own end's bone length
        for c, p in ((4, 3), (16, 14), (7, 6)):
            if pose[c, 2] > 0:
                ref = b if c in (4, 16) else a
                assert np.hypot(*(pose[c, :2] - pose[p, :2])) == pytest.approx(
                    np.hypot(*(ref[c, :2] - ref[p, :2])), rel=1e-6)


def test_transition_bad_frame_counts_name_the_input():
    for bad in (-1, 2.5, True, "3"):
        with pytest.raises(ValueError, match=r"^transition_frames: .*Fix:"):
            pata.transition(make_pose(), make_pose(), bad)
    with pytest.raises(ValueError, match=r"^transition_frames: "):
        pata.build_sequence(make_pose(), walk(4), -3)


# ------------------------------------------------------------------------------------------ build_sequence

@pytest.mark.parametrize("mode", ["similarity", "retarget"])
@pytest.mark.parametrize("repair", [False, True])
def test_build_sequence_layout(mode, repair):
    source = _character()
    source[17] = 0  # a missing point in the source must stay exactly [0, 0, 0]
    targets = walk(14)
    t = 5
    out = pata.build_sequence(source, targets, t, mode=mode, repair=repair)
    assert out.shape == (1 + t + 14, 18, 3)
    np.testing.assert_array_equal(out[0], source)  # frame 0 is the source exactly
    aligned = pata.align_sequence(source, pata.repair_sequence(targets) if repair else targets, mode=mode)
    np.testing.assert_allclose(out[1 + t:], aligned, atol=1e-9)  # then the M aligned targets
    np.testing.assert_allclose(out[1:1 + t], pata.transition(source, aligned[0], t), atol=1e-9)
    if mode == "retarget":
        for pose in out:
            assert rel_bone_error(pose, source).max() < 0.02


def test_build_sequence_without_transition():
    out = pata.build_sequence(make_pose(), walk(6), 0)
    assert out.shape == (7, 18, 3)


def test_no_person_in_source_is_named():
    for fn in (lambda s: pata.build_sequence(s, walk(4), 2), lambda s: pata.align_sequence(s, walk(4))):
        with pytest.raises(ValueError) as err:
            fn(np.zeros((18, 3)))
        msg = str(err.value)
        assert msg.startswith("source: no person") and "Fix:" in msg


def test_every_target_frame_empty_is_named():
    for fn in (lambda t: pata.build_sequence(make_pose(), t, 2), lambda t: pata.align_sequence(make_pose(), t)):
        with pytest.raises(ValueError) as err:
            fn(np.zeros((5, 18, 3)))
        msg = str(err.value)
        assert msg.startswith("target: every target frame is empty") and "Fix:" in msg


def test_empty_target_frames_are_gaps_repaired_or_kept():
    targets = walk(16)
    holes = [5, 6, 11]
    broken = targets.copy()
    broken[holes] = 0
    repaired = pata.build_sequence(make_pose(), broken, 3, repair=True)
    for h in holes:
        assert (repaired[4 + h, :, 2] > 0).all(), h
        assert np.abs(repaired[4 + h, :, :2] - targets[h, :, :2]).max() < 0.1 * pata.body_scale(targets)
    kept = pata.build_sequence(make_pose(), broken, 3, repair=False)
    for h in holes:
        assert (kept[4 + h] == 0).all()


def test_leading_empty_target_frames_do_not_empty_the_transition():
    targets = walk(12)
    broken = targets.copy()
    broken[:2] = 0
    for repair in (True, False):
        out = pata.build_sequence(make_pose(), broken, 4, repair=repair)
        assert out.shape == (17, 18, 3)
        # the transition heads for the first frame that shows the person, not for an empty frame
        assert (out[1:5, 1, 2] > 0).all(), repair
        assert (out[1:5, :, 2] > 0.3).sum(axis=1).min() >= 9
        if repair:  # leading empty frames hold the first frame that shows the person
            np.testing.assert_allclose(out[5], out[6], atol=1e-9)
            assert np.abs(out[5, :, :2] - out[7, :, :2]).max() < 0.05 * pata.body_scale(targets)
            assert (out[5:, :, 2] > 0).all()
        else:
            assert (out[5:7] == 0).all() and (out[7:, :, 2] > 0).all()


@pytest.mark.parametrize("bad, where", [(np.nan, "NaN"), (np.inf, "infinite")])
def test_nan_or_inf_coordinates_are_named(bad, where):
    src = make_pose()
    src[3, 0] = bad
    with pytest.raises(ValueError) as err:
        pata.build_sequence(src, walk(4), 2)
    msg = str(err.value)
    assert msg.startswith("source: NaN or infinite") and "right_elbow" in msg and "Fix:" in msg
    tgt = walk(4)
    tgt[2, 9, 1] = bad
    with pytest.raises(ValueError) as err:
        pata.build_sequence(make_pose(), tgt, 2)
    msg = str(err.value)
    assert msg.startswith("target: NaN or infinite") and "frame 2" in msg and "right_knee" in msg


def test_wrong_shapes_are_named():
    with pytest.raises(ValueError, match=r"^source: expected one OpenPose body pose .*Fix:"):
        pata.build_sequence(np.zeros((17, 3)), walk(3), 1)
    with pytest.raises(ValueError, match=r"^target: expected a pose sequence .*Fix:"):
        pata.build_sequence(make_pose(), np.zeros((0, 18, 3)), 1)


def test_example_pose_files_load_and_build():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1] / "examples" / "poses"
    src, sw, sh = pata.from_pose_keypoint(pata.load_pose_json(root / "character.json"))
    assert src.shape == (1, 18, 3) and (src[0, :, 2] > 0).sum() >= 12
    for name in ("wave", "walk", "turn", "dance"):
        seq, w, h = pata.from_pose_keypoint(pata.load_pose_json(root / f"{name}.json"))
        assert 16 <= len(seq) <= 48, name
        assert (seq[..., 2] > 0).any(axis=1).all(), name
        out = pata.build_sequence(src[0], seq, 6, mode="retarget")
        assert out.shape == (1 + 6 + len(seq), 18, 3)
        assert np.isfinite(out).all()
        ok = out[..., 2] > 0
        assert (out[..., 0][ok] > -0.25 * sw).all() and (out[..., 0][ok] < 1.25 * sw).all(), name
        img = pata.render_pose(out[:3], sw, sh)
        assert img.shape == (3, sh, sw, 3) and img.max() > 0.5


def test_scale_falls_back_to_later_frames_when_the_first_share_no_length():
    targets = walk(14)
    targets[:9, [0, 2, 3, 4, 5, 6, 7, 14, 15, 16, 17]] = 0  # the first frames show only neck, hips and legs
    source = scaled(walk(1), 0.7, np.array([30.0, 10.0]))[0]
    source[8:14] = 0  # the source shows no hips or legs
    scale, _ = pata.estimate_similarity(source, targets)
    assert scale == pytest.approx(0.7, rel=1e-6)


@pytest.mark.parametrize("missing", [[1], [8, 11], [1, 8, 11], [0, 14, 15, 16, 17]])
@pytest.mark.parametrize("side", ["source", "target", "both"])
def test_transition_is_continuous_with_anchors_missing(missing, side):
    a = make_pose()
    b = walk(9)[8]
    b[:, :2] += [60, 20]
    if side in ("source", "both"):
        a[missing] = 0
    if side in ("target", "both"):
        b[missing] = 0
    frames = [a, *pata.transition(a, b, 10), b]
    straight = np.abs(a[:, :2] - b[:, :2]).max()
    for x, y in zip(frames[:-1], frames[1:]):
        ok = (x[:, 2] > 0) & (y[:, 2] > 0)
        assert np.abs(x[ok, :2] - y[ok, :2]).max() < 0.35 * straight  # no jumps between frames
        assert (y[y[:, 2] > 0, :2] > 80).all()  # nothing near (0, 0)


def test_build_sequence_retarget_with_neck_missing_in_some_target_frames():
    source = _character()
    targets = walk(10)
    targets[3:5, 1] = 0
    out = pata.build_sequence(source, targets, 4, mode="retarget", repair=False)
    assert np.isfinite(out).all() and out.shape == (15, 18, 3)
    for f in (5, 6, 7, 10, 14):  # frames whose bones all have both ends
        assert rel_bone_error(out[f], source).max() < 0.01, f


def test_short_targets_and_plain_lists_are_accepted():
    for m in (1, 2):
        out = pata.build_sequence(make_pose().tolist(), walk(m).astype(np.float32), 3)
        assert out.shape == (1 + 3 + m, 18, 3) and out.dtype == np.float64
    out = pata.build_sequence(make_pose(), make_pose(), 2)  # one pose as the whole target
    assert out.shape == (4, 18, 3)


def test_transition_turns_bones_the_short_way_round():
    a = make_pose()
    b = make_pose()
    # the right forearm points at 170 degrees in one pose and at -170 degrees in the other
    for pose, deg in ((a, 170.0), (b, -170.0)):
        r = np.hypot(*(BASE[4] - BASE[3]))
        pose[4, :2] = pose[3, :2] + r * np.array([np.cos(np.radians(deg)), np.sin(np.radians(deg))])
    for pose in pata.transition(a, b, 9):
        v = pose[4, :2] - pose[3, :2]
        ang = np.degrees(np.arctan2(v[1], v[0])) % 360
        assert 169.0 < ang < 191.0


def test_transition_bone_lengths_move_between_the_two_ends():
    source = _character()
    aligned = pata.align_sequence(source, walk(4))  # similarity: the target keeps its own proportions
    la, lb = bone_lengths(source), bone_lengths(aligned[0])
    tr = pata.transition(source, aligned[0], 9)
    differ = np.abs(la - lb) > 0.1 * np.minimum(la, lb)
    assert differ.sum() >= 4
    prev = la
    for pose in tr:
        lengths = bone_lengths(pose)
        assert np.all(lengths >= np.minimum(la, lb) - 1e-6) and np.all(lengths <= np.maximum(la, lb) + 1e-6)
        # monotone from one end's lengths to the other's
        assert np.all((lengths - prev)[differ] * np.sign(lb - la)[differ] > 0)
        prev = lengths


def test_scale_is_robust_to_one_foreshortened_limb():
    targets = walk(6)
    targets[:, 10, :2] = targets[:, 9, :2] + 0.3 * (targets[:, 10, :2] - targets[:, 9, :2])  # right shin toward camera
    source = scaled(walk(1), 1.7, np.array([5.0, -20.0]))[0]
    scale, _ = pata.estimate_similarity(source, targets)
    assert scale == pytest.approx(1.7, rel=1e-6)
