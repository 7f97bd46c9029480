"""The reduced StickWorld benchmark on the shipped trained model: PoseAnimate must beat a plain pose
ControlNet on identity and background fidelity (the full benchmark is benchmarks/bench_stickworld.py)."""
from __future__ import annotations

import csv
import json

import pytest

from stickworld import bench
from stickworld.model import VOCAB, WEIGHTS, StickWorldModel, load_model
from stickworld.world import ACCESSORIES

ASSETS = WEIGHTS.parent
pytestmark = pytest.mark.usefixtures("single_thread")

REDUCED = dict(cases=2, frames=4, steps=12, inner_steps=2)


@pytest.fixture(scope="module")
def model():
    return load_model(WEIGHTS)


def test_shipped_weights_record_how_they_were_made(model):
    """The shipped weights are the base model (trained from scratch) fine-tuned with --init on the world with
    accessories; both runs' records and loss curves are shipped."""
    meta = model.meta
    assert meta["command"].startswith("python scripts/stickworld_train.py --init assets/stickworld/stickworld.pt")
    assert meta["seed"] == 0 and meta["steps"] >= 100 and meta["threads"] == 1
    assert meta == json.loads((ASSETS / "training.json").read_text())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in StickWorldModel().parameters())
    rows = list(csv.DictReader(open(ASSETS / "loss.csv")))
    assert int(rows[-1]["step"]) == meta["steps"] and float(rows[-1]["seconds"]) == meta["seconds"]
    assert float(rows[-1]["loss"]) == pytest.approx(meta["final_loss"])
    assert (ASSETS / "loss.png").stat().st_size > 0
    init = meta["init"]
    assert init["new_words"] == ["with", *ACCESSORIES[1:]] and init["vocab"] == len(VOCAB) - len(init["new_words"])
    base = init["meta"]  # the base model's own record: trained from scratch
    assert base["command"].startswith("python scripts/stickworld_train.py") and "--init" not in base["command"]
    assert base["seed"] == 0 and base["steps"] >= 1000
    base_rows = list(csv.DictReader(open(ASSETS / "base_loss.csv")))
    assert int(base_rows[-1]["step"]) == base["steps"]
    assert float(base_rows[-1]["loss"]) == pytest.approx(base["final_loss"])
    assert float(base_rows[-1]["loss"]) < 0.5 * float(base_rows[0]["loss"])  # the base learned something
    # The fine-tune's 10-step mean loss stayed near the base's final loss (it did not diverge); accessories are a
    # small share of the pixels, so the mean loss barely moves either way.
    losses = [float(r["loss"]) for r in rows]
    assert max(losses) < 2 * base["final_loss"] and losses[-1] < 1.25 * base["final_loss"]
    assert (ASSETS / "base_loss.png").stat().st_size > 0


def test_full_method_beats_plain_controlnet_on_identity_and_background(model, monkeypatch):
    """The shipped path (the pipeline steps with the full workflow's settings, fewer steps) against the baseline."""
    called = []
    for step in ("invert", "optimise", "capture_attention", "build_masks", "make_dca", "patch_model", "sample"):
        real = getattr(bench.pipeline, step)

        def spy(*args, _real=real, _name=step, **kwargs):
            called.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(bench.pipeline, step, spy)
    recipe = bench.pipeline.FULL.replace(steps=REDUCED["steps"], inversion_inner_steps=REDUCED["inner_steps"],
                                         inner_steps=REDUCED["inner_steps"])
    settings = bench.Settings(recipe=recipe)
    per_case = {}
    for case in bench.make_cases(REDUCED["cases"], frames=REDUCED["frames"]):
        result = bench.run_case(model, case, ["full", "baseline"], settings)
        per_case[case.name] = bench.score_case(case, result)
    shipped = {"invert", "optimise", "make_dca", "patch_model", "sample"}
    if recipe.use_masks:
        shipped |= {"capture_attention", "build_masks"}
    assert set(called) == shipped
    mean = bench.summarise(per_case)
    table = bench.markdown_table(mean)
    assert mean["full"]["identity"] < mean["baseline"]["identity"], table
    assert mean["full"]["background"] < mean["baseline"]["background"], table
    for name, scores in per_case.items():
        assert scores["full"]["background"] < scores["baseline"]["background"], name
