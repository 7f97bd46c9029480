"""The values that travel between the PACM stages (the nodes' custom types), typed once:

* ``POSEANIMATE_INVERSION`` is a :class:`StagedInversion`: pacm's ``InversionResult`` after pose-aware inversion
  (trajectory, per-step source embeddings, sigmas, source pose) plus what every later stage conditions and
  optimises with: the ControlNet settings (:class:`ControlSettings`), the optimiser's ``lr`` and ``early_stop``, and
  the conditioning the host needs besides the text (SDXL's pooled output and sizes, per CFG side).
* ``POSEANIMATE_EMBEDDINGS`` is a :class:`PACMEmbeddings`: the inversion plus the per-frame ``pacm.PoseEmbeddings``
  (everything Sample Frames needs). Frame 0 is the source; target frame ``f`` (1..N) has ``poses.uncond[f - 1]``
  and ``poses.hints[f - 1]``. Latents are in the model's internal latent space (after ``process_latent_in``).

Nothing is defaulted across a stage boundary: a later stage reads these typed fields, never a dict with fallbacks.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ._layers import pacm
from .errors import argument_error


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
    """POSEANIMATE_INVERSION: pacm's pose-aware inversion plus the typed context later stages read.

    control: the pose ControlNet's settings; lr, early_stop: the optimiser's base learning rate and early-stop
    threshold the inversion ran with (Pose Embedding Optimize continues with them); extra_cond / uncond_extra_cond:
    what the host needs besides the text embedding to repeat the inversion's model calls exactly, on the cond and
    on the uncond rows (SDXL: pooled output and sizes; empty for SD1.5)."""

    control: ControlSettings = field(default_factory=ControlSettings)
    lr: float = 0.0
    early_stop: float = 0.0
    extra_cond: dict = field(default_factory=dict)
    uncond_extra_cond: dict = field(default_factory=dict)

    @classmethod
    def of(cls, result: pacm.InversionResult, control: ControlSettings, extra_cond: dict | None = None,
           uncond_extra_cond: dict | None = None) -> "StagedInversion":
        """``result`` of ``pacm.pose_aware_inversion`` (its settings hold ``lr`` and ``early_stop``) with its context."""
        if not isinstance(control, ControlSettings):
            raise TypeError(f"control: expected ControlSettings, got {type(control).__name__}")
        missing = [k for k in ("lr", "early_stop") if k not in result.settings]
        if missing or result.uncond is None:
            raise ValueError(f"inversion: not a pose-aware inversion (no per-step embeddings or no {missing}). "
                             "Fix: pass what pacm.pose_aware_inversion returned")
        values = {f.name: getattr(result, f.name) for f in dataclasses.fields(pacm.InversionResult)}
        return cls(**values, control=control, lr=float(result.settings["lr"]),
                   early_stop=float(result.settings["early_stop"]), extra_cond=dict(extra_cond or {}),
                   uncond_extra_cond=dict(uncond_extra_cond or {}))


@dataclass
class PACMEmbeddings:
    """POSEANIMATE_EMBEDDINGS: the inversion and the per-frame embeddings of its target frames."""

    inversion: StagedInversion
    poses: pacm.PoseEmbeddings

    @property
    def frames(self) -> int:
        """N + 1: the source frame plus the target frames."""
        return int(self.poses.uncond.shape[0]) + 1

    def to(self, device=None):
        return PACMEmbeddings(self.inversion.to(device), self.poses.to(device))
