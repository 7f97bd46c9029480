"""The pose-only bundled workflows in ComfyUI's own executor: retarget (poses -> OpenPose video + JSON), and Save
Pose Sequence's files read back by Load Pose Sequence."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    from comfy_exec import ComfyRunner

    r = ComfyRunner(tmp_path_factory.mktemp("comfy_pose"))
    yield r
    r.close()


def _api(name):
    return json.loads((ROOT / "workflows" / "api" / f"{name}.json").read_text())


def _node_id(graph, class_type):
    return next(i for i, n in graph.items() if n["class_type"] == class_type)


def test_retarget_workflow_runs_and_its_json_loads_back(runner):
    from poseanimate import pata
    from poseanimate.nodes.load_pose_sequence import PoseAnimateLoadPoseSequence

    graph = _api("retarget")
    for node in graph.values():  # a short run: 12 driving poses
        if node["_meta"]["title"] == "Pose sequence":
            node["inputs"]["frames"] = 12
    ok, history, messages, valid = runner.run(graph)
    assert valid[0], (valid[1], valid[3])
    assert ok, [m[1].get("exception_message") for m in messages if m[0] == "execution_error"]
    out = runner.base / "output"
    videos = history["outputs"][_node_id(graph, "SaveVideo")]["images"]
    assert len(videos) == 1 and (out / videos[0]["subfolder"] / videos[0]["filename"]).stat().st_size > 0
    (item,) = history["outputs"][_node_id(graph, "PoseAnimateSavePoseSequence")]["pose_files"]
    path = out / item["subfolder"] / item["filename"]
    assert item["subfolder"] == "PoseAnimate/retarget" and path.name.startswith("pose_") and path.suffix == ".json"
    frames = 1 + graph[_node_id(graph, "PoseAnimatePATAAlign")]["inputs"]["transition_frames"] + 12
    # Load Pose Sequence reads the saved file (copied to the input folder) as the same sequence PATA Align made
    (runner.base / "input" / "retargeted.json").write_bytes(path.read_bytes())
    data, count = PoseAnimateLoadPoseSequence().load("retargeted.json")
    assert count == frames
    seq, w, h = pata.from_pose_keypoint(data)
    assert (w, h) == (512, 512) and (seq[..., 2] > 0).any(axis=1).all()
    source = pata.from_pose_keypoint(pata.load_pose_json(ROOT / "assets" / "poses" / "character.json"))
    np.testing.assert_allclose(seq[0, :, :2], source[0][0, :, :2] * 512 / 640)  # frame 0: the character's own pose


def test_save_pose_sequence_counts_up_in_the_output_folder(runner):
    graph = {
        "1": {"class_type": "PoseAnimateLoadPoseSequence", "inputs": {"pose_file": "examples/wave.json", "frames": 6}},
        "2": {"class_type": "PoseAnimateSavePoseSequence", "inputs": {"pose": ["1", 0], "filename_prefix": "count/p"}},
    }
    names = []
    for _ in range(2):
        graph["1"]["inputs"]["frames"] += 1  # a new input, so the executor runs the save again
        ok, history, messages, valid = runner.run(graph)
        assert ok and valid[0], messages
        names.append(history["outputs"]["2"]["pose_files"][0]["filename"])
    assert names == ["p_00001_.json", "p_00002_.json"]
    assert len(json.loads((runner.base / "output" / "count" / names[1]).read_text())) == 8
