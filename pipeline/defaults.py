"""The recipe's settings, named once: the node defaults, the bundled workflows and the StickWorld benchmark all
read them from here, so the benchmark measures the path that ships.

``FULL`` is the bundled ``full`` workflow (the paper's per-frame settings on a 16-frame sequence); ``FAST`` is
the ``fast`` workflow's preset; ``FULL_SDXL`` the ``full_sdxl`` workflow's (SDXL-family checkpoints). Every field names the node input it sets, except ``body_prior`` (in the node the
prior is on when PATA Align's poses are connected to Mask Extract) and ``use_masks`` (whether the workflows
connect masks to DCA Patch Model).
"""
from __future__ import annotations

import dataclasses

MASK_SOURCES = ("attention", "user", "truth")  # where frame 0's mask comes from (truth: benchmarks only)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One optimisation schedule of Pose Embedding Optimize, named once: the node's combo, the checks
    (``pipeline.check_schedule``), the recipe summary and the engine call all read this table.

    mode: ``pacm.optimize_pose_embeddings``' mode; one_step: one gradient step per step (``inner_steps`` must be 1);
    adaptive: whether the ``adaptive`` stop applies; summary: the frames' optimisation in the recipe's words
    (``{n}``: inner_steps); tooltip: the combo entry's meaning."""

    name: str
    mode: str
    one_step: bool
    adaptive: bool
    summary: str
    tooltip: str


SCHEDULES = {s.name: s for s in (
    Schedule("inner iterations", "inner", one_step=False, adaptive=True, summary="{n} inner iterations",
             tooltip="up to inner_steps Adam iterations, then the step (the paper's hyper-parameters: 5)"),
    Schedule("algorithm 1", "alg1", one_step=True, adaptive=False,
             summary="Algorithm 1 (one gradient step per step)",
             tooltip="the paper's Algorithm 1 as written, one gradient step per step, the step taken with the "
                     "embedding before the update (about 1/4 of the model passes at 5 inner iterations); needs "
                     "inner_steps 1"),
)}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One complete set of node settings, grouped by node."""

    # the picture: Resize source and PATA Align's canvas (pixels, square)
    size: int = 512
    # Load Pose Sequence
    pose_frames: int = 12              # frames: target poses taken evenly from the file (0 = all)
    # PATA Align
    transition_frames: int = 3
    pata_mode: str = "similarity"
    repair: bool = True                # on: clean motion passes through at any frame count (benchmarks/bench_repair.py)
    # Pose-Aware Inversion
    steps: int = 50
    cfg: float = 7.5
    inversion_inner_steps: int = 5
    early_stop: float = 1e-5
    # Pose Embedding Optimize
    inner_steps: int = 5
    schedule: str = "inner iterations"  # see SCHEDULES
    optimize_steps: int = 0            # 0 = every step
    warm_start: bool = False
    adaptive: float = 0.0              # 0 = off
    keyframe_interval: int = 1         # optimise every k-th frame, interpolate the others (1 = every frame)
    # Cross-Attention Mask Extract
    threshold: float = 0.0             # 0 = Otsu
    capture_steps: int = 0             # 0 = every step
    dilate: int = 1                    # latent pixels
    body_prior: bool = True            # fuse the attention mask with the frame's skeleton body prior
    # DCA Patch Model
    weights: tuple = (0.7, 0.15, 0.15)
    blocks: str = "all output blocks"
    mgdm: str = "exclude"              # MGDM formulation (pipeline.contract.MGDM_MODES)
    use_masks: bool = False            # masks connected to DCA Patch Model (MGDM on); off: docs/stickworld.md
    # Sample Frames / Mask Extract
    window: int = 0                    # 0 = auto (from free memory)
    # Sample Frames
    uncond_pose: str = "target"        # the pose of the unconditional rows (pipeline.UNCOND_POSES)
    hold_background: bool = False      # outside the source's and the frame's body, follow the source's trajectory
    hold_dilate: int = 1               # latent pixels the held region keeps clear of the bodies
    hold_source: str = "keypoints"     # the bodies from PATA's keypoints (pose_keypoint connected) or "pose images"

    @property
    def frames(self) -> int:
        """Frames made from a sequence with at least ``pose_frames`` poses: source + transitions + targets."""
        return 1 + self.transition_frames + self.pose_frames

    def summary(self) -> str:
        """The settings in words, as the README, docs/workflows.md, the workflow notes and bench_scale state them
        (tests/test_docs_recipes.py checks that the docs carry exactly this text)."""
        def optimisation(n: int) -> str:
            return f"{n} inner iterations" if n else "no embedding optimisation"

        frames = (SCHEDULES[self.schedule].summary.format(n=self.inner_steps) if self.inner_steps else
                  optimisation(0))
        if self.inner_steps and self.keyframe_interval > 1:
            k = self.keyframe_interval
            nth = f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"
            frames += f" on every {nth} frame (the frames between interpolated)"
        text = (f"{self.frames} frames ({self.pose_frames} poses + {self.transition_frames} transition frames + the "
                f"source), {self.size}x{self.size}, {self.steps} DDIM steps, CFG {self.cfg}, inversion: "
                f"{optimisation(self.inversion_inner_steps)}, frames: {frames}")
        if self.inner_steps and self.warm_start:
            text += ", each frame starting from the previous frame's embeddings (warm start)"
        if not self.inversion_inner_steps and not self.inner_steps and self.uncond_pose == "target":
            text += (" (negative-prompt inversion: the prompt fills the unconditional slot, so without a ControlNet "
                     "on the prompt CFG has no effect and each frame is evaluated once per step)")
        elif not self.inversion_inner_steps and not self.inner_steps:
            text += (" (negative-prompt inversion: the prompt fills the unconditional slot)")
        if self.hold_background:
            text += ", the background held from the source outside the bodies"
        if self.uncond_pose == "source":
            text += (", unconditional rows under the source's pose (CFG pushes each frame from the source's pose "
                     "towards its own)")
        return text + f", DCA {self.weights[0]} / {self.weights[1]} / {self.weights[2]}"

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


FULL = Recipe()
# The fast preset, chosen on the StickWorld speed frontier over five case seeds (docs/stickworld/speed_frontier.json:
# 20240, 7, 11, 2026 and 3, 4 cases each) by frontier.choose_fast_seeds: the cheapest row that keeps guidance and stays
# within 20 % of the paper setting's model evaluations with identity and background within +5 % (pose IoU and
# temporal change no more than 5 % worse) on every seed. Algorithm 1 (one gradient step per step) at 15 steps on
# every 2nd frame (keyframes; the others' embeddings interpolated), 2 inversion iterations, the background held from
# the source outside the bodies: 11.1 % of the evaluations. It is also every default of the PACM nodes
# (NODE_DEFAULTS); the full workflow sets the paper's values explicitly.
FAST = FULL.replace(schedule="algorithm 1", inner_steps=1, steps=15, inversion_inner_steps=2, keyframe_interval=2,
                    hold_background=True)
# SDXL-family checkpoints (SDXL base, Illustrious, Pony, NoobAI) with an SDXL OpenPose ControlNet: the paper's
# settings at SDXL's native 1024x1024 (a 128x128 latent: 4096 tokens at the largest DCA layers, as SD1.5 at 512).
# DCA on every decoder attention block, which on SDXL is output blocks 0-5, every layer (0-2: 10 layers, 3-5: 2);
# which blocks and layers are best on SDXL is unmeasured (no SDXL weights here), as is image quality.
FULL_SDXL = FULL.replace(size=1024)
NODE_DEFAULTS = FAST
