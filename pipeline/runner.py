"""How a PACM stage is prepared on its host, owned once: checks, memory, loading.

Every stage function (``pipeline.stages``: invert, optimise, capture_attention, sample) calls
``prepare(host, Stage(...), requested, argument)`` before it runs the engine in ``host.engine()``:

1. a gradient stage asks the host whether it can differentiate through the model (``host.check_grad_support()``),
   before any work;
2. the memory policy prices one sample of the stage's model call in bytes the pass really holds (the host's
   ``working_memory``: the model family's measured profile at the call's latent size and compute dtype, times a
   margin), never below the host's own estimate for a forward (ComfyUI's ``BaseModel.memory_required``, what its
   samplers request), and turns it into frames per call: the user's number (``requested``: ``window_size``,
   ``frames_per_batch``), or, for 0, as many frames as fill ``headroom`` of the free memory the host reports;
3. the host loads its models for that call (ComfyUI frees or offloads what it must).

It returns the frames per call, which the stage function hands to the engine under the node input's own name.
The host protocol (:class:`StageHost`) is what this needs of a host; ``nodes.host.ComfyDenoiser`` implements it
over ComfyUI's memory manager, ``testing.tiny_unet.TinyDenoiser`` over plain torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ContextManager, Protocol, runtime_checkable

from .errors import argument_error


@runtime_checkable
class StageHost(Protocol):
    """What :func:`prepare` needs of a host (see the module docstring)."""

    node: str

    def estimate(self, latent_shape) -> int:
        """The host's own estimate of one sample's working memory in a forward (bytes)."""

    def working_memory(self, latent_shape, grad: bool) -> int:
        """Bytes one sample of a model call holds at its peak, forward or forward+backward (measured profile)."""

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

    name: for logs; latent_shape: one sample's latent (1, C, h, w); grad: whether it runs a gradient pass; frames:
    frames the stage handles; samples_per_frame: samples one frame puts in a model call (2 with CFG's uncond +
    cond, 1 otherwise)."""

    name: str
    latent_shape: tuple
    grad: bool = False
    frames: int = 1
    samples_per_frame: int = 1


@dataclass(frozen=True)
class MemoryPolicy:
    """Bytes a model call needs, from the host's measured per-sample working memory.

    margin: what the measurement (bytes of tensor storages alive at the peak) does not see: the CUDA caching
    allocator's rounding and fragmentation, workspaces of fused kernels. A guess until a GPU run prints predicted
    against measured peaks (``benchmarks/gpu_check.py``); headroom: the share of the free memory one call may fill."""

    margin: float = 1.25
    headroom: float = 0.8

    def per_sample(self, host: StageHost, stage: Stage) -> int:
        """Bytes one sample of the stage's model call needs: the measured working memory times the margin, for a
        forward never less than the host's own estimate."""
        measured = int(self.margin * max(int(host.working_memory(stage.latent_shape, stage.grad)), 0))
        floor = 0 if stage.grad else max(int(host.estimate(stage.latent_shape)), 0)
        return max(measured, floor, 1)

    def fit(self, frames: int, per_frame: int, free: int) -> int:
        """Frames per call (1..frames) whose need fills at most ``headroom`` of ``free`` bytes."""
        frames = max(1, int(frames))
        return max(1, min(frames, int(self.headroom * max(int(free), 0)) // max(int(per_frame), 1)))


MEMORY = MemoryPolicy()


def prepare(host: StageHost, stage: Stage, requested: int = 0, argument: str = "requested",
            policy: MemoryPolicy = MEMORY) -> int:
    """Check, size and load one stage (see the module docstring); returns the frames per model call: ``requested``
    (at most ``stage.frames``), or for 0 what fits in the free memory. ``argument`` names ``requested`` in errors."""
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise argument_error(argument, f"must be 0 (auto) or a positive number of frames, got {requested!r}",
                             "set 0 or a positive number of frames")
    if stage.grad:
        host.check_grad_support()
    per_frame = policy.per_sample(host, stage) * max(int(stage.samples_per_frame), 1)
    if requested:
        n = min(int(requested), max(int(stage.frames), 1))
    else:
        host.load(per_frame)  # in place before reading free memory
        n = policy.fit(stage.frames, per_frame, host.free_memory())
    host.load(per_frame * n)
    return n
