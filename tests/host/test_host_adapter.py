"""The host adapter (nodes/host) on ComfyUI's own tiny SD1.5 UNet + ControlNet, inside inference_mode.

These tests drive the adapter with a small DDIM / Adam loop of their own (no pacm needed) and check the
properties the PACM nodes rely on: same numbers as ComfyUI's own control path, autograd into the
embedding, a shared MODEL that a plain KSampler afterwards still samples bit-identically, LoRA patches
that still unpatch, refusal of non-SD1.5 models, and the progress / interrupt bridge.
"""
from __future__ import annotations

import pytest
import torch

from tiny_models import (assert_weights_unchanged, build_tiny_sd15, build_tiny_sd2, build_tiny_sdxl_refiner,
                         snapshot_weights)

from poseanimate.nodes._common import PoseAnimateError
from poseanimate.nodes.host import ComfyDenoiser, ComfyProgress, engine_mode, plain, read_conditioning


def _inputs(n=2, seed=0, hw=8):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 4, hw, hw, generator=g)
    eps = torch.randn(n, 4, hw, hw, generator=g)
    ctx = torch.randn(1, 77, 768, generator=g)
    hint = torch.rand(n, 3, hw * 8, hw * 8, generator=g)
    return x0, eps, ctx, hint


def _ksample(patcher, cnet, hint, ctx, steps=3, seed=0):
    """What ComfyUI's KSampler node does (comfy.sample.sample), ControlNet applied as 'Apply ControlNet'."""
    import comfy.sample

    c = cnet.copy().set_cond_hint(hint, 0.9, (0.0, 1.0))
    pos = [[ctx, {"control": c, "control_apply_to_uncond": False}]]
    neg = [[torch.zeros_like(ctx), {"control": c, "control_apply_to_uncond": False}]]
    latent = torch.zeros(hint.shape[0], 4, hint.shape[2] // 8, hint.shape[3] // 8)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(patcher, noise, steps, 7.5, "ddim", "ddim_uniform", pos, neg, latent,
                               disable_pbar=True, seed=seed)


def _ddim_adam(den, x0, eps, ctx, hint, steps=3, iters=2):
    """A miniature pose-aware inversion: per step, Adam on an uncond embedding through UNet + ControlNet,
    run the way the nodes run pacm (engine_mode, inputs made plain)."""
    with engine_mode():
        return _ddim_adam_loop(den, x0, eps, ctx, hint, steps, iters)


def _ddim_adam_loop(den, x0, eps, ctx, hint, steps, iters):
    sig = den.sigmas
    assert not sig.is_inference()
    x0, eps, ctx, hint = (plain(t) for t in (x0, eps, ctx, hint))  # as the nodes do before calling pacm
    ts = torch.linspace(999, 0, steps + 1).long()
    n = x0.shape[0]
    x = x0 + sig[ts[0]] * eps
    losses = []
    emb = ctx.clone()
    for i in range(steps):
        s, s_next = sig[ts[i]], (sig[ts[i + 1]] if i + 1 < steps else torch.tensor(0.0))
        target = x0 + s_next * eps
        with den.grad_context():
            emb = emb.detach().clone().requires_grad_(True)
            opt = torch.optim.Adam([emb], lr=1e-2)
            for _ in range(iters):
                cat = torch.cat([emb.expand(n, -1, -1), ctx.expand(n, -1, -1)])
                d = den(torch.cat([x, x]), s.repeat(2 * n), cat, torch.cat([hint, hint]),
                        {"cond_or_uncond": [1, 0]})
                du, dc = d.chunk(2)
                d = du + 7.5 * (dc - du)
                x_next = d + s_next * (x - d) / s
                loss = torch.nn.functional.mse_loss(x_next, target)
                opt.zero_grad()
                loss.backward()
                assert emb.grad is not None and torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
                opt.step()
                losses.append(loss.item())
        with torch.no_grad():
            d = den(x, s.repeat(n), ctx.expand(n, -1, -1), hint, {"cond_or_uncond": [0]})
            x = d + s_next * (x - d) / s
    return x, losses


def test_adapter_matches_comfy_control_path():
    patcher, cnet = build_tiny_sd15()
    x0, eps, ctx, hint = _inputs()
    hint = torch.nn.functional.interpolate(hint, size=(48, 40))  # the ControlNet resizes it, as in ComfyUI
    den = ComfyDenoiser(patcher, cnet, strength=0.8)
    sigma = den.sigmas[[600, 600]]
    x = x0 + sigma.view(-1, 1, 1, 1) * eps
    out = den(x, sigma, ctx.expand(2, -1, -1), hint, {"cond_or_uncond": [0]})

    model = patcher.model
    c = cnet.copy().set_cond_hint(hint, 0.8, (0.0, 1.0))
    c.pre_run(model, lambda p: model.model_sampling.percent_to_sigma(p))
    to = {"cond_or_uncond": [0], "sigmas": sigma}
    ctrl = c.get_control(x, sigma, {"c_crossattn": ctx.expand(2, -1, -1)}, 1, to)
    ref = model.apply_model(x, sigma, c_crossattn=ctx.expand(2, -1, -1), control=ctrl, transformer_options=to)
    no_ctrl = ComfyDenoiser(patcher, None)(x, sigma, ctx.expand(2, -1, -1), hint, {"cond_or_uncond": [0]})
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert torch.equal(out, ref)
    assert not torch.allclose(out, no_ctrl)  # the ControlNet really contributed


def test_control_percent_range_and_strength():
    patcher, cnet = build_tiny_sd15()
    x0, eps, ctx, hint = _inputs()
    off = ComfyDenoiser(patcher, None)
    late = ComfyDenoiser(patcher, cnet, start_percent=0.5, end_percent=1.0)
    zero = ComfyDenoiser(patcher, cnet, strength=0.0)
    full = ComfyDenoiser(patcher, cnet)
    for t, active in ((900, False), (100, True)):
        sigma = off.sigmas[[t, t]]
        x = x0 + sigma.view(-1, 1, 1, 1) * eps
        args = (x, sigma, ctx.expand(2, -1, -1), hint, {"cond_or_uncond": [0]})
        assert torch.equal(late(*args), full(*args)) == active
        assert torch.equal(late(*args), off(*args)) == (not active)
        assert torch.allclose(zero(*args), off(*args), atol=1e-6)


def test_out_of_place_control_equals_in_place_and_grads_flow(pytorch_attention):
    patcher, cnet = build_tiny_sd15()
    x0, eps, ctx, hint = _inputs()
    den = ComfyDenoiser(patcher, cnet, strength=0.7)
    sigma = den.sigmas[[400, 400, 400, 400]]
    x = torch.cat([x0, x0]) + sigma.view(-1, 1, 1, 1) * torch.cat([eps, eps])
    to = {"cond_or_uncond": [1, 0]}
    ref = den(x, sigma, ctx.expand(4, -1, -1), torch.cat([hint, hint]), dict(to))
    assert torch.is_inference_mode_enabled()
    with den.grad_context():
        assert not torch.is_inference_mode_enabled()
        emb = torch.zeros(1, 77, 768).copy_(ctx).requires_grad_(True)
        out = den(x, sigma, emb.expand(4, -1, -1), torch.cat([hint, hint]), dict(to))
        assert torch.equal(out.detach(), ref)
        out.square().mean().backward()
    assert torch.is_inference_mode_enabled()
    assert emb.grad is not None and emb.grad.abs().sum() > 0 and torch.isfinite(emb.grad).all()


def test_shared_model_bit_identical_after_grad_work():
    patcher, cnet = build_tiny_sd15()
    x0, eps, ctx, hint = _inputs()
    before = _ksample(patcher, cnet, hint, ctx)
    snap_unet, snap_cn = snapshot_weights(patcher.model), snapshot_weights(cnet.control_model)
    opts_before = repr(patcher.model_options)

    den = ComfyDenoiser(patcher, cnet)
    x, losses = _ddim_adam(den, x0, eps, ctx, hint)
    assert torch.isfinite(x).all() and len(losses) == 6
    with pytest.raises(RuntimeError):  # an exception inside still restores everything
        with den.grad_context():
            raise RuntimeError("boom")

    assert_weights_unchanged(patcher.model, snap_unet)
    assert_weights_unchanged(cnet.control_model, snap_cn)
    assert repr(patcher.model_options) == opts_before
    assert cnet.cond_hint_original is None  # the user's CONTROL_NET object was never given a hint
    after = _ksample(patcher, cnet, hint, ctx)
    assert torch.equal(before, after)


def test_lora_patches_still_unpatch():
    import comfy.model_management as mm

    patcher, cnet = build_tiny_sd15()
    x0, eps, ctx, hint = _inputs(n=1)
    key = "diffusion_model.output_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
    sd = patcher.model.state_dict()
    original = sd[key].clone()
    base = _ksample(patcher, cnet, hint, ctx)

    lora = patcher.clone()
    lora.add_patches({key: ("diff", (torch.full_like(original, 0.05),))}, 1.0)
    with_lora = _ksample(lora, cnet, hint, ctx)
    assert not torch.equal(base, with_lora)

    den = ComfyDenoiser(lora, cnet)
    _ddim_adam(den, x0, eps, ctx, hint, steps=2, iters=1)
    weight = lora.model.state_dict()[key]
    assert torch.allclose(weight, original + 0.05)  # the LoRA is applied while loaded
    assert torch.equal(_ksample(lora, cnet, hint, ctx), with_lora)

    mm.unload_all_models()
    lora.unpatch_model()
    assert torch.equal(patcher.model.state_dict()[key], original)
    assert torch.equal(_ksample(patcher, cnet, hint, ctx), base)


def test_model_patches_and_engine_options_reach_the_unet():
    patcher, cnet = build_tiny_sd15()
    seen = []

    def attn1(q, k, v, extra_options):
        from comfy.ldm.modules.attention import optimized_attention

        carry = extra_options["poseanimate"]["kv_carry"]
        carry[extra_options["block"]] = carry.get(extra_options["block"], 0) + 1
        seen.append((extra_options["block"], list(extra_options["cond_or_uncond"])))
        return optimized_attention(q, k, v, extra_options["n_heads"])

    m = patcher.clone()
    for i in (3, 4):
        m.set_model_attn1_replace(attn1, "output", i)
    x0, eps, ctx, hint = _inputs()
    den = ComfyDenoiser(m, cnet)
    carry = {}
    sigma = den.sigmas[[500] * 4]
    den(torch.cat([x0, x0]), sigma, ctx.expand(4, -1, -1), torch.cat([hint, hint]),
        {"cond_or_uncond": [1, 0], "poseanimate": {"kv_carry": carry}})
    assert carry == {("output", 3): 1, ("output", 4): 1}  # by reference, as the DCA patch needs
    assert seen == [(("output", 3), [1, 0]), (("output", 4), [1, 0])]
    with den.grad_context():
        den(x0, sigma[:2], ctx.expand(2, -1, -1).clone().requires_grad_(True), hint,
            {"poseanimate": {"kv_carry": carry}})
    assert carry[("output", 3)] == 2
    assert "patches_replace" not in patcher.model_options.get("transformer_options", {})


def test_bf16_model_runs_in_its_dtype_with_grads():
    patcher, cnet = build_tiny_sd15(dtype=torch.bfloat16)
    x0, eps, ctx, hint = _inputs(n=1)
    den = ComfyDenoiser(patcher, cnet)
    seen = []

    def probe(h, hsp, transformer_options):
        seen.append(h.dtype)
        return h, hsp

    patcher.set_model_output_block_patch(probe)
    sigma = den.sigmas[[300]]
    out = den(x0 + sigma * eps, sigma, ctx, hint)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert seen and all(d == torch.bfloat16 for d in seen)
    with den.grad_context():
        emb = ctx.clone().requires_grad_(True)
        den(x0 + sigma * eps, sigma, emb, hint).sum().backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0


@pytest.mark.parametrize("builder, word", [(build_tiny_sdxl_refiner, "SDXLRefiner"), (build_tiny_sd2, "1024")])
def test_refuses_non_sd15_models(builder, word):
    with pytest.raises(PoseAnimateError) as err:
        ComfyDenoiser(builder(), None, node="Pose-Aware Inversion")
    msg = str(err.value)
    assert msg.startswith("Pose-Aware Inversion: input 'model':") and "SD1.5" in msg and "Fix:" in msg
    assert word in msg


def test_refuses_wrong_inputs_with_node_name():
    patcher, cnet = build_tiny_sd15()
    with pytest.raises(PoseAnimateError, match=r"^Sample Frames: input 'model'"):
        ComfyDenoiser("not a model", None, node="Sample Frames")
    with pytest.raises(PoseAnimateError, match=r"^Sample Frames: input 'control_net'"):
        ComfyDenoiser(patcher, patcher, node="Sample Frames")
    with pytest.raises(PoseAnimateError, match=r"^Sample Frames: input 'positive'.*empty"):
        read_conditioning([], None, "Sample Frames")
    with pytest.raises(PoseAnimateError, match="1024 wide"):
        read_conditioning([[torch.zeros(1, 77, 1024), {}]], None, "Sample Frames")
    ctx = read_conditioning([[torch.ones(1, 77, 768), {"pooled_output": None}]], None, "Sample Frames").context
    assert ctx.shape == (1, 77, 768) and not ctx.is_inference()


def test_progress_and_interrupt_bridge():
    import comfy.model_management as mm
    import comfy.utils

    hooked = []
    old = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda v, t, preview, node_id=None: hooked.append((v, t)))
    try:
        cb = ComfyProgress()
        cb("inversion", 1, 4)
        cb("inversion", 4, 4)
        cb("sampling", 1, 2)
        assert hooked == [(1, 4), (4, 4), (1, 2)]
        mm.interrupt_current_processing(True)
        with pytest.raises(mm.InterruptProcessingException):
            cb("sampling", 2, 2)
        cb("sampling", 2, 2)  # the flag is consumed, as ComfyUI does
    finally:
        comfy.utils.set_progress_bar_global_hook(old)
        mm.interrupt_current_processing(False)


def _second_controlnet(seed=5):
    _, cnet2 = build_tiny_sd15(seed=seed)
    return cnet2


def test_controlnet_on_the_conditioning_is_chained_like_comfyui(pytorch_attention):
    """A second ControlNet applied to the positive CONDITIONING ('Apply ControlNet') joins the pose one."""
    patcher, cnet = build_tiny_sd15()
    cnet2 = _second_controlnet()
    x0, eps, ctx, hint = _inputs(n=2)
    depth = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))  # one image per frame 0..2
    on_cond = cnet2.copy().set_cond_hint(depth, 0.6, (0.0, 1.0))
    den = ComfyDenoiser(patcher, cnet, cond_control=on_cond, strength=0.9)
    sigma = den.sigmas[[500, 500]]
    x = x0 + sigma.view(-1, 1, 1, 1) * eps
    out = den(x, sigma, ctx.expand(2, -1, -1), hint, {"cond_or_uncond": [0], "poseanimate": {"frame_ids": [1, 2]}})

    model = patcher.model
    prev = cnet2.copy().set_cond_hint(depth[1:3], 0.6, (0.0, 1.0))
    c = cnet.copy().set_cond_hint(hint, 0.9, (0.0, 1.0)).set_previous_controlnet(prev)
    c.pre_run(model, lambda p: model.model_sampling.percent_to_sigma(p))
    to = {"cond_or_uncond": [0], "sigmas": sigma}
    ctrl = c.get_control(x, sigma, {"c_crossattn": ctx.expand(2, -1, -1)}, 1, to)
    ref = model.apply_model(x, sigma, c_crossattn=ctx.expand(2, -1, -1), control=ctrl, transformer_options=to)
    assert torch.equal(out, ref)
    without = ComfyDenoiser(patcher, cnet, strength=0.9)(x, sigma, ctx.expand(2, -1, -1), hint,
                                                        {"cond_or_uncond": [0]})
    assert not torch.allclose(out, without)
    assert on_cond.cond_hint is None and on_cond.previous_controlnet is None  # the user's object is untouched

    with den.grad_context():  # gradients flow through both ControlNets, out of place
        emb = ctx.clone().requires_grad_(True)
        g = den(x, sigma, emb.expand(2, -1, -1), hint, {"poseanimate": {"frame_ids": [1, 2]}})
        assert torch.equal(g.detach(), out)
        g.sum().backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0

    with pytest.raises(ValueError, match=r"^positive: the ControlNet applied to this conditioning has 3 images"):
        den(x, sigma, ctx.expand(2, -1, -1), hint, {"poseanimate": {"frame_ids": [2, 3]}})


def test_manual_cast_model_computes_in_its_cast_dtype_with_grads(pytorch_attention):
    """bf16 weights computed in float32 per layer (comfy.ops.manual_cast), as ComfyUI runs such checkpoints."""
    patcher, cnet = build_tiny_sd15(dtype=torch.bfloat16, manual_cast_dtype=torch.float32)
    assert patcher.model.manual_cast_dtype == torch.float32
    assert patcher.model.diffusion_model.out[2].weight.dtype == torch.bfloat16
    x0, eps, ctx, hint = _inputs(n=1)
    den = ComfyDenoiser(patcher, cnet)
    seen = []
    patcher.set_model_output_block_patch(lambda h, hsp, to: (seen.append(h.dtype), (h, hsp))[1])
    sigma = den.sigmas[[300]]
    ref = den(x0 + sigma * eps, sigma, ctx, hint)
    assert seen and all(d == torch.float32 for d in seen)
    with den.grad_context():
        emb = ctx.clone().requires_grad_(True)
        out = den(x0 + sigma * eps, sigma, emb, hint)
        assert torch.equal(out.detach(), ref)
        out.sum().backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    assert patcher.model.diffusion_model.out[2].weight.is_inference()


def test_model_sampling_object_patch_is_honoured():
    """A 'ModelSamplingDiscrete'-style object patch on the MODEL changes the sigma table the engine sees."""
    import comfy.model_sampling

    patcher, cnet = build_tiny_sd15()

    class Sampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
        pass

    ms = Sampling(patcher.model.model_config, zsnr=True)
    m = patcher.clone()
    m.add_object_patch("model_sampling", ms)
    den = ComfyDenoiser(m, cnet)
    assert torch.equal(den.sigmas, ms.sigmas.float())
    assert not torch.equal(den.sigmas, ComfyDenoiser(patcher, cnet).sigmas)
    x0, eps, ctx, hint = _inputs(n=1)
    sigma = den.sigmas[[500]]
    assert torch.isfinite(den(x0 + sigma * eps, sigma, ctx, hint)).all()


def test_a_batch_that_is_not_equal_chunks_is_refused_not_given_another_sides_conditioning():
    """Rows are len(cond_or_uncond) equal chunks (as ComfyUI's batches): a batch of 3 rows named as 2 chunks is
    refused instead of given one side's conditioning for every row."""
    patcher, cnet = build_tiny_sd15()
    x0, eps, ctx, hint = _inputs()
    den = ComfyDenoiser(patcher, cnet)
    sigma = den.sigmas[[600, 600, 600]]
    x = x0[:1].expand(3, -1, -1, -1) + sigma.view(-1, 1, 1, 1) * eps[:1]
    with pytest.raises(ValueError, match=r"^cond_or_uncond: a batch of 3 rows is not 2 equal chunks"):
        den(x, sigma, ctx.expand(3, -1, -1), hint[:1], {"cond_or_uncond": [1, 0]})
    out = den(x[:2], sigma[:2], ctx.expand(2, -1, -1), hint[:1], {"cond_or_uncond": [1, 0]})  # 2 chunks of 1: runs
    assert out.shape == x[:2].shape


def test_a_cfg_function_that_writes_into_its_model_options_leaves_the_models_own_unchanged():
    """combine_cfg hands a sampler_cfg_function a clone of the MODEL's model_options, as a sampler hands its own: a
    function that writes into them changes nothing on the MODEL (and its result is used)."""
    patcher, cnet = build_tiny_sd15()
    model = patcher.clone()

    def writing(args):
        args["model_options"]["written"] = True
        args["model_options"]["transformer_options"]["written"] = True
        return args["cond"] * 0.5

    model.set_model_sampler_cfg_function(writing)
    den = ComfyDenoiser(model, cnet)
    x = torch.randn(1, 4, 8, 8)
    x0_cond, x0_uncond = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    out = den.combine_cfg(x0_cond, x0_uncond, 7.5, x, den.sigmas[[600]])
    assert torch.allclose(out, x - (x - x0_cond) * 0.5)
    assert "written" not in model.model_options and "written" not in model.model_options["transformer_options"]
