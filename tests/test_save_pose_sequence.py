"""Save Pose Sequence node (issue 18): POSE_KEYPOINT to JSON in the output folder, numbered like Save Image,
written whole, read back by Load Pose Sequence as the same sequence. ComfyUI's folder_paths is stood in for by
a module with the three functions the nodes use (tests/host run the real one)."""
from __future__ import annotations

import json
import os
import sys
import types

import numpy as np
import pytest

from poseanimate import pata
from poseanimate.nodes._common import PoseAnimateError
from poseanimate.nodes.load_pose_sequence import PoseAnimateLoadPoseSequence
from poseanimate.nodes.pata_align import PoseAnimatePATAAlign
from poseanimate.nodes.save_pose_sequence import PoseAnimateSavePoseSequence

SAVE = PoseAnimateSavePoseSequence()
LOAD = PoseAnimateLoadPoseSequence()


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """A stand-in for ComfyUI's folder_paths: input and output folders under tmp_path; the save path follows
    ComfyUI's get_save_image_path (subfolder from the prefix, counter after the highest existing one)."""
    out, inp = tmp_path / "output", tmp_path / "input"
    out.mkdir()
    inp.mkdir()

    def get_save_image_path(prefix, output_dir, image_width=0, image_height=0):
        subfolder = os.path.dirname(os.path.normpath(prefix))
        name = os.path.basename(os.path.normpath(prefix))
        folder = os.path.join(output_dir, subfolder)
        if os.path.commonpath((output_dir, os.path.abspath(folder))) != output_dir:
            raise Exception("Saving image outside the output folder is not allowed.")
        os.makedirs(folder, exist_ok=True)
        counts = [int(f[len(name) + 1:].split("_")[0]) for f in os.listdir(folder)
                  if f.startswith(name + "_") and f[len(name) + 1:].split("_")[0].isdigit()]
        return folder, name, max(counts, default=0) + 1, subfolder, prefix

    fake = types.ModuleType("folder_paths")
    fake.get_output_directory = lambda: str(out)
    fake.get_input_directory = lambda: str(inp)
    fake.get_save_image_path = get_save_image_path
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    return out, inp


def _saved(result, out):
    (item,) = result["ui"]["pose_files"]
    assert item["type"] == "output"
    return out / item["subfolder"] / item["filename"]


def test_save_pose_sequence_conventions():
    assert PoseAnimateSavePoseSequence.OUTPUT_NODE is True
    spec = PoseAnimateSavePoseSequence.INPUT_TYPES()["required"]
    assert spec["pose"][0] == "POSE_KEYPOINT" and spec["filename_prefix"][0] == "STRING"
    from poseanimate import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    assert NODE_CLASS_MAPPINGS["PoseAnimateSavePoseSequence"] is PoseAnimateSavePoseSequence
    assert NODE_DISPLAY_NAME_MAPPINGS["PoseAnimateSavePoseSequence"] == "Save Pose Sequence"


def test_saved_sequence_loads_back_the_same(folders):
    out, inp = folders
    data, _ = LOAD.load("examples/turn.json")
    path = _saved(SAVE.save(data, "poses/turn"), out)
    assert path == out / "poses" / "turn_00001_.json"
    assert json.loads(path.read_text()) == data
    # a second save counts up; the first stays
    assert _saved(SAVE.save(data, "poses/turn"), out).name == "turn_00002_.json"
    # Load Pose Sequence reads it back from the input folder
    (inp / "mine.json").write_bytes(path.read_bytes())
    again, count = LOAD.load("mine.json")
    assert count == len(data)
    a, wa, ha = pata.from_pose_keypoint(data)
    b, wb, hb = pata.from_pose_keypoint(again)
    np.testing.assert_array_equal(a, b)
    assert (wa, ha) == (wb, hb)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp")]  # no temporary file left


def test_retargeted_poses_with_hands_and_face_round_trip(folders):
    out, inp = folders
    source, _ = LOAD.load("examples/character.json")
    target, _ = LOAD.load("examples/walk.json", 8)
    seq, w, h = pata.from_pose_keypoint(target)
    n = len(seq)
    hand = np.zeros((n, 21, 3))
    hand[..., :2] = seq[:, 7, None, :2] + np.linspace(-10, 10, 21)[:, None]
    hand[..., 2] = 0.8
    face = np.zeros((n, 70, 3))
    face[..., :2] = seq[:, 0, None, :2] + np.linspace(-8, 8, 70)[:, None]
    face[..., 2] = 0.7
    target = pata.to_pose_keypoint(seq, w, h, {"hand_left": hand, "face": face})
    aligned, _, frames = PoseAnimatePATAAlign().align(source, target, 3, "retarget", True, 0, 0)
    path = _saved(SAVE.save(aligned, "retarget/pose"), out)
    (inp / "retargeted.json").write_bytes(path.read_bytes())
    again, count = LOAD.load("retargeted.json")
    assert count == frames
    a = pata.from_pose_keypoint(aligned, with_parts=True)
    b = pata.from_pose_keypoint(again, with_parts=True)
    np.testing.assert_allclose(a[0], b[0])
    assert a[1:3] == b[1:3]
    for key in ("hand_left", "face"):
        np.testing.assert_allclose(a[3][key], b[3][key])
    assert b[3]["hand_right"] is None


def test_numpy_values_and_one_frame_are_written_as_json(folders):
    out, _ = folders
    pose = np.zeros((18, 3))
    pose[:, :2] = np.arange(36).reshape(18, 2) + 10
    pose[:, 2] = 0.9
    frame = {"people": [{"pose_keypoints_2d": pose.reshape(-1)}], "canvas_width": np.int64(64),
             "canvas_height": 64}
    path = _saved(SAVE.save(frame, "one"), out)
    again = pata.load_pose_json(path)
    assert len(again) == 1
    np.testing.assert_array_equal(pata.from_pose_keypoint(again)[0][0], pose)


@pytest.mark.parametrize("pose, prefix, expected", [
    ([], "p", "Save Pose Sequence: input 'pose':"),
    ([{"people": [{"pose_keypoints_2d": [1.0, 2.0]}]}], "p", "Save Pose Sequence: input 'pose':"),
    ([{"people": []}], "../../elsewhere", "Save Pose Sequence: input 'filename_prefix':"),
    ([{"people": []}], "  ", "Save Pose Sequence: input 'filename_prefix':"),
])
def test_bad_input_is_named(folders, pose, prefix, expected):
    out, _ = folders
    with pytest.raises(PoseAnimateError) as err:
        SAVE.save(pose, prefix)
    assert str(err.value).startswith(expected) and ". Fix: " in str(err.value)
    assert not [p for p in out.rglob("*.json")]
