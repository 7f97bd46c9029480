"""One stage runner for the PACM stages: checks, memory, loading and engine mode, owned once.

Every PACM node (and StickWorld) runs its stage as ``run_stage(host, Stage(...), body)``:

1. the stage's inputs were checked by the caller (the node) before this point; a gradient stage asks the host
   whether it can differentiate through the model (``host.check_grad_support()``), before any work;
2. the memory policy turns the host's per-sample estimate into integers: the frames one model call may hold
   (``window_size`` / ``frames_per_batch``, 0 = auto from free memory) and the bytes to ask the host to free
   before the pass (forward, or forward+backward, at that batch);
3. the host loads its models for that request (ComfyUI frees or offloads what it must);
4. ``body(frames_per_call)`` runs in the host's engine mode; pacm only ever receives integers.

The host protocol (:class:`StageHost`) is what the runner needs of a host; ``nodes.host.ComfyDenoiser``
implements it over ComfyUI's memory manager, ``testing.tiny_unet.TinyDenoiser`` over plain torch.

The typed context a stage hands to the next one rides in the inversion (:class:`StagedInversion`, the value of
POSEANIMATE_INVERSION): the ControlNet settings every later stage conditions with.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Protocol, TypeVar, runtime_checkable

from ._layers import pacm
from .errors import argument_error

T = TypeVar("T")


@dataclass(frozen=True)
class ControlSettings:
    """The pose ControlNet's strength and start/end percent, as in ComfyUI's 'Apply ControlNet'."""

    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise argument_error("control_start", f"{self.start} .. {self.end} is not a range within 0 .. 1",
                                 "set control_start <= control_end, both between 0 and 1")
        if self.strength < 0:
            raise argument_error("control_strength", f"must be >= 0, got {self.strength}", "set 0 or more")


@dataclass
class StagedInversion(pacm.InversionResult):
    """POSEANIMATE_INVERSION: pacm's inversion plus the typed context later stages read: the ControlNet settings,
    and ``extra_cond``, the conditioning the host needs besides the text embedding to repeat the inversion's model
    calls exactly (SDXL: the pooled output and size values; empty for SD1.5)."""

    control: ControlSettings = field(default_factory=ControlSettings)
    extra_cond: dict = field(default_factory=dict)

    @classmethod
    def of(cls, result, control: ControlSettings, extra_cond: dict | None = None) -> "StagedInversion":
        values = {f.name: getattr(result, f.name) for f in dataclasses.fields(pacm.InversionResult)}
        return cls(**values, control=control, extra_cond=dict(extra_cond or {}))


@dataclass(frozen=True)
class MemoryPolicy:
    """Bytes of working memory per sample of one model call, as multiples of the host's own per-sample estimate
    (ComfyUI: ``BaseModel.memory_required``), measured by ``benchmarks/bench_memory.py`` (docs/host.md)."""

    forward: float
    forward_backward: float
    headroom: float = 0.8  # share of the free memory one call may fill

    def need(self, estimate: int, samples: int, grad: bool) -> int:
        """Bytes a call of ``samples`` samples needs (forward, or forward+backward)."""
        factor = self.forward_backward if grad else self.forward
        return int(max(int(estimate), 1) * factor * max(int(samples), 1))

    def fit(self, frames: int, estimate: int, samples_per_frame: int, grad: bool, free: int) -> int:
        """Frames per call (1..frames) whose need fills at most ``headroom`` of ``free`` bytes."""
        frames = max(1, int(frames))
        per_frame = max(self.need(estimate, samples_per_frame, grad), 1)
        return max(1, min(frames, int(self.headroom * max(int(free), 0)) // per_frame))


# Measured on the CPU (benchmarks/bench_memory.py, docs/host.md): one sample's marginal working memory over
# ComfyUI's per-sample estimate, SD1.5 UNet + ControlNet at 64 and 128 px: forward 0.24-0.28 (full size),
# 0.06-0.12 (tiny); forward+backward through the gradient path 3.18-3.79 (full size), 0.61-0.78 (tiny).
# Forward keeps ComfyUI's own estimate (what its samplers request); forward+backward is the largest figure,
# rounded up.
MEMORY = MemoryPolicy(forward=1.0, forward_backward=4.0)


@runtime_checkable
class StageHost(Protocol):
    """What :func:`run_stage` needs of a host (see the module docstring)."""

    node: str

    def estimate(self, latent_shape) -> int:
        """The host's estimate of one sample's working memory in a forward (bytes)."""

    def free_memory(self) -> int:
        """Bytes free on the model's device."""

    def load(self, memory_required: int = 0) -> None:
        """Load the models, freeing ``memory_required`` bytes besides them."""

    def check_grad_support(self) -> None:
        """Raise a clear error if the model cannot be differentiated through (before any work)."""

    def engine(self) -> ContextManager:
        """Where the engine runs: outside the host's inference mode, without autograd."""


@dataclass(frozen=True)
class Stage:
    """One PACM stage as the runner sizes it.

    name: for logs; grad: whether it runs a gradient pass; frames: frames the stage handles;
    samples_per_frame: samples one frame puts in a model call (2 with CFG's uncond + cond, 1 otherwise);
    frames_per_call: fixed by the user (``window_size`` / ``frames_per_batch``), or 0 = auto."""

    name: str
    latent_shape: tuple
    grad: bool = False
    frames: int = 1
    samples_per_frame: int = 1
    frames_per_call: int = 0

    def __post_init__(self):
        if self.frames_per_call < 0:
            raise argument_error("frames_per_call", f"must be >= 0 (0 = auto), got {self.frames_per_call}",
                                 "set 0 or a positive number of frames")


def frames_per_call(host: StageHost, stage: Stage, policy: MemoryPolicy = MEMORY) -> int:
    """The stage's frames per model call: the user's number (at most ``frames``), else the policy's fit."""
    if stage.frames_per_call:
        return min(int(stage.frames_per_call), int(stage.frames))
    est = host.estimate(stage.latent_shape)
    host.load(policy.need(est, stage.samples_per_frame, stage.grad))  # in place before reading free memory
    return policy.fit(stage.frames, est, stage.samples_per_frame, stage.grad, host.free_memory())


def run_stage(host: StageHost, stage: Stage, body: Callable[[int], T], policy: MemoryPolicy = MEMORY) -> T:
    """Check, size, load and run one stage (see the module docstring); returns ``body(frames_per_call)``."""
    if stage.grad:
        host.check_grad_support()
    per_call = frames_per_call(host, stage, policy)
    host.load(policy.need(host.estimate(stage.latent_shape), per_call * stage.samples_per_frame, stage.grad))
    with host.engine():
        return body(per_call)
