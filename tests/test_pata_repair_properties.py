"""PATA repair on the bundled sequences (issue 18): clean motion at every frame count Load Pose Sequence can
pick passes through (no visible keypoint lost, none moved by more than 3 % of the body height), and injected
faults on a dense sequence are still mended. benchmarks/bench_repair.py prints the same measure as a table."""
from __future__ import annotations

import numpy as np
import pytest

from poseanimate import pata, pipeline
from poseanimate.nodes.load_pose_sequence import EXAMPLES_DIR

SEQUENCES = ("walk", "turn", "dance", "wave")
MOVE = 0.03  # of the body height: light smoothing of detector jitter, never a change of the motion
ARMS_R, ARMS_L, LEGS_R, LEGS_L = [2, 3, 4], [5, 6, 7], [8, 9, 10], [11, 12, 13]


def _load(name):
    return pata.from_pose_keypoint(pata.load_pose_json(EXAMPLES_DIR / f"{name}.json"))[0]


def _moved(a, b):
    """Per keypoint, how far it moved between a and b (0 where either lacks it)."""
    both = (a[..., 2] > 0) & (b[..., 2] > 0)
    return np.where(both, np.hypot(*(a[..., :2] - b[..., :2]).transpose(2, 0, 1)), 0.0)


@pytest.mark.parametrize("name", SEQUENCES)
def test_clean_bundled_motion_passes_through_at_every_frame_count(name):
    full = _load(name)
    assert len(full) >= 24
    for frames in range(6, len(full) + 1):
        # the subsampling Load Pose Sequence's frames input does
        seq = pipeline.sample_poses(full, frames)
        out = pata.repair_sequence(seq)
        height = pata.body_height(seq)
        lost = (seq[..., 2] > 0) & (out[..., 2] <= 0)
        assert not lost.any(), f"{name} at {frames} frames: visible keypoints dropped at {np.argwhere(lost).tolist()}"
        added = (seq[..., 2] <= 0) & (out[..., 2] > 0)
        assert not added.any(), f"{name} at {frames} frames: keypoints the detector left out were drawn in"
        worst = _moved(seq, out).max() / height
        assert worst < MOVE, f"{name} at {frames} frames: a keypoint moved by {worst:.1%} of the body height"


def test_a_turn_to_the_back_keeps_its_sides():
    # the back view has right and left on the other sides of the image on purpose
    full = _load("turn")
    for frames in (6, 7, 8, 12, 24):
        seq = pipeline.sample_poses(full, frames)
        out = pata.repair_sequence(seq, smoothing=False)
        np.testing.assert_array_equal(out, seq)
        last = out[-1]
        assert last[2, 0] > last[5, 0] and last[8, 0] > last[11, 0]  # right shoulder and hip on the image's right


def _leg_apart_frame(seq):
    """The inner frame where the ankles are furthest apart (a leg swap there is a real fault)."""
    sep = np.hypot(*(seq[:, 10, :2] - seq[:, 13, :2]).T)
    sep[:3] = sep[-3:] = 0
    return int(np.argmax(sep))


@pytest.mark.parametrize("name", SEQUENCES)
def test_a_whole_leg_swap_in_one_frame_is_mended(name):
    seq = _load(name)
    height = pata.body_height(seq)
    f = _leg_apart_frame(seq)
    bad = seq.copy()
    bad[f, LEGS_R + LEGS_L] = seq[f, LEGS_L + LEGS_R]
    out = pata.repair_sequence(bad)
    assert _moved(seq, out).max() < MOVE * height
    np.testing.assert_array_equal(out[..., 2] > 0, seq[..., 2] > 0)
    # without smoothing the swap is undone exactly
    np.testing.assert_array_equal(pata.repair_sequence(bad, smoothing=False), seq)


def test_an_arm_swap_is_mended_in_the_turns_back_view_too():
    seq = _load("turn")
    f = len(seq) - 3  # back view: labels are mirrored on purpose, and a swap there is still a swap
    bad = seq.copy()
    bad[f, ARMS_R + ARMS_L] = seq[f, ARMS_L + ARMS_R]
    np.testing.assert_array_equal(pata.repair_sequence(bad, smoothing=False), seq)


@pytest.mark.parametrize("name", ("walk", "dance", "wave"))
def test_a_one_frame_wrist_jump_is_mended(name):
    seq = _load(name)
    height = pata.body_height(seq)
    f = len(seq) // 2
    for wrist in (4, 7):
        bad = seq.copy()
        bad[f, wrist, :2] += [0.2 * height, -0.1 * height]
        out = pata.repair_sequence(bad)
        assert out[f, wrist, 2] > 0
        assert _moved(seq, out).max() < MOVE * height, (name, wrist)


@pytest.mark.parametrize("name", ("walk", "dance"))
def test_a_gap_of_a_few_frames_is_filled(name):
    seq = _load(name)
    height = pata.body_height(seq)
    g = len(seq) // 3
    bad = seq.copy()
    bad[g:g + 4, [4, 12]] = 0  # right wrist and left knee missing for 4 frames
    bad[g + 6] = 0  # and one frame with nobody
    out = pata.repair_sequence(bad)
    np.testing.assert_array_equal(out[..., 2] > 0, seq[..., 2] > 0)
    # straight-line filling of a swinging limb over 5 frame steps: within 6 % of the body height
    assert _moved(seq, out).max() < 0.06 * height
    assert _moved(seq, out)[:g].max() < MOVE * height
