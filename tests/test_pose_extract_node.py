"""Pose Extract: clear message without controlnet-aux; with a stand-in controlnet_aux module, the keypoints come
out in comfyui_controlnet_aux's POSE_KEYPOINT format at the input's pixel size and the pose maps as an IMAGE."""
from __future__ import annotations

import importlib.util
import pathlib
import sys
import types

import numpy as np
import pytest
import torch

from poseanimate.nodes._common import PoseAnimateError
from poseanimate.nodes.pose_extract import PoseAnimatePoseExtract


def _stand_in_types():
    """controlnet_aux's result types, from the stand-in package the host tests use (one definition)."""
    path = pathlib.Path(__file__).parent / "host" / "fake_controlnet_aux" / "controlnet_aux" / "__init__.py"
    spec = importlib.util.spec_from_file_location("_controlnet_aux_stand_in", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Keypoint, module.BodyResult, module.PoseResult


Keypoint, BodyResult, PoseResult = _stand_in_types()


class FakeDetector:
    """Mimics controlnet_aux.OpenposeDetector: detect_poses(np.uint8 HWC RGB) -> normalised PoseResults."""

    loaded = []

    @classmethod
    def from_pretrained(cls, path):
        if path == "missing/repo":
            raise OSError("404 Client Error")
        cls.loaded.append(path)
        return cls()

    def detect_poses(self, img, include_hand=False, include_face=False):
        assert img.dtype == np.uint8 and img.ndim == 3 and min(img.shape[:2]) >= 64
        if img.mean() < 1:  # a black frame: nobody there
            return []
        kps = [Keypoint(0.5, 0.25)] + [None] * 16 + [Keypoint(0.1, 0.9, 0.5)]
        hand = [Keypoint(0.2, 0.2)] * 21 if include_hand else None
        return [PoseResult(BodyResult(kps, 10.0, 2), hand, hand, None)]


def fake_draw_poses(poses, H, W, draw_body=True, draw_hand=True, draw_face=True):
    canvas = np.zeros((H, W, 3), np.uint8)
    for pose in poses:
        for kp in pose.body.keypoints:
            if kp is not None:
                canvas[int(kp.y * (H - 1)), int(kp.x * (W - 1))] = 255
    return canvas


@pytest.fixture
def fake_aux(monkeypatch):
    aux = types.ModuleType("controlnet_aux")
    aux.OpenposeDetector = FakeDetector
    op = types.ModuleType("controlnet_aux.open_pose")
    op.draw_poses = fake_draw_poses
    aux.open_pose = op
    monkeypatch.setitem(sys.modules, "controlnet_aux", aux)
    monkeypatch.setitem(sys.modules, "controlnet_aux.open_pose", op)
    FakeDetector.loaded = []


def test_missing_package_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "controlnet_aux", None)  # import fails as if not installed
    with pytest.raises(PoseAnimateError) as err:
        PoseAnimatePoseExtract().extract(torch.rand(1, 64, 64, 3), "lllyasviel/Annotators", 512, False, False)
    msg = str(err.value)
    assert msg.startswith("Pose Extract:") and "pip install controlnet-aux" in msg and "DWPose" in msg


def test_keypoints_and_maps(fake_aux):
    node = PoseAnimatePoseExtract()
    image = torch.rand(2, 96, 160, 3)
    image[1] = 0
    kps, maps = node.extract(image, "lllyasviel/Annotators", 256, True, False)
    assert maps.shape == (2, 96, 160, 3) and maps.dtype == torch.float32
    assert len(kps) == 2 and kps[1]["people"] == []
    frame = kps[0]
    assert (frame["canvas_width"], frame["canvas_height"]) == (160, 96)
    body = frame["people"][0]["pose_keypoints_2d"]
    assert len(body) == 54
    assert body[:3] == [80.0, 24.0, 1.0]  # normalised (0.5, 0.25) -> pixels of the 160x96 input
    assert body[3:6] == [0.0, 0.0, 0.0]  # undetected point
    assert body[51:] == [16.0, 86.4, 0.5]
    assert len(frame["people"][0]["hand_left_keypoints_2d"]) == 63
    assert maps[0].sum() > 0 and maps[1].sum() == 0
    node.extract(image[:1], "lllyasviel/Annotators", 256, False, False)
    assert FakeDetector.loaded == ["lllyasviel/Annotators"]  # the detector is loaded once per model


def test_bad_inputs(fake_aux):
    node = PoseAnimatePoseExtract()
    with pytest.raises(PoseAnimateError, match="input 'model'.*could not load"):
        node.extract(torch.rand(1, 64, 64, 3), "missing/repo", 512, False, False)
    with pytest.raises(PoseAnimateError, match="input 'model'"):
        node.extract(torch.rand(1, 64, 64, 3), "  ", 512, False, False)
    with pytest.raises(PoseAnimateError, match="input 'image'"):
        node.extract(torch.rand(64, 64, 3), "x", 512, False, False)
