"""Noise schedules in ComfyUI's sigma space.

Parametrisation used throughout ``pacm``: a latent at noise level ``sigma`` is ``x = x0 + sigma * eps`` (not
pre-scaled), the model returns the x0 prediction, and for SD1.5 ``alphas_cumprod = 1 / (1 + sigma**2)``; the
variance-preserving ("alpha-space") latent is ``x / sqrt(1 + sigma**2)``.
"""
from __future__ import annotations

import math

import torch


def sd15_sigma_table(timesteps: int = 1000, linear_start: float = 0.00085, linear_end: float = 0.012) -> torch.Tensor:
    """SD1.5's discrete sigma table, ascending, ``(timesteps,)`` float32 — ComfyUI's ``model_sampling.sigmas``
    for the "linear" beta schedule (betas = linspace(sqrt(start), sqrt(end))**2)."""
    betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).float()


def ddim_uniform_sigmas(sigma_table: torch.Tensor, steps: int) -> torch.Tensor:
    """The sampling sigmas of ComfyUI's ``ddim_uniform`` scheduler (``comfy.samplers.ddim_scheduler``).

    sigma_table: ``(K,)`` ascending discrete sigmas (``Denoiser.sigmas``). Returns ``(steps + 1,)`` float32,
    descending, ending with ``0.0`` — e.g. for SD1.5 and 50 steps ``[s[981], s[961], ..., s[21], s[1], 0]``, the
    exact list ComfyUI's KSampler uses with scheduler "ddim_uniform" (so its "ddim" sampler, which is Euler in
    sigma space = DDIM with eta 0, walks the same noise levels).
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: must be a positive integer, got {steps!r}. Fix: pass 1 or more (the paper: 50)")
    s = [float(v) for v in sigma_table.detach().flatten().cpu().tolist()]
    if len(s) < 2:
        raise ValueError("sigmas: the model's sigma table needs at least 2 entries. "
                         "Fix: pass the model's full table of discrete sigmas (Denoiser.sigmas)")
    x = 1
    if math.isclose(s[x], 0, abs_tol=0.00001):
        steps += 1
        sigs = []
    else:
        sigs = [0.0]
    ss = max(len(s) // steps, 1)
    while x < len(s):
        sigs.append(s[x])
        x += ss
    return torch.tensor(sigs[::-1], dtype=torch.float32)


def vp_scale(sigma) -> torch.Tensor | float:
    """``1 / sqrt(1 + sigma**2)``: multiplies a sigma-space latent into alpha (variance-preserving) space."""
    if isinstance(sigma, torch.Tensor):
        return (1.0 + sigma.double() ** 2).rsqrt().to(sigma.dtype)
    return 1.0 / math.sqrt(1.0 + float(sigma) ** 2)
