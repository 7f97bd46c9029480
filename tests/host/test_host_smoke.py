"""The host bootstrap works: ComfyUI imports on the CPU and the tiny SD1.5 model runs a forward pass."""
from __future__ import annotations

import torch

from tiny_models import build_tiny_sd15


def test_tiny_sd15_forward():
    patcher, _ = build_tiny_sd15()
    model = patcher.model
    x = torch.randn(2, 4, 8, 8)
    sigma = model.model_sampling.sigma(torch.tensor([500.0, 500.0]))
    out = model.apply_model(x, sigma, c_crossattn=torch.randn(2, 77, 768))
    assert out.shape == x.shape and torch.isfinite(out).all()
