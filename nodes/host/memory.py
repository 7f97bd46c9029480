"""Memory-safe frame windows for the sampling nodes (``window_size`` 0 = auto).

``auto_window(denoiser, frames, latent_shape)`` is the number of frames one model call may hold so that the
call fits in the free memory of the model's device; every call of a window holds ``chunks`` samples per frame
(CFG: uncond + cond). Windowed sampling is exact (pacm carries the DCA keys/values across windows), so the
window changes memory and speed, never the frames.

* CUDA: the peak extra memory of a 1-frame and a 2-frame forward through the denoiser (UNet + ControlNets +
  the MODEL's patches, e.g. DCA) is measured and ``pacm.engine.batch_size_from_probe`` turns the marginal cost
  per frame into a window that fills 80 % of the free memory (as pacm does for the optimisation micro-batch).
* Elsewhere (CPU, MPS, ...): ComfyUI's figures, no probe: ``comfy.model_management.get_free_memory`` (via
  ``ComfyDenoiser.free_memory``) over the model's own per-sample estimate ``BaseModel.memory_required``
  times ComfyUI's safety factor 1.5 (the factor its samplers use to batch cond/uncond), again 80 % of free.

ComfyUI is imported lazily (through the denoiser), so this module imports without it.
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

HEADROOM = 0.8          # share of the free memory a window may fill
COMFY_FACTOR = 1.5      # ComfyUI's samplers: batch while memory_required(shape) * 1.5 < free


def window_from_estimate(frames: int, per_frame: int, free: int, headroom: float = HEADROOM) -> int:
    """Frames per call from an estimated cost per frame (bytes, all chunks) and the free bytes; in 1..frames."""
    frames = max(1, int(frames))
    per_frame = max(int(per_frame), 1)
    return max(1, min(frames, int(headroom * max(int(free), 0) // per_frame)))


def _probe_peaks(denoiser, latent_shape, chunks: int, context, hint_hw) -> list[int]:
    """Peak extra CUDA memory (bytes) of a forward of 1 and of 2 frames (each ``chunks`` samples)."""
    dev = torch.device(denoiser.device)
    c, h, w = (int(s) for s in latent_shape[1:])
    sigma_max = float(denoiser.sigmas.max())
    if context is None:
        context = torch.zeros(1, 77, 768)
    context = context.reshape(-1, context.shape[-2], context.shape[-1])[:1]
    order = [1, 0][:chunks] if chunks <= 2 else [1] * chunks
    peaks = []
    for k in (1, 2):
        b = k * len(order)
        x = torch.zeros(b, c, h, w, device=dev)
        sig = torch.full((b,), sigma_max, device=dev)
        ctx = context.to(dev).expand(b, -1, -1)
        hint = None
        if getattr(denoiser, "control_net", None) is not None:
            hh, hw = hint_hw if hint_hw is not None else (h * 8, w * 8)
            hint = torch.zeros(b, 3, hh, hw, device=dev)
        to = {"cond_or_uncond": list(order), "poseanimate": {"frame_ids": list(range(k)), "kv_carry": {}}}
        torch.cuda.synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        with torch.no_grad():
            out = denoiser(x, sig, ctx, hint, to)
        del out
        torch.cuda.synchronize(dev)
        peaks.append(torch.cuda.max_memory_allocated(dev) - base)
    return peaks


def auto_window(denoiser, frames: int, latent_shape, chunks: int = 2, *, context=None, hint_hw=None,
                headroom: float = HEADROOM) -> int:
    """Frames per model call that fit in the free memory of ``denoiser``'s device (see the module docstring).

    Args:
        denoiser: a loaded ``ComfyDenoiser`` (its ``device``, ``free_memory()``, ``memory_per_frame()``).
        frames: frames to sample (the window is in ``1..frames``).
        latent_shape: the (1, C, h, w) shape of one frame's latent.
        chunks: samples per frame in one call (2 = CFG's uncond + cond).
        context: the prompt embedding for the CUDA probe (zeros of 77 x 768 if None).
        hint_hw: (H, W) of the pose images for the CUDA probe (8 x the latent if None).
    """
    frames = int(frames)
    if frames <= 1:
        return 1
    dev = torch.device(denoiser.device)
    if dev.type == "cuda":
        from ...pacm.engine import batch_size_from_probe

        p1, p2 = _probe_peaks(denoiser, latent_shape, chunks, context, hint_hw)
        free, _total = torch.cuda.mem_get_info(dev)
        free += torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
        w = batch_size_from_probe(frames, p1, p2, free, headroom)
        log.info("PoseAnimate: forward peaks %.1f / %.1f MiB for 1 / 2 frames, %.1f MiB free -> window %d",
                 p1 / 2**20, p2 / 2**20, free / 2**20, w)
        return w
    free = int(denoiser.free_memory())
    per_frame = int(denoiser.memory_per_frame(latent_shape) * chunks * COMFY_FACTOR)
    w = window_from_estimate(frames, per_frame, free, headroom)
    log.info("PoseAnimate: %.1f MiB per frame (ComfyUI estimate x %.1f), %.1f MiB free -> window %d",
             per_frame / 2**20, COMFY_FACTOR, free / 2**20, w)
    return w


def resolve_window(denoiser, value: int, frames: int, latent_shape, chunks: int = 2, **probe) -> int:
    """The ``window_size`` widget: a positive value is used as is (at most ``frames``); 0 = :func:`auto_window`
    (the model is loaded first, as the probe and the free-memory figure need it in place)."""
    value = int(value)
    if value > 0:
        return min(value, int(frames))
    denoiser.load(denoiser.memory_per_frame(latent_shape) * chunks)
    return auto_window(denoiser, frames, latent_shape, chunks, **probe)
