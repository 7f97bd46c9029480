"""Scale on the host: window_size 0 = auto (windows sized from free memory, never a model call larger than
fits, same frames as all at once) and the ControlNets of the positive CONDITIONING on the cond rows only."""
from __future__ import annotations

import json
import pathlib

import pytest
import torch

from tiny_models import build_tiny_sd15

from poseanimate.nodes.host import ComfyDenoiser
from poseanimate.pipeline import runner as R

ROOT = pathlib.Path(__file__).resolve().parents[2]
STEPS = 2


def _scene(n_targets, seed=0):
    g = torch.Generator().manual_seed(seed)
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=g) * 5}
    positive = [[torch.randn(1, 77, 768, generator=g), {"pooled_output": None}]]
    poses = torch.rand(n_targets + 1, 64, 64, 3, generator=g)
    return latent, positive, poses


def _embeddings(patcher, cnet, latent, positive, poses, inner=0):
    from poseanimate.nodes.embedding_optimize import PoseAnimatePoseEmbeddingOptimize
    from poseanimate.nodes.inversion import PoseAnimatePoseAwareInversion

    inv, _ = PoseAnimatePoseAwareInversion().invert(patcher, cnet, latent, positive, poses[:1], STEPS, 7.5, inner,
                                                    1e-5)
    (emb,) = PoseAnimatePoseEmbeddingOptimize().optimize(inv, patcher, cnet, positive, poses, inner, 0)
    return emb


class _Calls:
    """model_function_wrapper recording (batch, cond_or_uncond) of every UNet evaluation."""

    def __init__(self):
        self.seen = []

    def __deepcopy__(self, memo):  # ModelPatcher.clone() deep-copies model_options: clones record here too
        return self

    def __call__(self, apply_model, args):
        self.seen.append((int(args["input"].shape[0]), list(args["cond_or_uncond"])))
        return apply_model(args["input"], args["timestep"], **args["c"])


def _per_frame(patcher, cnet):
    """Bytes the memory policy prices one sampling frame (uncond + cond) at, on this host."""
    den = ComfyDenoiser(patcher, cnet)
    return 2 * R.MEMORY.per_sample(den, R.Stage("sample", (1, 4, 8, 8)))


def _free_for(patcher, cnet, window):
    """A free-memory figure for which the policy gives exactly ``window`` frames per call."""
    return int((window + 0.5) * _per_frame(patcher, cnet) / R.MEMORY.headroom)


class _TokenizerOnly:
    def __init__(self):
        import comfy.sd1_clip

        self.tokenizer = comfy.sd1_clip.SD1Tokenizer()


def test_window_from_free_memory():
    policy = R.MemoryPolicy(headroom=1.0)
    assert policy.fit(49, 100, 1000) == 10
    assert R.MEMORY.fit(49, 100, 10**9) == 49
    assert R.MEMORY.fit(49, 100, 0) == 1  # never 0: one frame per call is the floor
    assert R.MEMORY.fit(5, 0, 1000) == 5


def test_auto_window_gives_the_frames_of_window_all(monkeypatch):
    from poseanimate.attention import DCAPatch, install_patches
    from poseanimate.nodes.sample_frames import PoseAnimateSampleFrames

    patcher, cnet = build_tiny_sd15()
    latent, positive, poses = _scene(n_targets=4)
    emb = _embeddings(patcher, cnet, latent, positive, poses)
    dca = patcher.clone()
    assert install_patches(dca, dca=DCAPatch())
    calls = _Calls()
    dca.set_model_unet_function_wrapper(calls)
    node = PoseAnimateSampleFrames()
    (whole,) = node.sample(dca, cnet, positive, emb, 5)
    assert max(b for b, _ in calls.seen) == 10
    monkeypatch.setattr(ComfyDenoiser, "free_memory", lambda self: _free_for(patcher, cnet, 2))
    calls.seen.clear()
    (auto,) = node.sample(dca, cnet, positive, emb, 0)
    assert [b for b, _ in calls.seen] == [4, 4, 2] * STEPS  # windows of 2, 2, 1 frames, uncond + cond
    # exact up to float32 rounding of batch-4 vs batch-10 convolutions (measured: 2.3e-5 max abs on latents ~10)
    rel = float((auto["samples"] - whole["samples"]).norm() / whole["samples"].norm())
    assert rel < 1e-5, rel


def test_full_graph_sampling_at_49_frames_stays_within_the_auto_window(monkeypatch):
    """Workflow 'full' with every pose of its walk sequence (Pose sequence's `frames` 0, as its note suggests) and
    8 transition frames (as workflow 'long'): 49 frames. Sample Frames with the workflow's window_size (0 = auto)
    and Cross-Attention Mask Extract with its default window (MGDM's node, for users who turn it on): no model
    call holds more frames than the auto window, and less free memory means more windows."""
    from poseanimate.nodes.dca_patch import PoseAnimateDCAPatchModel
    from poseanimate.nodes.mask_extract import PoseAnimateCrossAttentionMaskExtract
    from poseanimate.nodes.sample_frames import PoseAnimateSampleFrames

    api = json.loads((ROOT / "workflows" / "api" / "full.json").read_text())
    sampler = next(n for n in api.values() if n["class_type"] == "PoseAnimateSampleFrames")["inputs"]
    extract = {k: v[1]["default"] for k, v in
               PoseAnimateCrossAttentionMaskExtract.INPUT_TYPES()["required"].items() if len(v) > 1 and "default" in v[1]}
    dca_in = next(n for n in api.values() if n["class_type"] == "PoseAnimateDCAPatchModel")["inputs"]
    assert sampler["window_size"] == 0 and extract["window_size"] == 0, "Sample Frames / Mask Extract: auto windows"
    sequence = next(n for n in api.values() if n["class_type"] == "PoseAnimateLoadPoseSequence"
                    and n["inputs"]["pose_file"].endswith("walk.json"))["inputs"]
    walk = json.loads((ROOT / "assets" / "poses" / "walk.json").read_text())
    assert sequence["frames"] < len(walk)  # the bundled workflow takes 12 of them; here: all of them
    frames = 1 + 8 + len(walk)  # source, transition poses, every walk pose
    assert frames == 49
    dca_in.setdefault("custom_blocks", "output 3-11")

    patcher, cnet = build_tiny_sd15()
    latent, positive, poses = _scene(n_targets=frames - 1)
    emb = _embeddings(patcher, cnet, latent, positive, poses)
    windows = []
    from poseanimate.pipeline import stages

    real_prepare = stages.prepare
    monkeypatch.setattr(stages, "prepare", lambda *a, **k: windows.append(real_prepare(*a, **k)) or windows[-1])

    def run(free):
        if free is not None:
            monkeypatch.setattr(ComfyDenoiser, "free_memory", lambda self: free)
        calls = _Calls()
        model = patcher.clone()
        model.set_model_unet_function_wrapper(calls)
        masks, _ = PoseAnimateCrossAttentionMaskExtract().extract(
            model, cnet, _TokenizerOnly(), emb, "a person walking", "person", extract["threshold"],
            extract["capture_steps"], extract["window_size"], extract["dilate"])
        w_mask = windows[-1]
        mask_calls = list(calls.seen)
        (dca,) = PoseAnimateDCAPatchModel().patch(model, dca_in["first_frame_weight"], dca_in["previous_frame_weight"],
                                                  dca_in["own_frame_weight"], dca_in["blocks"],
                                                  dca_in["custom_blocks"], masks)
        calls.seen.clear()
        (out,) = PoseAnimateSampleFrames().sample(dca, cnet, positive, emb, sampler["window_size"], None)
        assert out["samples"].shape[0] == frames
        return w_mask, mask_calls, windows[-1], list(calls.seen)

    # the machine's real free memory: the tiny model fits all 49 frames in one call
    w_mask, mask_calls, w, sample_calls = run(None)
    assert w_mask == w == frames
    assert max(b for b, _ in mask_calls + sample_calls) <= 2 * w
    # less free memory -> more, smaller windows; never a call larger than the auto window
    for target in (7,):
        w_mask, mask_calls, w, sample_calls = run(_free_for(patcher, cnet, target))
        assert w_mask == w == target
        assert max(b for b, _ in mask_calls + sample_calls) <= 2 * w
        assert len(sample_calls) == STEPS * -(-frames // w) and len(mask_calls) == len(sample_calls)


# ------------------------------------------------------ ControlNets of the positive CONDITIONING: cond rows only


def test_extra_controlnet_acts_on_the_cond_rows_only():
    """One call holding [uncond frames, cond frames]: the uncond rows equal a call without the extra
    ControlNet, the cond rows equal a cond-only call with it (as ComfyUI runs the positive's ControlNet
    with the cond batch only)."""
    patcher, cnet = build_tiny_sd15()
    _, cnet2 = build_tiny_sd15(seed=5)
    g = torch.Generator().manual_seed(3)
    depth = torch.rand(3, 3, 64, 64, generator=g)  # one image per frame 0..2
    x0 = torch.randn(2, 4, 8, 8, generator=g)
    ctx = torch.randn(1, 77, 768, generator=g)
    unc = torch.randn(2, 77, 768, generator=g)
    hint = torch.rand(2, 3, 64, 64, generator=g)
    on_cond = cnet2.copy().set_cond_hint(depth, 0.6, (0.0, 1.0))
    den = ComfyDenoiser(patcher, cnet, cond_control=on_cond, strength=0.9)
    plain = ComfyDenoiser(patcher, cnet, strength=0.9)
    sigma = den.sigmas[[500] * 4]
    x = torch.cat([x0, x0]) + sigma.view(-1, 1, 1, 1) * torch.randn(4, 4, 8, 8, generator=g)
    both = torch.cat([unc, ctx.expand(2, -1, -1)])
    pa = {"frame_ids": [1, 2]}
    out = den(x, sigma, both, torch.cat([hint, hint]), {"cond_or_uncond": [1, 0], "poseanimate": pa})
    unc_ref = plain(x[:2], sigma[:2], unc, hint, {"cond_or_uncond": [1], "poseanimate": pa})
    cond_ref = den(x[2:], sigma[2:], ctx.expand(2, -1, -1), hint, {"cond_or_uncond": [0], "poseanimate": pa})
    # batch 4 vs batch 2 convolutions round differently: float32 noise only (measured 2.5e-6)
    assert float((out[:2] - unc_ref).abs().max()) < 1e-4
    assert float((out[2:] - cond_ref).abs().max()) < 1e-4
    effect = cond_ref - plain(x[2:], sigma[2:], ctx.expand(2, -1, -1), hint, {"cond_or_uncond": [0], "poseanimate": pa})
    assert float(effect.abs().max()) > 1e-2  # the extra ControlNet really changes the cond rows
    # uncond-only calls (the optimisation's) never run the extra ControlNet
    assert torch.equal(den(x[:2], sigma[:2], unc, hint, {"cond_or_uncond": [1], "poseanimate": pa}), unc_ref)


def test_every_sampling_stage_runs_the_extra_controlnet_on_the_cond_rows_only():
    """Inversion, optimisation, Mask Extract (through its optional 'positive') and Sample Frames: the second
    ControlNet sees exactly the cond rows of every UNet call and nothing of the uncond ones."""
    from poseanimate.nodes.embedding_optimize import PoseAnimatePoseEmbeddingOptimize
    from poseanimate.nodes.inversion import PoseAnimatePoseAwareInversion
    from poseanimate.nodes.mask_extract import PoseAnimateCrossAttentionMaskExtract
    from poseanimate.nodes.sample_frames import PoseAnimateSampleFrames

    patcher, cnet = build_tiny_sd15()
    _, cnet2 = build_tiny_sd15(seed=5)
    latent, positive, poses = _scene(n_targets=2)
    depth = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    remix = [[positive[0][0], {"control": cnet2.copy().set_cond_hint(depth, 0.8, (0.0, 1.0))}]]
    events = []
    hook = cnet2.control_model.register_forward_pre_hook(
        lambda m, a, kw: events.append(("extra", int((a[0] if a else kw["x"]).shape[0]))), with_kwargs=True)

    class Wrapper:
        def __deepcopy__(self, memo):
            return self

        def __call__(self, apply_model, args):
            events.append(("unet", int(args["input"].shape[0]), list(args["cond_or_uncond"])))
            return apply_model(args["input"], args["timestep"], **args["c"])

    model = patcher.clone()
    model.set_model_unet_function_wrapper(Wrapper())

    def check(stage_events, stage):
        pending, seen_cond = 0, 0
        for ev in stage_events:
            if ev[0] == "extra":
                pending += ev[1]
                continue
            _, b, cou = ev
            cond_rows = b // len(cou) * cou.count(0)
            assert pending == cond_rows, (stage, ev, pending)
            seen_cond += cond_rows
            pending = 0
        assert seen_cond > 0, stage

    try:
        inv, _ = PoseAnimatePoseAwareInversion().invert(model, cnet, latent, remix, poses[:1], STEPS, 7.5, 1, 0.0)
        check(events, "inversion")
        events.clear()
        (emb,) = PoseAnimatePoseEmbeddingOptimize().optimize(inv, model, cnet, remix, poses, 1, 0)
        check(events, "optimize")
        assert any(ev[0] == "unet" and 0 not in ev[2] for ev in events)  # uncond-only optimisation calls
        events.clear()
        node = PoseAnimateCrossAttentionMaskExtract()
        args = (model, cnet, _TokenizerOnly(), emb, "a person walking", "person", 0.0, 0, 0, 0)
        with_extra, _ = node.extract(*args, None, positive=remix)
        check(events, "mask extract")
        events.clear()
        without, _ = node.extract(*args, None, positive=None)
        assert not any(ev[0] == "extra" for ev in events)
        events.clear()
        (frames,) = PoseAnimateSampleFrames().sample(model, cnet, remix, emb, 2)
        check(events, "sample frames")
    finally:
        hook.remove()
    assert with_extra.shape == without.shape == (3, 64, 64)

    from poseanimate.nodes._common import PoseAnimateError

    other = [[torch.randn(1, 77, 768), {}]]
    with pytest.raises(PoseAnimateError, match=r"^Cross-Attention Mask Extract: input 'positive'"):
        node.extract(*args, None, positive=other)
