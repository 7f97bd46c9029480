"""The pipeline steps on the test UNet: input checks, masks, patches, the poseanimate contract, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import pacm
import pipeline
from pata.figure import ADULT, body3d, project
from testing.tiny_unet import make_tiny_denoiser

pytestmark = pytest.mark.usefixtures("single_thread")


class WordTokenizer:
    """Whole words -> ids, BOS 0 first (what attention.find_token_positions needs)."""

    def encode(self, text):
        return [0] + [sum(map(ord, w)) % 997 + 1 for w in text.replace(",", " ").split()]


def _pose(x=16.0):
    p = {"lean": 0.0, "crouch": 0.0}
    return project(body3d(p, ADULT), 0.0, (x, 15.0), 8.0)


# ------------------------------------------------------------------------------------------------ input checks
def test_subject_check_names_the_input_and_quotes_the_whole_prompt():
    tok = WordTokenizer()
    prompt = "a knight in silver armour standing in a very long corridor full of portraits and candles"
    assert pipeline.check_subject(tok, prompt, "knight") == [2]
    assert pipeline.check_subject(tok, prompt, "knight, armour") == [2, 5]
    with pytest.raises(ValueError) as err:
        pipeline.check_subject(tok, prompt, "dragon")
    msg = str(err.value)
    assert msg.startswith("subject: ") and msg.count("Fix: ") == 1 and repr(prompt) in msg  # not cut inside a word
    with pytest.raises(ValueError, match="^subject: is empty"):
        pipeline.check_subject(tok, prompt, " , ")
    with pytest.raises(ValueError, match="^prompt: is empty"):
        pipeline.check_subject(tok, "  ", "knight")
    with pytest.raises(ValueError, match="^tokenizer: "):
        pipeline.check_subject(None, prompt, "knight")


def test_pose_canvas_check_refuses_another_aspect_ratio_only():
    pipeline.check_pose_canvas((512, 512), (1024, 1024))  # same aspect: the ControlNet's resize maps it exactly
    pipeline.check_pose_canvas((512, 768), (512, 768))
    with pytest.raises(ValueError) as err:
        pipeline.check_pose_canvas((512, 512), (512, 768), "source_pose")
    assert str(err.value).startswith("source_pose: the pose images are 768x512 but the source image is 512x512")
    assert "width and height to 512 and 512" in str(err.value)


def test_sample_poses_takes_evenly_spaced_poses():
    seq = np.arange(40)
    assert list(pipeline.sample_poses(seq, 0)) == list(range(40))
    assert list(pipeline.sample_poses(seq, 50)) == list(range(40))
    picked = pipeline.sample_poses(seq, 12)
    assert len(picked) == 12 and picked[0] == 0 and picked[-1] == 39 and np.all(np.diff(picked) > 0)
    with pytest.raises(ValueError, match="^frames: "):
        pipeline.sample_poses(seq, -1)


# ------------------------------------------------------------------------------------------------ masks
def test_body_prior_covers_the_limbs_and_scales_with_the_body():
    small = pipeline.body_prior(_pose()[None], (32, 32))[0]
    assert small.shape == (32, 32) and set(small.unique().tolist()) <= {0.0, 1.0}
    pose = _pose()
    for i in (4, 7, 10, 13):  # wrists and ankles: thin limb ends are inside the prior
        x, y = pose[i, :2]
        assert small[int(y), int(x)] == 1
    big = pose.copy()
    big[:, :2] *= 2
    large = pipeline.body_prior(big[None], (64, 64))[0]
    assert 3.0 < float(large.sum() / small.sum()) < 5.0  # twice the size: about four times the area


def test_hold_masks_are_the_source_and_frame_bodies_at_the_latent_size():
    src = project(body3d({"lean": 0.0, "crouch": 0.0}, ADULT), 0.0, (200.0, 240.0), 128.0)  # on a 512 canvas
    moved = src.copy()
    moved[:, 0] += 96  # the same body, 96 px to the right
    poses = np.stack([src, moved])
    prior = pipeline.body_prior(poses, (512, 512))
    hold = pipeline.hold_masks(poses, (512, 512), (64, 64), dilate=0)
    assert hold.shape == (2, 64, 64) and bool((hold[0] == 1).all())
    down = torch.nn.functional.adaptive_max_pool2d(prior[:, None], (64, 64))[:, 0]
    assert torch.equal(hold[1], torch.maximum(down[0], down[1]))  # the frame's body and the source's
    grown = pipeline.hold_masks(poses, (512, 512), (64, 64), dilate=1)
    assert bool((grown >= hold).all()) and grown[1].sum() > hold[1].sum() and grown[1].sum() < 64 * 64
    assert 0.1 < float(hold[1].mean()) < 0.6  # two bodies, not the whole picture


def test_hold_masks_from_images_draw_the_bodies_and_take_a_source_drawn_at_another_size():
    """Without keypoints the bodies come from the rendered skeletons: they cover the skeleton, stay a body (not the
    picture), and a source pose image drawn at another size of the same aspect ratio is resized, not refused."""
    from pata.render import render_pose
    src = project(body3d({"lean": 0.0, "crouch": 0.0}, ADULT), 0.0, (200.0, 240.0), 128.0)  # on a 512 canvas
    moved = src.copy()
    moved[:, 0] += 96
    images = torch.from_numpy(render_pose(np.stack([src, moved]), 512, 512)).permute(0, 3, 1, 2)
    hold = pipeline.hold_masks_from_images(images, (64, 64), dilate=0)
    assert hold.shape == (2, 64, 64)
    skeleton = torch.nn.functional.adaptive_max_pool2d((images.amax(1) > 0.05).float()[:, None], (64, 64))[:, 0]
    assert bool((hold[1] >= torch.maximum(skeleton[0], skeleton[1])).all())  # every drawn line is held off
    assert 0.1 < float(hold[1].mean()) < 0.7
    half = src.copy()
    half[:, :2] /= 2
    small = torch.from_numpy(render_pose(half[None], 256, 256)).permute(0, 3, 1, 2)[0]  # the source at 256 px
    joined = pipeline.hold_masks_from_images(images[1:], (64, 64), dilate=0, source=small)
    assert joined.shape == (2, 64, 64)
    assert float((joined[1] != hold[1]).float().mean()) < 0.05  # the same bodies, up to the coarser drawing
    double = src.copy()
    double[:, :2] *= 2
    large = torch.from_numpy(render_pose(double[None], 1024, 1024)).permute(0, 3, 1, 2)[0]  # the source at 1024 px
    from_large = pipeline.hold_masks_from_images(images[1:], (64, 64), dilate=0, source=large)
    assert bool((from_large[1] >= skeleton[0]).all())  # downscaled, none of the source's lines is lost
    assert float((from_large[1] != hold[1]).float().mean()) < 0.05
    with pytest.raises(ValueError, match="^source: expected an OpenPose image"):
        pipeline.hold_masks_from_images(images[1:], (64, 64), source=images)


def test_build_masks_unites_attention_and_prior_and_respects_a_real_source_mask():
    maps = torch.zeros(2, 8, 8)
    maps[:, 2:6, 2:6] = 1.0
    prior = torch.zeros(2, 32, 32)
    prior[:, 0:4, 28:32] = 1.0  # a limb the attention missed
    plain = pipeline.build_masks(maps, size=(32, 32), dilate=0)
    fused = pipeline.build_masks(maps, size=(32, 32), dilate=0, prior=prior)
    assert plain[:, 0:4, 28:32].sum() == 0 and fused[:, 0:4, 28:32].min() == 1
    assert torch.equal(torch.maximum(plain, prior), fused)
    user = torch.zeros(64, 64)
    user[10:20, 10:20] = 1
    with_user = pipeline.build_masks(maps, size=(32, 32), dilate=0, source_mask=user)
    assert with_user[0].sum() == 25 and torch.equal(with_user[1], plain[1])
    for empty in (torch.zeros(64, 64), torch.ones(64, 64)):  # a picture without alpha: ignored
        assert torch.equal(pipeline.build_masks(maps, size=(32, 32), dilate=0, source_mask=empty), plain)


def test_one_mask_rule():
    assert pipeline.check_masks(torch.ones(3, 4, 4), 3).dtype == torch.float32
    assert pipeline.check_masks(torch.ones(4, 4), 1).shape == (1, 4, 4)
    with pytest.raises(ValueError, match="^masks: got 2 masks for 3 frames"):
        pipeline.check_masks(torch.ones(2, 4, 4), 3)
    with pytest.raises(ValueError, match=r"^masks: values must lie in \[0, 1\]"):
        pipeline.check_masks(torch.full((3, 4, 4), 2.0), 3)
    with pytest.raises(ValueError, match="^masks: expected a tensor"):
        pipeline.check_masks(torch.ones(2, 3, 4, 4), 2)


# ------------------------------------------------------------------------------------------------ patches
def test_patch_model_patches_a_clone_only_and_make_dca_checks_its_arguments():
    model = make_tiny_denoiser()
    dca = pipeline.make_dca((7, 1.5, 1.5))
    assert dca.weights == pytest.approx((0.7, 0.15, 0.15))
    patched, installed = pipeline.patch_model(model, dca=dca)
    assert installed and all(kind == "attn1" and name == "output" for kind, name, *_ in installed)
    assert "patches_replace" not in model.transformer_options
    assert set(patched.transformer_options["patches_replace"]["attn1"]) == {k[1:] for k in installed}
    with pytest.raises(ValueError, match="^weights: "):
        pipeline.make_dca((0, 0, 0))
    with pytest.raises(ValueError, match="^mgdm: "):
        pipeline.make_dca(mgdm="magic")


def test_engine_calls_follow_the_poseanimate_contract():
    """Every poseanimate dict the engine hands the patches, windowed and with masks, passes the typed check."""
    model = make_tiny_denoiser()
    seen = []

    def spy(q, k, v, extra_options):
        seen.append(pipeline.check_poseanimate_options(extra_options["poseanimate"]))
        return torch.nn.functional.scaled_dot_product_attention(
            *(t.view(t.shape[0], t.shape[1], extra_options["n_heads"], -1).transpose(1, 2) for t in (q, k, v))
        ).transpose(1, 2).reshape(q.shape)

    patched = model.clone()
    patched.set_model_attn1_replace(spy, "output", 3)
    g = torch.Generator().manual_seed(0)
    latent, cond = torch.randn(4, 8, 8, generator=g), torch.randn(77, 32, generator=g)
    hints = torch.rand(4, 3, 64, 64, generator=g)
    inv = pipeline.invert(model, latent, cond, hints[0], control=pipeline.ControlSettings(), steps=3, cfg=3.0,
                          inner_steps=1)
    emb = pipeline.optimise(model, inv, hints[1:], inner_steps=1)
    masks = torch.ones(4, 64, 64)
    out = pipeline.sample(patched, inv, emb, masks=masks, window_size=2)
    assert out.shape == (4, 4, 8, 8) and seen
    assert {tuple(o["frame_ids"]) for o in seen} == {(0, 1), (2, 3)}
    with pytest.raises(ValueError, match="^mgdm: "):
        pipeline.check_poseanimate_options({"mgdm": "x"})
    with pytest.raises(ValueError, match="^poseanimate: unknown keys"):
        pipeline.check_poseanimate_options({"frames": [0]})
    with pytest.raises(ValueError, match="^masks: 4 masks do not cover frame 5"):
        pipeline.check_poseanimate_options({"frame_ids": [4, 5], "masks": masks})


def test_protocols_describe_the_hosts():
    model = make_tiny_denoiser()
    assert isinstance(model, pipeline.Denoiser) and isinstance(model, pipeline.PatchableModel)


# ------------------------------------------------------------------------------------------------ errors
def test_error_convention_round_trip():
    err = pipeline.argument_error("steps", "must be at least 1, got 0.", "set 50 (the paper)")
    assert str(err) == "steps: must be at least 1, got 0. Fix: set 50 (the paper)"
    assert pipeline.split_argument(str(err)) == ("steps", "must be at least 1, got 0. Fix: set 50 (the paper)")
    assert pipeline.node_message("Node", str(err), {"steps": "steps"}) == \
        "Node: input 'steps': must be at least 1, got 0. Fix: set 50 (the paper)"
    assert pipeline.node_message("Node", "something odd") == "Node: something odd"
    assert pipeline.input_message("Node", "x", "is bad.", "fix it") == "Node: input 'x': is bad. Fix: fix it"


def test_the_steps_check_every_engine_call_against_the_contract(monkeypatch):
    """PoseAnimateOptions is checked on the shipped path: the steps hand pacm a Denoiser that validates the
    ``poseanimate`` dict of every call before the host sees it."""
    from pipeline.contract import CheckedDenoiser, checked

    calls = []

    class Host:
        device = "cpu"
        node = "Test"

        def __call__(self, x, sigma, context, hint, transformer_options):
            calls.append(transformer_options)
            return x

        def estimate(self, latent_shape):
            return 0

        def working_memory(self, latent_shape, grad):
            return 0

        def free_memory(self):
            return 0

        def load(self, memory_required=0):
            pass

        def check_grad_support(self):
            pass

        def engine(self):
            return torch.no_grad()

    den = checked(Host())
    assert checked(den) is den and den.device == "cpu"
    den(torch.zeros(1), torch.ones(1), None, None, {"poseanimate": {"frame_ids": [0, 1]}})
    with pytest.raises(ValueError, match="^poseanimate: unknown keys"):
        den(torch.zeros(1), torch.ones(1), None, None, {"poseanimate": {"frames": [0]}})
    assert len(calls) == 1  # the bad call never reached the host
    seen = []
    monkeypatch.setattr(pipeline.stages.pacm, "sample_frames", lambda model, *a, **k: seen.append(model))
    inversion = pacm.InversionResult(sigmas=torch.ones(2), trajectory=torch.zeros(2, 4, 2, 2), cond=torch.zeros(2, 4),
                                     uncond=None, hint=None, cfg=1.0)
    pipeline.sample(Host(), inversion, None)
    assert isinstance(seen[0], CheckedDenoiser)


@pytest.mark.parametrize("name, value", [("optimize_steps", 10), ("warm_start", True),
                                         ("adaptive", 0.3), ("early_stop", 1e-3), ("keyframe_interval", 3)])
def test_a_setting_without_effect_at_inner_steps_0_is_refused(name, value):
    """No silent settings: with no embedding optimisation every optimisation setting keeps its default."""
    with pytest.raises(ValueError, match=f"^{name}: .* has no effect with inner_steps 0.*Fix: set inner_steps"):
        pipeline.check_schedule(0, **{name: value})
    pipeline.check_schedule(1, **{name: value})  # with optimisation it acts
    pipeline.check_schedule(0, **{name: getattr(pipeline.FULL, name)})  # the default says nothing


def test_uncond_pose_is_refused_where_it_would_do_nothing():
    """uncond_pose 'source' changes the unconditional rows: refused without pose hints and at cfg 1."""
    pipeline.check_uncond_pose("target", 1.0, False)
    pipeline.check_uncond_pose("source", 7.5, True)
    with pytest.raises(ValueError, match="^uncond_pose: unknown value 'none'.*Fix: choose one of target, source"):
        pipeline.check_uncond_pose("none", 7.5, True)
    with pytest.raises(ValueError, match="^uncond_pose: 'source' has no effect at cfg 1.*Fix: raise cfg"):
        pipeline.check_uncond_pose("source", 1.0, True)
    with pytest.raises(ValueError, match="^uncond_pose: 'source' has no effect without a pose ControlNet"):
        pipeline.check_uncond_pose("source", 7.5, False)


def test_algorithm_1_takes_exactly_one_gradient_step():
    """With schedule 'algorithm 1' (one gradient step per step) an inner_steps above 1 would do nothing: refused."""
    with pytest.raises(ValueError, match="^inner_steps: 5 has no effect with schedule 'algorithm 1'.*Fix: set "
                                         "inner_steps to 1"):
        pipeline.check_schedule(5, schedule="algorithm 1")
    pipeline.check_schedule(1, schedule="algorithm 1")
    pipeline.check_schedule(5, schedule="inner iterations")


def test_at_inner_steps_0_a_setting_left_at_a_presets_value_is_not_refused():
    """The nodes' defaults are the fast preset's (schedule 'algorithm 1'), the full workflow sets the paper's:
    a user who only sets inner_steps to 0 is not stopped by a value they never touched."""
    assert pipeline.NODE_DEFAULTS.schedule != pipeline.FULL.schedule
    for schedule in (pipeline.NODE_DEFAULTS.schedule, pipeline.FULL.schedule):
        pipeline.check_schedule(0, schedule=schedule)
