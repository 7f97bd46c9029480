"""This pack's DCA Patch Model inside ComfyUI: the patched clone runs in ComfyUI's own KSampler."""
from __future__ import annotations

import torch

from tiny_models import build_tiny_sd15


def _patches(model):
    return model.model_options["transformer_options"]["patches_replace"]["attn1"]


def test_dca_patch_runs_in_comfy_ksampler():
    import nodes as comfy_nodes

    from poseanimate.nodes.dca_patch import PoseAnimateDCAPatchModel

    patcher, _ = build_tiny_sd15()
    masks = torch.zeros(3, 64, 64)
    masks[:, 8:56, 16:48] = 1
    patched, = PoseAnimateDCAPatchModel().patch(patcher, 0.7, 0.15, 0.15, "all output blocks", "", masks)
    assert "patches_replace" not in patcher.model_options.get("transformer_options", {})
    from poseanimate.attention.blocks import attention_block_ids

    ids = attention_block_ids(patcher.model.diffusion_model, "output")
    assert ids and sorted(_patches(patched)) == [("output", i) for i in ids]
    patch = _patches(patched)[("output", ids[0])]
    cond = [[torch.randn(1, 77, 768), {}]]
    uncond = [[torch.zeros(1, 77, 768), {}]]
    latent = {"samples": torch.randn(3, 4, 8, 8)}
    out, = comfy_nodes.common_ksampler(patched, 1, 2, 3.0, "euler", "normal", cond, uncond, latent, denoise=1.0)
    assert out["samples"].shape == (3, 4, 8, 8) and torch.isfinite(out["samples"]).all()
    applied = dict(patch.applied)
    assert all(applied.get(("output", i, 0), 0) >= 2 for i in ids), applied  # every block, every step

    plain, = comfy_nodes.common_ksampler(patcher, 1, 2, 3.0, "euler", "normal", cond, uncond, latent, denoise=1.0)
    assert not torch.allclose(plain["samples"][1:], out["samples"][1:])  # DCA changed the target frames
