"""The checked list of ComfyUI core nodes (tests/data/comfy_core_nodes.json) matches the real ComfyUI."""
from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("make_workflows", ROOT / "scripts" / "make_workflows.py")
mw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mw)


def test_checked_core_list_matches_comfyui():
    """The checked list of core nodes for this host's version (tests/data/comfy_core_nodes*.json: 0.3.64, the one
    the bundled workflows are written against, and 0.33.0) matches what this ComfyUI defines."""
    import os

    live = mw.extract_core(os.environ["COMFYUI_PATH"])
    lists = [json.loads(f.read_text()) for f in sorted(mw.CORE_SPECS.parent.glob("comfy_core_nodes*.json"))]
    checked = next((c for c in lists if c["comfyui_version"] == live["comfyui_version"]), None)
    assert checked is not None, (f"no checked core list for ComfyUI {live['comfyui_version']}; run "
                                 "scripts/make_workflows.py --extract-core against it")
    missing = sorted(set(checked["ids"]) - set(live["ids"]))
    assert not missing, f"core node ids in the checked list that this ComfyUI lacks: {missing}"
    for key, spec in checked["nodes"].items():
        assert live["nodes"][key] == spec, f"{key}: INPUT_TYPES/outputs differ from ComfyUI; rerun --extract-core"


# ------------------------------------------------------------------ ComfyUI's executor with tiny model files


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    from comfy_exec import ComfyRunner
    from tiny_checkpoint import write_tiny_checkpoint, write_tiny_controlnet

    import sys

    fake_aux = str(pathlib.Path(__file__).resolve().parent / "fake_controlnet_aux")
    sys.path.insert(0, fake_aux)
    for mod in [m for m in sys.modules if m == "controlnet_aux" or m.startswith("controlnet_aux.")]:
        del sys.modules[mod]
    base = tmp_path_factory.mktemp("comfy_models")
    r = ComfyRunner(base)
    write_tiny_checkpoint(base / "checkpoints" / "tiny-sd15.safetensors")
    write_tiny_controlnet(base / "controlnet" / "tiny-openpose.safetensors")
    import folder_paths

    folder_paths.filename_list_cache.clear()
    yield r
    r.close()
    sys.path.remove(fake_aux)


def _dca_graph(batch=3):
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd15.safetensors"}},
        "2": {"class_type": "PoseAnimateDCAPatchModel", "inputs": {
            "model": ["1", 0], "first_frame_weight": 0.7, "previous_frame_weight": 0.15, "own_frame_weight": 0.15,
            "blocks": "all output blocks", "custom_blocks": "output 3-11"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a knight", "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": batch}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "seed": 1, "steps": 3, "cfg": 3.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "dca/frame"}},
    }


def test_tiny_checkpoint_files_through_executor_with_dca(runner):
    ok, history, messages, valid = runner.run(_dca_graph())
    assert valid[0], valid
    assert ok, [m for m in messages if m[0] == "execution_error"]
    images = history["outputs"]["8"]["images"]
    assert len(images) == 3
    assert all((runner.base / "output" / i["subfolder"] / i["filename"]).is_file() for i in images)


def test_interrupt_stops_cleanly(runner):
    import nodes as comfy_nodes

    def press_cancel(event, data):
        if event == "executing" and data.get("node") == "6":
            comfy_nodes.interrupt_processing(True)

    runner.server.on_message = press_cancel
    try:
        ok, history, messages, _ = runner.run(_dca_graph())
    finally:
        runner.server.on_message = None
    events = [m[0] for m in messages]
    assert not ok and "execution_interrupted" in events and "execution_error" not in events
    assert history["outputs"] == {}
    ok, _, _, _ = runner.run(_dca_graph(batch=2))  # the next prompt runs normally
    assert ok


# ------------------------------------------------------------ workflow (d): flat memory as the sequence grows


def test_long_workflow_keeps_model_calls_flat_as_the_sequence_grows():
    """With workflow 'long''s window settings, the UNet never sees more frames per call however long the
    sequence is (activation memory is flat); only the small per-frame latents and embeddings grow."""
    import torch

    from tiny_models import build_tiny_sd15

    from poseanimate.nodes.dca_patch import PoseAnimateDCAPatchModel
    from poseanimate.nodes.embedding_optimize import PoseAnimatePoseEmbeddingOptimize
    from poseanimate.nodes.inversion import PoseAnimatePoseAwareInversion
    from poseanimate.nodes.sample_frames import PoseAnimateSampleFrames

    api = json.loads((ROOT / "workflows" / "api" / "long.json").read_text())
    sampler = next(n for n in api.values() if n["class_type"] == "PoseAnimateSampleFrames")
    optimizer = next(n for n in api.values() if n["class_type"] == "PoseAnimatePoseEmbeddingOptimize")
    window = sampler["inputs"]["window_size"]

    def settings(node, *given):  # the workflow's own widget values, but those passed by position
        return {k: v for k, v in node["inputs"].items() if not isinstance(v, list) and k not in given}

    per_batch = optimizer["inputs"]["frames_per_batch"]
    assert 0 < window <= 16 and 0 < per_batch <= 16, "workflow 'long' must sample and optimise in windows"

    patcher, cnet = build_tiny_sd15()
    batches = []
    hook = patcher.model.diffusion_model.input_blocks[0][0].register_forward_pre_hook(  # the first conv
        lambda mod, args: batches.append(int(args[0].shape[0])))
    g = torch.Generator().manual_seed(0)
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=g) * 5}
    positive = [[torch.randn(1, 77, 768, generator=g), {"pooled_output": None}]]
    try:
        peaks = {}
        for n in (window + 1, 2 * window + 3):
            poses = torch.rand(n + 1, 64, 64, 3, generator=g)
            inv, _ = PoseAnimatePoseAwareInversion().invert(patcher, cnet, latent, positive, poses[:1], 2, 7.5, 0,
                                                            1e-5)
            batches.clear()
            emb, = PoseAnimatePoseEmbeddingOptimize().optimize(inv, patcher, cnet, positive, poses, 1, per_batch,
                                                               **settings(optimizer, "inner_steps", "frames_per_batch"))
            opt_peak = max(batches)
            dca, = PoseAnimateDCAPatchModel().patch(patcher, 0.7, 0.15, 0.15, "all output blocks", "", None)
            batches.clear()
            out, = PoseAnimateSampleFrames().sample(dca, cnet, positive, emb, window, None,
                                                    **settings(sampler, "window_size"))
            assert out["samples"].shape[0] == n + 1
            peaks[n] = (opt_peak, max(batches))
    finally:
        hook.remove()
    (small_opt, small_sample), (big_opt, big_sample) = peaks.values()
    assert big_sample == small_sample <= 2 * window, peaks  # CFG: uncond + cond chunks of one window
    assert big_opt == small_opt <= 2 * per_batch, peaks


# --------------------------------------------- workflow (a) end to end through ComfyUI's executor, tiny models

SWAPPED = """What the host run swaps in workflow 'full' (everything else is the bundled API graph as is):
model files -> tiny generated ones (tiny-sd15.safetensors: SD1.5-shaped 1-level UNet + real-architecture CLIP-L
with random weights + TAESD VAE; tiny-openpose.safetensors: matching ControlNet); sizes -> 64x64; step counts
-> 2 DDIM steps and 1 inner iteration (CPU time). The bundled source pose is the pose file
examples/character.json; where a test wires in Pose Extract (the documented alternative) its OpenPose detector
is the stand-in package tests/host/fake_controlnet_aux (its weights cannot be downloaded here), which finds the
pose of assets/poses/character.json in any non-flat image and nobody in a flat one."""


def _tiny_api(name: str, ckpt: str = "tiny-sd15.safetensors", graph: dict | None = None) -> dict:
    graph = graph or json.loads((ROOT / "workflows" / "api" / f"{name}.json").read_text())
    for node in graph.values():
        ct, ins = node["class_type"], node["inputs"]
        if ct == "CheckpointLoaderSimple":
            ins["ckpt_name"] = ckpt
        elif ct == "ControlNetLoader":
            ins["control_net_name"] = "tiny-openpose.safetensors"
        if {"width", "height"} <= set(ins):
            for axis in ("width", "height"):
                if not isinstance(ins[axis], list):
                    ins[axis] = 64
        if ct == "PoseAnimatePoseAwareInversion":
            ins["steps"], ins["inner_steps"] = 2, 1
        if ct in ("PoseAnimatePoseEmbeddingOptimize",):
            ins["inner_steps"] = 1
    return graph


def _source_image(runner, graph):
    from PIL import Image

    name = next(n["inputs"]["image"] for n in graph.values() if n["class_type"] == "LoadImage")
    img = Image.new("RGB", (96, 128), (200, 200, 200))
    px = img.load()
    for y in range(20, 120):  # a crude figure so the picture is not flat
        for x in range(36, 60):
            px[x, y] = (180, 30, 40)
    img.save(runner.base / "input" / name)


def _node_id(graph, class_type):
    return next(i for i, n in graph.items() if n["class_type"] == class_type)


def _errors(messages):
    return [m[1].get("exception_message") for m in messages if m[0] == "execution_error"]


def test_full_workflow_end_to_end_gives_n_plus_one_frames(runner):
    graph = _tiny_api("full")
    _source_image(runner, graph)
    targets = _prepare_poses(runner, graph)
    ok, history, messages, valid = runner.run(graph)
    assert valid[0], (valid[1], valid[3])
    assert ok, _errors(messages)
    frames = history["outputs"][_node_id(graph, "SaveImage")]["images"]
    assert len(frames) == targets + 1, (len(frames), targets)
    videos = history["outputs"][_node_id(graph, "SaveVideo")]["images"]
    assert len(videos) == 1 and (runner.base / "output" / videos[0]["subfolder"] / videos[0]["filename"]).is_file()
    previews = [i for i, n in graph.items() if n["class_type"] == "PreviewImage"]
    assert previews and all(history["outputs"][i]["images"] for i in previews)  # the inversion check (+ masks)


def test_a_workflow_saved_before_the_negative_input_still_validates_and_runs(runner):
    """Workflow 'full' as the pack shipped it before the PACM nodes took a negative (and keyframes / background
    hold): an API graph saved then (tests/data/workflows_0.1.0/full_api.json) validates and runs unchanged."""
    old = json.loads((ROOT / "tests" / "data" / "workflows_0.1.0" / "full_api.json").read_text())
    assert not any("negative" in n["inputs"] for n in old.values() if n["class_type"].startswith("PoseAnimate"))
    graph = _tiny_api("full", graph=old)
    _source_image(runner, graph)
    targets = _prepare_poses(runner, graph)
    ok, history, messages, valid = runner.run(graph)
    assert valid[0], (valid[1], valid[3])
    assert ok, _errors(messages)
    assert len(history["outputs"][_node_id(graph, "SaveImage")]["images"]) == targets + 1


def _mgdm_graph() -> dict:
    """Workflow 'full' as make_workflows writes it with MGDM on (Recipe.use_masks): Mask Extract with the body
    prior, the source image's alpha, the positive conditioning, and its masks on DCA Patch Model."""
    import sys

    from comfy_exec import _make_workflows

    mw = _make_workflows()
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import workflow_defs
    finally:
        sys.path.pop(0)
    g = mw.Graph("full_mgdm", mw.all_specs())
    p = workflow_defs._pipeline(g, workflow_defs.FULL.replace(use_masks=True))
    workflow_defs._save(g, p["decoded"].out(), p["fps"], p["prefix"])
    return _tiny_api("full", graph=g.api())


def test_full_workflow_with_mgdm_stops_on_a_subject_missing_from_the_prompt_before_any_model_work(runner):
    """The MGDM wiring the workflows use when masks are on: Cross-Attention Mask Extract's lazy-input check runs
    before Pose-Aware Inversion, so a subject word that is not in the prompt stops the graph first."""
    graph = _mgdm_graph()
    _source_image(runner, graph)
    graph[_node_id(graph, "PoseAnimateCrossAttentionMaskExtract")]["inputs"]["subject"] = "dragon"
    ok, history, messages, valid = runner.run(graph)
    assert valid[0] and not ok, valid
    failed = [m[1] for m in messages if m[0] == "execution_error"]
    assert failed and failed[0]["node_type"] == "PoseAnimateCrossAttentionMaskExtract", failed
    assert failed[0]["exception_message"].startswith("Cross-Attention Mask Extract: input 'subject': ")
    executed = {m[1].get("node") for m in messages if m[0] == "executing"} | set(history["outputs"])
    pacm = {_node_id(graph, t) for t in ("PoseAnimatePoseAwareInversion", "PoseAnimatePoseEmbeddingOptimize")}
    assert not executed & pacm, executed


def test_full_workflow_with_mgdm_runs_end_to_end(runner):
    graph = _mgdm_graph()
    _source_image(runner, graph)
    targets = _prepare_poses(runner, graph)
    ok, history, messages, valid = runner.run(graph)
    assert valid[0] and ok, _errors(messages)
    assert len(history["outputs"][_node_id(graph, "SaveImage")]["images"]) == targets + 1
    mask_preview = next(i for i, n in graph.items() if n["_meta"]["title"] == "Mask check")
    assert history["outputs"][mask_preview]["images"]


def test_full_workflow_interrupt_stops_inside_a_pacm_stage(runner):
    """Cancel pressed as Pose Embedding Optimize starts: that node stops at its first step check (its progress
    callback raises ComfyUI's interrupt), nothing after it runs and no frames are saved."""
    import comfy.utils
    import nodes as comfy_nodes

    graph = _tiny_api("full")
    _source_image(runner, graph)
    target = _node_id(graph, "PoseAnimatePoseEmbeddingOptimize")
    seen, pressed = [], []

    def press_cancel(event, data):
        if event == "executing" and data.get("node") == target:
            pressed.append(True)
            comfy_nodes.interrupt_processing(True)

    def progress_hook(value, total, preview, node_id=None):
        seen.append((bool(pressed), value, total))

    comfy.utils.set_progress_bar_global_hook(progress_hook)

    runner.server.on_message = press_cancel
    try:
        ok, history, messages, _ = runner.run(graph)
    finally:
        runner.server.on_message = None
        comfy.utils.set_progress_bar_global_hook(None)
        comfy_nodes.interrupt_processing(False)
    stopped = [m[1] for m in messages if m[0] == "execution_interrupted"]
    assert not ok and stopped and stopped[0]["node_id"] == target, [m[0] for m in messages]
    assert "execution_error" not in [m[0] for m in messages]
    assert any(not after for after, _, _ in seen)  # earlier PACM stages reported steps
    assert not [x for x in seen if x[0]], seen  # no step was made after Cancel
    saved = {_node_id(graph, "SaveImage"), _node_id(graph, "SaveVideo")}
    assert not saved & set(history["outputs"]), history["outputs"]  # only the earlier preview ran


def test_full_workflow_refuses_a_model_that_is_not_sd15(runner):
    from tiny_checkpoint import write_tiny_checkpoint

    bad = runner.base / "checkpoints" / "tiny-ip2p.safetensors"
    if not bad.exists():
        write_tiny_checkpoint(bad, seed=5, in_channels=8,
                              reuse_from=runner.base / "checkpoints" / "tiny-sd15.safetensors")
        import folder_paths

        folder_paths.filename_list_cache.clear()
    graph = _tiny_api("full", ckpt="tiny-ip2p.safetensors")
    _source_image(runner, graph)
    _prepare_poses(runner, graph)
    ok, _, messages, valid = runner.run(graph)
    assert valid[0] and not ok
    errors = _errors(messages)
    assert errors and "is not an SD1.5 or SDXL model" in errors[0] and "8 input channels" in errors[0], errors


def test_full_workflow_no_person_in_the_source(runner):
    """With Pose Extract wired in as the source pose (the documented alternative to the bundled pose file), a
    source image where the detector finds nobody fails at PATA Align with its own message."""
    from PIL import Image

    graph = _tiny_api("full")
    name = "flat-source.png"
    Image.new("RGB", (96, 128), (128, 128, 128)).save(runner.base / "input" / name)
    graph[_node_id(graph, "LoadImage")]["inputs"]["image"] = name
    graph["901"] = {"class_type": "PoseAnimatePoseExtract", "_meta": {"title": "Source pose (Pose Extract)"},
                    "inputs": {"image": [_node_id(graph, "ImageScale"), 0], "model": "lllyasviel/Annotators",
                               "detect_resolution": 64, "include_hands": False, "include_face": False}}
    graph[_node_id(graph, "PoseAnimatePATAAlign")]["inputs"]["source_pose"] = ["901", 0]
    ok, _, messages, valid = runner.run(graph)
    assert valid[0] and not ok
    failed = [m[1] for m in messages if m[0] == "execution_error"]
    assert failed and failed[0]["node_type"] == "PoseAnimatePATAAlign", failed
    assert failed[0]["exception_message"].startswith("PATA Align: "), failed[0]["exception_message"]
    assert "source_pose" in failed[0]["exception_message"], failed[0]["exception_message"]


def test_full_workflow_mask_and_frame_counts_that_disagree(runner):
    """One mask for a whole sequence wired into Sample Frames fails with that node's own message."""
    graph = _tiny_api("full")
    _source_image(runner, graph)
    targets = _prepare_poses(runner, graph)
    graph["900"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64},
                    "_meta": {"title": "One mask"}}
    graph[_node_id(graph, "PoseAnimateSampleFrames")]["inputs"]["masks"] = ["900", 0]
    ok, _, messages, valid = runner.run(graph)
    assert valid[0] and not ok
    errors = _errors(messages)
    assert errors and errors[0].startswith("Sample Frames: input 'masks'"), errors
    assert f"got 1 masks for {targets + 1} frames" in errors[0], errors


@pytest.mark.parametrize("name", ["full", "fast", "remix", "long"])
def test_every_api_twin_passes_comfyui_validation(runner, name):
    """ComfyUI's own validate_prompt accepts each API twin once the model file names exist."""
    import shutil

    import comfy.utils
    import folder_paths
    import torch

    lora = runner.base / "loras" / "tiny-lora.safetensors"
    if not lora.exists():
        comfy.utils.save_torch_file({"unused": torch.zeros(1)}, str(lora))
        shutil.copy(runner.base / "controlnet" / "tiny-openpose.safetensors",
                    runner.base / "controlnet" / "tiny-canny.safetensors")
        folder_paths.filename_list_cache.clear()
    graph = _tiny_api(name)
    for node in graph.values():
        if node["class_type"] == "LoraLoader":
            node["inputs"]["lora_name"] = "tiny-lora.safetensors"
        if node["class_type"] == "ControlNetLoader" and "canny" in node["_meta"]["title"].lower():
            node["inputs"]["control_net_name"] = "tiny-canny.safetensors"
    _source_image(runner, graph)
    _prepare_poses(runner, graph)
    valid = runner.validate(graph)
    assert valid[0], (valid[1], valid[3])
    assert sorted(valid[2]) == sorted(i for i, n in graph.items()
                                      if n["class_type"] in ("SaveImage", "SaveVideo", "PreviewImage"))


def _prepare_poses(runner, graph) -> int:
    """The number N of target frames the graph makes (transition frames + poses in its pose file)."""
    inputs = graph[_node_id(graph, "PoseAnimateLoadPoseSequence")]["inputs"]
    seq = inputs["pose_file"]
    assert seq.startswith("examples/"), seq
    poses = len(json.loads((ROOT / "assets" / "poses" / seq[len("examples/"):]).read_text()))
    taken = int(inputs.get("frames", 0))
    align = graph[_node_id(graph, "PoseAnimatePATAAlign")]["inputs"]
    return int(align["transition_frames"]) + (min(taken, poses) if taken else poses)
