"""PATA Align and Load Pose Sequence nodes, called directly (no ComfyUI needed)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from poseanimate import pata
from poseanimate.nodes._common import PoseAnimateError
from poseanimate.nodes.load_pose_sequence import PoseAnimateLoadPoseSequence, resolve_pose_file
from poseanimate.nodes.pata_align import PoseAnimatePATAAlign

LOAD = PoseAnimateLoadPoseSequence()
ALIGN = PoseAnimatePATAAlign()


def _load(name):
    return LOAD.load(f"examples/{name}.json")


def test_bundled_examples_are_listed_and_load():
    choices = PoseAnimateLoadPoseSequence.INPUT_TYPES()["required"]["pose_file"][0]
    for name in ("wave", "walk", "turn", "dance"):
        assert f"examples/{name}.json" in choices
        frames, count = _load(name)
        assert 16 <= count <= 48 and len(frames) == count
        seq, w, h = pata.from_pose_keypoint(frames)
        assert seq.shape == (count, 18, 3) and (seq[..., 2] > 0).any()


def test_align_outputs_source_transition_targets():
    src, _ = _load("character")
    tgt, m = _load("walk")
    keypoints, images, count = ALIGN.align(src, tgt, 5, "retarget", True, 0, 0)
    assert count == 1 + 5 + m == len(keypoints) == images.shape[0]
    src_seq, w, h = pata.from_pose_keypoint(src)
    assert images.shape[1:] == (h, w, 3) and images.dtype.is_floating_point
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    out_seq, ow, oh = pata.from_pose_keypoint(keypoints)
    assert (ow, oh) == (w, h)
    present = src_seq[0, :, 2] > 0
    np.testing.assert_allclose(out_seq[0, present, :2], src_seq[0, present, :2], atol=1e-6)
    np.testing.assert_allclose(images[0].numpy(), pata.render_pose(src_seq[:1], w, h)[0], atol=1e-6)


def test_align_rescales_to_the_requested_canvas():
    src, _ = _load("character")
    tgt, m = _load("wave")
    _, base, _ = ALIGN.align(src, tgt, 0, "similarity", True, 0, 0)
    keypoints, images, count = ALIGN.align(src, tgt, 0, "similarity", True, 320, 320)
    assert images.shape == (1 + m, 320, 320, 3) and count == 1 + m
    seq, w, h = pata.from_pose_keypoint(keypoints)
    src_seq, sw, sh = pata.from_pose_keypoint(src)
    present = src_seq[0, :, 2] > 0
    np.testing.assert_allclose(seq[0, present, 0], src_seq[0, present, 0] * 320 / sw, atol=1e-4)
    assert not np.allclose(images[0].numpy(), 0)


@pytest.mark.parametrize("which", ["source_pose", "target_pose"])
def test_align_names_the_empty_input(which):
    pose, _ = _load("walk")
    empty = [{"people": [], "canvas_width": 512, "canvas_height": 512}]
    args = {"source_pose": pose, "target_pose": pose, which: empty}
    with pytest.raises(PoseAnimateError, match=rf"^PATA Align: input '{which}': .*Fix: "):
        ALIGN.align(args["source_pose"], args["target_pose"], 4, "similarity", True, 0, 0)


def test_align_rejects_bad_settings():
    pose, _ = _load("walk")
    with pytest.raises(PoseAnimateError, match="input 'mode'"):
        ALIGN.align(pose, pose, 4, "warp", True, 0, 0)
    with pytest.raises(PoseAnimateError, match="input 'width/height'"):
        ALIGN.align(pose, pose, 4, "similarity", True, -8, 0)


def test_load_rejects_missing_and_broken_files(tmp_path, monkeypatch):
    import poseanimate.nodes.load_pose_sequence as mod

    monkeypatch.setattr(mod, "_input_dir", lambda: str(tmp_path))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "ok.json").write_text(json.dumps(_load("turn")[0]))
    assert "ok.json" in PoseAnimateLoadPoseSequence.INPUT_TYPES()["required"]["pose_file"][0]
    assert LOAD.load("ok.json")[1] == _load("turn")[1]
    with pytest.raises(PoseAnimateError, match=r"^Load Pose Sequence: .*pose_file.*not valid JSON"):
        LOAD.load("broken.json")
    assert "not found" in PoseAnimateLoadPoseSequence.VALIDATE_INPUTS("../../etc/passwd")
    with pytest.raises(PoseAnimateError, match="input 'pose_file'"):
        resolve_pose_file("missing.json")
    assert PoseAnimateLoadPoseSequence.IS_CHANGED("ok.json") != PoseAnimateLoadPoseSequence.IS_CHANGED("examples/walk.json")
