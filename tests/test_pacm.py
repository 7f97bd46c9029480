"""PACM engine stages on the tiny test UNet: schedule, inversion, pose-aware inversion, embedding optimisation,
progress/interrupt, determinism, result types, the tiny UNet's ComfyUI patch convention."""
from __future__ import annotations

import pytest
import torch

import pacm
from pacm.engine import _adam_update
from testing.tiny_unet import make_tiny_denoiser

H = 8          # latent size; pose images are 8x
L = 8          # tokens
D = 32         # context dim


def rel(a, b):
    return float((a - b).norm() / b.norm())


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model():
    return make_tiny_denoiser(seed=0)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    latent = torch.randn(4, H, H, generator=g)
    cond = torch.randn(L, D, generator=g)
    negative = cond + 0.1 * torch.randn(L, D, generator=g)
    hint = (torch.rand(3, 8 * H, 8 * H, generator=g) > 0.9).float()
    targets = torch.stack([torch.roll(hint, shifts=8 * k, dims=2) for k in range(1, 4)])
    return {"latent": latent, "cond": cond, "negative": negative, "hint": hint, "targets": targets}


@pytest.fixture(scope="module")
def inversion(model, data):
    return pacm.ddim_invert(model, data["latent"], data["cond"], data["hint"])


@pytest.fixture(scope="module")
def pose_inversion(model, inversion):
    return pacm.pose_aware_inversion(model, inversion)


# ----------------------------------------------------------------------------------------------- schedule
def _comfy_ddim_scheduler(sigma_table, steps):
    # comfy/samplers.py ddim_scheduler (ComfyUI 0.3.64), transcribed.
    import math
    sigs = []
    x = 1
    if math.isclose(float(sigma_table[x]), 0, abs_tol=0.00001):
        steps += 1
        sigs = []
    else:
        sigs = [0.0]
    ss = max(len(sigma_table) // steps, 1)
    while x < len(sigma_table):
        sigs += [float(sigma_table[x])]
        x += ss
    return torch.FloatTensor(sigs[::-1])


@pytest.mark.parametrize("steps", [1, 10, 30, 50, 999, 1000])
def test_default_schedule_is_comfyui_ddim_uniform(steps):
    table = pacm.sd15_sigma_table()
    ours = pacm.ddim_uniform_sigmas(table, steps)
    assert torch.equal(ours, _comfy_ddim_scheduler(table, steps))
    assert float(ours[-1]) == 0.0 and bool((ours[:-1] > ours[1:]).all())


def test_sd15_sigma_table_values():
    table = pacm.sd15_sigma_table()
    assert table.shape == (1000,)
    acp = 1 / (1 + table.double() ** 2)
    assert abs(float(acp[0]) - (1 - 0.00085)) < 1e-6   # first beta
    assert abs(float(table[-1]) - 14.6146) < 1e-3       # SD1.5 sigma_max


def test_inversion_uses_ddim_uniform_sigmas(model, inversion):
    assert torch.equal(inversion.sigmas, pacm.ddim_uniform_sigmas(model.sigmas, 50))
    assert inversion.trajectory.shape == (51, 4, H, H)


# ----------------------------------------------------------------------------------------------- stage 1 + 2
def test_inversion_then_reconstruction_returns_source(model, data, inversion):
    assert torch.equal(inversion.source, data["latent"])
    rec = pacm.sample_frames(model, inversion)        # guidance 1 (cfg of a plain inversion)
    assert rec.shape == (1, 4, H, H)
    err = rel(rec[0], data["latent"])
    assert err < 1e-3, err
    # Z_T is genuinely noised: far from the source.
    assert rel(inversion.z_T, data["latent"]) > 0.3


def test_reconstruction_on_other_sigmas_is_not_the_source(model, data, inversion):
    # The check can fail: the same trajectory walked down on a shifted schedule misses the source.
    shifted = inversion.sigmas.clone()
    shifted[:-1] = shifted[:-1] * 1.05
    bad = pacm.InversionResult(sigmas=shifted, trajectory=inversion.trajectory, cond=inversion.cond,
                               hint=inversion.hint)
    rec = pacm.sample_frames(model, bad)
    assert rel(rec[0], data["latent"]) > 1e-2


def test_pose_aware_inversion_is_10x_closer_than_plain(model, data, inversion, pose_inversion):
    pa = pose_inversion
    T = inversion.steps
    assert pa.uncond.shape == (T, L, D) and pa.cfg == 7.5
    assert pa.losses.shape == (T, 2) and pa.inner_iters.shape == (T,)
    assert int(pa.inner_iters.max()) <= 5 and int(pa.inner_iters.min()) >= 1
    plain = pacm.sample_frames(model, inversion, uncond=data["negative"], cfg=7.5)[0]
    aware = pacm.sample_frames(model, pa)[0]                      # cfg 7.5 with the per-step embeddings
    e_plain, e_aware = rel(plain, data["latent"]), rel(aware, data["latent"])
    assert e_plain > 0.05, e_plain
    assert e_aware * 10 <= e_plain, (e_aware, e_plain)


def test_pose_aware_inversion_optimisation_does_the_work(model, data):
    """From the negative prompt (classic null-text init) the inner Adam loop must do the closing itself."""
    steps = 20
    inv = pacm.ddim_invert(model, data["latent"], data["cond"], data["hint"], steps=steps)
    none = pacm.pose_aware_inversion(model, inv, init=data["negative"], inner_steps=0)
    opt = pacm.pose_aware_inversion(model, inv, init=data["negative"], inner_steps=5)
    assert torch.equal(none.uncond, data["negative"][None].expand(steps, -1, -1))
    e_none = rel(pacm.sample_frames(model, none)[0], data["latent"])
    e_opt = rel(pacm.sample_frames(model, opt)[0], data["latent"])
    assert e_opt * 4 <= e_none, (e_opt, e_none)
    assert bool((opt.losses[:, 1] <= opt.losses[:, 0] * 1.0001).all())


def test_adam_update_is_torch_adam():
    g = torch.Generator().manual_seed(3)
    p0 = torch.randn(2, 5, 7, generator=g)
    grads = [torch.randn(2, 5, 7, generator=g) * 10 ** (-k) for k in range(6)]
    ref = p0.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=7e-3)
    p, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    for step, gr in enumerate(grads, 1):
        ref.grad = gr.clone()
        opt.step()
        p, m, v = _adam_update(p, gr, m, v, step, 7e-3)
    assert torch.allclose(p, ref.detach(), rtol=0, atol=1e-7)


# ----------------------------------------------------------------------------------------------- stage 3
@pytest.fixture(scope="module")
def short_inversion(model, data):
    inv = pacm.ddim_invert(model, data["latent"], data["cond"], data["hint"], steps=8)
    return pacm.pose_aware_inversion(model, inv)


def _batched_vs_single(model, data, steps, frames, batch_size):
    dt = model.dtype
    inv = pacm.ddim_invert(model, data["latent"].to(dt), data["cond"].to(dt), data["hint"], steps=steps)
    inv = pacm.pose_aware_inversion(model, inv)
    targets = torch.cat([data["hint"][None], data["targets"]])[:frames]   # frame 1 = source pose: stops early
    kw = dict(inner_steps=5, early_stop=3e-6)
    single = pacm.optimize_pose_embeddings(model, inv, targets, frames_per_batch=1, **kw)
    batched = pacm.optimize_pose_embeddings(model, inv, targets, frames_per_batch=batch_size, **kw)
    return inv, single, batched


def test_batched_optimisation_equals_frame_by_frame(data):
    """Exact up to rounding: checked in float64, where rounding cannot hide a real difference."""
    model64 = make_tiny_denoiser(seed=0, dtype=torch.float64)
    inv, single, batched = _batched_vs_single(model64, data, steps=5, frames=4, batch_size=3)   # [0-2], [3]
    assert single.uncond.shape == (4, 5, L, D) and single.frames == 4 and single.uncond.dtype == torch.float64
    # Per-frame early stopping really differs between frames, so the masking is exercised.
    assert torch.equal(single.inner_iters, batched.inner_iters)
    it = single.inner_iters
    assert int(it[0].sum()) < int(it[1:].sum(dim=1).min()), it
    assert bool((it == 5).any()) and bool((it < 5).any())
    err = rel(batched.uncond, single.uncond)
    assert err < 1e-4 and err < 1e-9, err
    moved = rel(single.uncond, inv.uncond[None].expand_as(single.uncond))
    assert moved > 1e-3, "the optimisation must change the embeddings"
    assert torch.allclose(batched.losses, single.losses, rtol=1e-6, atol=1e-12)


def test_batched_optimisation_matches_in_float32(model, data):
    """float32 rounding differs between batch sizes (and Adam's normalisation amplifies it for near-zero
    gradients), so the float32 check is looser than the float64 one; ~5e-5 is typical."""
    inv, single, batched = _batched_vs_single(model, data, steps=4, frames=3, batch_size=3)
    assert torch.equal(single.inner_iters, batched.inner_iters)
    err = rel(batched.uncond, single.uncond)
    assert err < 1e-3, err


def test_optimisation_keeps_frames_near_the_source_trajectory(model, data, short_inversion):
    emb = pacm.optimize_pose_embeddings(model, short_inversion, data["targets"][:2], inner_steps=5)
    assert bool((emb.losses[..., 1] <= emb.losses[..., 0] * 1.0001).all())
    assert float(emb.losses[..., 1].sum()) < float(emb.losses[..., 0].sum())


# ----------------------------------------------------------------------------------------------- progress etc.
class Stop(Exception):
    pass


@pytest.mark.parametrize("stage", ["invert", "pose_aware_inversion", "optimize", "sample"])
def test_callback_reports_and_interrupts(model, data, short_inversion, stage):
    seen = []

    def cb(name, done, total):
        seen.append((name, done, total))
        if len(seen) == 3:
            raise Stop

    before = model.calls
    with pytest.raises(Stop):
        if stage == "invert":
            pacm.ddim_invert(model, data["latent"], data["cond"], data["hint"], steps=8, callback=cb)
        elif stage == "pose_aware_inversion":
            pacm.pose_aware_inversion(model, short_inversion, callback=cb)
        elif stage == "optimize":
            pacm.optimize_pose_embeddings(model, short_inversion, data["targets"][:2], callback=cb)
        else:
            pacm.sample_frames(model, short_inversion, hints=data["targets"], window_size=2, callback=cb)
    assert [s[0] for s in seen] == [stage] * 3
    assert [s[1] for s in seen] == [1, 2, 3]
    assert len({s[2] for s in seen}) == 1 and seen[0][2] >= 8
    calls = model.calls - before
    per_report = {"invert": 1, "pose_aware_inversion": 7, "optimize": 7, "sample": 1}[stage]
    assert calls <= 3 * per_report, calls       # stopped right after the third report


def test_deterministic(model, data):
    def run():
        inv = pacm.ddim_invert(model, data["latent"], data["cond"], data["hint"], steps=5)
        inv = pacm.pose_aware_inversion(model, inv, inner_steps=2)
        emb = pacm.optimize_pose_embeddings(model, inv, data["targets"][:2], inner_steps=2)
        return inv, emb, pacm.sample_frames(model, inv, emb, window_size=2)

    a, b = run(), run()
    assert torch.equal(a[0].trajectory, b[0].trajectory) and torch.equal(a[0].uncond, b[0].uncond)
    assert torch.equal(a[1].uncond, b[1].uncond) and torch.equal(a[2], b[2])


# ----------------------------------------------------------------------------------------------- result types
def test_results_are_self_describing_and_movable(short_inversion, model, data):
    inv = short_inversion
    text = inv.describe()
    for name in ("sigmas", "trajectory", "cond", "uncond", "hint", "cfg", "settings", "losses", "inner_iters"):
        assert name in text
    assert inv.steps == 8 and inv.settings["steps"] == 8 and inv.settings["inner_steps"] == 5
    moved = inv.to("cpu", torch.float64)
    assert moved.trajectory.dtype == torch.float64 and moved.sigmas.dtype == torch.float32
    assert moved.inner_iters.dtype == torch.long and inv.trajectory.dtype == torch.float32
    emb = pacm.optimize_pose_embeddings(model, inv, data["targets"][:1], inner_steps=1)
    assert "uncond" in emb.describe() and emb.to(dtype=torch.float64).uncond.dtype == torch.float64


def test_user_errors_name_the_argument(model, data, short_inversion):
    with pytest.raises(ValueError, match="^latent"):
        pacm.ddim_invert(model, data["latent"][None, None], data["cond"])
    with pytest.raises(ValueError, match="^steps"):
        pacm.ddim_invert(model, data["latent"], data["cond"], steps=0)
    with pytest.raises(ValueError, match="^hints"):
        pacm.optimize_pose_embeddings(model, short_inversion, data["targets"][0])
    with pytest.raises(ValueError, match="^frames_per_batch: "):
        pacm.optimize_pose_embeddings(model, short_inversion, data["targets"], frames_per_batch=0)
    with pytest.raises(ValueError, match="^window_size: "):
        pacm.sample_frames(model, short_inversion, hints=data["targets"], window_size=0)
    plain = pacm.ddim_invert(model, data["latent"], data["cond"], steps=3)
    with pytest.raises(ValueError, match="^uncond"):
        pacm.sample_frames(model, plain, cfg=7.5)


# ----------------------------------------------------------------------------------------------- tiny UNet
def test_tiny_unet_calls_patches_like_comfyui(model, data):
    seen = []

    def make(kind):
        def patch(q, k, v, extra):
            b, lq, inner = q.shape
            assert inner == extra["n_heads"] * extra["dim_head"] and k.shape[0] == b and v.shape == k.shape
            if kind == "attn2":
                assert k.shape[1] == L
            else:
                assert k.shape[1] == lq
            for key in ("n_heads", "dim_head", "attn_precision", "block", "block_index", "original_shape",
                        "cond_or_uncond", "transformer_index", "activations_shape", "sigmas_marker"):
                assert key in extra, key
            assert "patches_replace" not in extra and "patches" not in extra
            seen.append((kind, extra["block"], extra["block_index"], tuple(extra["cond_or_uncond"])))
            from testing.tiny_unet import attention
            return attention(q, k, v, extra["n_heads"])
        return patch

    blocks = [("input", 3), ("middle", 0)] + [("output", i) for i in range(4)]
    m = model
    for blk in blocks:
        m = m.with_patch("attn1", blk, make("attn1")).with_patch("attn2", blk + (0,), make("attn2"))
    x = torch.randn(2, 4, H, H)
    ctx = torch.stack([data["negative"], data["cond"]])
    hint = data["hint"][None].expand(2, -1, -1, -1)
    opts = {"cond_or_uncond": [1, 0], "sigmas_marker": 1}
    out = m(x, torch.full((2,), 3.0), ctx, hint, opts)
    ref = model(x, torch.full((2,), 3.0), ctx, hint, {"cond_or_uncond": [1, 0]})
    assert torch.allclose(out, ref, atol=1e-5)          # the reference attention patch changes nothing
    assert sorted({(s[0], s[1]) for s in seen}) == sorted([("attn1", b) for b in blocks] +
                                                          [("attn2", b) for b in blocks])
    assert all(s[2] == 0 and s[3] == (1, 0) for s in seen)
    assert "patches_replace" not in model.transformer_options   # with_patch works on a copy


def test_tiny_denoiser_is_sigma_space_and_pose_sensitive(model, data):
    x = torch.randn(1, 4, H, H)
    s = torch.tensor([2.0])
    ctx = data["cond"][None]
    a = model(x, s, ctx, data["hint"][None], {})
    b = model(x, s, ctx, data["targets"][:1], {})
    c = model(x, s, ctx, None, {})
    assert a.shape == x.shape
    assert rel(a, b) > 1e-3 and rel(a, c) > 1e-3
    assert model.timestep(torch.tensor([float(model.sigmas[500])])).item() == 500


class InferenceHost:
    """Like the host adapter: the stages run under torch.inference_mode() (as ComfyUI runs nodes) and
    grad_context() leaves inference mode."""

    def __init__(self, inner):
        self.inner = inner
        self.device, self.dtype, self.sigmas = inner.device, inner.dtype, inner.sigmas
        self.grad_calls = 0

    def __call__(self, x, sigma, context, hint, transformer_options):
        if torch.is_grad_enabled() and context.requires_grad:
            assert not torch.is_inference_mode_enabled()
            self.grad_calls += 1
        return self.inner(x, sigma, context, hint, transformer_options)

    def grad_context(self):
        return torch.inference_mode(False)


def test_stages_run_under_inference_mode(model, data):
    def run(m):
        inv = pacm.ddim_invert(m, data["latent"], data["cond"], data["hint"], steps=4)
        inv = pacm.pose_aware_inversion(m, inv, inner_steps=2)
        emb = pacm.optimize_pose_embeddings(m, inv, data["targets"][:2], inner_steps=2)
        return inv, emb, pacm.sample_frames(m, inv, emb, window_size=2)

    host = InferenceHost(model)
    with torch.inference_mode():
        got = run(host)
    assert host.grad_calls > 0
    ref = run(model)
    assert torch.equal(got[0].uncond, ref[0].uncond) and torch.equal(got[1].uncond, ref[1].uncond)
    assert torch.equal(got[2], ref[2])
