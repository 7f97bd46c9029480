"""A stand-in for the optional ``controlnet-aux`` package in host tests (its weights cannot be downloaded there).

``OpenposeDetector.detect_poses`` returns one person: the first pose of the pack's
``assets/poses/character.json`` in normalised coordinates, or nobody when the image is (nearly) flat, so
tests can make "no person in the source image" happen. ``open_pose.draw_poses`` draws keypoints as dots.
Only the API surface PoseAnimate's Pose Extract node uses is provided.
"""
from __future__ import annotations

import json
import pathlib
from typing import NamedTuple

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[4]
__version__ = "0.0.0-test"


class Keypoint(NamedTuple):
    x: float
    y: float
    score: float = 1.0
    id: int = -1


class BodyResult(NamedTuple):
    keypoints: list
    total_score: float
    total_parts: int


class PoseResult(NamedTuple):
    body: BodyResult
    left_hand: list | None
    right_hand: list | None
    face: list | None


def _character():
    frames = json.loads((ROOT / "assets" / "poses" / "character.json").read_text())
    frame = frames[0]
    w, h = frame["canvas_width"], frame["canvas_height"]
    pts = frame["people"][0]["pose_keypoints_2d"]
    kps = []
    for i in range(18):
        x, y, c = pts[3 * i: 3 * i + 3]
        kps.append(Keypoint(x / w, y / h, c) if c > 0 else None)
    return kps


class OpenposeDetector:
    calls = 0

    @classmethod
    def from_pretrained(cls, pretrained_model_or_path, *args, **kwargs):
        return cls()

    def detect_poses(self, img, include_hand=False, include_face=False):
        OpenposeDetector.calls += 1
        if float(np.asarray(img, dtype=np.float32).std()) < 2.0:
            return []
        return [PoseResult(BodyResult(_character(), 30.0, 18), None, None, None)]
