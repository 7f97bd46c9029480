"""PATA reads the POSE_KEYPOINT of the three pose estimators a workflow may feed it, as each writes it (issue 18).

Each builder below restates, in a few lines, how its source writes the data:
- DWPose Estimator (comfyui_controlnet_aux ``DWPreprocessor``; src/custom_controlnet_aux/dwpose/__init__.py
  ``encode_poses_as_dict`` over ``Wholebody.format_result``): pixel coordinates of the input image, every found
  point with confidence 1.0 and points under score 0.3 as [0, 0, 0]; face = 68 points + the two body eyes; a
  part with nothing found (or not asked for) is None.
- OpenPose Pose (comfyui_controlnet_aux ``OpenposePreprocessor``; src/custom_controlnet_aux/open_pose/__init__.py):
  body coordinates normalised to 0..1, confidence 1.0, missing body points [0, 0, 0]; hand points it did not
  find are written as (-1, -1) with confidence 1.0 (``detect_hands``: ``np.where(peaks < 1e-6, -1, ...)``).
- SDPose Keypoint Extractor (ComfyUI core, comfy_extras/nodes_sdpose.py ``_to_openpose_frames``): pixel
  coordinates, the model's own scores (the neck gets 0 unless both shoulders pass 0.3), an extra
  ``foot_keypoints_2d`` list, a 70-point face (68 + right eye, left eye), hands of 21 points.
"""
from __future__ import annotations

import numpy as np
import pytest

from poseanimate import pata
from poseanimate.nodes.load_pose_sequence import PoseAnimateLoadPoseSequence
from poseanimate.nodes.pata_align import PoseAnimatePATAAlign

W, H = 768, 512
SEQ = pata.from_pose_keypoint(PoseAnimateLoadPoseSequence().load("examples/wave.json", 6)[0])[0]
SEQ[..., 0] += 100  # the bundled canvas is 512 wide; put the figure inside a 768 x 512 picture
RNG = np.random.default_rng(7)
HAND = RNG.uniform(-20, 20, (21, 2))
FACE = RNG.uniform(-15, 15, (68, 2))


def _truth(f):
    """Body (18, 3) in pixels and parts for frame f: hands on the wrists, a face around the nose."""
    body = SEQ[f].copy()
    hand_l = np.c_[body[7, :2] + HAND, np.ones(21)]
    hand_r = np.c_[body[4, :2] + HAND, np.ones(21)]
    face = np.c_[body[0, :2] + FACE, np.ones(68)]
    return body, hand_l, hand_r, face


def _flat(points):
    return [float(v) for v in np.asarray(points, dtype=np.float64).reshape(-1)]


def dwpose_frames(hands=True, face=True):
    """As DWPose Estimator writes it (pixels, confidence 1.0, found-or-None parts, face 68 + the body's eyes)."""
    out = []
    for f in range(len(SEQ)):
        body, hand_l, hand_r, fc = _truth(f)
        body = body.copy()
        body[body[:, 2] > 0, 2] = 1.0
        face70 = np.vstack([fc, body[[14, 15]]])  # compress_keypoints writes a missing eye as [0, 0, 0]
        out.append({"people": [{"pose_keypoints_2d": _flat(body),
                                "face_keypoints_2d": _flat(face70) if face else None,
                                "hand_left_keypoints_2d": _flat(hand_l) if hands else None,
                                "hand_right_keypoints_2d": _flat(hand_r) if hands else None}],
                    "canvas_height": H, "canvas_width": W})
    return out


def openpose_frames():
    """As OpenPose Pose writes it: normalised coordinates, (-1, -1, 1.0) for hand points not found."""
    out = []
    for f in range(len(SEQ)):
        body, hand_l, hand_r, _ = _truth(f)
        norm = body.copy()
        ok = norm[:, 2] > 0
        norm[ok, 0] /= W
        norm[ok, 1] /= H
        norm[ok, 2] = 1.0
        hands = []
        for hand in (hand_l, hand_r):
            h = hand.copy()
            h[:, 0] /= W
            h[:, 1] /= H
            h[5:9] = [-1.0, -1.0, 1.0]  # a finger the hand model did not find
            hands.append(h)
        out.append({"people": [{"pose_keypoints_2d": _flat(norm), "face_keypoints_2d": None,
                                "hand_left_keypoints_2d": _flat(hands[0]),
                                "hand_right_keypoints_2d": _flat(hands[1])}],
                    "canvas_height": H, "canvas_width": W})
    return out


def sdpose_frames():
    """As SDPose Keypoint Extractor writes it: pixels, model scores, feet, a 70-point face."""
    out = []
    for f in range(len(SEQ)):
        body, hand_l, hand_r, fc = _truth(f)
        body = body.copy()
        scores = RNG.uniform(0.5, 0.95, 18)
        body[:, 2] = np.where(body[:, 2] > 0, scores, 0.0)
        feet = np.c_[body[[10, 10, 10, 13, 13, 13], :2] + [0, 12], np.full(6, 0.8)]
        face70 = np.vstack([fc, body[[14, 15]]])
        out.append({"canvas_width": W, "canvas_height": H, "people": [{
            "pose_keypoints_2d": _flat(body), "foot_keypoints_2d": _flat(feet), "face_keypoints_2d": _flat(face70),
            "hand_right_keypoints_2d": _flat(hand_r), "hand_left_keypoints_2d": _flat(hand_l)}]})
    return out


def _check_body(data):
    seq, w, h, parts = pata.from_pose_keypoint(data, with_parts=True)
    assert (w, h) == (W, H)
    np.testing.assert_array_equal(seq[..., 2] > 0, SEQ[..., 2] > 0)
    ok = SEQ[..., 2] > 0
    np.testing.assert_allclose(seq[ok][:, :2], SEQ[ok][:, :2], atol=1e-6)
    return seq, parts


def test_dwpose_estimator_output_is_read():
    seq, parts = _check_body(dwpose_frames())
    for f in range(len(SEQ)):
        body, hand_l, hand_r, face = _truth(f)
        np.testing.assert_allclose(parts["hand_left"][f, :, :2], hand_l[:, :2], atol=1e-6)
        np.testing.assert_allclose(parts["hand_right"][f, :, :2], hand_r[:, :2], atol=1e-6)
        assert parts["face"].shape[1] == 70
        np.testing.assert_allclose(parts["face"][f, :68, :2], face[:, :2], atol=1e-6)
    # hands and face switched off in the estimator: None parts
    _, parts = _check_body(dwpose_frames(hands=False, face=False))
    assert parts == {"face": None, "hand_left": None, "hand_right": None}


def test_openpose_pose_output_is_read_and_its_missing_hand_points_stay_missing():
    seq, parts = _check_body(openpose_frames())  # normalised: scaled to the canvas
    for key, anchor in (("hand_left", 7), ("hand_right", 4)):
        hand = parts[key]
        assert (hand[:, 5:9] == 0).all()  # (-1, -1, 1.0): not found
        assert (hand[:, [0, 1, 2, 3, 4, 9], 2] > 0).all()
        np.testing.assert_allclose(hand[:, 0, :2], seq[:, anchor, :2] + HAND[0], atol=1e-6)


def test_sdpose_keypoint_extractor_output_is_read():
    seq, parts = _check_body(sdpose_frames())
    assert parts["face"].shape[1:] == (70, 3) and parts["hand_left"].shape[1:] == (21, 3)
    for f in range(len(SEQ)):
        body, hand_l, hand_r, face = _truth(f)
        np.testing.assert_allclose(parts["hand_left"][f, :, :2], hand_l[:, :2], atol=1e-6)
        np.testing.assert_allclose(parts["face"][f, :68, :2], face[:, :2], atol=1e-6)


@pytest.mark.parametrize("make", [dwpose_frames, openpose_frames, sdpose_frames], ids=["dwpose", "openpose", "sdpose"])
def test_pata_align_takes_each_format_as_source_and_target(make):
    data = make()
    aligned, images, count = PoseAnimatePATAAlign().align(data[:1], data, 2, "retarget", True, 0, 0)
    assert count == 1 + 2 + len(SEQ) and tuple(images.shape) == (count, H, W, 3)
    seq, w, h, parts = pata.from_pose_keypoint(aligned, with_parts=True)
    assert (w, h) == (W, H)
    # the same character drives itself: the targets come back where they were, hands on the wrists
    ok = SEQ[..., 2] > 0
    np.testing.assert_allclose(seq[3:][ok][:, :2], SEQ[ok][:, :2], atol=0.02 * pata.body_height(SEQ))
    hands = parts["hand_left"][3:]
    np.testing.assert_allclose(hands[:, 0, :2], seq[3:, 7, :2] + HAND[0], atol=0.5)  # scale 1 up to rounding
