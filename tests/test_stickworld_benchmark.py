"""The reduced StickWorld benchmark on the shipped trained model: PoseAnimate must beat a plain pose
ControlNet on identity and background fidelity (the full benchmark is benchmarks/bench_stickworld.py)."""
from __future__ import annotations

import csv
import json

import pytest

from stickworld import bench
from stickworld.model import WEIGHTS, StickWorldModel, load_model

ASSETS = WEIGHTS.parent
pytestmark = pytest.mark.usefixtures("single_thread")

REDUCED = dict(cases=2, frames=4, steps=12, inner_steps=2)


@pytest.fixture(scope="module")
def model():
    return load_model(WEIGHTS)


def test_shipped_weights_record_how_they_were_made(model):
    meta = model.meta
    assert meta["command"].startswith("python scripts/stickworld_train.py")
    assert meta["seed"] == 0 and meta["steps"] >= 1000
    assert meta == json.loads((ASSETS / "training.json").read_text())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in StickWorldModel().parameters())
    rows = list(csv.DictReader(open(ASSETS / "loss.csv")))
    assert int(rows[-1]["step"]) == meta["steps"]
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    assert last < 0.5 * first  # it learned something
    assert (ASSETS / "loss.png").stat().st_size > 0


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
    assert set(called) == {"invert", "optimise", "capture_attention", "build_masks", "make_dca", "patch_model",
                           "sample"}
    mean = bench.summarise(per_case)
    table = bench.markdown_table(mean)
    assert mean["full"]["identity"] < mean["baseline"]["identity"], table
    assert mean["full"]["background"] < mean["baseline"]["background"], table
    for name, scores in per_case.items():
        assert scores["full"]["background"] < scores["baseline"]["background"], name
