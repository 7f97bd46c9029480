"""The PoseAnimate recipe's small named steps around the PACM stages (``pipeline.stages``), shared by the
ComfyUI nodes and the StickWorld benchmark.

    check_subject / check_pose_canvas   input checks that must pass before any model work
    check_schedule, check_uncond_pose   the rules of the optimisation and sampling settings (checked once, by the
                                        stage functions; the nodes call them early for their own inputs)
    sample_poses, align_poses           PATA: the target poses fitted to the source, transitions inserted
    body_prior, hold_masks              bodies drawn from the skeleton; the region a frame generates when its
                                        background is held from the source
    build_masks, check_masks            MGDM's character masks: attention map + body prior, one validation rule
    make_dca, patch_model               DCAM / MGDM attention patches on a clone of the model

Each step takes the host's objects through the contracts of :mod:`pipeline.contract` (a ``PatchableModel`` to
install patches on), so the same code runs on ComfyUI's MODEL and on the test / StickWorld UNet. Errors follow
:mod:`pipeline.errors`.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ._layers import attention, pacm, pata
from .contract import MGDM_MODES, PatchableModel
from .defaults import FULL, NODE_DEFAULTS, SCHEDULES
from .errors import argument_error

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
    optimisation setting (``schedule``, ``optimize_steps``, ``warm_start``, ``adaptive``, ``early_stop``,
    ``keyframe_interval``) must keep a default (:data:`pipeline.FULL`'s or the nodes' own,
    :data:`pipeline.NODE_DEFAULTS`); a one-step schedule (:data:`pipeline.SCHEDULES`: "algorithm 1") takes
    ``inner_steps`` 1 and no ``adaptive`` stop."""
    schedule = SCHEDULES.get(settings.get("schedule"))
    if "schedule" in settings and schedule is None:
        raise argument_error("schedule", f"unknown schedule {settings['schedule']!r}",
                             f"choose one of {', '.join(SCHEDULES)}")
    if schedule is not None and schedule.one_step and int(inner_steps) > 1:
        raise argument_error("inner_steps", f"{int(inner_steps)} has no effect with schedule '{schedule.name}' (one "
                             "gradient step per step)", "set inner_steps to 1, or schedule to 'inner iterations'")
    if schedule is not None and not schedule.adaptive and float(settings.get("adaptive") or 0) > 0:
        raise argument_error("adaptive", f"has no effect with schedule '{schedule.name}' (one gradient step per step: "
                             "nothing to stop early)", "set adaptive to 0, or schedule to 'inner iterations'")
    if int(inner_steps) != 0:
        return
    for name, value in settings.items():
        defaults = [getattr(FULL, name), getattr(NODE_DEFAULTS, name)]  # the full workflow's, the nodes' own
        if not any(value == d or (isinstance(d, float) and math.isclose(float(value), d, rel_tol=1e-6))
                   for d in defaults):
            raise argument_error(name, f"{value!r} has no effect with inner_steps 0 (no embedding optimisation)",
                                 f"set inner_steps to 1 or more, or {name} back to {defaults[-1]!r}")


UNCOND_POSES = pacm.UNCOND_POSES


def check_uncond_pose(uncond_pose: str, cfg: float, hinted: bool, optimised: bool = False) -> None:
    """``uncond_pose`` (:data:`UNCOND_POSES`) must be known and, when "source", do something: it changes the
    unconditional rows' pose, so it needs pose hints and cfg above 1; and it must fit the embeddings: frame
    embeddings that were ``optimised`` saw each frame's own pose in the unconditional rows, which "source" would
    take away from them."""
    if uncond_pose not in UNCOND_POSES:
        raise argument_error("uncond_pose", f"unknown value {uncond_pose!r}", f"choose one of {', '.join(UNCOND_POSES)}")
    if uncond_pose == "source" and not hinted:
        raise argument_error("uncond_pose", "'source' has no effect without a pose ControlNet",
                             "connect the OpenPose ControlNet, or set uncond_pose to 'target'")
    if uncond_pose == "source" and float(cfg) == 1.0:
        raise argument_error("uncond_pose", "'source' has no effect at cfg 1 (no unconditional rows are evaluated)",
                             "raise cfg in Pose-Aware Inversion above 1, or set uncond_pose to 'target'")
    if uncond_pose == "source" and optimised:
        raise argument_error("uncond_pose", "'source' does not fit these embeddings: Pose Embedding Optimize made them "
                             "with each frame's own pose in the unconditional rows",
                             "set uncond_pose to 'target', or inner_steps 0 on Pose Embedding Optimize (the "
                             "negative-prompt setting 'source' is meant for)")


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
    """Where each frame is generated when its background is held from the source (:func:`pipeline.stages.sample`): the union of
    the source's and the frame's :func:`body_prior` (PATA's skeleton body), reduced to ``latent_size`` = (h, w) by
    max-pooling (a latent pixel any part of the body touches), grown by ``dilate`` latent pixels. ``(F, h, w)`` in
    {0, 1}; frame 0 (the source) is all ones."""
    return _held(body_prior(poses, image_size), latent_size, dilate)


HOLD_SOURCES = ("keypoints", "pose images")  # where hold masks come from: the poses, or their OpenPose renderings
BODY_RADIUS = 0.04  # a body's half-width around its rendered skeleton, in skeleton heights (pata.prior: limbs 0.25-0.3 torso lengths wide, a torso about 0.3 heights)


def hold_masks_from_images(hints: torch.Tensor, latent_size, *, dilate: int = 1,
                           source: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`hold_masks` when only the frames' OpenPose renderings ``(F, 3, H, W)`` are at hand (the pose images a
    Sample Frames' embeddings carry): each frame's body is its rendered skeleton grown by ``BODY_RADIUS`` of the
    skeleton's height and closed (a limb capsule and the torso between its lines, as ``pata.body_prior`` draws from
    keypoints), united with the source's, reduced to ``latent_size`` by max-pooling, grown by ``dilate`` latent
    pixels; frame 0 all ones. A frame without a visible skeleton holds nothing of its own. ``source`` ``(3, h, w)``,
    when given, is the source's pose image, put first (its skeleton brought to the frames' size: the source pose and
    PATA's may be drawn at different sizes of one aspect ratio; max-pooled when larger, so no line is lost)."""
    if not isinstance(hints, torch.Tensor) or hints.ndim != 4 or hints.shape[1] != 3:
        raise argument_error("hints", "expected OpenPose images (F, 3, H, W)", "pass the frames' pose images")
    skeleton = (hints.float().amax(1) > 0.05).float()
    if source is not None:
        if not isinstance(source, torch.Tensor) or source.ndim != 3 or source.shape[0] != 3:
            raise argument_error("source", "expected an OpenPose image (3, H, W)", "pass the source's pose image")
        lines = (source.float().amax(0) > 0.05).float()[None, None].to(skeleton.device)
        size = tuple(skeleton.shape[-2:])
        if lines.shape[-2] > size[0] or lines.shape[-1] > size[1]:
            lines = F.adaptive_max_pool2d(lines, size)
        lines = F.interpolate(lines, size=size, mode="nearest")
        skeleton = torch.cat([lines[0], skeleton])
    bodies = torch.zeros_like(skeleton)
    for f in range(skeleton.shape[0]):
        rows = skeleton[f].any(1).nonzero().flatten()
        if rows.numel() == 0:
            continue
        r = max(1, int(round(BODY_RADIUS * float(rows.max() - rows.min() + 1))))
        grown = F.max_pool2d(skeleton[f][None, None], 2 * r + 1, stride=1, padding=r)
        grown = F.max_pool2d(grown, 2 * r + 1, stride=1, padding=r)            # close: dilate ...
        bodies[f] = 1.0 - F.max_pool2d(1.0 - grown, 2 * r + 1, stride=1, padding=r)[0, 0]  # ... then erode
    return _held(bodies, latent_size, dilate)


def _held(bodies: torch.Tensor, latent_size, dilate: int) -> torch.Tensor:
    """Bodies ``(F, H, W)`` at image size -> the hold masks: each frame's united with the source's, max-pooled to
    the latent size, grown by ``dilate`` latent pixels, frame 0 all ones."""
    union = torch.maximum(bodies, bodies[:1])
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
        raise argument_error("model", "has no attention blocks the patches select", "connect an SD1.5 or SDXL MODEL")
    return patched, installed
