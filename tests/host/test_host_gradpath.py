"""The gradient path (nodes/host/gradpath.py) under every way the host may store and serve weights.

The reference is plain torch autograd on a model whose weights are ordinary tensors. Against it, the embedding
gradient through ``ComfyDenoiser.grad_context()`` must match when the weights are inference tensors a KSampler
used before, when layers cast per call with a LoRA-like weight function (``--lowvram`` partial loading), and
under an emulation of 0.33's dynamic VRAM caster: half the layers served from cached weights made during an
earlier inference-mode forward, the others from one cast buffer that every layer refills and that is re-wrapped
on each call (so a saved weight would silently hold another layer's values by backward time).
"""
from __future__ import annotations

import contextlib

import pytest
import torch

from tiny_models import build_tiny_sd15

from poseanimate.nodes._common import PoseAnimateError
from poseanimate.nodes.host import ComfyDenoiser, engine_mode, gradpath, plain


def _inputs(seed=0, n=2, hw=8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, hw, hw, generator=g)
    ctx = torch.randn(1, 77, 768, generator=g)
    hint = torch.rand(n, 3, hw * 8, hw * 8, generator=g)
    return x, ctx, hint


def _layers(modules):
    return [m for root in modules for m in root.modules()
            if isinstance(m, gradpath._SUPPORTED) and m._parameters.get("weight") is not None]


class DynamicVramEmulation:
    """comfy.ops.cast_bias_weight as dynamic VRAM serves weights (see the module docstring)."""

    def __init__(self, layers):
        self.cached_ids = {id(m) for m in layers[::2]}
        self.cache = {}
        size = max(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0) for m in layers)
        with torch.inference_mode(False):
            self.buffer = torch.zeros(size)
        self.calls = 0

    def _rewrap(self, offset, like):
        # a fresh tensor over the shared storage (no shared version counter), as interpret_gathered_like makes
        t = torch.empty(0, dtype=self.buffer.dtype)
        return t.set_(self.buffer.untyped_storage(), offset, like.shape, like.stride())

    def cast(self, s, input=None, dtype=None, device=None, bias_dtype=None, offloadable=False, **_kw):
        self.calls += 1
        dtype = dtype or input.dtype
        if id(s) in self.cached_ids:
            if id(s) not in self.cache:
                with torch.inference_mode():
                    self.cache[id(s)] = (s.weight.to(dtype).clone(),
                                         None if s.bias is None else s.bias.to(dtype).clone())
            w, b = self.cache[id(s)]
        else:
            with torch.inference_mode(False), torch.no_grad():
                n = s.weight.numel()
                self.buffer[:n].copy_(s.weight.detach().flatten())
                w = self._rewrap(0, s.weight.contiguous())
                b = None
                if s.bias is not None:
                    self.buffer[n:n + s.bias.numel()].copy_(s.bias.detach())
                    b = self._rewrap(n, s.bias)
        return (w, b, None) if offloadable else (w, b)


@contextlib.contextmanager
def _served_by(mode, modules, monkeypatch):
    import comfy.ops

    layers = _layers(modules)
    if mode == "resident":
        yield None
        return
    for m in layers:
        monkeypatch.setattr(m, "comfy_cast_weights", True, raising=False)
    if mode == "lowvram_lora":
        for m in layers[1::3]:
            monkeypatch.setattr(m, "weight_function", [lambda w: w * 1.5], raising=False)
        yield None
        return
    emu = DynamicVramEmulation(layers)
    monkeypatch.setattr(comfy.ops, "cast_bias_weight", emu.cast)
    if hasattr(comfy.ops, "uncast_bias_weight"):
        monkeypatch.setattr(comfy.ops, "uncast_bias_weight", lambda *a, **k: None)
    yield emu


def _grad(den, x, ctx, hint):
    """d(loss)/d(embedding) for one CFG call through UNet + ControlNet, as the optimising stages make it."""
    with engine_mode():
        x, ctx, hint = plain(x), plain(ctx), plain(hint)
        n = x.shape[0]
        sigma = den.sigmas[[500] * (2 * n)]
        with den.grad_context():
            emb = ctx.clone().requires_grad_(True)
            out = den(torch.cat([x, x]) * sigma[0], sigma, torch.cat([emb.expand(n, -1, -1), ctx.expand(n, -1, -1)]),
                      torch.cat([hint, hint]), {"cond_or_uncond": [1, 0]})
            loss = out.square().mean()
            loss.backward()
        return out.detach(), emb.grad.detach()


def _reference(mode, monkeypatch):
    """Plain autograd on ordinary weight tensors (no gradient path): what the gradient must be."""
    with torch.inference_mode(False):
        patcher, cnet = build_tiny_sd15()
        for root in (patcher.model, cnet.control_model):
            for p in root.parameters():
                p.requires_grad_(False)
    assert not patcher.model.diffusion_model.out[2].weight.is_inference()
    with monkeypatch.context() as mp:
        mp.setattr(gradpath, "host_layers", lambda modules, attention=None: contextlib.nullcontext())
        with _served_by("lowvram_lora" if mode == "lowvram_lora" else "resident",
                        [patcher.model, cnet.control_model], mp):
            return _grad(ComfyDenoiser(patcher, cnet, strength=0.8), *_inputs())


def _ksample(patcher, cnet, hint, ctx):
    import comfy.sample

    c = cnet.copy().set_cond_hint(hint, 0.8, (0.0, 1.0))
    pos = [[ctx, {"control": c}]]
    neg = [[torch.zeros_like(ctx), {"control": c}]]
    latent = torch.zeros(hint.shape[0], 4, hint.shape[2] // 8, hint.shape[3] // 8)
    return comfy.sample.sample(patcher, torch.randn(latent.shape), 2, 7.5, "ddim", "ddim_uniform", pos, neg, latent,
                               disable_pbar=True, seed=0)


@pytest.mark.parametrize("mode", ["resident", "lowvram_lora", "dynamic_vram"])
def test_embedding_gradient_matches_plain_torch(mode, monkeypatch):
    ref_out, ref_grad = _reference(mode, monkeypatch)
    patcher, cnet = build_tiny_sd15()  # inference-mode weights, as a loader node makes them
    modules = [patcher.model, cnet.control_model]
    x, ctx, hint = _inputs()
    with _served_by(mode, modules, monkeypatch) as emu:
        _ksample(patcher, cnet, hint, ctx)  # another node ran the same model in inference mode first
        den = ComfyDenoiser(patcher, cnet, strength=0.8)
        den.check_grad_support()
        w = patcher.model.diffusion_model.out[2]
        original = w.weight
        calls = emu.calls if emu else 0
        out, grad = _grad(den, x, ctx, hint)
        assert w.weight is original  # no weight was copied or swapped
        if emu is not None:
            assert emu.cache and emu.calls > calls  # both kinds of served weights were used
    assert torch.allclose(out, ref_out, atol=1e-5, rtol=1e-4)
    assert grad.abs().sum() > 0
    torch.testing.assert_close(grad, ref_grad, atol=1e-7, rtol=1e-4)
    assert all("forward" not in m.__dict__ for m in _layers(modules))  # every layer put back


def test_naive_autograd_under_the_emulation_is_wrong_or_fails(monkeypatch):
    """The emulation is faithful enough to break what the gradient path avoids: plain autograd over the
    served weights either refuses the inference tensors or computes another gradient."""
    _, ref_grad = _reference("dynamic_vram", monkeypatch)
    patcher, cnet = build_tiny_sd15()
    with _served_by("dynamic_vram", [patcher.model, cnet.control_model], monkeypatch):
        _ksample(patcher, cnet, *_inputs()[2:0:-1])
        monkeypatch.setattr(gradpath, "host_layers", lambda modules, attention=None: contextlib.nullcontext())
        den = ComfyDenoiser(patcher, cnet, strength=0.8)
        try:
            _, grad = _grad(den, *_inputs())
        except RuntimeError as err:
            assert "nference" in str(err)
        else:
            assert not torch.allclose(grad, ref_grad, atol=1e-7, rtol=1e-4)


def test_exception_inside_puts_every_layer_back():
    patcher, cnet = build_tiny_sd15()
    den = ComfyDenoiser(patcher, cnet)
    with pytest.raises(RuntimeError, match="boom"):
        with den.grad_context():
            assert "forward" in patcher.model.diffusion_model.out[2].__dict__
            raise RuntimeError("boom")
    assert all("forward" not in m.__dict__ for m in _layers([patcher.model, cnet.control_model]))
    assert den._grad_depth == 0


class _QuantisedWeight(torch.Tensor):
    """Stands for a quantised weight class (GGUF's GGMLTensor, ComfyUI's QuantizedTensor)."""


@pytest.mark.parametrize("kind", ["tensor_subclass", "fp8"])
def test_quantised_weights_are_refused_before_work(kind):
    patcher, cnet = build_tiny_sd15()
    layer = patcher.model.diffusion_model.out[2]
    with torch.inference_mode(False):
        w = layer.weight.detach().clone()
        if kind == "fp8":
            new = torch.nn.Parameter(w.to(torch.float8_e4m3fn), requires_grad=False)
        else:
            new = torch.nn.Parameter(w.as_subclass(_QuantisedWeight), requires_grad=False)
    layer._parameters["weight"] = new
    den = ComfyDenoiser(patcher, cnet, node="Pose-Aware Inversion")
    with pytest.raises(PoseAnimateError) as err:
        den.check_grad_support()
    msg = str(err.value)
    assert msg.startswith("Pose-Aware Inversion: input 'model':") and "Fix:" in msg
    assert ("_QuantisedWeight" if kind == "tensor_subclass" else "float8") in msg


def test_fp8_weights_the_host_casts_are_differentiated_exactly():
    """A checkpoint stored in fp8 and run in another dtype (manual cast; dynamic VRAM loads a file's fp8 weights the
    same way): not refused for its file dtype, and the embedding gradient equals the gradient through an fp32 model
    holding the same (fp8-rounded) weights, because the backward fetches the weights through the same cast."""
    patcher, cnet = build_tiny_sd15(dtype=torch.float8_e4m3fn, manual_cast_dtype=torch.float32)
    assert patcher.model.diffusion_model.out[2].weight.dtype == torch.float8_e4m3fn
    reference, _ = build_tiny_sd15()
    fp8 = patcher.model.diffusion_model.state_dict()
    for name, p in reference.model.diffusion_model.named_parameters():  # (weights made in inference mode, as here)
        p.copy_(fp8[name].float())
    den = ComfyDenoiser(patcher, cnet, node="Pose Embedding Optimize")
    den.check_grad_support()
    x, ctx, hint = _inputs()
    out, grad = _grad(den, x, ctx, hint)
    ref_out, ref_grad = _grad(ComfyDenoiser(reference, cnet), x, ctx, hint)
    assert grad.abs().sum() > 0
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-7)


def test_a_union_controlnet_is_not_refused_for_its_task_embedding():
    """A ControlNet Union (ControlNet++) holds its task embedding as a bare parameter; it only meets the hint's
    features, never the text embedding, so the gradient passes accept it (the message used to blame quantised
    weights) and the embedding's gradient flows through the union ControlNet."""
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.ops
    import comfy.supported_models

    from tiny_checkpoint import CKPT_UNET
    from tiny_models import init_weights_

    cfg = comfy.supported_models.SD15(dict(CKPT_UNET))
    cfg.set_inference_dtype(torch.float32, None)
    model = cfg.get_model({}, "", device=torch.device("cpu"))
    init_weights_(model.diffusion_model, 0)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    cn_cfg = dict(cfg.unet_config)
    cn_cfg.pop("out_channels")
    cn_cfg.update(hint_channels=3, operations=comfy.ops.disable_weight_init, dtype=torch.float32,
                  device=torch.device("cpu"), union_controlnet_num_control_type=8)
    control_model = comfy.cldm.cldm.ControlNet(**cn_cfg)
    init_weights_(control_model, 1)
    union = comfy.controlnet.ControlNet(control_model, load_device=mm.get_torch_device())
    union.set_extra_arg("control_type", [4])  # openpose, as 'SetUnionControlNetType' sets it
    den = ComfyDenoiser(patcher, union, node="Pose-Aware Inversion")
    den.check_grad_support()
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode(False):
        x, ctx = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 768, generator=g)
        hint = torch.rand(1, 3, 64, 64, generator=g)
    _, grad = _grad(den, x, ctx, hint)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_a_control_lora_is_refused_before_a_gradient_pass():
    """A Control-LoRA builds its network from the UNet's weights inside every call, out of the gradient path's
    reach: a gradient stage refuses it up front (a no-gradient stage may use it)."""
    import comfy.controlnet

    patcher, _ = build_tiny_sd15()
    lora = comfy.controlnet.ControlLora({})
    den = ComfyDenoiser(patcher, lora, node="Pose Embedding Optimize")
    with pytest.raises(PoseAnimateError, match=r"^Pose Embedding Optimize: input 'model': .*ControlLora.*Fix: .*"
                                               r"Control-LoRA"):
        den.check_grad_support()


def test_cfg_rows_are_merged_only_for_patches_that_treat_chunks_alike():
    """pacm evaluates identical CFG rows once only when nothing on the MODEL may weigh cond and uncond rows
    differently: PoseAnimate's own DCA and capture patches do not; any other patch or wrapper might."""
    from poseanimate.attention import DCAPatch, install_patches

    patcher, cnet = build_tiny_sd15()
    assert not ComfyDenoiser(patcher, cnet).cond_rows_differ
    dca = patcher.clone()
    assert install_patches(dca, dca=DCAPatch())
    assert not ComfyDenoiser(dca, cnet).cond_rows_differ
    other = dca.clone()
    other.set_model_attn2_replace(lambda q, k, v, extra_options: q, "output", 3)  # an IPAdapter-like patch
    assert ComfyDenoiser(other, cnet).cond_rows_differ
    wrapped = patcher.clone()
    wrapped.set_model_unet_function_wrapper(lambda f, a: f(a["input"], a["timestep"], **a["c"]))
    assert ComfyDenoiser(wrapped, cnet).cond_rows_differ
    extra = cnet.copy().set_cond_hint(torch.rand(1, 3, 64, 64), 0.5, (0.0, 1.0))
    assert ComfyDenoiser(patcher, cnet, cond_control=extra).cond_rows_differ
