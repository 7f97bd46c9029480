"""Workflow 'dwpose' end to end in ComfyUI's own executor, with tiny models and a stand-in DWPose Estimator.

comfyui_controlnet_aux is not installed here (and DWPose's weights cannot be downloaded), so the test registers
its own class under the pack's node id ``DWPreprocessor`` in ComfyUI's ``nodes.NODE_CLASS_MAPPINGS``, with the
INPUT_TYPES / RETURN_TYPES of the checked spec (tests/data/third_party_nodes.json, restated from the pack's
source by tests/test_workflows.py) and the real node's return shape: ``{"ui": {"openpose_json": [...]},
"result": (IMAGE, POSE_KEYPOINT)}``, one DWPose-format frame per image of the batch (pixels of the image,
confidence 1.0, missing points [0, 0, 0]). It finds the pose of assets/poses/character.json in a single picture
(nobody in a flat one) and, in a batch of video frames, pose ``i`` of assets/poses/walk.json in frame ``i``, reading ``i`` from the
frame itself (the test video writes each frame's index as six black/white stripes), so the test sees exactly
which video frames the graph hands DWPose. Everything else is as in tests/host/test_host_workflows.py
(_tiny_api: tiny model files, 64x64, 2 DDIM steps, 1 inner iteration).
"""
from __future__ import annotations

import json
import pathlib
from fractions import Fraction

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPEC = json.loads((ROOT / "tests" / "data" / "third_party_nodes.json").read_text())[
    "packs"]["comfyui_controlnet_aux"]["nodes"]["DWPreprocessor"]
BITS, STRIPE = 6, 16  # frame index as 6 stripes of 16 pixels: white = bit set
VIDEO_W, VIDEO_H = BITS * STRIPE, 64


def _pose_file(name):
    from poseanimate import pata

    return pata.from_pose_keypoint(pata.load_pose_json(ROOT / "assets" / "poses" / name))


def _dwpose_frame(body, src_w, src_h, width, height):
    """One frame as DWPose Estimator writes it for an image of width x height."""
    body = np.array(body, dtype=np.float64)
    body[:, 0] *= width / src_w
    body[:, 1] *= height / src_h
    flat = []
    for x, y, c in body:
        flat += [float(x), float(y), 1.0] if c > 0 else [0.0, 0.0, 0.0]
    person = {"pose_keypoints_2d": flat, "face_keypoints_2d": None, "hand_left_keypoints_2d": None,
              "hand_right_keypoints_2d": None}
    return {"people": [person], "canvas_height": int(height), "canvas_width": int(width)}


def frame_index(frame) -> int:
    """The index written into a test video frame (H, W, 3) in 0..1: the middle of each stripe, white = 1."""
    frame = np.asarray(frame)
    bits = [frame[8:-8, b * STRIPE + 4:(b + 1) * STRIPE - 4].mean() > 0.5 for b in range(BITS)]
    return sum(1 << b for b, on in enumerate(bits) if on)


class StandInDWPose:
    """DWPose Estimator's signature (the checked spec) with a fixed answer; records what it was given."""

    calls: list = []
    CATEGORY = "ControlNet Preprocessors/Faces and Poses Estimators"
    FUNCTION = "estimate_pose"
    RETURN_TYPES = tuple(SPEC["output"])

    @classmethod
    def INPUT_TYPES(cls):
        return {section: {name: tuple(SPEC["input"][section][name]) for name in names}
                for section, names in SPEC["input_order"].items()}

    def estimate_pose(self, image, detect_hand="enable", detect_body="enable", detect_face="enable", resolution=512,
                      bbox_detector="yolox_l.onnx", pose_estimator="dw-ll_ucoco_384.onnx",
                      scale_stick_for_xinsr_cn="disable", **kwargs):
        import torch

        batch, height, width = int(image.shape[0]), int(image.shape[1]), int(image.shape[2])
        if batch == 1:  # the picture
            seq, w, h = _pose_file("character.json")
            frames, dicts = None, [_dwpose_frame(seq[0], w, h, width, height)]
            if float(image.std()) < 1e-3:  # a flat picture: nobody found
                dicts = [{"people": [], "canvas_height": height, "canvas_width": width}]
        else:  # video frames
            seq, w, h = _pose_file("walk.json")
            frames = [frame_index(img.cpu().numpy()) for img in image]
            dicts = [_dwpose_frame(seq[i % len(seq)], w, h, width, height) for i in frames]
        type(self).calls.append({"batch": batch, "size": (width, height), "frames": frames,
                                 "settings": (detect_hand, detect_body, detect_face, resolution, bbox_detector,
                                              pose_estimator, scale_stick_for_xinsr_cn)})
        drawn = torch.zeros(batch, height, width, 3)
        return {"ui": {"openpose_json": [json.dumps(dicts, indent=4)]}, "result": (drawn, dicts)}


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    import folder_paths
    import nodes

    from comfy_exec import ComfyRunner
    from tiny_checkpoint import write_tiny_checkpoint, write_tiny_controlnet

    assert "DWPreprocessor" not in nodes.NODE_CLASS_MAPPINGS, "a real comfyui_controlnet_aux is loaded"
    base = tmp_path_factory.mktemp("comfy_dwpose")
    r = ComfyRunner(base)
    write_tiny_checkpoint(base / "checkpoints" / "tiny-sd15.safetensors")
    write_tiny_controlnet(base / "controlnet" / "tiny-openpose.safetensors")
    folder_paths.filename_list_cache.clear()
    nodes.NODE_CLASS_MAPPINGS["DWPreprocessor"] = StandInDWPose
    nodes.NODE_DISPLAY_NAME_MAPPINGS["DWPreprocessor"] = SPEC["display_name"]
    try:
        yield r
    finally:
        del nodes.NODE_CLASS_MAPPINGS["DWPreprocessor"]
        del nodes.NODE_DISPLAY_NAME_MAPPINGS["DWPreprocessor"]
        r.close()


def _write_video(path: pathlib.Path, count: int, fps: int = 24) -> None:
    """An H.264 MP4 (ComfyUI's own writer) whose frame i shows i as black/white stripes."""
    import torch
    from comfy_api.latest import InputImpl, Types

    frames = torch.zeros(count, VIDEO_H, VIDEO_W, 3)
    for i in range(count):
        for b in range(BITS):
            if i >> b & 1:
                frames[i, :, b * STRIPE:(b + 1) * STRIPE] = 1.0
    video = InputImpl.VideoFromComponents(Types.VideoComponents(images=frames, audio=None,
                                                                frame_rate=Fraction(fps)))
    video.save_to(str(path), format=Types.VideoContainer.MP4, codec=Types.VideoCodec.H264)


def _graph(runner, video_frames: int):
    from test_host_workflows import _source_image, _tiny_api

    graph = _tiny_api("dwpose")
    _source_image(runner, graph)
    name = next(n["inputs"]["file"] for n in graph.values() if n["class_type"] == "LoadVideo")
    _write_video(runner.base / "input" / name, video_frames)
    return graph


def _by_title(graph, title):
    return next(i for i, n in graph.items() if n["_meta"]["title"] == title)


def _errors(messages):
    return [m[1].get("exception_message") for m in messages if m[0] == "execution_error"]


def test_test_video_frames_decode_to_their_index(runner, tmp_path):
    """The stripes survive H.264 and ComfyUI's Load Video: every frame reads back as its own index."""
    from comfy_api.latest import InputImpl

    path = tmp_path / "count.mp4"
    _write_video(path, 40)
    images = InputImpl.VideoFromFile(str(path)).get_components().images
    assert [frame_index(f.numpy()) for f in images] == list(range(40))


def test_dwpose_workflow_end_to_end(runner):
    """Picture -> DWPose -> source pose; every 3rd video frame (12 of them) -> DWPose -> driving poses; PATA Align
    -> the PACM pipeline -> 1 + 3 + 12 frames, the MP4 and both pose previews."""
    graph = _graph(runner, video_frames=40)
    step = graph[_by_title(graph, "Every Nth frame (1/3): groups of N")]["inputs"]["batch_size"]
    length = graph[_by_title(graph, "Driving frames")]["inputs"]["length"]
    transition = next(n for n in graph.values() if n["class_type"] == "PoseAnimatePATAAlign")["inputs"][
        "transition_frames"]
    assert (step, length, transition) == (3, 12, 3)
    StandInDWPose.calls.clear()
    ok, history, messages, valid = runner.run(graph)
    assert valid[0], (valid[1], valid[3])
    assert ok, _errors(messages)

    calls = sorted(StandInDWPose.calls, key=lambda c: c["batch"])
    assert [c["batch"] for c in calls] == [1, length]  # DWPose ran once on the picture, once on the frames
    picture, video = calls
    assert picture["size"] == (64, 64)  # Resize source's output (64x64 in the tiny run)
    assert video["size"] == (VIDEO_W, VIDEO_H) and video["frames"] == list(range(0, step * length, step))
    node = graph[_by_title(graph, "Source pose (DWPose)")]["inputs"]
    assert picture["settings"] == tuple(node[k] for k in SPEC["input_order"]["optional"])

    frames = history["outputs"][_by_title(graph, "Save frames")]["images"]
    assert len(frames) == 1 + transition + length
    videos = history["outputs"][_by_title(graph, "Save video")]["images"]
    assert len(videos) == 1 and (runner.base / "output" / videos[0]["subfolder"] / videos[0]["filename"]).is_file()
    assert all(f["subfolder"] == "PoseAnimate/dwpose" for f in frames)
    for title in ("Source pose check", "Driving poses check", "Inversion check (should look like the source)"):
        assert history["outputs"][_by_title(graph, title)]["images"], title


def test_dwpose_workflow_with_a_short_video_animates_the_frames_it_has(runner):
    """A video shorter than step x length (8 frames: every 3rd gives 0, 3, 6): Driving frames takes what there
    is, and the animation has 1 + 3 + 3 frames. Only PATA Align's frame count is run (no PACM)."""
    graph = _graph(runner, video_frames=8)
    align = next(i for i, n in graph.items() if n["class_type"] == "PoseAnimatePATAAlign")
    keep = {align}
    while True:  # PATA Align and everything upstream of it
        more = {v[0] for i in keep for v in graph[i]["inputs"].values() if isinstance(v, list)} - keep
        if not more:
            break
        keep |= more
    graph = {i: n for i, n in graph.items() if i in keep}
    graph["900"] = {"class_type": "PreviewImage", "inputs": {"images": [align, 1]}, "_meta": {"title": "Poses"}}
    StandInDWPose.calls.clear()
    ok, history, messages, valid = runner.run(graph)
    assert valid[0] and ok, (valid[1], _errors(messages))
    video = next(c for c in StandInDWPose.calls if c["batch"] > 1)
    assert video["frames"] == [0, 3, 6]
    assert len(history["outputs"]["900"]["images"]) == 1 + 3 + 3


def test_dwpose_workflow_with_nobody_in_the_picture_stops_at_pata_align(runner):
    """DWPose finds nobody in the picture: PATA Align stops with its own message naming source_pose, before any
    model work."""
    from PIL import Image

    graph = _graph(runner, video_frames=40)
    Image.new("RGB", (96, 128), (128, 128, 128)).save(runner.base / "input" / "flat-source.png")
    graph[_by_title(graph, "Source image")]["inputs"]["image"] = "flat-source.png"
    ok, history, messages, valid = runner.run(graph)
    assert valid[0] and not ok
    failed = [m[1] for m in messages if m[0] == "execution_error"]
    assert failed and failed[0]["node_type"] == "PoseAnimatePATAAlign", failed
    message = failed[0]["exception_message"]
    assert message.startswith("PATA Align: input 'source_pose'") and ". Fix: " in message, message
    executed = {m[1].get("node") for m in messages if m[0] == "executing"}
    assert not executed & {_by_title(graph, "Pose-Aware Inversion"), _by_title(graph, "Save frames")}
