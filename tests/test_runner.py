"""pipeline.runner: one memory policy priced in bytes the pass holds (integers only), one order of work (check,
size, load), and the typed values the stages hand on (pipeline.types)."""
from __future__ import annotations

import contextlib

import pytest
import torch

from poseanimate import pipeline
from poseanimate.pipeline.families import FAMILIES, SD15, SDXL, Memory
from poseanimate.pipeline.runner import MEMORY, MemoryPolicy, Stage, prepare
from poseanimate.pipeline.types import ControlSettings, StagedInversion


class FakeHost:
    """A StageHost recording what the runner asked of it; ``working`` bytes per sample (forward, fwd+bwd)."""

    node = "Test"

    def __init__(self, free, estimate=100, working=(60, 400), grad_ok=True):
        self.free, self.est, self.working, self.grad_ok, self.log = free, estimate, working, grad_ok, []

    def estimate(self, latent_shape):
        return self.est

    def working_memory(self, latent_shape, grad):
        return self.working[1] if grad else self.working[0]

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


def test_policy_prices_the_measured_bytes_and_never_less_than_the_host_estimate_forward():
    policy = MemoryPolicy(margin=1.25, headroom=0.8)
    host = FakeHost(free=0, estimate=100, working=(60, 400))
    assert policy.per_sample(host, Stage("s", (1, 4, 8, 8))) == 100                 # forward: the host's estimate
    assert policy.per_sample(FakeHost(0, estimate=10), Stage("s", (1, 4, 8, 8))) == 75  # or the measured x margin
    assert policy.per_sample(host, Stage("o", (1, 4, 8, 8), grad=True)) == 500      # gradient: measured x margin
    assert policy.fit(49, 300, int(7.5 * 300 / 0.8)) == 7
    assert policy.fit(49, 300, int(2.5 * 300 / 0.8)) == 2   # less free memory, smaller windows
    assert policy.fit(49, 300, 10**12) == 49                # never more than the frames
    assert policy.fit(49, 300, 0) == 1                      # never less than one


def test_prepare_checks_then_sizes_then_loads():
    host = FakeHost(free=int(3.5 * 2 * 100 / MEMORY.headroom))
    assert prepare(host, Stage("sample", (1, 4, 8, 8), frames=9, samples_per_frame=2)) == 3  # auto from free memory
    assert host.log == [("load", 200), ("load", 600)]  # loaded once before reading free memory, then for the call
    host = FakeHost(free=0)
    assert prepare(host, Stage("sample", (1, 4, 8, 8), frames=9, samples_per_frame=2), 50, "window_size") == 9
    assert host.log == [("load", 1800)]  # the user's window, capped at the frames
    with pytest.raises(ValueError, match="^window_size: "):
        prepare(host, Stage("sample", (1, 4, 8, 8), frames=9), -1, "window_size")


def test_gradient_stage_asks_the_host_before_any_work():
    host = FakeHost(free=10**9, grad_ok=False)
    with pytest.raises(ValueError, match="quantised"):
        prepare(host, Stage("optimise", (1, 4, 8, 8), grad=True, frames=4))
    assert host.log == [("check",)]
    host = FakeHost(free=10**9, grad_ok=False)
    prepare(host, Stage("optimise", (1, 4, 8, 8), grad=False, frames=4))  # no gradient pass: no check
    assert ("check",) not in host.log


def test_family_profiles_are_linear_in_pixels_and_dtype_and_count_each_controlnet():
    m = Memory(per_pixel=100.0, fixed=1000.0)
    assert m.bytes(64, 4) == 4 * (6400 + 1000) and m.bytes(64, 2) == m.bytes(64, 4) / 2
    for family in FAMILIES.values():
        one = family.working_memory(4096, 2, True, controlnets=1)
        two = family.working_memory(4096, 2, True, controlnets=2)
        assert two - one == int(family.controlnet_forward_backward.bytes(4096, 2)) or abs(
            (two - one) - family.controlnet_forward_backward.bytes(4096, 2)) <= 1
        assert family.working_memory(4096, 2, True) > 8 * family.working_memory(4096, 2, False)
    # the figures the issue reported from outside, at 512 px fp16 on SD1.5: ComfyUI's NVIDIA branch estimates
    # 82 MiB a sample for a forward; a forward+backward with the ControlNet holds ten times that
    assert 800 * 2**20 < SD15.working_memory(64 * 64, 2, True) < 900 * 2**20
    assert SDXL.working_memory(128 * 128, 2, True) > 6 * 2**30


def test_family_profiles_agree_with_the_recipes_that_ship():
    """pipeline/defaults.py imports nothing (benchmarks load it by path), so its sizes are literals: they must be the
    families' default sizes."""
    assert pipeline.FULL.size == pipeline.FAST.size == SD15.default_size
    assert pipeline.FULL_SDXL.size == SDXL.default_size


def test_a_12gb_card_with_sd15_at_512_fp16_gets_a_batch_that_fits():
    """The worked example of the GPU issue: ~9 GiB free after loading, 16 frames, automatic batch. The old policy
    (4x ComfyUI's NVIDIA-branch estimate, 82 MiB) took all 16 frames; priced by the bytes the pass holds, the batch
    times the measured bytes stays inside the free memory."""

    class Card(FakeHost):
        def working_memory(self, latent_shape, grad):
            return SD15.working_memory(latent_shape[-1] * latent_shape[-2], 2, grad)

    free = 9 * 2**30
    host = Card(free=free, estimate=int(64 * 64 * 2 * 0.01 * 2**20))
    n = prepare(host, Stage("optimise", (1, 4, 64, 64), grad=True, frames=16))
    assert 1 <= n < 16
    assert n * SD15.working_memory(64 * 64, 2, True) <= free


def test_controls_and_the_staged_inversion_are_typed():
    from poseanimate.pacm import InversionResult

    with pytest.raises(ValueError, match="^control_start: "):
        ControlSettings(1.0, 0.8, 0.2)
    base = InversionResult(sigmas=torch.ones(3), trajectory=torch.zeros(3, 4, 2, 2), cond=torch.zeros(77, 8),
                           uncond=torch.zeros(2, 77, 8), hint=None, cfg=7.5, settings={"lr": 0.01, "early_stop": 1e-5})
    staged = StagedInversion.of(base, ControlSettings(0.5, 0.1, 0.9))
    assert isinstance(staged, InversionResult) and staged.control.strength == 0.5
    assert staged.lr == 0.01 and staged.early_stop == 1e-5
    moved = staged.to("cpu")
    assert isinstance(moved, StagedInversion) and moved.control == staged.control and moved.lr == 0.01
    no_embeddings = InversionResult(sigmas=torch.ones(3), trajectory=torch.zeros(3, 4, 2, 2), cond=torch.zeros(77, 8),
                                    uncond=None, hint=None, cfg=1.0, settings={})
    with pytest.raises(ValueError, match="^inversion: "):
        StagedInversion.of(no_embeddings, ControlSettings())  # nothing is defaulted across a stage boundary
    with pytest.raises(ValueError, match="^inversion: "):
        pipeline.optimise(None, base, None, inner_steps=1)  # a later stage takes only a StagedInversion
