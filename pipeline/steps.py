"""The PoseAnimate recipe as small named steps, shared by the ComfyUI nodes and the StickWorld benchmark.

    check_subject / check_pose_canvas   input checks that must pass before any model work
    sample_poses, align_poses           PATA: the target poses fitted to the source, transitions inserted
    invert                              PACM stages 1 + 2: DDIM inversion, pose-aware inversion
    optimise                            PACM stage 3: per-frame pose-aware embeddings
    capture_attention                   a sampling pass that records the subject's cross-attention
    build_masks, check_masks            MGDM's character masks: attention map + body prior, one validation rule
    make_dca, patch_model               DCAM / MGDM attention patches on a clone of the model
    sample                              PACM stage 4: every frame, in windows

Each step takes the host's objects through the contracts of :mod:`pipeline.contract` (a ``Denoiser`` for
model evaluations, a ``PatchableModel`` to install patches on), so the same code runs on ComfyUI's MODEL and on
the test / StickWorld UNet. Errors follow :mod:`pipeline.errors`.
"""
from __future__ import annotations

from typing import Callable

import inspect
import math

import numpy as np
import torch
import torch.nn.functional as F

from ._layers import attention, pacm, pata
from .contract import MGDM_MODES, Denoiser, PatchableModel, checked
from .defaults import FULL, NODE_DEFAULTS
from .errors import argument_error

Callback = Callable[[str, int, int], None]

# Optimisation schedules of Pose Embedding Optimize: name -> pacm.optimize_pose_embeddings keyword arguments.
# "inner iterations": up to inner_steps Adam iterations per step (the paper's hyper-parameter text, 5);
# "algorithm 1": the paper's Algorithm 1 as written, one gradient step per step, sampling with the pre-update
# embedding.
SCHEDULES: dict[str, dict] = {
    "inner iterations": {"mode": "inner"},
    "algorithm 1": {"mode": "alg1"},
}


# ------------------------------------------------------------------------------------------------ input checks
def check_subject(tokenizer, prompt: str, subject) -> list[int]:
    """Token positions of the subject word(s) in the prompt, or a clear error naming ``subject`` (or ``prompt``).

    ``subject``: comma-separated words or a list. Run it before any model work: a word that is not in the prompt
    would otherwise surface only at mask extraction."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise argument_error("prompt", "is empty", "give the positive prompt used for the inversion")
    words = [w.strip() for w in (subject.split(",") if isinstance(subject, str) else list(subject or []))
             if isinstance(w, str) and w.strip()]
    if not words:
        raise argument_error("subject", "is empty", "name the character as it appears in the prompt, e.g. 'knight'")
    if tokenizer is None:
        raise argument_error("tokenizer", "is missing", "give the text encoder's tokenizer (the checkpoint's CLIP)")
    try:
        positions = attention.find_token_positions(tokenizer, prompt, words)
    except ValueError as exc:
        argument, _, problem = str(exc).partition(": ")
        if argument not in ("words", "prompt"):
            raise
        raise argument_error("subject" if argument == "words" else "prompt", problem.split(". Fix: ")[0],
                             f"use words that appear in the prompt {prompt.strip()!r}") from None
    if not positions:
        raise argument_error("subject", f"none of {words} appears in the prompt",
                             f"use a word of the prompt {prompt.strip()!r} that names the character")
    return positions


def check_pose_canvas(image_hw, pose_hw, argument: str = "source_pose", tolerance: float = 0.01) -> None:
    """Pose images are resized to the image by the ControlNet: fine for the same aspect ratio, a silent shift and
    stretch otherwise. Refuse pose images whose aspect ratio differs from the image's."""
    ih, iw = (int(v) for v in image_hw)
    ph, pw = (int(v) for v in pose_hw)
    if abs(iw / ih - pw / ph) > tolerance * (iw / ih):
        raise argument_error(argument, f"the pose images are {pw}x{ph} but the source image is {iw}x{ih} (another "
                             "aspect ratio), so the poses would be stretched against the image",
                             f"set PATA Align's width and height to {iw} and {ih} (or use a pose canvas with the "
                             "image's aspect ratio)")


# ------------------------------------------------------------------------------------------------ PATA
def sample_poses(sequence: np.ndarray, frames: int) -> np.ndarray:
    """``frames`` poses taken evenly from a sequence (first and last included); 0 or more than there are: all."""
    seq = np.asarray(sequence)
    if not isinstance(frames, (int, np.integer)) or frames < 0:
        raise argument_error("frames", f"expected 0 (all) or a positive number of poses, got {frames!r}",
                             "set 0 to keep every pose")
    if frames == 0 or frames >= len(seq):
        return seq
    idx = np.linspace(0, len(seq) - 1, int(frames)).round().astype(int)
    return seq[idx]


def align_poses(source, targets, *, transition_frames: int, mode: str = "similarity", repair: bool = True,
                source_parts: dict | None = None, target_parts: dict | None = None):
    """PATA: ``(1 + transition_frames + M, 18, 3)`` poses (frame 0 the source), and the hand/face parts when
    given. Returns ``(body, parts)``; ``parts`` is None without parts."""
    if not isinstance(transition_frames, (int, np.integer)) or transition_frames < 0:
        raise argument_error("transition_frames", f"must be 0 or more, got {transition_frames!r}",
                             "set 0 for no transition")
    if source_parts is None and target_parts is None:
        return pata.build_sequence(source, targets, int(transition_frames), mode, bool(repair)), None
    return pata.build_sequence_with_parts(source, targets, int(transition_frames), mode, bool(repair),
                                          source_parts=source_parts, target_parts=target_parts)


# ------------------------------------------------------------------------------------------------ PACM
def check_schedule(inner_steps: int, **settings) -> None:
    """Refuse a setting that would silently do nothing: with ``inner_steps`` 0 (no embedding optimisation) every
    optimisation setting (``schedule``, ``optimize_steps``, ``warm_start``, ``adaptive``, ``early_stop``) must
    keep a default (:data:`pipeline.FULL`'s or the nodes' own, :data:`pipeline.NODE_DEFAULTS`); with ``schedule``
    "algorithm 1" (one gradient step per step) ``inner_steps`` is 1."""
    if settings.get("schedule") == "algorithm 1" and int(inner_steps) > 1:
        raise argument_error("inner_steps", f"{int(inner_steps)} has no effect with schedule 'algorithm 1' (one gradient "
                             "step per step)", "set inner_steps to 1, or schedule to 'inner iterations'")
    if int(inner_steps) != 0:
        return
    for name, value in settings.items():
        defaults = [getattr(FULL, name), getattr(NODE_DEFAULTS, name)]  # the full workflow's, the nodes' own
        if not any(value == d or (isinstance(d, float) and math.isclose(float(value), d, rel_tol=1e-6))
                   for d in defaults):
            raise argument_error(name, f"{value!r} has no effect with inner_steps 0 (no embedding optimisation)",
                                 f"set inner_steps to 1 or more, or {name} back to {defaults[-1]!r}")


def invert(model: Denoiser, latent: torch.Tensor, cond: torch.Tensor, hint: torch.Tensor | None, *, steps: int,
           cfg: float, inner_steps: int, early_stop: float = 1e-5, callback: Callback | None = None,
           **engine) -> pacm.InversionResult:
    """PACM stages 1 + 2: DDIM inversion of the source under its pose, then pose-aware inversion. ``engine``
    passes further keyword arguments to both engine calls (e.g. ``counts``)."""
    _check_engine(engine, pacm.ddim_invert, pacm.pose_aware_inversion)
    check_schedule(inner_steps, early_stop=early_stop)
    model = checked(model)
    inv = pacm.ddim_invert(model, latent, cond, hint, steps=int(steps), callback=callback,
                           **_only(engine, pacm.ddim_invert))
    return pacm.pose_aware_inversion(model, inv, cfg=float(cfg), inner_steps=int(inner_steps),
                                     early_stop=float(early_stop), callback=callback,
                                     **_only(engine, pacm.pose_aware_inversion))


def optimise(model: Denoiser, inversion: pacm.InversionResult, hints: torch.Tensor | None, *, inner_steps: int,
             schedule: str = "inner iterations", optimize_steps: int = 0, warm_start: bool = False,
             adaptive: float = 0.0, keyframe_interval: int = 1, batch_size: int | None = None,
             callback: Callback | None = None, **engine) -> pacm.PoseEmbeddings:
    """PACM stage 3: per-frame pose-aware embeddings for the target poses ``hints`` (frames 1..N), with the named
    optimisation ``schedule`` (:data:`SCHEDULES`); ``optimize_steps`` > 0 optimises only the first (noisiest)
    steps and reuses the last embedding after; ``warm_start`` starts each frame from the previous frame's
    embeddings; ``adaptive`` > 0 stops a frame's iterations once one lowers its loss by less than that fraction;
    ``keyframe_interval`` k > 1 optimises every k-th frame (and the last) and interpolates the others' embeddings."""
    if schedule not in SCHEDULES:
        raise argument_error("schedule", f"unknown schedule {schedule!r}", f"choose one of {', '.join(SCHEDULES)}")
    check_schedule(inner_steps, schedule=schedule, optimize_steps=optimize_steps, warm_start=warm_start,
                   adaptive=adaptive, keyframe_interval=keyframe_interval)
    kwargs = dict(SCHEDULES[schedule])
    kwargs.update(optimize_steps=int(optimize_steps) or None, warm_start=bool(warm_start),
                  adaptive=float(adaptive) or None, keyframe_interval=int(keyframe_interval))
    kwargs.update(engine)
    return pacm.optimize_pose_embeddings(
        checked(model), inversion, hints, inner_steps=int(inner_steps), lr=float(inversion.settings.get("lr", 1e-2)),
        early_stop=float(inversion.settings.get("early_stop", 1e-5)), batch_size=batch_size, callback=callback,
        **kwargs)


UNCOND_POSES = pacm.UNCOND_POSES


def check_uncond_pose(uncond_pose: str, cfg: float, hinted: bool) -> None:
    """``uncond_pose`` (:data:`UNCOND_POSES`) must be known and, when "source", do something: it changes the
    unconditional rows' pose, so it needs pose hints and cfg above 1."""
    if uncond_pose not in UNCOND_POSES:
        raise argument_error("uncond_pose", f"unknown value {uncond_pose!r}", f"choose one of {', '.join(UNCOND_POSES)}")
    if uncond_pose == "source" and not hinted:
        raise argument_error("uncond_pose", "'source' has no effect without a pose ControlNet",
                             "connect the OpenPose ControlNet, or set uncond_pose to 'target'")
    if uncond_pose == "source" and float(cfg) == 1.0:
        raise argument_error("uncond_pose", "'source' has no effect at cfg 1 (no unconditional rows are evaluated)",
                             "raise cfg in Pose-Aware Inversion above 1, or set uncond_pose to 'target'")


def sample(model: Denoiser, inversion: pacm.InversionResult, embeddings: pacm.PoseEmbeddings | None, *,
           masks: torch.Tensor | None = None, window: int | None = None, uncond_pose: str = "target",
           hold_masks: torch.Tensor | None = None, callback: Callback | None = None, **engine) -> torch.Tensor:
    """PACM stage 4: frames 0..N from Z_T (``(N + 1, C, h, w)`` latents), ``window`` frames per model call.
    ``masks`` (``(N + 1, H, W)``, checked by :func:`check_masks`) override the DCA patch's own; ``uncond_pose``
    is the pose of the unconditional rows (the engine refuses it where it would do nothing; the nodes check it
    first with :func:`check_uncond_pose`); ``hold_masks`` (:func:`hold_masks`) holds each frame's background to the
    source's inversion trajectory outside them."""
    if masks is not None:
        hints = engine.get("hints")
        targets = embeddings.frames if embeddings is not None else 0 if hints is None else int(hints.shape[0])
        masks = check_masks(masks, 1 + targets)
    return pacm.sample_frames(checked(model), inversion, embeddings, window=window, masks=masks,
                              uncond_pose=uncond_pose, hold_masks=hold_masks, callback=callback, **engine)


class _CaptureDone(Exception):
    """Raised from the sampling callback once the requested steps are captured."""


def capture_attention(model: PatchableModel, make_denoiser: Callable[[PatchableModel], Denoiser],
                      inversion: pacm.InversionResult, embeddings: pacm.PoseEmbeddings, positions: list[int], *,
                      factors=None, window: int | None = None, capture_steps: int = 0,
                      callback: Callback | None = None, attention_fn=None, **engine) -> torch.Tensor:
    """Sample the frames once with a cross-attention capture patch on a clone of ``model`` (its self-attention
    as it is: plain on an unpatched model) and return the subject tokens' mean maps ``(N + 1, h, w)``.

    ``make_denoiser(patched)`` gives the Denoiser over the patched clone; ``capture_steps`` > 0 stops after that
    many of the inversion's steps (the character's layout is set early); ``factors``: the layer grids to read
    (e.g. (4, 2) for SD1.5, None = every resolution); ``attention_fn``: the host's attention function."""
    frames = embeddings.frames + 1
    store = attention.AttentionMapStore()
    patch = attention.CrossAttentionCapture(positions, store=store, factors=factors, attention=attention_fn)
    patched, _ = patch_model(model, capture=patch)
    den = checked(make_denoiser(patched))
    steps = inversion.steps
    captured = min(int(capture_steps), steps) if int(capture_steps) > 0 else steps
    w = frames if window is None else int(window)
    windows = -(-frames // w)

    def stop_early(stage, done, total):
        if callback is not None:
            callback(stage, min(done, captured * windows), captured * windows)
        if done >= captured * windows and captured < steps:
            raise _CaptureDone

    try:
        pacm.sample_frames(den, inversion, embeddings, window=w, callback=stop_early, **engine)
    except _CaptureDone:
        pass
    recorded = store.frames()
    if recorded[:frames] != list(range(frames)):
        raise argument_error("model", f"the subject's attention was captured for frames {recorded} of 0..{frames - 1}"
                             "; the model's cross-attention layers were not reached",
                             "connect an SD1.5 MODEL whose cross-attention is not replaced by another patch")
    return store.maps(range(frames)).float().cpu()


# ------------------------------------------------------------------------------------------------ masks
def check_masks(masks, frames: int, argument: str = "masks") -> torch.Tensor:
    """The one mask rule: ``(frames, H, W)`` (a single ``(H, W)`` mask counts as one frame), finite, in [0, 1];
    returns float32. Used wherever masks enter the recipe."""
    masks = attention.check_image_masks(masks, argument)
    if masks.shape[0] != frames:
        raise argument_error(argument, f"got {masks.shape[0]} masks for {frames} frames (the source plus "
                             f"{frames - 1} target poses)",
                             "use the mask batch made from these embeddings (one mask per frame, source first)")
    return masks


def body_prior(poses: np.ndarray, size) -> torch.Tensor:
    """:func:`pata.body_prior` of the frames' poses at ``size`` = (H, W), as a tensor ``(F, H, W)``."""
    h, w = (int(v) for v in size)
    return torch.from_numpy(pata.body_prior(poses, w, h))


def hold_masks(poses: np.ndarray, image_size, latent_size, *, dilate: int = 1) -> torch.Tensor:
    """Where each frame is generated when its background is held from the source (:func:`sample`): the union of
    the source's and the frame's :func:`body_prior` (PATA's skeleton body), reduced to ``latent_size`` = (h, w) by
    max-pooling (a latent pixel any part of the body touches), grown by ``dilate`` latent pixels. ``(F, h, w)`` in
    {0, 1}; frame 0 (the source) is all ones."""
    prior = body_prior(poses, image_size)
    union = torch.maximum(prior, prior[:1])
    h, w = (int(v) for v in latent_size)
    out = F.adaptive_max_pool2d(union[:, None], (h, w))
    if int(dilate) > 0:
        d = int(dilate)
        out = F.max_pool2d(out, 2 * d + 1, stride=1, padding=d)
    out = out[:, 0]
    out[0] = 1.0
    return out


def build_masks(maps: torch.Tensor, *, size, threshold: float = 0.0, dilate: int = 1, latent_size=None,
                prior: torch.Tensor | None = None, source_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Character masks ``(F, H, W)`` in {0, 1} at image ``size`` from cross-attention maps ``(F, h, w)``.

    Per frame: the map thresholded (``threshold`` 0 = Otsu) and cleaned at ``latent_size`` (default the maps'
    size), grown by ``dilate`` pixels there, resized to ``size``; united with ``prior`` (``(F, H, W)``, e.g. the
    skeleton's :func:`body_prior`) when given — the attention map finds what the character wears beyond the
    skeleton, the prior the thin limbs low-resolution attention misses. ``source_mask`` (``(H', W')``, any
    size) replaces frame 0's mask when it is not empty."""
    h, w = (int(v) for v in size)
    masks = attention.masks_from_attention_maps(maps, threshold="otsu" if threshold <= 0 else float(threshold),
                                                size=latent_size, dilate=int(dilate))
    masks = F.interpolate(masks[:, None].float(), size=(h, w), mode="nearest")[:, 0]
    if prior is not None:
        prior = check_masks(prior, masks.shape[0], "prior")
        if tuple(prior.shape[-2:]) != (h, w):
            prior = F.interpolate(prior[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        masks = torch.maximum(masks, (prior >= 0.5).float())
    if source_mask is not None:
        if isinstance(source_mask, torch.Tensor) and source_mask.ndim == 3:
            source_mask = source_mask[:1]  # a MASK batch: the first is the source image's
        src = check_masks(source_mask, 1, "source_mask")[0]
        src = F.interpolate(src[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        if bool((src >= 0.5).any()) and not bool((src >= 0.5).all()):
            masks[0] = (src >= 0.5).float()
    return check_masks(masks, masks.shape[0])


# ------------------------------------------------------------------------------------------------ attention patches
def make_dca(weights=(0.7, 0.15, 0.15), masks: torch.Tensor | None = None, blocks=None, mgdm: str = "exclude",
             attention_fn=None) -> attention.DCAPatch:
    """The DCAM (+ MGDM with ``masks``) self-attention patch. ``weights`` are normalised to sum 1;
    ``attention_fn``: the host's attention function (ComfyUI's ``optimized_attention``), default torch SDPA."""
    raw = tuple(float(x) for x in weights)
    if len(raw) != 3 or min(raw) < 0 or sum(raw) <= 0:
        raise argument_error("weights", f"the weights {raw} must be three values >= 0 with a positive sum",
                             "set at least one weight above 0 (the paper uses 0.7, 0.15, 0.15)")
    if mgdm not in MGDM_MODES:
        raise argument_error("mgdm", f"unknown formulation {mgdm!r}", f"choose one of {', '.join(MGDM_MODES)}")
    return attention.DCAPatch(weights=tuple(x / sum(raw) for x in raw), masks=masks, blocks=blocks, mgdm=mgdm,
                              attention=attention_fn)


def patch_model(model: PatchableModel, *, dca: attention.DCAPatch | None = None, capture=None):
    """A clone of ``model`` with ``dca`` as self-attention and ``capture`` as cross-attention patch on every block
    with attention their ``blocks`` select. Returns ``(clone, installed)``; refuses a model with no such block."""
    patched = model.clone()
    installed = attention.install_patches(patched, dca=dca, capture=capture)
    if not installed:
        raise argument_error("model", "has no attention blocks the patches select", "connect an SD1.5 MODEL")
    return patched, installed


def _only(kwargs: dict, fn) -> dict:
    """The keyword arguments ``fn`` accepts (engine extras such as ``counts`` go to every stage that takes them)."""
    names = inspect.signature(fn).parameters
    return {k: v for k, v in kwargs.items() if k in names}


def _check_engine(kwargs: dict, *fns) -> None:
    """Refuse keyword arguments that none of the engine calls takes (a misspelt one would vanish)."""
    known = set().union(*(inspect.signature(fn).parameters for fn in fns))
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"unknown engine arguments {unknown}; {', '.join(f.__name__ for f in fns)} take {sorted(known)}")
