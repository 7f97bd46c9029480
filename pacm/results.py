"""Result types of the PACM engine (become the POSEANIMATE_INVERSION / POSEANIMATE_EMBEDDINGS node types).

All tensors are stored without a batch dimension where one is implied, in the sigma-space parametrisation
(``x = x0 + sigma * eps``, not pre-scaled; SD1.5 ``alphas_cumprod = 1 / (1 + sigma**2)``). Step index ``i``
(0-based) always means the DDIM step from ``sigmas[i]`` down to ``sigmas[i + 1]``; ``T = len(sigmas) - 1``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch


def _move(value, device=None, dtype=None):
    if isinstance(value, torch.Tensor):
        if dtype is not None and value.is_floating_point():
            return value.to(device=device, dtype=dtype)
        return value.to(device=device)
    return value


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{tuple(value.shape)} {str(value.dtype).replace('torch.', '')} {value.device}"
    return repr(value)


class _Movable:
    def to(self, device=None, dtype=None):
        """A copy with every tensor moved to ``device`` (and floating tensors cast to ``dtype`` when given;
        ``sigmas`` stay float32)."""
        changes = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "sigmas":
                changes[f.name] = _move(v, device)
            else:
                changes[f.name] = _move(v, device, dtype)
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """One line per field: name, shape, dtype, device (or value)."""
        lines = [type(self).__name__]
        for f in dataclasses.fields(self):
            lines.append(f"  {f.name}: {_describe(getattr(self, f.name))}")
        return "\n".join(lines)


@dataclass
class EvalCount:
    """Model evaluations in SAMPLE units: one model call on a batch of B samples (CFG chunks x frames) counts B.

    ``forward``: samples evaluated without a backward pass; ``forward_backward``: samples evaluated with a
    backward pass to the embedding (one forward + one backward each). ``equivalents`` prices a backward as two
    forwards: ``forward + 3 * forward_backward`` forward-equivalents. Every stage function takes
    ``counts=EvalCount()`` and adds its evaluations to it (loss-scale back-off redos included: they cost real
    time)."""

    forward: int = 0
    forward_backward: int = 0

    @property
    def equivalents(self) -> int:
        """Forward-equivalents: ``forward + 3 * forward_backward`` (the textbook price; see :meth:`equivalents_at`)."""
        return self.forward + 3 * self.forward_backward

    def equivalents_at(self, cost: float) -> float:
        """Forward-equivalents with a forward+backward priced at ``cost`` forwards, as measured for a model
        (benchmarks/bench_backward.py: the weights are frozen, so a backward to the embedding costs less than the
        textbook two forwards)."""
        return self.forward + float(cost) * self.forward_backward

    def __add__(self, other: "EvalCount") -> "EvalCount":
        if not isinstance(other, EvalCount):
            return NotImplemented
        return EvalCount(self.forward + other.forward, self.forward_backward + other.forward_backward)

    def as_dict(self) -> dict[str, int]:
        """``{"forward": n, "forward_backward": m}``."""
        return {"forward": self.forward, "forward_backward": self.forward_backward}


@dataclass
class InversionResult(_Movable):
    """Source inversion (stage 1) and, once ``pose_aware_inversion`` has run, its per-step embeddings (stage 2).

    Fields:
        sigmas:      ``(T + 1,)`` float32, descending, last entry 0 — the sampling noise levels (ComfyUI
                     "ddim_uniform" by default). Step ``i`` goes from ``sigmas[i]`` to ``sigmas[i + 1]``.
        trajectory:  ``(T + 1, C, h, w)`` — ``trajectory[t]`` is Z_t, the inverted latent at noise level
                     ``sigmas[T - t]``: ``trajectory[0]`` is the source latent Z_0, ``trajectory[T]`` is Z_T.
                     Sigma space (x = x0 + sigma * eps).
        cond:        ``(L, D)`` the prompt embedding (cond branch of CFG; used for the inversion at guidance 1).
        uncond:      ``(T, L, D)`` or None — per-step unconditional-slot embeddings from pose-aware inversion;
                     ``uncond[i]`` is used at step i. None after plain ``ddim_invert``.
        hint:        ``(3, H, W)`` source pose image in 0..1, or None (no pose control).
        cfg:         guidance scale the ``uncond`` embeddings were optimised for (1.0 after plain inversion).
        settings:    dict of the settings used (steps, inner_steps, lr, early_stop, init, ...).
        losses:      ``(T, 2)`` float32 or None — per step, the alpha-space MSE to Z_{t-1} before the first
                     and after the last inner Adam iteration (diagnostics of pose-aware inversion).
        inner_iters: ``(T,)`` int64 or None — inner Adam iterations actually run per step (early stopping).
        reconstruction: ``(C, h, w)`` or None — the source reconstruction at sigma 0 that the last step of
                     ``pose_aware_inversion`` produced (CFG ``cfg`` with ``uncond``, source pose; what
                     ``sample_frames(model, inversion)[0]`` recomputes with T more CFG passes). None after
                     plain ``ddim_invert``.
        evals:       ``{"forward": n, "forward_backward": m}`` — this stage's own model evaluations in sample
                     units (``EvalCount.as_dict()``): stage 1's after ``ddim_invert``, stage 2's only after
                     ``pose_aware_inversion``.
    """

    sigmas: torch.Tensor
    trajectory: torch.Tensor
    cond: torch.Tensor
    uncond: torch.Tensor | None = None
    hint: torch.Tensor | None = None
    cfg: float = 1.0
    settings: dict[str, Any] = field(default_factory=dict)
    losses: torch.Tensor | None = None
    inner_iters: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    evals: dict[str, int] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """T, the number of DDIM steps."""
        return int(self.sigmas.shape[0]) - 1

    @property
    def source(self) -> torch.Tensor:
        """Z_0, the source latent ``(C, h, w)``."""
        return self.trajectory[0]

    @property
    def z_T(self) -> torch.Tensor:
        """Z_T, the fully inverted latent ``(C, h, w)`` at ``sigmas[0]``."""
        return self.trajectory[-1]


@dataclass
class PoseEmbeddings(_Movable):
    """Per-frame pose-aware unconditional embeddings (stage 3, Alg. 1).

    Fields:
        uncond:      ``(N, T, L, D)`` — ``uncond[j, i]`` is target frame ``j + 1``'s (global frame id ``j + 1``;
                     frame 0 is the source) unconditional-slot embedding at step i.
        hints:       ``(N, 3, H, W)`` target pose images in 0..1 (frame ``j + 1`` uses ``hints[j]``), or None.
        sigmas:      ``(T + 1,)`` the sampling sigmas these embeddings belong to (same as the inversion's).
        cfg:         guidance scale the embeddings were optimised for.
        settings:    dict of the settings used (inner_steps, lr, early_stop, batch_size, ...).
        losses:      ``(N, T, 2)`` float32 — per frame and step, the alpha-space MSE to the source trajectory
                     before the first and after the last inner iteration (mode "alg1": both are the loss of
                     the step taken, with the pre-update embedding); NaN for steps that ran no model pass
                     (``optimize_steps`` < T, or ``inner_steps=0``).
        inner_iters: ``(N, T)`` int64 — gradient steps actually run (per-frame early stopping; 0 where none).
        evals:       ``{"forward": n, "forward_backward": m}`` — this stage's model evaluations in sample units.
    """

    uncond: torch.Tensor
    hints: torch.Tensor | None
    sigmas: torch.Tensor
    cfg: float
    settings: dict[str, Any] = field(default_factory=dict)
    losses: torch.Tensor | None = None
    inner_iters: torch.Tensor | None = None
    evals: dict[str, int] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        """N, the number of target frames."""
        return int(self.uncond.shape[0])
