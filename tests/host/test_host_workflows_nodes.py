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


class _TokenizerOnly:
    """A CLIP stand-in carrying ComfyUI's real SD1.5 tokenizer (the node uses nothing else of the CLIP)."""

    def __init__(self):
        import comfy.sd1_clip

        self.tokenizer = comfy.sd1_clip.SD1Tokenizer()


def _embeddings(patcher, cnet, n_targets=3, steps=2):
    from poseanimate.nodes.embedding_optimize import PoseAnimatePoseEmbeddingOptimize
    from poseanimate.nodes.inversion import PoseAnimatePoseAwareInversion

    g = torch.Generator().manual_seed(0)
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=g) * 5}
    positive = [[torch.randn(1, 77, 768, generator=g), {"pooled_output": None}]]
    poses = torch.rand(n_targets + 1, 64, 64, 3, generator=g)
    inv, _ = PoseAnimatePoseAwareInversion().invert(patcher, cnet, latent, positive, poses[:1], steps, 7.5, 1, 1e-5)
    emb, = PoseAnimatePoseEmbeddingOptimize().optimize(inv, patcher, cnet, positive, poses, 1, 0)
    return emb


def test_mask_extract_gives_one_mask_per_frame():
    import pytest

    from poseanimate.nodes._common import PoseAnimateError
    from poseanimate.nodes.mask_extract import PoseAnimateCrossAttentionMaskExtract

    patcher, cnet = build_tiny_sd15()
    emb = _embeddings(patcher, cnet)
    node = PoseAnimateCrossAttentionMaskExtract()
    prompt = "a knight in silver armour walking"
    masks, preview = node.extract(patcher, cnet, _TokenizerOnly(), emb, prompt, "knight", 0.0, 0, 0, 0)
    assert masks.shape == (4, 64, 64) and preview.shape == (4, 64, 64, 3)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert all(0 < m.sum() < m.numel() for m in masks)  # Otsu splits every frame into two regions
    assert "patches_replace" not in patcher.model_options.get("transformer_options", {})  # input untouched

    early, _ = node.extract(patcher, cnet, _TokenizerOnly(), emb, prompt, "knight", 0.5, 1, 2, 1)  # 1 step, windows
    assert early.shape == masks.shape and set(early.unique().tolist()) <= {0.0, 1.0}

    src = torch.zeros(1, 128, 128)
    src[:, 32:96, 48:80] = 1
    with_src, _ = node.extract(patcher, cnet, _TokenizerOnly(), emb, prompt, "knight", 0.0, 0, 0, 0, src)
    assert with_src[0].sum() == 32 * 16 and torch.equal(with_src[1:], masks[1:])

    with pytest.raises(PoseAnimateError, match="Cross-Attention Mask Extract: input 'subject'"):
        node.extract(patcher, cnet, _TokenizerOnly(), emb, prompt, "dragon", 0.0, 0, 0, 0)
    with pytest.raises(PoseAnimateError, match="input 'embeddings'"):
        node.extract(patcher, cnet, _TokenizerOnly(), None, prompt, "knight", 0.0, 0, 0, 0)

    patched, = __import__("poseanimate.nodes.dca_patch", fromlist=["x"]).PoseAnimateDCAPatchModel().patch(
        patcher, 0.7, 0.15, 0.15, "all output blocks", "", masks)
    from poseanimate.nodes.sample_frames import PoseAnimateSampleFrames

    positive = [[emb.inversion.cond[None], {}]]
    out, = PoseAnimateSampleFrames().sample(patched, cnet, positive, emb, 0, None)
    assert out["samples"].shape == (4, 4, 8, 8) and torch.isfinite(out["samples"]).all()
