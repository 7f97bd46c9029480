"""The three PACM nodes run every pacm stage on ComfyUI's tiny SD1.5 UNet + ControlNet under inference_mode
(as ComfyUI runs nodes), and leave the shared MODEL / CONTROL_NET exactly as they found them."""
from __future__ import annotations

import pytest
import torch

from tiny_models import assert_weights_unchanged, build_tiny_sd15, build_tiny_sdxl_refiner, snapshot_weights

from poseanimate.nodes._common import PoseAnimateError
from poseanimate.nodes.embedding_optimize import PoseAnimatePoseEmbeddingOptimize
from poseanimate.pipeline.types import PACMEmbeddings
from poseanimate.nodes.inversion import PoseAnimatePoseAwareInversion
from poseanimate.pipeline.types import ControlSettings
from poseanimate.nodes.sample_frames import PoseAnimateSampleFrames

STEPS = 2


def _scene(n_targets=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=g) * 5}  # raw VAE latents are ~5x the model's
    positive = [[torch.randn(1, 77, 768, generator=g), {"pooled_output": None}]]
    poses = torch.rand(n_targets + 1, 64, 64, 3, generator=g)       # IMAGE: (B, H, W, C)
    return latent, positive, poses


def _ksample(patcher, cnet, positive, steps=3, seed=0):
    import comfy.sample

    hint = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    c = cnet.copy().set_cond_hint(hint, 1.0, (0.0, 1.0))
    ctx = positive[0][0]
    pos = [[ctx, {"control": c}]]
    neg = [[torch.zeros_like(ctx), {"control": c}]]
    latent = torch.zeros(1, 4, 8, 8)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(patcher, noise, steps, 7.5, "ddim", "ddim_uniform", pos, neg, latent,
                               disable_pbar=True, seed=seed)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _invert(patcher, cnet, latent, positive, poses, inner=2, **kw):
    return PoseAnimatePoseAwareInversion().invert(patcher, cnet, latent, positive, poses[:1], STEPS, 7.5, inner,
                                                  1e-5, **kw)


def _frame_counter(patcher):
    """A patched clone (stand-in for DCA Patch Model) whose attn1 replace records the frame ids it sees."""
    from comfy.ldm.modules.attention import optimized_attention

    seen = []

    def attn1(q, k, v, extra_options):
        seen.append(list(extra_options.get("poseanimate", {}).get("frame_ids", [])))
        return optimized_attention(q, k, v, extra_options["n_heads"])

    m = patcher.clone()
    m.set_model_attn1_replace(attn1, "output", 3)
    return m, seen


def test_every_stage_runs_and_shared_model_is_unchanged():
    import comfy.model_management as mm
    import comfy.utils

    patcher, cnet = build_tiny_sd15()
    latent, positive, poses = _scene()
    before = _ksample(patcher, cnet, positive)
    snap_unet, snap_cn = snapshot_weights(patcher.model), snapshot_weights(cnet.control_model)
    options = repr(patcher.model_options)
    bars = []
    old = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda v, t, preview, node_id=None: bars.append((v, t)))
    try:
        assert torch.is_inference_mode_enabled()
        inv, rec = _invert(patcher, cnet, latent, positive, poses)
        assert inv.uncond.shape == (STEPS, 77, 768) and inv.trajectory.shape == (STEPS + 1, 4, 8, 8)
        assert inv.control == ControlSettings(1.0, 0.0, 1.0)
        assert rec["samples"].shape == (1, 4, 8, 8) and rec["samples"].device == mm.intermediate_device()
        # trajectory is in the model's latent space (process_latent_in), the outputs in VAE space
        assert torch.allclose(inv.trajectory[0], latent["samples"][0] * 0.18215, atol=1e-6)

        (emb,) = PoseAnimatePoseEmbeddingOptimize().optimize(inv, patcher, cnet, positive, poses, 2, 0,
                                                             schedule="inner iterations")
        assert isinstance(emb, PACMEmbeddings) and emb.frames == 3
        assert emb.poses.uncond.shape == (2, STEPS, 77, 768)
        assert torch.equal(emb.poses.hints, poses[1:].movedim(-1, 1))

        patched, seen = _frame_counter(patcher)
        (frames,) = PoseAnimateSampleFrames().sample(patched, cnet, positive, emb, 0)
        (windowed,) = PoseAnimateSampleFrames().sample(patched, cnet, positive, emb, 2)
    finally:
        comfy.utils.set_progress_bar_global_hook(old)
    out = frames["samples"]
    assert out.shape == (3, 4, 8, 8) and torch.isfinite(out).all()
    assert _rel(out[0], rec["samples"][0]) < 1e-4      # frame 0 = the reconstruction (batching rounding only)
    assert _rel(windowed["samples"], out) < 1e-4
    assert [0, 1, 2] in seen and [0, 1] in seen and [2] in seen             # the patch ran, windows in order
    assert bars and all(0 < v <= t for v, t in bars) and (STEPS, STEPS) in bars

    assert_weights_unchanged(patcher.model, snap_unet)
    assert_weights_unchanged(cnet.control_model, snap_cn)
    assert repr(patcher.model_options) == options and cnet.cond_hint_original is None
    assert torch.equal(_ksample(patcher, cnet, positive), before)


def test_pose_aware_inversion_beats_plain_inversion():
    patcher, cnet = build_tiny_sd15()
    latent, positive, poses = _scene()
    _, plain = _invert(patcher, cnet, latent, positive, poses, inner=0)
    inv, opt = _invert(patcher, cnet, latent, positive, poses, inner=5)
    err_plain = (plain["samples"] - latent["samples"]).norm()
    err_opt = (opt["samples"] - latent["samples"]).norm()
    assert inv.inner_iters.sum() > 0
    assert err_opt < err_plain


def test_lora_model_through_every_stage_still_unpatches():
    import comfy.model_management as mm

    patcher, cnet = build_tiny_sd15()
    latent, positive, poses = _scene(n_targets=1)
    key = "diffusion_model.output_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"
    original = patcher.model.state_dict()[key].clone()
    lora = patcher.clone()
    lora.add_patches({key: ("diff", (torch.full_like(original, 0.02),))}, 1.0)
    inv, _ = _invert(lora, cnet, latent, positive, poses, inner=1)
    (emb,) = PoseAnimatePoseEmbeddingOptimize().optimize(inv, lora, cnet, positive, poses, 1, 1)
    PoseAnimateSampleFrames().sample(lora, cnet, positive, emb, 1)
    assert torch.allclose(lora.model.state_dict()[key], original + 0.02)
    mm.unload_all_models()
    lora.unpatch_model()
    assert torch.equal(patcher.model.state_dict()[key], original)


def test_interrupt_stops_cleanly_and_restores_the_model():
    import comfy.model_management as mm
    import comfy.utils

    patcher, cnet = build_tiny_sd15()
    latent, positive, poses = _scene()
    before = _ksample(patcher, cnet, positive)
    snap = snapshot_weights(patcher.model)
    calls = []

    def press_cancel(value, total, preview, node_id=None):
        calls.append(value)
        if len(calls) == STEPS + 1:  # during pose-aware inversion, i.e. between gradient steps
            mm.interrupt_current_processing(True)

    old = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(press_cancel)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            _invert(patcher, cnet, latent, positive, poses)
    finally:
        comfy.utils.set_progress_bar_global_hook(old)
        mm.interrupt_current_processing(False)
    assert len(calls) == STEPS + 1
    assert_weights_unchanged(patcher.model, snap)
    assert torch.equal(_ksample(patcher, cnet, positive), before)


def test_user_mistakes_get_the_nodes_own_message():
    patcher, cnet = build_tiny_sd15()
    latent, positive, poses = _scene()
    inv_node = PoseAnimatePoseAwareInversion()
    with pytest.raises(PoseAnimateError, match=r"^Pose-Aware Inversion: input 'latent': the latent batch holds 2"):
        inv_node.invert(patcher, cnet, {"samples": torch.zeros(2, 4, 8, 8)}, positive, poses, 2, 7.5, 1, 1e-5)
    with pytest.raises(PoseAnimateError, match=r"^Pose-Aware Inversion: input 'model': a SDXLRefiner model is not an "
                                               r"SD1.5 or SDXL model.*Fix:"):
        inv_node.invert(build_tiny_sdxl_refiner(), cnet, latent, positive, poses, 2, 7.5, 1, 1e-5)
    inv, _ = _invert(patcher, cnet, latent, positive, poses, inner=0)

    opt = PoseAnimatePoseEmbeddingOptimize()
    with pytest.raises(PoseAnimateError, match=r"^Pose Embedding Optimize: input 'poses': got 1 pose"):
        opt.optimize(inv, patcher, cnet, positive, poses[:1], 1, 0)
    other = [[positive[0][0] + 1, {}]]
    with pytest.raises(PoseAnimateError, match=r"^Pose Embedding Optimize: input 'positive': .*not the prompt"):
        opt.optimize(inv, patcher, cnet, other, poses, 1, 0)
    with pytest.raises(PoseAnimateError, match=r"^Pose Embedding Optimize: input 'inversion'"):
        opt.optimize(rec_like := {"samples": torch.zeros(1, 4, 8, 8)}, patcher, cnet, positive, poses, 1, 0)
    del rec_like
    (emb,) = opt.optimize(inv, patcher, cnet, positive, poses, 0, 0)

    sample = PoseAnimateSampleFrames()
    from poseanimate.nodes.dca_patch import PoseAnimateDCAPatchModel

    (dca,) = PoseAnimateDCAPatchModel().patch(patcher, 0.7, 0.15, 0.15, "all output blocks", "", None)
    with pytest.raises(PoseAnimateError, match=r"^Sample Frames: input 'masks': got 2 masks for 3 frames"):
        sample.sample(dca, cnet, positive, emb, 0, masks=torch.ones(2, 8, 8))
    with pytest.raises(PoseAnimateError, match=r"^Sample Frames: input 'masks': this MODEL has no DCA patch"):
        sample.sample(patcher, cnet, positive, emb, 0, masks=torch.ones(3, 8, 8))  # masks would do nothing
    with pytest.raises(PoseAnimateError, match=r"^Sample Frames: input 'embeddings'"):
        sample.sample(patcher, cnet, positive, inv, 0)
    (ok,) = sample.sample(dca, cnet, positive, emb, 0, masks=torch.ones(3, 8, 8))
    assert ok["samples"].shape[0] == 3


def test_uncond_pose_source_keeps_frame0_and_guides_the_targets():
    """Sample Frames' uncond_pose 'source' with negative-prompt inversion: frame 0 is still the reconstruction,
    the target frames change (CFG now acts on the pose); at cfg 1 it is refused before sampling."""
    patcher, cnet = build_tiny_sd15()
    latent, positive, poses = _scene(n_targets=2)
    inv, rec = _invert(patcher, cnet, latent, positive, poses, inner=0)
    (emb,) = PoseAnimatePoseEmbeddingOptimize().optimize(inv, patcher, cnet, positive, poses, 0, 0)
    node = PoseAnimateSampleFrames()
    (same,) = node.sample(patcher, cnet, positive, emb, 0)
    (src,) = node.sample(patcher, cnet, positive, emb, 0, uncond_pose="source")
    assert _rel(src["samples"][0], rec["samples"][0]) < 1e-4
    assert _rel(src["samples"][1:], same["samples"][1:]) > 1e-4
    inv1, _ = PoseAnimatePoseAwareInversion().invert(patcher, cnet, latent, positive, poses[:1], STEPS, 1.0, 0, 1e-5)
    (emb1,) = PoseAnimatePoseEmbeddingOptimize().optimize(inv1, patcher, cnet, positive, poses, 0, 0)
    with pytest.raises(PoseAnimateError, match=r"^Sample Frames: input 'uncond_pose': 'source' has no effect at "
                                               r"cfg 1.*Fix:"):
        node.sample(patcher, cnet, positive, emb1, 0, uncond_pose="source")


@pytest.mark.parametrize("inner, schedule", [(0, "inner iterations"), (1, "algorithm 1"), (2, "inner iterations")],
                         ids=["npi", "fast-algorithm-1", "full-inner-iterations"])
def test_second_controlnet_on_the_positive_conditioning_is_used_by_every_stage(inner, schedule):
    """An extra ControlNet on the positive acts in the inversion and in sampling alike: the inversion's
    reconstruction is frame 0 of Sample Frames, for negative-prompt inversion (where the extra ControlNet makes the
    CFG rows differ), the fast preset's Algorithm 1 and the full workflow's inner iterations."""
    patcher, cnet = build_tiny_sd15()
    _, cnet2 = build_tiny_sd15(seed=5)
    latent, positive, poses = _scene(n_targets=1)
    depth = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    remix = [[positive[0][0], {"control": cnet2.copy().set_cond_hint(depth, 0.8, (0.0, 1.0))}]]
    inv, rec = _invert(patcher, cnet, latent, remix, poses, inner=inner)
    inv0, rec0 = _invert(patcher, cnet, latent, positive, poses, inner=inner)
    assert not torch.allclose(rec["samples"], rec0["samples"])
    (emb,) = PoseAnimatePoseEmbeddingOptimize().optimize(inv, patcher, cnet, remix, poses, inner, 0,
                                                         schedule=schedule)
    (frames,) = PoseAnimateSampleFrames().sample(patcher, cnet, remix, emb, 0)
    assert _rel(frames["samples"][0], rec["samples"][0]) < 1e-4


def test_sample_frames_with_the_real_dca_patch_windows_match_and_frame0_is_the_source():
    from poseanimate.attention import DCAPatch, install_patches

    patcher, cnet = build_tiny_sd15()
    latent, positive, poses = _scene(n_targets=3)
    inv, rec = _invert(patcher, cnet, latent, positive, poses, inner=1)
    (emb,) = PoseAnimatePoseEmbeddingOptimize().optimize(inv, patcher, cnet, positive, poses, 1, 0)
    snap = snapshot_weights(patcher.model)
    dca_model = patcher.clone()
    dca = DCAPatch()
    assert install_patches(dca_model, dca=dca)
    node = PoseAnimateSampleFrames()
    (whole,) = node.sample(dca_model, cnet, positive, emb, 0)
    (windows,) = node.sample(dca_model, cnet, positive, emb, 2)
    (masked,) = node.sample(dca_model, cnet, positive, emb, 3, masks=torch.ones(4, 8, 8))
    (plain,) = node.sample(patcher, cnet, positive, emb, 0)
    assert dca.applied and all(n > 0 for n in dca.applied.values())
    assert _rel(windows["samples"], whole["samples"]) < 1e-4
    assert _rel(whole["samples"][0], rec["samples"][0]) < 1e-4
    assert _rel(whole["samples"], plain["samples"]) > 1e-4  # cross-frame attention changed frames 1..N
    assert masked["samples"].shape == (4, 4, 8, 8) and torch.isfinite(masked["samples"]).all()
    assert_weights_unchanged(patcher.model, snap)


def test_per_frame_images_of_a_second_controlnet_reach_their_frames_in_every_stage(monkeypatch):
    """A 3-image hint on the ControlNet of the positive conditioning: every row of every call gets the image of
    its own frame (0 = source in the inversion, 1..2 in optimisation, each window's frames in sampling)."""
    patcher, cnet = build_tiny_sd15()
    _, cnet2 = build_tiny_sd15(seed=5)
    latent, positive, poses = _scene(n_targets=2)
    images = torch.stack([torch.full((3, 64, 64), k / 10) for k in range(3)])  # image k holds the value k/10
    remix = [[positive[0][0], {"control": cnet2.copy().set_cond_hint(images, 0.8, (0.0, 1.0))}]]
    seen = []
    get_control = type(cnet2).get_control

    def recording(self, x_noisy, t, cond, batched_number, transformer_options):
        if self.control_model is cnet2.control_model:
            stage = "grad" if torch.is_grad_enabled() else "no-grad"
            seen.append((stage, [round(float(v) * 10) for v in self.cond_hint_original[:, 0, 0, 0]],
                         x_noisy.shape[0]))
        return get_control(self, x_noisy, t, cond, batched_number, transformer_options)

    monkeypatch.setattr(type(cnet2), "get_control", recording)
    inv, _rec = _invert(patcher, cnet, latent, remix, poses, inner=1)
    assert seen and all(ids == [0] for _s, ids, _b in seen)  # the source is frame 0
    seen.clear()
    (emb,) = PoseAnimatePoseEmbeddingOptimize().optimize(inv, patcher, cnet, remix, poses, 1, 2, keyframe_interval=1)
    assert seen and all(ids == [1, 2] and b == 2 for _s, ids, b in seen)  # the two targets of the micro-batch
    seen.clear()
    PoseAnimatePoseEmbeddingOptimize().optimize(inv, patcher, cnet, remix, poses, 1, 2, keyframe_interval=2)
    assert seen and all(ids == [2] and b == 1 for _s, ids, b in seen)  # keyframes: only frame 2 is optimised
    seen.clear()
    PoseAnimateSampleFrames().sample(patcher, cnet, remix, emb, 2)
    windows = sorted({tuple(ids) for _s, ids, _b in seen})
    assert windows == [(0, 1), (2,)]  # windows of 2 frames: each row its own frame's image


def test_per_frame_images_of_a_controlnet_on_the_negative_reach_the_uncond_rows_of_their_frames(monkeypatch):
    """The same on the negative CONDITIONING (a KSampler's uncond side): the optimisation's uncond-only calls, the
    gradient passes included, give every row its own frame's image, also when frames stop early one by one."""
    patcher, cnet = build_tiny_sd15()
    _, cnet2 = build_tiny_sd15(seed=5)
    latent, positive, poses = _scene(n_targets=2)
    images = torch.stack([torch.full((3, 64, 64), k / 10) for k in range(3)])
    negative = [[torch.zeros_like(positive[0][0]), {"control": cnet2.copy().set_cond_hint(images, 0.8, (0.0, 1.0))}]]
    seen = []
    get_control = type(cnet2).get_control

    def recording(self, x_noisy, t, cond, batched_number, transformer_options):
        if self.control_model is cnet2.control_model:
            seen.append((torch.is_grad_enabled(), [round(float(v) * 10) for v in self.cond_hint_original[:, 0, 0, 0]]))
        return get_control(self, x_noisy, t, cond, batched_number, transformer_options)

    monkeypatch.setattr(type(cnet2), "get_control", recording)
    inv, _ = PoseAnimatePoseAwareInversion().invert(patcher, cnet, latent, positive, poses[:1], STEPS, 7.5, 1, 1e-5,
                                                    negative=negative)
    assert seen and all(ids == [0] for _g, ids in seen)  # the source's uncond rows: image 0
    seen.clear()
    (emb,) = PoseAnimatePoseEmbeddingOptimize().optimize(inv, patcher, cnet, positive, poses, 2, 2,
                                                         schedule="inner iterations", keyframe_interval=1,
                                                         negative=negative)
    assert any(g for g, _ in seen) and all(set(ids) <= {1, 2} and ids == sorted(ids) for _g, ids in seen)
    assert [1, 2] in [ids for _g, ids in seen]


def test_a_conditioning_controlnet_with_another_image_count_is_refused_before_any_work(monkeypatch):
    """A ControlNet on the negative (or positive) whose images are neither one nor one per frame is refused by
    Pose Embedding Optimize and Sample Frames before any model call, naming the input."""
    patcher, cnet = build_tiny_sd15()
    _, cnet2 = build_tiny_sd15(seed=5)
    latent, positive, poses = _scene(n_targets=2)
    inv, _ = _invert(patcher, cnet, latent, positive, poses, inner=1)
    (emb,) = PoseAnimatePoseEmbeddingOptimize().optimize(inv, patcher, cnet, positive, poses, 1, 0)
    two = torch.rand(2, 3, 64, 64)  # 2 images for 3 frames
    negative = [[torch.zeros_like(positive[0][0]), {"control": cnet2.copy().set_cond_hint(two, 0.8, (0.0, 1.0))}]]
    remix = [[positive[0][0], {"control": cnet2.copy().set_cond_hint(two, 0.8, (0.0, 1.0))}]]
    calls = []
    monkeypatch.setattr(type(cnet2), "get_control", lambda *a, **k: calls.append(1))
    with pytest.raises(PoseAnimateError, match=r"^Pose Embedding Optimize: input 'negative': the ControlNet applied "
                                               r"to this conditioning has 2 images for 3 frames.*Fix: give it one"):
        PoseAnimatePoseEmbeddingOptimize().optimize(inv, patcher, cnet, positive, poses, 1, 0, negative=negative)
    with pytest.raises(PoseAnimateError, match=r"^Sample Frames: input 'positive': the ControlNet applied to this "
                                               r"conditioning has 2 images for 3 frames"):
        PoseAnimateSampleFrames().sample(patcher, cnet, remix, emb, 0)
    four = [[positive[0][0], {"control": cnet2.copy().set_cond_hint(torch.rand(4, 3, 64, 64), 0.8, (0.0, 1.0))}]]
    with pytest.raises(PoseAnimateError, match=r"^Sample Frames: input 'positive': .* has 4 images for 3 frames"):
        PoseAnimateSampleFrames().sample(patcher, cnet, four, emb, 0)  # more than one per frame: refused too
    assert calls == []


def test_hold_background_keeps_the_source_outside_the_bodies():
    """Sample Frames' hold_background: outside the source's and each frame's body (here from the pose images: a
    bright figure on black) every frame ends on the source's latent; inside, it is generated. With pose_keypoint
    connected the bodies come from the skeletons instead; pose_keypoint without hold_background is refused."""
    from poseanimate.nodes.embedding_optimize import PoseAnimatePoseEmbeddingOptimize as Opt

    patcher, cnet = build_tiny_sd15()
    latent, positive, _ = _scene()
    poses = torch.zeros(3, 64, 64, 3)
    for f, x0 in enumerate((8, 16, 24)):  # a figure moving right, in the left half of the picture
        poses[f, 8:56, x0:x0 + 8] = 1.0
    inv, _ = _invert(patcher, cnet, latent, positive, poses, inner=1)
    (emb,) = Opt().optimize(inv, patcher, cnet, positive, poses, 1, 0)
    node = PoseAnimateSampleFrames()
    (free,) = node.sample(patcher, cnet, positive, emb, 0, hold_background=False)
    (held,) = node.sample(patcher, cnet, positive, emb, 0, hold_background=True)
    source = patcher.model.process_latent_out(inv.trajectory[:1].float())
    right = held["samples"][1:, :, :, 6:]  # latent columns 6-7: image x >= 48, beyond every body and its margin
    assert torch.allclose(right, source[:, :, :, 6:].expand_as(right), atol=1e-5)
    assert not torch.allclose(free["samples"][1:, :, :, 6:], source[:, :, :, 6:].expand_as(right), atol=1e-3)
    assert not torch.allclose(held["samples"][1:, :, :, :3], source[:, :, :, :3].expand(2, -1, -1, -1), atol=1e-3)
    with pytest.raises(PoseAnimateError, match=r"^Sample Frames: input 'pose_keypoint': is used only with "):
        node.sample(patcher, cnet, positive, emb, 0, hold_background=False, pose_keypoint=[{"people": []}])


def test_the_models_run_callbacks_are_called_as_a_sampler_calls_them():
    """ModelPatcher callbacks (another pack's set-up on ON_PRE_RUN, per-step state on ON_PREPARE_STATE, tear-down on
    ON_CLEANUP) run in every stage as around and inside a KSampler's sampling: pre_run and cleanup once per stage,
    prepare_state before every model call, with the call's sigmas."""
    import inspect
    import re

    from comfy.model_patcher import ModelPatcher
    from comfy.patcher_extension import CallbacksMP

    patcher, cnet = build_tiny_sd15()
    latent, positive, poses = _scene(n_targets=2)
    seen = []
    model = patcher.clone()
    model.add_callback(CallbacksMP.ON_PRE_RUN, lambda p: seen.append("pre_run"))
    model.add_callback(CallbacksMP.ON_PREPARE_STATE, lambda p, t, *a: seen.append(("state", tuple(t.shape), a)))
    model.add_callback(CallbacksMP.ON_CLEANUP, lambda p: seen.append("cleanup"))
    inv, _ = _invert(model, cnet, latent, positive, poses, inner=1)
    (emb,) = PoseAnimatePoseEmbeddingOptimize().optimize(inv, model, cnet, positive, poses, 1, 0)
    PoseAnimateSampleFrames().sample(model, cnet, positive, emb, 0)
    trace = "".join("P" if k == "pre_run" else "C" if k == "cleanup" else "s" for k in seen)
    assert re.fullmatch(r"(Ps+C){3}", trace), trace  # one run per stage, every model call inside one, each closed
    states = [k for k in seen if not isinstance(k, str)]
    assert len(states) > 3 * STEPS and all(len(s) == 1 and s[0] >= 1 for _k, s, _a in states), states
    # the host's own arguments: 0.33 passes the call's model_options (a dict), 0.3.64 nothing more
    takes_options = "model_options" in inspect.signature(ModelPatcher.prepare_state).parameters
    assert all((len(a) == 1 and isinstance(a[0], dict)) if takes_options else a == () for _k, _s, a in states)
