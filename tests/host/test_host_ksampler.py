"""KSampler equivalence as the contract (tests/host/ksampler_equivalence.py): every remix setup of the matrix either
matches ComfyUI's own sampling path in every layout the PACM stages call the model in, or is refused by name before
any model work; and docs/host.md's table says exactly what the harness finds on this host."""
from __future__ import annotations

import pathlib
import re

import pytest
import torch

import ksampler_equivalence as K

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def results():
    with torch.inference_mode(False):
        return K.run_all()


@pytest.mark.parametrize("setup", K.SETUPS, ids=lambda s: s.name)
def test_each_setup_matches_or_is_refused_before_model_work(results, setup):
    r = results[setup.name]
    if setup.expect == "match":
        assert r["result"] == "match", r
    else:
        assert r["result"] == "refused" and r["input"] == setup.expect, r
        assert r["model_calls_before_refusal"] == 0
        assert re.search(r"^Sample Frames: input '\w+': .+\. Fix: .+", r["message"]), r["message"]


def test_the_wrappers_ran_in_every_layout(results):
    """APPLY_MODEL / DIFFUSION_MODEL wrappers are applied, not merely tolerated."""
    env = K.make_env("sd15")
    patcher, positive, negative = K._apply_model_wrapper(env)
    with torch.inference_mode():
        K.pack_x0(patcher, env.pose_cn, positive, negative, env, "optimisation", K.CFG)
    counters = [fn for table in patcher.wrappers.values() for fns in table.values() for fn in fns]
    assert counters and all(c.calls >= 2 for c in counters)


def test_docs_table_is_the_harness_result(results):
    """docs/host.md carries the table the harness prints (python tests/host/ksampler_equivalence.py --comfyui ...).
    The figures are rounding-level and differ between hosts and CPUs; the verdicts and refused inputs must agree."""
    text = (ROOT / "docs" / "host.md").read_text()
    expected = K.table(results)

    def verdicts(table):
        return [re.sub(r"\| [0-9.e+-]+ ", "| x ", line) for line in table.splitlines()]

    start = text.index(expected.splitlines()[0])
    documented = "\n".join(text[start:].splitlines()[:len(expected.splitlines())])
    assert verdicts(documented) == verdicts(expected)


def test_the_stages_apply_the_models_cfg_function_in_every_cfg_step():
    """A sampler_cfg_function (as RescaleCFG sets) is what the stages combine CFG rows with: in the inversion's and
    the optimisation's differentiated CFG step and in sampling (counted), and it changes the result."""
    from tiny_models import build_tiny_sd15

    from poseanimate.nodes.embedding_optimize import PoseAnimatePoseEmbeddingOptimize
    from poseanimate.nodes.inversion import PoseAnimatePoseAwareInversion
    from poseanimate.nodes.sample_frames import PoseAnimateSampleFrames

    patcher, cnet = build_tiny_sd15()
    seen = []

    def cfg_function(args):  # plain CFG in ComfyUI's eps form, scaled a little, counted by grad mode
        seen.append(torch.is_grad_enabled())
        eps = args["uncond"] + args["cond_scale"] * (args["cond"] - args["uncond"])
        return 0.9 * eps

    m = patcher.clone()
    m.set_model_sampler_cfg_function(cfg_function)
    g = torch.Generator().manual_seed(0)
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=g) * 5}
    positive = [[torch.randn(1, 77, 768, generator=g), {}]]
    poses = torch.rand(3, 64, 64, 3, generator=g)
    outs = []
    for model in (patcher, m):
        inv, _ = PoseAnimatePoseAwareInversion().invert(model, cnet, latent, positive, poses[:1], 2, 7.5, 1, 1e-5)
        (emb,) = PoseAnimatePoseEmbeddingOptimize().optimize(inv, model, cnet, positive, poses, 1, 0)
        outs.append(PoseAnimateSampleFrames().sample(model, cnet, positive, emb, 0)[0]["samples"])
    assert True in seen and False in seen  # the differentiated steps and the no-grad ones
    assert not torch.allclose(outs[0], outs[1])
