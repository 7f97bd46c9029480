"""PATA I/O: POSE_KEYPOINT in pixels (DWPose) and 0-1 (OpenPose), OpenPose JSON files, several people."""
from __future__ import annotations

import json
import logging

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
walk, make_pose = _poses.walk, _poses.make_pose


def _seq_with_gaps():
    seq = walk(6)
    seq[1, [16, 17]] = 0  # missing points
    seq[3] = 0  # a frame with no person
    seq[..., 2] = np.where(seq[..., 2] > 0, np.linspace(0.4, 1.0, 18), 0)
    return seq


def _parts(n):
    rng = np.random.default_rng(0)
    hand = np.concatenate([rng.uniform(150, 350, (n, 21, 2)), rng.uniform(0.5, 1, (n, 21, 1))], axis=2)
    face = np.concatenate([rng.uniform(200, 300, (n, 70, 2)), rng.uniform(0.5, 1, (n, 70, 1))], axis=2)
    hand[:, 5] = 0  # a missing finger point
    return {"hand_left": hand, "hand_right": None, "face": face}


def test_pixel_round_trip_dwpose_convention():
    seq = _seq_with_gaps()
    data = pata.to_pose_keypoint(seq, 512, 768)
    assert len(data) == 6 and all(set(fr) == {"people", "canvas_width", "canvas_height"} for fr in data)
    assert data[0]["canvas_width"] == 512 and data[0]["canvas_height"] == 768
    person = data[1]["people"][0]
    assert len(person["pose_keypoints_2d"]) == 54
    assert person["pose_keypoints_2d"][16 * 3:18 * 3] == [0.0] * 6  # missing points are [0, 0, 0]
    assert person["face_keypoints_2d"] is None and person["hand_left_keypoints_2d"] is None
    assert data[3]["people"] == []
    json.dumps(data)  # plain JSON types only
    back, w, h = pata.from_pose_keypoint(data)
    assert (w, h) == (512, 768)
    np.testing.assert_allclose(back, seq, atol=1e-9)
    _, _, _, parts = pata.from_pose_keypoint(data, with_parts=True)
    assert parts == {"hand_left": None, "hand_right": None, "face": None}


def test_normalised_round_trip_openpose_convention():
    seq = _seq_with_gaps()
    data = pata.to_pose_keypoint(seq, 512, 768, normalized=True)
    flat = np.array([fr["people"][0]["pose_keypoints_2d"] for fr in data if fr["people"]]).reshape(-1, 3)
    assert flat[:, 0].max() <= 1 and flat[:, 1].max() <= 1 and flat[:, 0].max() > 0.5
    back, w, h = pata.from_pose_keypoint(data)
    assert (w, h) == (512, 768)
    np.testing.assert_allclose(back, seq, atol=1e-9)


@pytest.mark.parametrize("normalized", [False, True])
def test_hands_and_face_round_trip(normalized):
    seq = _seq_with_gaps()
    parts = _parts(6)
    data = pata.to_pose_keypoint(seq, 512, 768, parts=parts, normalized=normalized)
    assert data[0]["people"][0]["hand_right_keypoints_2d"] is None
    assert len(data[0]["people"][0]["hand_left_keypoints_2d"]) == 63
    assert data[3]["people"], "a frame with hands but no body still has its person"
    back, w, h, back_parts = pata.from_pose_keypoint(data, with_parts=True)
    np.testing.assert_allclose(back, seq, atol=1e-9)
    assert back_parts["hand_right"] is None
    np.testing.assert_allclose(back_parts["hand_left"], parts["hand_left"], atol=1e-9)
    np.testing.assert_allclose(back_parts["face"], parts["face"], atol=1e-9)


def test_normalised_points_slightly_off_canvas_still_read_as_normalised():
    seq = walk(2)
    data = pata.to_pose_keypoint(seq, 512, 512, normalized=True)
    data[0]["people"][0]["pose_keypoints_2d"][0] = -0.05  # nose a little left of the canvas
    back, _, _ = pata.from_pose_keypoint(data)
    assert back[0, 0, 0] == pytest.approx(-0.05 * 512)
    np.testing.assert_allclose(back[1], seq[1], atol=1e-9)


def test_several_people_one_is_picked_and_tracked(caplog):
    big = walk(5)
    small = walk(5, step=-4.0)
    small[..., :2] = small[..., :2] * 0.5 + [300, 20]  # a smaller person elsewhere
    frames = []
    for f in range(5):
        people = [{"pose_keypoints_2d": p[f].reshape(-1).tolist()} for p in (small, big)]
        if f % 2:
            people.reverse()  # detectors do not keep the order
        frames.append({"people": people, "canvas_width": 640, "canvas_height": 512})
    with caplog.at_level(logging.INFO):
        seq, w, h = pata.from_pose_keypoint(frames, name="target_pose")
    np.testing.assert_allclose(seq, big, atol=1e-9)
    assert any("2 people" in r.getMessage() and "target_pose" in r.getMessage() for r in caplog.records)


def test_tracking_follows_proximity_not_size():
    # after the first frame the tracked person is the one nearest to where it was, even if another grows bigger
    a = walk(4)
    b = walk(4)
    b[..., :2] = b[..., :2] * 0.8 + [400, 0]
    b[2:, :, :2] = (b[2:, :, :2] - [400, 0]) * 1.6 + [400, 0]  # b becomes the largest from frame 2
    frames = [{"people": [{"pose_keypoints_2d": b[f].reshape(-1).tolist()},
                          {"pose_keypoints_2d": a[f].reshape(-1).tolist()}],
               "canvas_width": 1024, "canvas_height": 768} for f in range(4)]
    seq, _, _ = pata.from_pose_keypoint(frames)
    np.testing.assert_allclose(seq, a, atol=1e-9)


def test_openpose_json_files_one_per_frame_and_a_list(tmp_path):
    seq = walk(4)
    folder = tmp_path / "frames"
    folder.mkdir()
    for f in range(4):  # OpenPose's own per-frame files: a version, people, no canvas size
        (folder / f"clip_{f:012d}_keypoints.json").write_text(json.dumps(
            {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": seq[f].reshape(-1).tolist(),
                                         "face_keypoints_2d": [], "hand_left_keypoints_2d": [],
                                         "hand_right_keypoints_2d": []}]}))
    (folder / "notes.txt").write_text("not a pose")
    frames = pata.load_pose_json(folder)
    assert len(frames) == 4
    back, w, h = pata.from_pose_keypoint(frames)
    np.testing.assert_allclose(back, seq, atol=1e-9)
    assert w > back[..., 0].max() and h > back[..., 1].max()  # canvas from the keypoint extent
    single = tmp_path / "all.json"
    single.write_text(json.dumps(pata.to_pose_keypoint(seq, 512, 512)))
    back, w, h = pata.from_pose_keypoint(pata.load_pose_json(single))
    np.testing.assert_allclose(back, seq, atol=1e-9)
    assert (w, h) == (512, 512)


def test_openpose_body25_is_converted_to_coco18():
    seq = walk(2)
    body25 = np.zeros((2, 25, 3))
    coco_to_25 = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]
    body25[:, coco_to_25] = seq
    body25[:, 8] = [244, 270, 0.9]  # mid hip
    body25[:, 19:] = [230, 440, 0.8]  # feet
    frames = [{"people": [{"pose_keypoints_2d": body25[f].reshape(-1).tolist()}]} for f in range(2)]
    back, _, _ = pata.from_pose_keypoint(frames)
    np.testing.assert_allclose(back, seq, atol=1e-9)


def _message(fn):
    with pytest.raises(ValueError) as err:
        fn()
    msg = str(err.value)
    assert "Fix:" in msg, msg
    return msg


def test_bad_pose_keypoint_data_is_named(tmp_path):
    good = pata.to_pose_keypoint(walk(2), 512, 512)
    assert _message(lambda: pata.from_pose_keypoint([], name="source_pose")).startswith("source_pose: expected")
    assert _message(lambda: pata.from_pose_keypoint("x", name="target_pose")).startswith("target_pose: ")
    for w, h in ((0, 512), (512, -4)):
        bad = [dict(fr) for fr in good]
        bad[1]["canvas_width"], bad[1]["canvas_height"] = w, h
        msg = _message(lambda: pata.from_pose_keypoint(bad, name="target_pose"))
        assert msg.startswith("target_pose: frame 1 has canvas size") and "positive" in msg
    bad = json.loads(json.dumps(good))
    bad[0]["people"][0]["pose_keypoints_2d"][3 * 5 + 1] = float("nan")
    msg = _message(lambda: pata.from_pose_keypoint(bad, name="target_pose"))
    assert msg.startswith("target_pose: NaN or infinite") and "left_shoulder" in msg
    bad = json.loads(json.dumps(good))
    bad[0]["people"][0]["pose_keypoints_2d"] = bad[0]["people"][0]["pose_keypoints_2d"][:51]
    assert "17 keypoints" in _message(lambda: pata.from_pose_keypoint(bad, name="target_pose"))
    with pytest.raises(ValueError, match=r"^width: .*Fix:"):
        pata.to_pose_keypoint(walk(2), 0, 512)
    with pytest.raises(ValueError, match=r"^height: .*Fix:"):
        pata.to_pose_keypoint(walk(2), 512, -1)
    assert _message(lambda: pata.load_pose_json(tmp_path / "nope.json")).startswith("pose_file: file not found")
    (tmp_path / "broken.json").write_text("{not json")
    assert "not valid JSON" in _message(lambda: pata.load_pose_json(tmp_path / "broken.json"))
    (tmp_path / "empty").mkdir()
    assert "no .json files" in _message(lambda: pata.load_pose_json(tmp_path / "empty"))


def test_empty_frames_read_as_gaps_and_all_empty_is_an_error_downstream():
    data = pata.to_pose_keypoint(walk(3), 512, 512)
    data[1] = {"people": [], "canvas_width": 512, "canvas_height": 512}
    seq, _, _ = pata.from_pose_keypoint(data)
    assert (seq[1] == 0).all() and (seq[[0, 2], :, 2] > 0).all()
    empty, w, h = pata.from_pose_keypoint([{"people": [], "canvas_width": 64, "canvas_height": 48}] * 3)
    assert empty.shape == (3, 18, 3) and (w, h) == (64, 48) and not empty.any()
    with pytest.raises(ValueError, match=r"^target: every target frame is empty"):
        pata.build_sequence(make_pose(), empty, 4)


def test_tracked_person_missing_in_a_frame_is_a_gap_not_the_other_person():
    a = walk(5)
    b = walk(5)
    b[..., 0] += 450  # someone else, well apart
    frames = []
    for f in range(5):
        people = [{"pose_keypoints_2d": b[f].reshape(-1).tolist()}]
        if f != 2:  # the tracked person is not detected in frame 2
            people.append({"pose_keypoints_2d": (a[f] * [1, 1, 1]).reshape(-1).tolist()})
        frames.append({"people": people, "canvas_width": 1024, "canvas_height": 512})
    frames[0]["people"][0]["pose_keypoints_2d"] = (b[0] * [0.5, 0.5, 1] + [512, 0, 0]).reshape(-1).tolist()
    seq, _, _ = pata.from_pose_keypoint(frames)
    np.testing.assert_allclose(seq[[0, 1, 3, 4]], a[[0, 1, 3, 4]], atol=1e-9)
    assert (seq[2] == 0).all()


def test_to_pose_keypoint_checks_parts():
    seq = walk(3)
    with pytest.raises(ValueError, match=r"^parts: hand_left must be keypoints of shape \(3, K, 3\).*Fix:"):
        pata.to_pose_keypoint(seq, 512, 512, parts={"hand_left": np.zeros((2, 21, 3))})
    face = np.ones((3, 70, 3))
    face[0, 0, 1] = np.inf
    with pytest.raises(ValueError, match=r"^parts: face holds NaN or infinite"):
        pata.to_pose_keypoint(seq, 512, 512, parts={"face": face})
