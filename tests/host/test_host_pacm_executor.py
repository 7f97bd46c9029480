"""ComfyUI's own executor (validation, inference_mode, caching, progress, errors) runs the three PACM nodes.

The MODEL / CONTROL_NET / CONDITIONING come from a test-only loader node with the tiny SD1.5 models; poses from
ComfyUI's core EmptyImage; the source latent from core EmptyLatentImage; the frames end in a test output node.
"""
from __future__ import annotations

import asyncio

import pytest
import torch

from tiny_models import build_tiny_sd15, build_tiny_sdxl_refiner

from testing import comfy_host as compat
from poseanimate.nodes.embedding_optimize import PoseAnimatePoseEmbeddingOptimize
from poseanimate.nodes.inversion import PoseAnimatePoseAwareInversion
from poseanimate.nodes.sample_frames import PoseAnimateSampleFrames

RESULTS = {}
MODELS = {}


class _TinyLoader:
    CATEGORY = "testing"
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", "CONTROL_NET", "CONDITIONING")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"kind": (["sd15", "sdxl_refiner"],)}}

    def load(self, kind):
        if kind not in MODELS:
            MODELS[kind] = build_tiny_sd15() if kind == "sd15" else (build_tiny_sdxl_refiner(), build_tiny_sd15()[1])
        patcher, cnet = MODELS[kind]
        ctx = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(1))
        return (patcher, cnet, [[ctx, {"pooled_output": None}]])


class _Collect:
    CATEGORY = "testing"
    FUNCTION = "collect"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"frames": ("LATENT",), "reconstruction": ("LATENT",)}}

    def collect(self, frames, reconstruction):
        RESULTS["frames"] = frames["samples"].clone()
        RESULTS["reconstruction"] = reconstruction["samples"].clone()
        RESULTS["inference_mode"] = torch.is_inference_mode_enabled()
        return {}


class _Server:
    client_id = None
    last_node_id = None
    last_prompt_id = None

    def __init__(self):
        self.messages = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


def _comfy_progress_hook(bars):
    """What ComfyUI's main.py installs (hijack_progress), minus the websocket: record (node, value, total)."""
    from comfy_execution.utils import get_executing_context

    def hook(value, total, preview_image, prompt_id=None, node_id=None):
        context = get_executing_context()
        if node_id is None and context is not None:
            node_id = context.node_id
        bars.append((node_id, value, total))

    return hook


@pytest.fixture
def executor(monkeypatch):
    import comfy.utils
    import execution
    import nodes

    bars = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", _comfy_progress_hook(bars))

    for name, cls in {"PATestTinyLoader": _TinyLoader, "PATestCollect": _Collect,
                      "PoseAnimatePoseAwareInversion": PoseAnimatePoseAwareInversion,
                      "PoseAnimatePoseEmbeddingOptimize": PoseAnimatePoseEmbeddingOptimize,
                      "PoseAnimateSampleFrames": PoseAnimateSampleFrames}.items():
        monkeypatch.setitem(nodes.NODE_CLASS_MAPPINGS, name, cls)
    RESULTS.clear()
    server = _Server()
    server.bars = bars
    yield execution, compat.prompt_executor(execution, server), server
    MODELS.clear()
    RESULTS.clear()


def _graph(kind="sd15", n_poses=3, window=2):
    return {
        "1": {"class_type": "PATestTinyLoader", "inputs": {"kind": kind}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": n_poses,
                                                      "color": 0x808080}},
        "4": {"class_type": "PoseAnimatePoseAwareInversion", "inputs": {
            "model": ["1", 0], "control_net": ["1", 1], "latent": ["2", 0], "positive": ["1", 2],
            "source_pose": ["3", 0], "steps": 2, "cfg": 7.5, "inner_steps": 1, "early_stop": 1e-5,
            "control_strength": 1.0, "control_start": 0.0, "control_end": 1.0}},
        "5": {"class_type": "PoseAnimatePoseEmbeddingOptimize", "inputs": {
            "inversion": ["4", 0], "model": ["1", 0], "control_net": ["1", 1], "positive": ["1", 2],
            "poses": ["3", 0], "inner_steps": 1, "frames_per_batch": 0}},
        "6": {"class_type": "PoseAnimateSampleFrames", "inputs": {
            "model": ["1", 0], "control_net": ["1", 1], "positive": ["1", 2], "embeddings": ["5", 0],
            "window_size": window}},
        "7": {"class_type": "PATestCollect", "inputs": {"frames": ["6", 0], "reconstruction": ["4", 1]}},
    }


def _run(execution, ex, graph, prompt_id="p"):
    valid = asyncio.run(execution.validate_prompt(prompt_id, graph, None))
    assert valid[0], valid
    ex.execute(graph, prompt_id, {}, valid[2])
    return ex


def test_executor_runs_the_pacm_nodes_end_to_end(executor):
    execution, ex, server = executor
    _run(execution, ex, _graph())
    events = [e for e, _ in ex.status_messages]
    assert ex.success and "execution_success" in events, ex.status_messages
    frames = RESULTS["frames"]
    assert frames.shape == (3, 4, 8, 8) and torch.isfinite(frames).all()
    assert float((frames[0] - RESULTS["reconstruction"][0]).norm() / RESULTS["reconstruction"].norm()) < 1e-4
    assert RESULTS["inference_mode"]
    assert {node for node, _, _ in server.bars} == {"4", "5", "6"}  # ComfyUI's bar moved for every PACM node
    assert all(0 < v <= t for _, v, t in server.bars)


def test_executor_reports_the_nodes_own_error_for_an_unsupported_model(executor):
    execution, ex, _ = executor
    _run(execution, ex, _graph(kind="sdxl_refiner"))
    errors = [d for e, d in ex.status_messages if e == "execution_error"]
    assert not ex.success and errors
    assert errors[0]["node_id"] == "4"
    msg = errors[0]["exception_message"]
    assert msg.startswith("Pose-Aware Inversion: input 'model':") and "SD1.5" in msg and "Fix:" in msg


def test_executor_interrupt_stops_cleanly(executor):
    import comfy.model_management as mm
    import comfy.utils

    execution, ex, server = executor
    old = comfy.utils.PROGRESS_BAR_HOOK
    ticks = []

    def hook(value, total, preview, node_id=None, prompt_id=None):
        ticks.append(value)
        if len(ticks) == 3:
            mm.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        _run(execution, ex, _graph())
    finally:
        comfy.utils.set_progress_bar_global_hook(old)
        mm.interrupt_current_processing(False)
    events = [e for e, _ in ex.status_messages]
    assert "execution_interrupted" in events and "execution_success" not in events
    assert "frames" not in RESULTS
