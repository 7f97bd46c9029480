"""PATA rendering: ControlNet's OpenPose drawing (limbs at colour x 0.6, full-colour joints), IMAGE layout."""
from __future__ import annotations

import math

import cv2
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

# ControlNet 1.1 / controlnet_aux draw 17 limbs (1-based keypoint pairs), in this order and these colours.
CONTROLNET_LIMBS = (
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13), (13, 14),
    (2, 1), (1, 15), (15, 17), (1, 16), (16, 18),
)
CONTROLNET_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)


def _reference(pose, w, h):
    """An independent re-statement of controlnet_aux's draw_bodypose for one person, pixels in, uint8 RGB out."""
    canvas = np.zeros((h, w, 3), np.uint8)
    for (a, b), color in zip(CONTROLNET_LIMBS, CONTROLNET_COLORS):
        p, q = pose[a - 1], pose[b - 1]
        if p[2] < 0.3 or q[2] < 0.3:
            continue
        cx, cy = (p[0] + q[0]) / 2, (p[1] + q[1]) / 2
        half = math.hypot(p[0] - q[0], p[1] - q[1]) / 2
        angle = math.degrees(math.atan2(p[1] - q[1], p[0] - q[0]))
        poly = cv2.ellipse2Poly((int(cx), int(cy)), (int(half), 4), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, poly, [int(c * 0.6) for c in color])
    for k, color in enumerate(CONTROLNET_COLORS):
        if pose[k, 2] >= 0.3:
            cv2.circle(canvas, (int(pose[k, 0]), int(pose[k, 1])), 4, color, thickness=-1)
    return canvas


def test_image_layout_and_range():
    seq = walk(3)
    img = pata.render_pose(seq, 384, 512)
    assert img.shape == (3, 512, 384, 3) and img.dtype == np.float32
    assert img.min() >= 0.0 and img.max() <= 1.0 and img.max() == 1.0
    assert (img[:, 0, 0] == 0).all()  # black background


def test_matches_controlnet_drawing_exactly():
    for pose in walk(6)[::2]:
        img = pata.render_pose(pose[None], 512, 512)[0]
        ref = _reference(pose, 512, 512).astype(np.float32) / 255.0
        np.testing.assert_array_equal(img, ref)


@pytest.mark.parametrize("limb", range(17))
def test_limb_midpoint_is_dimmed_colour_and_joints_full_colour(limb):
    a, b = (k - 1 for k in CONTROLNET_LIMBS[limb])
    pose = make_pose()
    pose[:, :2] *= 2.0  # room between the joints
    keep = np.zeros(18, bool)
    keep[[a, b]] = True
    pose[~keep] = 0
    img = np.rint(pata.render_pose(pose[None], 1024, 1024)[0] * 255).astype(int)
    mid = ((pose[a, :2] + pose[b, :2]) / 2).astype(int)
    assert tuple(img[mid[1], mid[0]]) == tuple(int(c * 0.6) for c in CONTROLNET_COLORS[limb])
    for k in (a, b):
        x, y = pose[k, :2].astype(int)
        assert tuple(img[y, x]) == CONTROLNET_COLORS[k]


def test_shoulder_to_ear_lines_are_not_drawn():
    # ControlNet lists (3, 17) and (6, 18) but draws only the first 17 limbs
    for a, b in ((2, 16), (5, 17)):
        pose = make_pose()
        pose[:, :2] *= 2.0
        keep = np.zeros(18, bool)
        keep[[a, b]] = True
        pose[~keep] = 0
        img = pata.render_pose(pose[None], 1024, 1024)[0]
        mid = ((pose[a, :2] + pose[b, :2]) / 2).astype(int)
        assert (img[mid[1], mid[0]] == 0).all(), (a, b)


def test_low_confidence_points_are_not_drawn():
    pose = make_pose()
    pose[4, 2] = 0.2  # right wrist below min_confidence
    img = pata.render_pose(pose[None], 512, 512)[0]
    x, y = pose[4, :2].astype(int)
    assert (img[y, x] == 0).all()
    img = pata.render_pose(pose[None], 512, 512, min_confidence=0.1)[0]
    assert tuple(np.rint(img[y, x] * 255).astype(int)) == CONTROLNET_COLORS[4]


def test_hands_and_face_are_drawn():
    pose = make_pose()
    hand = np.zeros((1, 21, 3))
    hand[0, :, 0] = np.linspace(100, 140, 21)
    hand[0, :, 1] = 460
    hand[0, :, 2] = 0.9
    face = np.zeros((1, 70, 3))
    face[0, 0] = [420, 60, 0.9]
    img = pata.render_pose(pose[None], 512, 512, parts={"hand_left": hand, "hand_right": None, "face": face})[0]
    assert tuple(np.rint(img[460, 100] * 255).astype(int)) == (0, 0, 255)  # blue hand joints
    assert (img[60, 420] == 1.0).all()  # white face dots
    plain = pata.render_pose(pose[None], 512, 512)[0]
    assert (plain[460, 100] == 0).all() and (plain[60, 420] == 0).all()


@pytest.mark.parametrize("w, h, bad", [(0, 64, "width"), (64, -2, "height"), (64.5, 64, "width"), (64, True, "height")])
def test_bad_canvas_sizes_are_named(w, h, bad):
    with pytest.raises(ValueError, match=rf"^{bad}: .*Fix:"):
        pata.render_pose(walk(1), w, h)


def test_nan_in_the_sequence_is_named():
    seq = walk(2)
    seq[1, 2, 0] = np.inf
    with pytest.raises(ValueError, match=r"^sequence: NaN or infinite value at frame 1, keypoint 2"):
        pata.render_pose(seq, 64, 64)


def test_far_off_canvas_points_do_not_crash():
    pose = make_pose()
    pose[4, :2] = [1e12, -1e12]
    img = pata.render_pose(pose[None], 64, 64)
    assert img.shape == (1, 64, 64, 3)


def test_bad_parts_are_named():
    seq = walk(2)
    with pytest.raises(ValueError, match=r"^parts: hand_left must be keypoints of shape \(2, K, 3\).*Fix:"):
        pata.render_pose(seq, 64, 64, parts={"hand_left": np.zeros((1, 21, 3))})
    face = np.zeros((2, 70, 3))
    face[1, 3, 0] = np.nan
    with pytest.raises(ValueError, match=r"^parts: face holds NaN"):
        pata.render_pose(seq, 64, 64, parts={"face": face})


HAND_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
    (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)


def _reference_hand(canvas, hand):
    """controlnet_aux's draw_handpose restated: HSV edge colours as floats (OpenCV rounds), blue joints."""
    import colorsys

    for ie, (a, b) in enumerate(HAND_EDGES):
        x1, y1, x2, y2 = int(hand[a, 0]), int(hand[a, 1]), int(hand[b, 0]), int(hand[b, 1])
        if x1 > 0.01 and y1 > 0.01 and x2 > 0.01 and y2 > 0.01:
            color = (np.array(colorsys.hsv_to_rgb(ie / len(HAND_EDGES), 1.0, 1.0)) * 255).tolist()
            cv2.line(canvas, (x1, y1), (x2, y2), color, thickness=2)
    for x, y, _ in hand:
        if int(x) > 0.01 and int(y) > 0.01:
            cv2.circle(canvas, (int(x), int(y)), 4, (0, 0, 255), thickness=-1)
    return canvas


def test_hand_drawing_matches_controlnet():
    hand = np.zeros((21, 3))
    angles = np.linspace(-1.2, 1.2, 5)
    hand[0] = [256, 300, 0.9]
    for finger, ang in enumerate(angles):
        for k in range(4):
            r = 30 + 28 * k
            hand[1 + 4 * finger + k] = [256 + r * np.sin(ang), 300 - r * np.cos(ang), 0.9]
    img = pata.render_pose(np.zeros((1, 18, 3)), 512, 512, parts={"hand_right": hand[None]})[0]
    ref = _reference_hand(np.zeros((512, 512, 3), np.uint8), hand).astype(np.float32) / 255.0
    np.testing.assert_array_equal(img, ref)
