"""The gradient stages under the attention backends users start ComfyUI with.

Pose-Aware Inversion and Pose Embedding Optimize back-propagate through the UNet and ControlNet. With ComfyUI's own
``attention_sage`` / ``attention_flash`` around stand-in kernels built like the real ones (tests/host/
standin_attention.py: a forward-only sage kernel that refuses wide heads, upon which ComfyUI falls back; flash inside
ComfyUI's custom op without an autograd formula), with the CPU default (sub-quadratic attention) and with a
forward-only ``optimized_attention_override`` from another pack, both nodes give the embeddings of the run with
ComfyUI's PyTorch attention, for SD1.5 and SDXL head sizes: the gradient passes attend through
``gradpath.GradAttention`` whatever the user chose, the forward passes keep the user's backend.

Tolerance (relative, in norm): the stand-ins compute torch SDPA as ComfyUI's PyTorch attention does and the
gradient passes run the same function, so the embeddings agree bit for bit here (measured 0.0 for every stand-in and
family); 1e-6 leaves room for another CPU's kernels. Sub-quadratic attention rounds its forward passes differently
(its softmax in chunks), and Adam's normalised steps carry that rounding into single entries (measured: up to 1.4e-2
absolute, about one Adam step, yet 1.3e-4 relative in norm for SD1.5, 4.2e-5 for SDXL): 1e-3 in norm for it.
"""
from __future__ import annotations

import pytest
import torch

from standin_attention import ForwardOnlyOverride, install
from tiny_models import build_tiny_sd15, build_tiny_sdxl

from poseanimate.nodes.embedding_optimize import PoseAnimatePoseEmbeddingOptimize
from poseanimate.nodes.host import gradpath
from poseanimate.nodes.inversion import PoseAnimatePoseAwareInversion

STEPS = 2
# head dims of the tiny models: SD1.5-shaped 4 / 8 / 16 (8 heads at 32 / 64 / 128 channels), SDXL-shaped 64. The
# sage stand-in refuses heads above 8 on SD1.5 (the widest level falls back, as real SD1.5's 160-wide heads do
# above sage's 128) and none on SDXL (whose real heads are 64 wide).
SAGE_LIMIT = {"sd15": 8, "sdxl": 64}
TOLERANCE = {"pytorch": 1e-6, "sage": 1e-6, "flash": 1e-6, "sub_quad": 1e-3}


def _scene(family, seed=0):
    g = torch.Generator().manual_seed(seed)
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=g) * 5}
    if family == "sdxl":
        positive = [[torch.randn(1, 77, 2048, generator=g), {"pooled_output": torch.randn(1, 1280, generator=g)}]]
    else:
        positive = [[torch.randn(1, 77, 768, generator=g), {}]]
    poses = torch.rand(3, 64, 64, 3, generator=g)
    return latent, positive, poses


@pytest.fixture(scope="module")
def models():
    with torch.inference_mode():
        return {"sd15": build_tiny_sd15(), "sdxl": build_tiny_sdxl(with_control=True)}


def _embeddings(models, family, backend, override=None):
    """(inversion embeddings, frame embeddings, kernel) of both gradient nodes under ``backend``."""
    patcher, cnet = models[family]
    if override is not None:
        patcher = patcher.clone()
        patcher.model_options.setdefault("transformer_options", {})[gradpath.OVERRIDE_KEY] = override
    latent, positive, poses = _scene(family)
    with pytest.MonkeyPatch.context() as mp:
        kernel = install(mp, backend, SAGE_LIMIT[family])
        inv, _ = PoseAnimatePoseAwareInversion().invert(patcher, cnet, latent, positive, poses[:1], STEPS, 7.5, 2,
                                                        1e-5)
        (emb,) = PoseAnimatePoseEmbeddingOptimize().optimize(inv, patcher, cnet, positive, poses, 2, 0,
                                                             schedule="inner iterations")
    return inv.uncond, emb.poses.uncond, kernel


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def reference(models):
    return {f: _embeddings(models, f, "pytorch")[:2] for f in ("sd15", "sdxl")}


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("backend", ["sage", "flash", "sub_quad"])
def test_both_gradient_nodes_match_pytorch_attention(models, reference, family, backend):
    inv, frames, kernel = _embeddings(models, family, backend)
    ref_inv, ref_frames = reference[family]
    assert _rel(inv, ref_inv) < TOLERANCE[backend] and _rel(frames, ref_frames) < TOLERANCE[backend]
    if kernel is not None:
        assert kernel.calls > 0  # the user's backend ran the forward passes
    if backend == "sage" and family == "sd15":
        assert kernel.refused > 0  # and ComfyUI's fallback above its head-dim limit was taken


def test_an_override_from_another_pack_keeps_forward_passes_and_is_replaced_in_gradient_passes(models, reference):
    other = ForwardOnlyOverride()
    inv, frames, _ = _embeddings(models, "sd15", "pytorch", override=other)
    assert other.calls > 0
    ref_inv, ref_frames = reference["sd15"]
    assert _rel(inv, ref_inv) < TOLERANCE["pytorch"] and _rel(frames, ref_frames) < TOLERANCE["pytorch"]


def test_the_stand_ins_have_no_backward_and_the_nodes_need_the_override(models, reference, monkeypatch):
    """The stand-ins are what they claim (so the tests above can fail): no gradient through sage, an error through
    flash; with the gradient passes handing attention back to the user's backend, flash stops both nodes and the
    sage stand-in silently changes the SD1.5 embeddings (a partial gradient)."""
    import comfy.ldm.modules.attention as host

    g = torch.Generator().manual_seed(0)
    with torch.inference_mode(False):
        q, k, v = (torch.randn(1, 16, 32, generator=g).requires_grad_(True) for _ in range(3))
        with pytest.MonkeyPatch.context() as mp:
            install(mp, "sage")
            assert host.attention_sage(q, k, v, 4).grad_fn is None
        with pytest.MonkeyPatch.context() as mp:
            install(mp, "flash")
            with pytest.raises(RuntimeError, match="autograd"):
                host.attention_flash(q, k, v, 4).sum().backward()

    monkeypatch.setattr(gradpath.GradAttention, "__call__", lambda self, func, *a, **kw: func(*a, **kw))
    with pytest.raises(Exception, match="autograd|grad"):
        _embeddings(models, "sd15", "flash")
    inv, frames, _ = _embeddings(models, "sd15", "sage")
    assert _rel(frames, reference["sd15"][1]) > 1e-3 or _rel(inv, reference["sd15"][0]) > 1e-3


def test_an_attention_patch_of_another_pack_is_named_in_a_warning_under_a_backend_without_backward(models):
    """An attn2 replace patch of another pack may call optimized_attention without passing the gradient pass's
    switch on (transformer_options): under a backend without a backward the gradient stages warn, naming it; under
    PyTorch attention they do not. PoseAnimate's own patches are never named."""
    import comfy.ldm.modules.attention as host

    from poseanimate.nodes.host import adapter

    def other_pack_attn2(q, k, v, extra_options):  # as some attention packs call it: without the options
        return host.optimized_attention(q, k, v, extra_options["n_heads"])

    patcher, cnet = models["sd15"]
    patched = patcher.clone()
    patched.set_model_attn2_replace(other_pack_attn2, "output", 3)
    latent, positive, poses = _scene("sd15")
    for backend, expected in (("pytorch", 0), ("sage", 1)):
        warnings = []
        with pytest.MonkeyPatch.context() as mp:
            install(mp, backend, SAGE_LIMIT["sd15"])
            mp.setattr(adapter.log, "warning", lambda msg, *a: warnings.append(msg % a))
            PoseAnimatePoseAwareInversion().invert(patched, cnet, latent, positive, poses[:1], STEPS, 7.5, 1, 1e-5)
        named = [w for w in warnings if "other_pack_attn2" in w]
        assert len(named) == expected, warnings
        if expected:
            assert "attention_sage" in named[0] and "--use-pytorch-cross-attention" in named[0]
