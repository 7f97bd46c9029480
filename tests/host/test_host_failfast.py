"""User mistakes stop the graph in ComfyUI's own executor before any model work: a subject word missing from the
prompt (checked by Cross-Attention Mask Extract's lazy-input check, before the PACM nodes that feed it run) and
pose images whose aspect ratio differs from the source image's (checked by Pose-Aware Inversion first thing)."""
from __future__ import annotations

import asyncio

import pytest
import torch

from tiny_models import build_tiny_sd15

from poseanimate.nodes.embedding_optimize import PoseAnimatePoseEmbeddingOptimize
from testing import comfy_host as compat
from poseanimate.nodes.inversion import PoseAnimatePoseAwareInversion
from poseanimate.nodes.mask_extract import PoseAnimateCrossAttentionMaskExtract

CALLS = []
MODELS = {}
PROMPT = "a knight in silver armour walking"


class _Loader:
    CATEGORY = "testing"
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", "CONTROL_NET", "CONDITIONING", "CLIP")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def load(self):
        import comfy.sd1_clip

        if not MODELS:
            MODELS["sd15"] = build_tiny_sd15()
        patcher, cnet = MODELS["sd15"]
        clip = type("TokenizerOnly", (), {"tokenizer": comfy.sd1_clip.SD1Tokenizer()})()
        ctx = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(1))
        return (patcher, cnet, [[ctx, {"pooled_output": None}]], clip)


class _CountedInversion(PoseAnimatePoseAwareInversion):
    def invert(self, *args, **kwargs):
        CALLS.append("invert")
        return super().invert(*args, **kwargs)


class _CountedOptimize(PoseAnimatePoseEmbeddingOptimize):
    def optimize(self, *args, **kwargs):
        CALLS.append("optimize")
        return super().optimize(*args, **kwargs)


class _Collect:
    CATEGORY = "testing"
    FUNCTION = "collect"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"masks": ("MASK",)}}

    def collect(self, masks):
        CALLS.append(("masks", tuple(masks.shape)))
        return {}


class _Server:
    client_id = last_node_id = last_prompt_id = None

    def __init__(self):
        self.messages = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


@pytest.fixture
def run(monkeypatch):
    import execution
    import nodes

    for name, cls in {"PATestLoader": _Loader, "PATestCollect": _Collect,
                      "PoseAnimatePoseAwareInversion": _CountedInversion,
                      "PoseAnimatePoseEmbeddingOptimize": _CountedOptimize,
                      "PoseAnimateCrossAttentionMaskExtract": PoseAnimateCrossAttentionMaskExtract}.items():
        monkeypatch.setitem(nodes.NODE_CLASS_MAPPINGS, name, cls)
    CALLS.clear()

    def go(graph):
        valid = asyncio.run(execution.validate_prompt("p", graph, None))
        assert valid[0], valid
        ex = compat.prompt_executor(execution, _Server())
        ex.execute(graph, "p", {}, valid[2])
        return ex

    yield go
    CALLS.clear()


def _graph(subject="knight", pose_size=(64, 64)):
    w, h = pose_size
    return {
        "1": {"class_type": "PATestLoader", "inputs": {}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "EmptyImage", "inputs": {"width": w, "height": h, "batch_size": 3, "color": 0x808080}},
        "4": {"class_type": "PoseAnimatePoseAwareInversion", "inputs": {
            "model": ["1", 0], "control_net": ["1", 1], "latent": ["2", 0], "positive": ["1", 2],
            "source_pose": ["3", 0], "steps": 2, "cfg": 7.5, "inner_steps": 1, "early_stop": 1e-5,
            "control_strength": 1.0, "control_start": 0.0, "control_end": 1.0}},
        "5": {"class_type": "PoseAnimatePoseEmbeddingOptimize", "inputs": {
            "inversion": ["4", 0], "model": ["1", 0], "control_net": ["1", 1], "positive": ["1", 2],
            "poses": ["3", 0], "inner_steps": 1, "frames_per_batch": 0}},
        "6": {"class_type": "PoseAnimateCrossAttentionMaskExtract", "inputs": {
            "model": ["1", 0], "control_net": ["1", 1], "clip": ["1", 3], "embeddings": ["5", 0], "prompt": PROMPT,
            "subject": subject, "threshold": 0.0, "capture_steps": 0, "window_size": 0, "dilate": 1}},
        "7": {"class_type": "PATestCollect", "inputs": {"masks": ["6", 0]}},
    }


def _error(ex):
    errors = [d for e, d in ex.status_messages if e == "execution_error"]
    assert not ex.success and errors, ex.status_messages
    return errors[0]


def test_a_subject_missing_from_the_prompt_stops_before_the_pacm_nodes(run):
    ex = run(_graph(subject="dragon"))
    err = _error(ex)
    assert err["node_id"] == "6"
    msg = err["exception_message"]
    assert msg.startswith("Cross-Attention Mask Extract: input 'subject': ") and repr(PROMPT) in msg and "Fix:" in msg
    assert CALLS == []  # neither the inversion nor the optimisation ran


def test_the_graph_runs_when_the_subject_is_in_the_prompt(run):
    ex = run(_graph())
    assert ex.success, ex.status_messages
    assert CALLS == ["invert", "optimize", ("masks", (3, 64, 64))]


def test_pose_images_of_another_aspect_ratio_are_refused_before_the_inversion_runs(run, monkeypatch):
    import poseanimate.pacm as pacm

    def no_model_work(*a, **k):
        raise AssertionError("the inversion started")

    monkeypatch.setattr(pacm, "ddim_invert", no_model_work)
    ex = run(_graph(pose_size=(64, 96)))
    err = _error(ex)
    assert err["node_id"] == "4"
    msg = err["exception_message"]
    assert msg.startswith("Pose-Aware Inversion: input 'source_pose': the pose images are 64x96 but the source "
                          "image is 64x64") and "Fix: set PATA Align's width and height to 64 and 64" in msg
    assert CALLS == ["invert"]  # the node was entered and refused the input
