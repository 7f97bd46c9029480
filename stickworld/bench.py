"""The StickWorld benchmark: held-out characters x backgrounds x bundled pose sequences, animated through the
pipeline steps the ComfyUI nodes run (``pipeline``), with the bundled ``full`` workflow's node settings
(``pipeline.FULL``), and by the paper's ablations.

Variants (``VARIANTS``); every one starts from the same case and, where it can, shares the stages computed for
``full`` (``Run`` computes each stage once):

* ``full``: the shipped path. PATA in the node's ``similarity`` mode with the recipe's transition frames ->
  ``pipeline.invert`` (DDIM + pose-aware inversion) -> ``pipeline.optimise`` -> DCAM through
  ``pipeline.make_dca`` + ``pipeline.patch_model`` -> ``pipeline.sample``; with MGDM when the recipe connects
  masks (``Recipe.use_masks``), made as ``with_mgdm`` below.
* ``no_pacm``: plain DDIM inversion, no embedding optimisation: sampling with CFG against the empty prompt.
* ``no_dcam``: plain self-attention while sampling (so no MGDM either).
* ``no_mgdm``: DCAM without masks.
* ``with_mgdm``: DCAM + MGDM as Cross-Attention Mask Extract makes the masks: ``pipeline.capture_attention`` on
  the unpatched model (plain self-attention while capturing) -> ``pipeline.build_masks`` (attention map united
  with the skeleton body prior; frame 0's mask from attention too, as for a photo without a user mask).
* ``no_pata``: the target poses as they come (scaled to the canvas, not aligned), no transition frames.
* ``baseline``: a plain pose-ControlNet: every frame sampled from one shared noise with the prompt and CFG
  against the empty prompt; no inversion, no attention fusion.
* ``mgdm_multiply``: ``with_mgdm`` with the paper's MGDM formulation (keys and values multiplied by the masks)
  instead of the exclusion the node uses by default.
* ``attention_masks``: ``with_mgdm`` with masks from cross-attention alone (no body prior): the mask method the pack
  shipped before.
* ``user_mask``: ``with_mgdm`` with the source's true mask as the user's MASK for frame 0 (the workflows' optional
  source mask).
* ``true_masks``: a diagnostic, not an ablation: ``with_mgdm`` given the world's true character masks,
  which separates MGDM itself from the quality of its masks.
"""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import torch

import pacm
import pipeline
from pata import from_pose_keypoint, load_pose_json
from pata.figure import body3d, project

from .metrics import score_sequence
from .model import StickWorldModel, images_to_latents, latents_to_images
from .world import SIZE, Background, Character, draw_character, pose_hint, prompt_for
from .world import random_angles, sample_scene

ROOT = pathlib.Path(__file__).resolve().parents[1]
POSES = ROOT / "assets" / "poses"
SEQUENCES = ("wave", "walk", "dance", "turn")
VARIANTS = ("full", "no_pacm", "no_dcam", "no_mgdm", "no_pata", "baseline", "with_mgdm", "mgdm_multiply",
            "attention_masks", "user_mask", "true_masks")
BENCH_SEED = 20240   # held-out scenes come from this seed's streams; training draws from --seed 0's stream
# The price of a forward+backward in forwards on StickWorld's model, measured (CPU time, same batch):
# `python benchmarks/bench_backward.py --repeats 5` gave 1.67-1.82 (docs/stickworld.md); every total uses it.
FORWARD_BACKWARD_COST = 1.8
METRICS = {"pose_iou": "higher", "identity": "lower", "background": "lower", "temporal": "lower"}


@dataclasses.dataclass
class Settings:
    """A benchmark run: the node settings it runs with (``recipe``, default the bundled ``full`` workflow's) and
    what the benchmark adds: how frame 0's mask is made for ``full`` (``source_mask``: "attention" as for a
    photo, "user" for the source's true mask as the user's MASK, "truth" for every frame's true mask), the
    subject words (None: the character's own words) and the window (None: all frames per call)."""

    recipe: pipeline.Recipe = pipeline.FULL
    source_mask: str = "attention"
    subject: tuple | None = None
    window: int | None = None

    def __post_init__(self):
        if self.source_mask not in pipeline.MASK_SOURCES:
            raise ValueError(f"source_mask: expected one of {pipeline.MASK_SOURCES}, got {self.source_mask!r}")

    def record(self) -> dict:
        """What the results JSON records: the recipe's node settings, the PATA mode, the mask source and the
        capture mode."""
        r = self.recipe
        return {"recipe": r.as_dict(), "pata_mode": r.pata_mode, "source_mask": self.source_mask,
                "capture": "plain self-attention (unpatched model), every step" if r.capture_steps == 0 else
                f"plain self-attention (unpatched model), first {r.capture_steps} steps",
                "masks": "cross-attention united with the skeleton body prior" if r.body_prior else "cross-attention",
                "mgdm": r.mgdm if r.use_masks else "off (no masks connected to DCA Patch Model)",
                "window": self.window}


@dataclasses.dataclass
class Case:
    """One held-out scene: a character over a background in a source pose, and a target pose sequence."""

    name: str
    character: Character
    background: Background
    source_pose: np.ndarray
    targets: np.ndarray  # (M, 18, 3) in canvas pixels, as they come (not aligned)
    size: int = SIZE

    @property
    def prompt(self) -> str:
        return prompt_for(self.character, self.background)

    @property
    def subject(self) -> tuple:
        """The prompt's words that describe the character: its pattern, colours and accessory."""
        return tuple(self.character.words())

    def background_image(self) -> np.ndarray:
        return self.background.draw(self.size)

    def draw(self, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return draw_character(self.character, pose, self.background_image())

    def body_masks(self, poses: np.ndarray) -> np.ndarray:
        """The character's true region (F, H, W) bool in each pose."""
        return np.stack([self.draw(p)[1] for p in poses])


def load_sequence(name: str, frames: int, size: int = SIZE) -> np.ndarray:
    """A bundled pose sequence, ``frames`` frames evenly sampled, scaled to a ``size`` square canvas by its
    height and centred (what a user's pose video looks like on this canvas before PATA)."""
    seq, width, height = from_pose_keypoint(load_pose_json(POSES / f"{name}.json"))
    out = pipeline.sample_poses(seq, frames).copy()  # as Load Pose Sequence's `frames` input
    s = size / height
    present = out[..., 2] > 0
    out[..., 0] = np.where(present, (out[..., 0] - width / 2) * s + size / 2, 0)
    out[..., 1] = np.where(present, out[..., 1] * s, 0)
    return out


def source_pose(rng: np.random.Generator, character: Character, size: int = SIZE) -> np.ndarray:
    """A relaxed standing pose, off-centre and at its own scale (so PATA has something to do)."""
    p, _ = random_angles(rng)
    for side in ("r", "l"):
        p[f"{side}_shoulder"] = (rng.uniform(5, 40), rng.uniform(-10, 10))
        p[f"{side}_elbow"] = (p[f"{side}_shoulder"][0] + rng.uniform(-5, 25), rng.uniform(0, 20))
        p[f"{side}_hip"] = (rng.uniform(2, 12), rng.uniform(-8, 8))
        p[f"{side}_knee"] = (p[f"{side}_hip"][0], rng.uniform(-8, 0))
    p.update(lean=rng.uniform(-4, 4), crouch=0.0)
    side = rng.choice([-1, 1])
    centre = (size / 2 + side * rng.uniform(0.06, 0.14) * size, 0.47 * size + rng.uniform(-0.04, 0.04) * size)
    return project(body3d(p, character.proportions), float(rng.uniform(-25, 25)), centre,
                   0.25 * size * rng.uniform(0.85, 1.0))


def make_case(index: int, sequence: str, frames: int = 8, seed: int = BENCH_SEED, size: int = SIZE,
              min_contrast: float = 0.4) -> Case:
    """Held-out case ``index``: its scene and source pose come from the stream ``(seed, index)``."""
    if sequence not in SEQUENCES:
        raise ValueError(f"sequence: expected one of {SEQUENCES}, got {sequence!r}")
    rng = np.random.default_rng([seed, index])
    character, background = sample_scene(rng, min_contrast)
    return Case(f"{index:02d}-{sequence}", character, background, source_pose(rng, character, size),
                load_sequence(sequence, frames, size), size)


def make_cases(n: int, frames: int = 8, seed: int = BENCH_SEED, sequences=SEQUENCES, size: int = SIZE) -> list[Case]:
    """``n`` held-out cases; case i uses sequence ``sequences[i % len(sequences)]``."""
    return [make_case(i, sequences[i % len(sequences)], frames, seed, size) for i in range(n)]


# ------------------------------------------------------------------------------------------------ running
def _hints(poses: np.ndarray, size: int) -> torch.Tensor:
    return torch.from_numpy(pose_hint(poses, size)).permute(0, 3, 1, 2).float()


class Run:
    """The pipeline's steps for one case, one pose sequence and one recipe, each computed once and shared by the
    variants. ``evals`` holds the model evaluations per stage, counted by the model (samples; a
    forward+backward counts once under ``forward_backward``)."""

    def __init__(self, model: StickWorldModel, case: Case, poses: np.ndarray, settings: Settings):
        self.model, self.case, self.settings = model, case, settings
        self.recipe = settings.recipe
        self.poses = poses  # (1 + K, 18, 3): source first
        self.source_image, self.source_mask = case.draw(case.source_pose)
        self.hints = _hints(poses, case.size)
        self.cond = model.encode(case.prompt)[0]
        self.empty = model.encode("")[0]
        self.base = model.denoiser()
        self.evals: dict = {}
        self._cache: dict = {}

    def _once(self, key, stage, make):
        """``make()`` the first time ``key`` is asked for, counting its evaluations under ``stage``."""
        if key not in self._cache:
            before = dict(self.base.evals)
            self._cache[key] = make()
            spent = {k: self.base.evals[k] - before[k] for k in before}
            total = self.evals.setdefault(stage, {"forward": 0, "forward_backward": 0})
            for k, v in spent.items():
                total[k] += v
        return self._cache[key]

    def positions(self) -> list:
        words = list(self.settings.subject or self.case.subject)
        return pipeline.check_subject(self.model.tokenizer, self.case.prompt, words)

    def inversion(self):
        """Stage 1 alone (the ``no_pacm`` ablation's inversion)."""
        return self._once("ddim", "ddim_only", lambda: pacm.ddim_invert(
            self.base, images_to_latents(self.source_image[None])[0], self.cond, self.hints[0],
            steps=self.recipe.steps))

    def _window(self) -> int:
        return self.settings.window or len(self.poses)

    def pose_aware(self):
        r = self.recipe
        return self._once("invert", "invert", lambda: pipeline.invert(
            self.base, images_to_latents(self.source_image[None])[0], self.cond, self.hints[0],
            control=pipeline.ControlSettings(), steps=r.steps, cfg=r.cfg, inner_steps=r.inversion_inner_steps,
            early_stop=r.early_stop))

    def embeddings(self):
        r, inv = self.recipe, self.pose_aware()
        n = len(self.hints) - 1
        return self._once("optimise", "optimise", lambda: pipeline.optimise(
            self.base, inv, self.hints[1:], inner_steps=r.inner_steps, schedule=r.schedule,
            optimize_steps=r.optimize_steps, warm_start=r.warm_start, adaptive=r.adaptive,
            keyframe_interval=r.keyframe_interval, frames_per_batch=0 if r.warm_start else min(n, 8)))

    def maps(self) -> torch.Tensor:
        r, inv, emb, positions = self.recipe, self.pose_aware(), self.embeddings(), self.positions()
        return self._once("capture", "capture", lambda: pipeline.capture_attention(
            self.base, lambda patched: patched, inv, emb, positions, factors=None, window_size=self._window(),
            capture_steps=r.capture_steps))

    def masks(self, prior: bool | None = None, source: str | None = None) -> torch.Tensor:
        """MGDM's masks as Cross-Attention Mask Extract makes them (``prior``/``source`` override the settings)."""
        r = self.recipe
        prior = r.body_prior if prior is None else prior
        source = self.settings.source_mask if source is None else source
        size = (self.case.size, self.case.size)
        if source == "truth":
            return torch.from_numpy(self.case.body_masks(self.poses)).float()
        user = torch.from_numpy(self.source_mask).float() if source == "user" else None
        return pipeline.build_masks(self.maps(), size=size, threshold=r.threshold, dilate=r.dilate,
                                    prior=pipeline.body_prior(self.poses, size) if prior else None,
                                    source_mask=user)

    def sample(self, dca=None, masks=None, inversion=None, embeddings=None, uncond=None, stage="sample"):
        """Frames (F, H, W, 3) sampled through a clone of the model patched with the DCA patch ``dca()`` makes
        (None: plain attention); computed once per ``stage`` name, whose evaluations are counted
        under it. Masks are made by the caller, outside the stage."""
        inv = self.pose_aware() if inversion is None else inversion
        emb = self.embeddings() if embeddings is None and inversion is None else embeddings

        def make():
            patch = None if dca is None else dca()
            den = self.base if patch is None else pipeline.patch_model(self.base, dca=patch)[0]
            return pipeline.sample(den, inv, emb, masks=masks, window_size=self._window(), hints=self.hints[1:],
                                   uncond=uncond, cfg=self.recipe.cfg, uncond_pose=self.recipe.uncond_pose,
                                   hold_masks=self.hold_masks(inv))

        return latents_to_images(self._once(("sample", stage), stage, make))

    def hold_masks(self, inversion):
        """Sample Frames' background hold for this recipe (None when off): the bodies of the source and each frame
        from PATA's skeleton prior, at the latent's size."""
        r = self.recipe
        if not r.hold_background:
            return None
        latent = inversion.trajectory.shape[-2:]
        if r.hold_source == "pose images":  # Sample Frames without pose_keypoint: the embeddings' pose images
            return pipeline.hold_masks_from_images(self.hints, latent, dilate=r.hold_dilate)
        return pipeline.hold_masks(self.poses, (self.case.size, self.case.size), latent, dilate=r.hold_dilate)

    def full(self) -> np.ndarray:
        """The shipped path's frames: DCAM, with MGDM and the recipe's masks when the recipe connects them."""
        return self.with_mgdm() if self.recipe.use_masks else self.without_mgdm()

    def with_mgdm(self) -> np.ndarray:
        masks = self.masks()
        return self.sample(lambda: self.dca(masks), stage="sample" if self.recipe.use_masks else "with_mgdm")

    def without_mgdm(self) -> np.ndarray:
        return self.sample(self.dca, stage="sample" if not self.recipe.use_masks else "no_mgdm")

    def dca(self, masks=None, mgdm=None):
        r = self.recipe
        return pipeline.make_dca(r.weights, masks=masks, mgdm=mgdm or r.mgdm)


def _baseline(run: Run, seed: int) -> np.ndarray:
    """Plain pose ControlNet: one shared noise, prompt, CFG against the empty prompt, plain attention."""
    sig = pacm.ddim_uniform_sigmas(run.base.sigmas, run.recipe.steps)
    g = torch.Generator().manual_seed(seed)
    shape = (3, run.case.size, run.case.size)
    z_t = torch.randn(shape, generator=g) * float((1 + sig[0] ** 2) ** 0.5)
    traj = torch.zeros((len(sig),) + shape)  # ddim_uniform may give a step more or less than asked
    traj[-1] = z_t
    noise = pacm.InversionResult(sigmas=sig, trajectory=traj, cond=run.cond, hint=run.hints[0], cfg=1.0)
    return run.sample(inversion=noise, uncond=run.empty, stage="baseline")


def aligned_poses(case: Case, recipe: pipeline.Recipe) -> np.ndarray:
    """PATA as PATA Align runs it with the recipe's mode, repair and transition frames."""
    return pipeline.align_poses(case.source_pose, case.targets, transition_frames=recipe.transition_frames,
                                mode=recipe.pata_mode, repair=recipe.repair)[0]


MASK_VARIANTS = {  # variant -> the masks its MGDM gets
    "mgdm_multiply": lambda run: run.masks(),
    "attention_masks": lambda run: run.masks(prior=False),
    "user_mask": lambda run: run.masks(source="user"),
    "true_masks": lambda run: run.masks(source="truth"),
}


def run_case(model: StickWorldModel, case: Case, variants=VARIANTS, settings: Settings | None = None,
             seed: int = 0) -> dict:
    """Animate ``case`` with each variant. Returns ``{variant: {"frames": (F, H, W, 3) every generated frame
    (source first), "poses": (F, 18, 3), "targets": slice of the target frames}}`` plus ``"_runs"``."""
    settings = settings or Settings()
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"variants: unknown {unknown}; choose from {VARIANTS}")
    m = len(case.targets)
    raw = np.concatenate([case.source_pose[None], case.targets])
    runs = {"pata": Run(model, case, aligned_poses(case, settings.recipe), settings)}
    if "no_pata" in variants:
        runs["raw"] = Run(model, case, raw, settings)
    runs["pata"].positions()  # the subject check, before any model work (as the nodes do)
    out = {}
    torch.manual_seed(seed)
    for v in variants:
        run = runs["raw" if v == "no_pata" else "pata"]
        if v in ("full", "no_pata"):
            frames = run.full()
        elif v == "with_mgdm":
            frames = run.with_mgdm()
        elif v == "no_mgdm":
            frames = run.without_mgdm()
        elif v == "no_dcam":
            frames = run.sample(stage="no_dcam")
        elif v in MASK_VARIANTS:
            masks, mgdm = MASK_VARIANTS[v](run), "multiply" if v == "mgdm_multiply" else None
            frames = run.sample(lambda: run.dca(masks, mgdm), stage=v)
        elif v == "no_pacm":
            masks = run.masks() if run.recipe.use_masks else None
            frames = run.sample(lambda: run.dca(masks), inversion=run.inversion(), uncond=run.empty, stage=v)
        else:
            frames = _baseline(run, seed)
        out[v] = {"frames": frames, "poses": run.poses, "targets": slice(len(run.poses) - m, len(run.poses))}
    out["_runs"] = runs
    return out


def shipped_evals(run: Run) -> dict:
    """Model evaluations of the shipped path (``full``) for one case: inversion, optimisation, the capture pass
    (when the recipe uses masks), sampling."""
    total = {"forward": 0, "forward_backward": 0}
    stages = ("invert", "optimise", "capture", "sample") if run.recipe.use_masks else ("invert", "optimise", "sample")
    for stage in stages:
        for k, v in run.evals.get(stage, {}).items():
            total[k] += v
    total["equivalents"] = pacm.EvalCount(**total).equivalents_at(FORWARD_BACKWARD_COST)
    return total


def score_case(case: Case, result: dict) -> dict:
    """Metrics per variant over the target frames (transition frames and the source are not scored)."""
    src_img, src_mask = case.draw(case.source_pose)
    bg = case.background_image()
    palette = case.character.palette()
    scores = {}
    for v, r in result.items():
        if v.startswith("_"):
            continue
        sl = r["targets"]
        masks = case.body_masks(r["poses"][sl])
        scores[v] = score_sequence(r["frames"][sl], masks, palette, bg, src_img, src_mask)
    return scores


def summarise(per_case: dict, cases=None) -> dict:
    """Mean of each metric per variant over cases (all, or the names in ``cases``): ``{variant: {metric: mean}}``."""
    chosen = {k: v for k, v in per_case.items() if cases is None or k in cases}
    variants = {v for scores in chosen.values() for v in scores}
    out = {}
    for v in [v for v in VARIANTS if v in variants] + sorted(variants - set(VARIANTS)):
        out[v] = {k: float(np.mean([s[v][k] for s in chosen.values() if v in s])) for k in METRICS}
    return out


def markdown_table(summary: dict) -> str:
    head = "| variant | pose IoU (higher) | identity distance (lower) | background error (lower) | temporal change (lower) |"
    lines = [head, "|---|---|---|---|---|"]
    for v, s in summary.items():
        lines.append(f"| {v} | {s['pose_iou']:.3f} | {s['identity']:.3f} | {s['background']:.4f} | "
                     f"{s['temporal']:.4f} |")
    return "\n".join(lines)
