"""pipeline.runner: one memory policy (integers only), one order of work (check, size, load, run)."""
from __future__ import annotations

import contextlib

import pytest
import torch

from poseanimate import pipeline
from poseanimate.pipeline.runner import (MEMORY, ControlSettings, MemoryPolicy, Stage, StagedInversion,
                                         frames_per_call, run_stage)


class FakeHost:
    """A StageHost recording what the runner asked of it."""

    node = "Test"

    def __init__(self, free, estimate=100, grad_ok=True):
        self.free, self.est, self.grad_ok, self.log = free, estimate, grad_ok, []

    def estimate(self, latent_shape):
        return self.est

    def free_memory(self):
        return self.free

    def load(self, memory_required=0):
        self.log.append(("load", memory_required))

    def check_grad_support(self):
        self.log.append(("check",))
        if not self.grad_ok:
            raise ValueError("model: quantised. Fix: load it in fp16")

    @contextlib.contextmanager
    def engine(self):
        self.log.append(("engine",))
        with torch.no_grad():
            yield


def test_policy_fits_frames_in_free_memory():
    policy = MemoryPolicy(forward=1.5, forward_backward=4.0, headroom=0.8)
    per_frame = 100 * 1.5 * 2  # estimate x forward factor x (uncond + cond)
    assert policy.fit(49, 100, 2, False, int(7.5 * per_frame / 0.8)) == 7
    assert policy.fit(49, 100, 2, False, int(2.5 * per_frame / 0.8)) == 2   # less free memory, smaller windows
    assert policy.fit(49, 100, 2, False, 10**12) == 49                       # never more than the frames
    assert policy.fit(49, 100, 2, False, 0) == 1                             # never less than one
    assert policy.fit(49, 100, 1, True, int(3 * 400 / 0.8)) == 3             # forward+backward costs more
    assert policy.need(100, 3, grad=True) == 1200 and policy.need(100, 3, grad=False) == 450


def test_run_stage_checks_then_sizes_then_loads_then_runs():
    host = FakeHost(free=int(3.5 * MEMORY.need(100, 2, False) / MEMORY.headroom))
    seen = []
    out = run_stage(host, Stage("sample", (1, 4, 8, 8), frames=9, samples_per_frame=2),
                    lambda w: seen.append((w, torch.is_grad_enabled())) or "done")
    assert out == "done" and seen == [(3, False)]  # auto window from free memory, inside the engine mode
    assert host.log == [("load", MEMORY.need(100, 2, False)), ("load", MEMORY.need(100, 6, False)), ("engine",)]
    host = FakeHost(free=0)
    run_stage(host, Stage("sample", (1, 4, 8, 8), frames=9, samples_per_frame=2, frames_per_call=50), seen.append)
    assert seen[-1] == 9 and host.log[0] == ("load", MEMORY.need(100, 18, False))  # the user's window, capped


def test_gradient_stage_asks_the_host_before_any_work():
    host = FakeHost(free=10**9, grad_ok=False)
    ran = []
    with pytest.raises(ValueError, match="quantised"):
        run_stage(host, Stage("optimise", (1, 4, 8, 8), grad=True, frames=4), ran.append)
    assert ran == [] and host.log == [("check",)]
    host = FakeHost(free=10**9, grad_ok=False)
    run_stage(host, Stage("optimise", (1, 4, 8, 8), grad=False, frames=4), ran.append)  # no gradient pass: no check
    assert ran == [4] and ("check",) not in host.log


def test_frames_per_call_and_settings_are_checked():
    with pytest.raises(ValueError, match="^frames_per_call: "):
        Stage("sample", (1, 4, 8, 8), frames_per_call=-1)
    with pytest.raises(ValueError, match="^control_start: "):
        ControlSettings(1.0, 0.8, 0.2)
    assert frames_per_call(FakeHost(free=0), Stage("x", (1, 4, 8, 8), frames=3, frames_per_call=2)) == 2


def test_staged_inversion_is_an_inversion_with_its_control():
    from poseanimate.pacm import InversionResult

    base = InversionResult(sigmas=torch.ones(3), trajectory=torch.zeros(3, 4, 2, 2), cond=torch.zeros(77, 8),
                           uncond=None, hint=None, cfg=1.0, settings={})
    staged = StagedInversion.of(base, ControlSettings(0.5, 0.1, 0.9))
    assert isinstance(staged, InversionResult) and staged.control.strength == 0.5
    moved = staged.to("cpu")
    assert isinstance(moved, StagedInversion) and moved.control == staged.control
    assert pipeline.runner.StageHost is not None
