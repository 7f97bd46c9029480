"""The attention patches inside ComfyUI's real UNet and sampler, and token lookup with its real SD1 tokenizer."""
from __future__ import annotations

import copy

import pytest
import torch

from tiny_models import build_tiny_sd15

import comfy.ldm.modules.attention as comfy_attention
import comfy.sample
import comfy.sd1_clip
from poseanimate.attention import (AttentionMapStore, CrossAttentionCapture, DCAPatch, find_token_positions,
                                   install_patches, masks_from_attention_maps)

FRAMES = 3


@pytest.fixture(scope="module")
def tiny():
    with torch.inference_mode():
        patcher, _ = build_tiny_sd15()
    return patcher


def _run(patcher, x, ctx, transformer_options=None):
    model = patcher.model
    opts = dict(patcher.model_options.get("transformer_options", {}))
    opts.update(transformer_options or {})
    opts.setdefault("cond_or_uncond", [0])
    sigma = model.model_sampling.sigma(torch.full((x.shape[0],), 500.0))
    return model.apply_model(x, sigma, c_crossattn=ctx, transformer_options=opts)


def _inputs(frames=FRAMES, side=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, side, side, generator=g).repeat(frames, 1, 1, 1) + 0.3 * torch.randn(
        frames, 4, side, side, generator=g)
    ctx = torch.randn(1, 77, 768, generator=g).repeat(frames, 1, 1)
    return x, ctx


def test_sd1_tokenizer_positions_match_comfy_tokens():
    tok = comfy.sd1_clip.SD1Tokenizer()
    prompt = "a photo of a (girl:1.2) dancing on the beach, the girl smiles"
    pos = find_token_positions(tok, prompt, "girl")
    ids = [t[0] for t in tok.tokenize_with_weights(prompt)["l"][0]]
    girl = tok.clip_l.tokenizer("girl")["input_ids"][1:-1]
    assert len(girl) == 1 and len(pos) == 2 and all(ids[p] == girl[0] for p in pos)
    assert ids[0] == tok.clip_l.start_token and 0 not in pos
    beach = find_token_positions(tok.clip_l.tokenizer, "on the beach", "beach")
    assert beach == [3]
    with pytest.raises(ValueError, match="^words: 'cat' is not in the prompt"):
        find_token_positions(tok, prompt, "cat")


def test_dca_patch_runs_in_every_output_block(tiny):
    x, ctx = _inputs()
    plain = _run(tiny, x, ctx)
    m = tiny.clone()
    dca = DCAPatch()
    installed = install_patches(m, dca=dca)
    blocks = sorted({b[2] for b in installed})
    assert installed and all(b[1] == "output" for b in installed)
    out = _run(m, x, ctx)
    # the installed object is deep-copied by clone(); counters are shared with the copies
    assert {k[:2] for k in dca.applied} == {("output", b) for b in blocks}
    assert torch.isfinite(out).all()
    assert torch.allclose(out[0], plain[0], atol=1e-5)  # the source frame only attends to itself
    assert (out[1:] - plain[1:]).abs().max() > 1e-4
    # a clone of the patched model still runs DCA (deepcopy of model_options)
    m2 = m.clone()
    before = sum(dca.applied.values())
    out2 = _run(m2, x, ctx)
    assert sum(dca.applied.values()) == before + len(blocks) and torch.allclose(out, out2, atol=1e-6)


def test_dca_identity_weights_and_comfy_attention_function(tiny):
    x, ctx = _inputs()
    plain = _run(tiny, x, ctx)
    m = tiny.clone()
    install_patches(m, dca=DCAPatch(weights=(0.0, 0.0, 1.0)))
    assert torch.allclose(_run(m, x, ctx), plain, atol=1e-5)
    default = tiny.clone()
    install_patches(default, dca=DCAPatch())
    comfy_fn = tiny.clone()
    masks = torch.zeros(FRAMES, 64, 64)
    masks[:, 16:48, 20:44] = 1
    install_patches(comfy_fn, dca=DCAPatch(attention=comfy_attention.optimized_attention))
    assert torch.allclose(_run(comfy_fn, x, ctx), _run(default, x, ctx), atol=1e-4)
    with_masks = tiny.clone()
    install_patches(with_masks, dca=DCAPatch(masks=masks, attention=comfy_attention.optimized_attention))
    ref = tiny.clone()
    install_patches(ref, dca=DCAPatch(masks=masks))
    a, b = _run(with_masks, x, ctx), _run(ref, x, ctx)
    assert torch.isfinite(a).all() and torch.allclose(a, b, atol=1e-4)
    assert (a[1:] - _run(default, x, ctx)[1:]).abs().max() > 1e-5


def test_windowed_frames_match_all_at_once_in_the_unet(tiny):
    frames = 5
    x, ctx = _inputs(frames)
    m = tiny.clone()
    install_patches(m, dca=DCAPatch())
    full = _run(m, x, ctx)
    carry = {}
    parts = []
    for w in ([0, 1], [2, 3, 4]):
        parts.append(_run(m, x[w], ctx[w], {"poseanimate": {"frame_ids": w, "kv_carry": carry}}))
    assert torch.allclose(torch.cat(parts), full, atol=1e-5)
    assert any(k[0] == "output" for k in carry)


def test_capture_and_dca_through_comfy_sampler(tiny):
    tok = comfy.sd1_clip.SD1Tokenizer()
    positions = find_token_positions(tok, "a girl dancing", "girl")
    store = AttentionMapStore()
    capture = CrossAttentionCapture(positions, store=store, factors=(2, 4), steps=[1, 2])
    dca = DCAPatch()
    m = tiny.clone()
    install_patches(m, dca=dca, capture=capture)
    g = torch.Generator().manual_seed(0)
    latent = torch.zeros(FRAMES, 4, 16, 16)
    noise = torch.randn(latent.shape, generator=g)
    pos = [[torch.randn(1, 77, 768, generator=g), {}]]
    neg = [[torch.zeros(1, 77, 768), {}]]
    out = comfy.sample.sample(m, noise, 3, 7.0, "euler", "normal", pos, neg, latent, seed=0, disable_pbar=True)
    assert torch.isfinite(out).all()
    assert sum(dca.applied.values()) > 0 and sum(capture.applied.values()) > 0
    assert store.frames() == list(range(FRAMES)) and store.size == (8, 8)
    maps = store.maps()
    assert maps.shape == (FRAMES, 8, 8) and torch.isfinite(maps).all() and (maps > 0).all()
    masks = masks_from_attention_maps(maps, size=(16, 16))
    assert masks.shape == (FRAMES, 16, 16)
    # the installed capture got deep-copied by the sampler's clones, but the store is the one we hold
    assert copy.deepcopy(capture).store is store


def test_masked_calls_never_reach_an_attention_that_drops_masks(monkeypatch):
    """Sage attention on a host whose sage path ignores ``mask=`` (0.3.64 passes it to sageattn's **kwargs):
    MGDM's masked calls go to ComfyUI's PyTorch attention, unmasked calls keep the host's choice."""
    import comfy.ldm.modules.attention as host

    from poseanimate.nodes.host.stages import host_attention

    calls = []

    def attention_sage(q, k, v, heads, mask=None, **kw):  # drops the mask, as sageattn(**kwargs) does
        calls.append(mask is not None)
        return host.attention_pytorch(q, k, v, heads, **kw)

    monkeypatch.setattr(host, "attention_sage", attention_sage)
    monkeypatch.setattr(host, "optimized_attention", attention_sage)
    monkeypatch.delattr(host, "SAGE_ATTENTION_SUPPORTS_MASK", raising=False)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 16, 64, generator=g) for _ in range(3))
    mask = torch.zeros(2, 16, 16)
    mask[:, :, 8:] = float("-inf")
    attn = host_attention()
    masked = attn(q, k, v, 2, mask=mask)
    assert calls == []  # never handed to the mask-dropping function
    assert torch.allclose(masked, host.attention_pytorch(q, k, v, 2, mask=mask), atol=1e-6)
    assert not torch.allclose(masked, host.attention_pytorch(q, k, v, 2), atol=1e-4)
    attn(q, k, v, 2)
    assert calls == [False]  # unmasked calls still use the host's attention

    monkeypatch.setattr(host, "SAGE_ATTENTION_SUPPORTS_MASK", True, raising=False)  # a host that handles masks
    host_attention()(q, k, v, 2, mask=mask)
    assert calls == [False, True]
