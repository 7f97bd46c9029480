"""The StickWorld benchmark: held-out characters x backgrounds x bundled pose sequences, animated by the
PoseAnimate engine (the same ``pata`` / ``pacm`` / ``attention`` code the nodes run) and by its ablations.

Variants (``VARIANTS``):

* ``full``: PATA (align, retarget, transition frames) -> DDIM inversion of the source under its pose ->
  pose-aware inversion -> batched pose-aware embedding optimisation -> a capture pass (DCAM without masks,
  cross-attention maps of the subject's tokens) -> character masks (the source's true mask as the user mask)
  -> sampling with DCAM + MGDM.
* ``no_pacm``: plain DDIM inversion, no embedding optimisation: sampling with CFG against the empty prompt.
* ``no_dcam``: plain self-attention while sampling (so no MGDM either).
* ``no_mgdm``: DCAM without masks (the capture pass's frames).
* ``no_pata``: the target poses as they come (scaled to the canvas, not aligned, not retargeted), no transition.
* ``baseline``: a plain pose-ControlNet: every frame sampled from one shared noise with the prompt and CFG
  against the empty prompt; no inversion, no attention fusion.
* ``true_masks``: a diagnostic, not an ablation: ``full`` with MGDM given the world's true character masks
  instead of the cross-attention ones, which separates MGDM itself from the quality of its masks.
"""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import torch

import pacm
from attention import AttentionMapStore, CrossAttentionCapture, DCAPatch, find_token_positions
from attention import masks_from_attention_maps
from pata import build_sequence, from_pose_keypoint, load_pose_json
from pata.figure import body3d, project

from .metrics import score_sequence
from .model import StickWorldModel, images_to_latents, latents_to_images
from .world import SIZE, Background, Character, draw_character, pose_hint, prompt_for
from .world import random_angles, sample_scene

ROOT = pathlib.Path(__file__).resolve().parents[1]
POSES = ROOT / "assets" / "poses"
SEQUENCES = ("wave", "walk", "dance", "turn")
VARIANTS = ("full", "no_pacm", "no_dcam", "no_mgdm", "no_pata", "baseline", "true_masks")
BENCH_SEED = 20240   # held-out scenes come from this seed's streams; training draws from --seed 0's stream
METRICS = {"pose_iou": "higher", "identity": "lower", "background": "lower", "temporal": "lower"}


@dataclasses.dataclass
class Settings:
    """Engine settings for a benchmark run (the paper's: 50 steps, 5 inner iterations, CFG 7.5)."""

    steps: int = 50
    inner_steps: int = 5
    cfg: float = 7.5
    lr: float = 1e-2
    transition: int = 3
    weights: tuple = (0.7, 0.15, 0.15)
    subject: tuple | None = None  # words whose cross-attention gives the masks; None: the character's own words
    mask_dilate: int = 1  # as Cross-Attention Mask Extract's default
    window: int | None = None


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
        """The prompt's words that describe the character: its pattern and colours."""
        return (self.character.pattern, self.character.shirt_name, self.character.trousers_name)

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
    idx = np.linspace(0, len(seq) - 1, frames).round().astype(int)
    out = seq[idx].copy()
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


def _output_blocks(model: StickWorldModel) -> list:
    return [b for b in model.unet.attention_blocks() if b[0] == "output"]


def _patched(model: StickWorldModel, dca=None, capture=None):
    """The model's denoiser with ``dca`` (one DCAPatch, or a list: each on the blocks it selects) as attn1 and
    ``capture`` as attn2 replace patches on every up block with attention."""
    den = model.denoiser()
    dcas = dca if isinstance(dca, (list, tuple)) else [dca] if dca is not None else []
    for block in _output_blocks(model):
        for patch in dcas:
            if patch.applies_to(block):
                den = den.with_patch("attn1", block, patch)
        if capture is not None:
            den = den.with_patch("attn2", block, capture)
    return den


class Run:
    """The engine's stages for one case and one pose sequence, each computed once and shared by variants."""

    def __init__(self, model: StickWorldModel, case: Case, poses: np.ndarray, settings: Settings):
        self.model, self.case, self.settings = model, case, settings
        self.poses = poses  # (1 + K, 18, 3): source first
        size = case.size
        self.source_image, self.source_mask = case.draw(case.source_pose)
        self.hints = _hints(poses, size)
        self.cond = model.encode(case.prompt)[0]
        self.empty = model.encode("")[0]
        self._inversion = self._pose_aware = self._embeddings = self._masks = self._capture = None
        self.maps = None

    def inversion(self):
        if self._inversion is None:
            den = self.model.denoiser()
            self._inversion = pacm.ddim_invert(den, images_to_latents(self.source_image[None])[0], self.cond, self.hints[0],
                                               steps=self.settings.steps)
        return self._inversion

    def pose_aware(self):
        if self._pose_aware is None:
            s = self.settings
            self._pose_aware = pacm.pose_aware_inversion(self.model.denoiser(), self.inversion(), cfg=s.cfg,
                                                         inner_steps=s.inner_steps, lr=s.lr)
        return self._pose_aware

    def embeddings(self):
        if self._embeddings is None:
            s = self.settings
            self._embeddings = pacm.optimize_pose_embeddings(self.model.denoiser(), self.pose_aware(), self.hints[1:],
                                                             inner_steps=s.inner_steps, lr=s.lr)
        return self._embeddings

    def sample(self, dca=None, capture=None, masks=None, inversion=None, embeddings=None, uncond=None):
        inv = self.pose_aware() if inversion is None else inversion
        emb = self.embeddings() if embeddings is None and inversion is None else embeddings
        x = pacm.sample_frames(_patched(self.model, dca, capture), inv, emb, hints=self.hints[1:], uncond=uncond,
                               cfg=self.settings.cfg, window=self.settings.window, masks=masks)
        return latents_to_images(x)

    def capture_pass(self) -> np.ndarray:
        """DCAM without masks, recording the subject tokens' cross-attention maps (once): the ``no_mgdm`` frames,
        and the masks for MGDM (the source's own mask as the user's source mask)."""
        if self._capture is not None:
            return self._capture
        s = self.settings
        positions = find_token_positions(self.model.tokenizer, self.case.prompt, list(s.subject or self.case.subject))
        store = AttentionMapStore()
        frames = self.sample(DCAPatch(weights=s.weights), CrossAttentionCapture(positions, store=store, factors=None))
        self.maps = store.maps(range(len(self.poses)))
        masks = masks_from_attention_maps(self.maps, size=(self.case.size, self.case.size), dilate=s.mask_dilate)
        masks[0] = torch.from_numpy(self.source_mask).float()  # the user's source mask
        self._masks = masks
        self._capture = frames
        return frames

    def masks(self) -> torch.Tensor:
        self.capture_pass()
        return self._masks


def _baseline(run: Run, seed: int) -> np.ndarray:
    """Plain pose ControlNet: one shared noise, prompt, CFG against the empty prompt, plain attention."""
    sig = pacm.ddim_uniform_sigmas(run.model.denoiser().sigmas, run.settings.steps)
    g = torch.Generator().manual_seed(seed)
    shape = (3, run.case.size, run.case.size)
    z_t = torch.randn(shape, generator=g) * float((1 + sig[0] ** 2) ** 0.5)
    traj = torch.zeros((len(sig),) + shape)  # ddim_uniform may give a step more or less than asked
    traj[-1] = z_t
    noise = pacm.InversionResult(sigmas=sig, trajectory=traj, cond=run.cond, hint=run.hints[0], cfg=1.0)
    return run.sample(inversion=noise, uncond=run.empty)


def run_case(model: StickWorldModel, case: Case, variants=VARIANTS, settings: Settings | None = None,
             seed: int = 0) -> dict:
    """Animate ``case`` with each variant. Returns ``{variant: {"frames": (F, H, W, 3) every generated frame
    (source first), "poses": (F, 18, 3), "targets": slice of the target frames}}`` plus ``"_runs"``."""
    settings = settings or Settings()
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"variants: unknown {unknown}; choose from {VARIANTS}")
    m = len(case.targets)
    aligned = build_sequence(case.source_pose, case.targets, settings.transition, mode="retarget")
    raw = np.concatenate([case.source_pose[None], case.targets])
    runs = {"pata": Run(model, case, aligned, settings)}
    if "no_pata" in variants:
        runs["raw"] = Run(model, case, raw, settings)
    out = {}
    torch.manual_seed(seed)
    for v in variants:
        run = runs["raw" if v == "no_pata" else "pata"]
        w = settings.weights
        if v in ("full", "no_pata"):
            frames = run.sample(DCAPatch(weights=w), masks=run.masks())
        elif v == "no_mgdm":
            frames = run.capture_pass()
        elif v == "no_dcam":
            frames = run.sample()
        elif v == "true_masks":
            truth = torch.from_numpy(case.body_masks(run.poses)).float()
            frames = run.sample(DCAPatch(weights=w), masks=truth)
        elif v == "no_pacm":
            frames = run.sample(DCAPatch(weights=w), masks=run.masks(), inversion=run.inversion(), uncond=run.empty)
        else:
            frames = _baseline(run, seed)
        out[v] = {"frames": frames, "poses": run.poses, "targets": slice(len(run.poses) - m, len(run.poses))}
    out["_runs"] = runs
    return out


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


def summarise(per_case: dict) -> dict:
    """Mean of each metric per variant over cases: ``{variant: {metric: mean}}``."""
    variants = {v for scores in per_case.values() for v in scores}
    out = {}
    for v in [v for v in VARIANTS if v in variants]:
        out[v] = {k: float(np.mean([s[v][k] for s in per_case.values() if v in s])) for k in METRICS}
    return out


def markdown_table(summary: dict) -> str:
    head = "| variant | pose IoU (higher) | identity distance (lower) | background error (lower) | temporal change (lower) |"
    lines = [head, "|---|---|---|---|---|"]
    for v, s in summary.items():
        lines.append(f"| {v} | {s['pose_iou']:.3f} | {s['identity']:.3f} | {s['background']:.4f} | "
                     f"{s['temporal']:.4f} |")
    return "\n".join(lines)
