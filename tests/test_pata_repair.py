"""PATA temporal repair: single-frame jumps, left/right swaps, gaps, smoothing that keeps fast motion."""
from __future__ import annotations

import numpy as np

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
walk = _poses.walk


def _err(a, b):
    return np.abs(a[..., :2] - b[..., :2]).max()


def test_clean_sequence_is_barely_changed():
    seq = walk(32)
    out = pata.repair_sequence(seq)
    assert out.shape == seq.shape
    # Savitzky-Golay (quadratic) on a smooth swing: tiny change
    assert _err(out, seq) < 0.02 * pata.body_scale(seq)
    np.testing.assert_array_equal(out[..., 2], seq[..., 2])


def test_single_frame_jumps_are_removed():
    seq = walk(30)
    scale = pata.body_scale(seq)
    bad = seq.copy()
    bad[10, 4, :2] += [0.9 * scale, -0.4 * scale]  # right wrist glitch
    bad[17, 9, :2] += [-0.6 * scale, 0.2 * scale]  # right knee glitch
    bad[23, 0, :2] += [0.0, 0.8 * scale]  # nose glitch
    out = pata.repair_sequence(bad)
    for f, j in ((10, 4), (17, 9), (23, 0)):
        assert out[f, j, 2] > 0
        assert np.hypot(*(out[f, j, :2] - seq[f, j, :2])) < 0.05 * scale, (f, j)
    assert _err(pata.repair_sequence(bad, smoothing=False), seq) < 0.05 * scale


def test_left_right_swaps_are_undone():
    seq = walk(30)
    scale = pata.body_scale(seq)
    bad = seq.copy()
    arms_r, arms_l = [2, 3, 4], [5, 6, 7]
    legs_r, legs_l = [8, 9, 10], [11, 12, 13]
    bad[8, arms_r + arms_l] = seq[8, arms_l + arms_r]  # one frame, arms swapped
    bad[15, legs_r + legs_l] = seq[15, legs_l + legs_r]  # one frame, legs swapped
    for f in (20, 21, 22):  # three frames, whole body mirrored labels
        bad[f, arms_r + arms_l + legs_r + legs_l] = seq[f, arms_l + arms_r + legs_l + legs_r]
    out = pata.repair_sequence(bad, smoothing=False)
    assert _err(out, seq) < 1e-6
    assert _err(pata.repair_sequence(bad), seq) < 0.05 * scale


def test_short_gaps_are_filled_long_ones_kept():
    seq = walk(40)
    scale = pata.body_scale(seq)
    bad = seq.copy()
    bad[5:8, 4] = 0  # a 3-frame gap in the right wrist
    bad[12] = 0  # a whole empty frame
    bad[20:32, 10] = 0  # a 12-frame gap in the right ankle: longer than max_gap=8
    out = pata.repair_sequence(bad, max_gap=8)
    assert (out[5:8, 4, 2] > 0).all() and (out[12, :, 2] > 0).all()
    assert np.abs(out[5:8, 4, :2] - seq[5:8, 4, :2]).max() < 0.1 * scale
    assert np.abs(out[12, :, :2] - seq[12, :, :2]).max() < 0.1 * scale
    assert (out[20:32, 10] == 0).all()


def test_real_fast_motion_is_kept():
    # the whole body moves fast (a jump cut of pace, not a glitch): 0.4 body scales per frame for 10 frames
    seq = walk(30, step=0.0)
    scale = pata.body_scale(seq)
    for f in range(30):
        seq[f, :, 0] += 0.4 * scale * np.clip(f - 10, 0, 10)
    out = pata.repair_sequence(seq)
    assert (out[..., 2] > 0).all()  # nothing rejected as a jump
    assert _err(out, seq) < 0.1 * scale
    # a fast arm swing (a punch) lasting two frames is motion too
    seq = walk(30)
    seq[14:16, 4, 0] -= 0.7 * scale
    seq[14:16, 3, 0] -= 0.35 * scale
    out = pata.repair_sequence(seq, smoothing=False)
    assert (out[14:16, 4, 2] > 0).all()
    assert _err(out[14:16], seq[14:16]) < 1e-6
    # with the light smoothing most of the punch's reach survives
    smoothed = pata.repair_sequence(seq)
    reach = (walk(30)[14:16, 4, 0] - smoothed[14:16, 4, 0]) / (0.7 * scale)
    assert (reach > 0.75).all() and (reach < 1.1).all()


def test_repair_validates_like_the_other_functions():
    seq = walk(5)
    seq[1, 1, 0] = np.nan
    try:
        pata.repair_sequence(seq)
    except ValueError as exc:
        assert str(exc).startswith("target: NaN or infinite") and "Fix:" in str(exc)
    else:
        raise AssertionError("NaN accepted")
    one = pata.repair_sequence(walk(1))
    assert one.shape == (1, 18, 3)


def test_jumps_in_the_first_and_last_frame_are_removed():
    seq = walk(20)
    scale = pata.body_scale(seq)
    bad = seq.copy()
    bad[0, 7, :2] += [0.8 * scale, 0.0]
    bad[19, 12, :2] += [0.0, -0.7 * scale]
    out = pata.repair_sequence(bad, smoothing=False)
    assert (out[..., 2] > 0).sum() >= (seq[..., 2] > 0).sum() - 2  # dropped there (ends are not filled)
    assert out[0, 7, 2] == 0 or np.hypot(*(out[0, 7, :2] - seq[0, 7, :2])) < 0.05 * scale
    assert out[19, 12, 2] == 0 or np.hypot(*(out[19, 12, :2] - seq[19, 12, :2])) < 0.05 * scale


def test_a_swapped_first_frame_does_not_flip_the_whole_sequence():
    seq = walk(20)
    bad = seq.copy()
    r, l = [2, 3, 4], [5, 6, 7]
    bad[0, r + l] = seq[0, l + r]  # the detector got the first frame's arms wrong
    out = pata.repair_sequence(bad, smoothing=False)
    assert _err(out, seq) < 1e-6


def test_repair_options_are_checked():
    for kwargs, name in (({"max_gap": -1}, "max_gap"), ({"max_gap": 1.5}, "max_gap"),
                         ({"jump_fraction": 0}, "jump_fraction"), ({"jump_fraction": float("nan")}, "jump_fraction")):
        try:
            pata.repair_sequence(walk(5), **kwargs)
        except ValueError as exc:
            assert str(exc).startswith(f"{name}: ") and "Fix:" in str(exc)
        else:
            raise AssertionError(f"{kwargs} accepted")


def test_single_joint_swaps_are_undone():
    seq = walk(24)
    bad = seq.copy()
    bad[6, [4, 7]] = seq[6, [7, 4]]  # only the wrists swapped
    bad[[12, 13], 10], bad[[12, 13], 13] = seq[[12, 13], 13], seq[[12, 13], 10]  # only the ankles, two frames
    out = pata.repair_sequence(bad, smoothing=False)
    assert _err(out, seq) < 1e-6


def test_smoothing_reduces_detector_jitter():
    seq = walk(40)
    noisy = seq.copy()
    noisy[..., :2] += np.random.default_rng(3).normal(0, 2.0, noisy[..., :2].shape)
    out = pata.repair_sequence(noisy)
    rms = lambda a: float(np.sqrt(np.mean((a[2:-2, :, :2] - seq[2:-2, :, :2]) ** 2)))  # noqa: E731
    assert rms(out) < 0.8 * rms(noisy)
    assert (out[..., 2] > 0).all()  # jitter is not mistaken for jumps
