"""DCAM / MGDM core and the attn1 patch, checked against a float64 reference written from the paper."""
from __future__ import annotations

import copy
import logging

import pytest
import torch

from attention import DCAPatch, dual_consistency_attention, install_patches
from attention.dca import dca_chunk

HEADS = 4


def _attn64(q, k, v, heads):
    """softmax(Q K^T / sqrt(d)) V per head, float64, one frame: q (Lq, C), k/v (Lk, C)."""
    d = q.shape[-1] // heads
    qh, kh, vh = (t.double().reshape(t.shape[0], heads, d).transpose(0, 1) for t in (q, k, v))
    p = torch.softmax(qh @ kh.transpose(1, 2) / d ** 0.5, dim=-1)
    return (p @ vh).transpose(0, 1).reshape(q.shape[0], -1)


def _masked64(q, k, v, heads, mq, mk):
    """MGDM term: m * A(Q, K_char, V_char) + (1 - m) * A(Q, K_bg, V_bg); empty region -> all keys."""
    char = mk >= 0.5
    bg = ~char
    char = char if char.any() else torch.ones_like(char)
    bg = bg if bg.any() else torch.ones_like(bg)
    m = mq.double()[:, None]
    return m * _attn64(q, k[char], v[char], heads) + (1 - m) * _attn64(q, k[bg], v[bg], heads)


def reference(q, k, v, heads, weights=(0.7, 0.15, 0.15), masks=None):
    """The paper's DCA (and MGDM) frame by frame: frame 0 self-attention, frame i three weighted terms."""
    out = [_attn64(q[0], k[0], v[0], heads)]
    for i in range(1, q.shape[0]):
        acc = 0
        for w, r in zip(weights, (0, i - 1, i)):
            if masks is None:
                acc = acc + w * _attn64(q[i], k[r], v[r], heads)
            else:
                acc = acc + w * _masked64(q[i], k[r], v[r], heads, masks[i], masks[r])
        out.append(acc)
    return torch.stack(out)


def _rel(a, b):
    return float((a.double() - b).norm() / b.norm())


def _qkv(frames=5, tokens=48, channels=32, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(frames, tokens, channels, generator=g) * scale for _ in range(3)]


def _blob_masks(frames, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    ms = []
    for f in range(frames):
        cy, cx = h / 2 + torch.randn(1, generator=g).item(), w / 3 + f
        ms.append((((yy - cy) / (h / 3)) ** 2 + ((xx - cx) / (w / 4)) ** 2 <= 1).float())
    return torch.stack(ms)


@pytest.mark.parametrize("weights", [(0.7, 0.15, 0.15), (0.2, 0.5, 0.3), (0.0, 0.0, 1.0)])
def test_matches_float64_reference(weights):
    q, k, v = _qkv(scale=2.0)
    out = dual_consistency_attention(q, k, v, HEADS, weights)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert _rel(out, reference(q, k, v, HEADS, weights)) < 1e-5


def test_frame0_is_plain_self_attention_and_weights_matter():
    q, k, v = _qkv()
    out = dual_consistency_attention(q, k, v, HEADS)
    assert _rel(out[0], _attn64(q[0], k[0], v[0], HEADS)) < 1e-5
    plain = torch.stack([_attn64(q[i], k[i], v[i], HEADS) for i in range(q.shape[0])])
    assert _rel(out[1:], plain[1:]) > 1e-2
    other = dual_consistency_attention(q, k, v, HEADS, (0.15, 0.7, 0.15))
    assert (other[1:] - out[1:]).abs().max() > 1e-3


def test_single_frame_is_self_attention():
    q, k, v = _qkv(frames=1)
    assert _rel(dual_consistency_attention(q, k, v, HEADS), _attn64(q[0], k[0], v[0], HEADS)[None]) < 1e-5


@pytest.mark.parametrize("weights", [(0.5, 0.5, 0.5), (1.2, -0.1, -0.1), (0.5, 0.5), "abc", (float("nan"), 0.5, 0.5)])
def test_bad_weights_raise(weights):
    q, k, v = _qkv(frames=2)
    with pytest.raises(ValueError, match=r"^weights: .*(sum|e\.g\.)"):
        dual_consistency_attention(q, k, v, HEADS, weights)


def test_bad_masks_raise():
    q, k, v = _qkv(frames=2)
    with pytest.raises(ValueError, match="^masks: "):
        dual_consistency_attention(q, k, v, HEADS, masks=torch.ones(2, 5))
    with pytest.raises(ValueError, match="^masks: .*0, 1"):
        dual_consistency_attention(q, k, v, HEADS, masks=torch.full((2, q.shape[1]), 1.5))


# binary masks with L > C take the grouped-query path, with L <= C the dense-bias path
PATHS = pytest.mark.parametrize("channels", [32, 64], ids=["grouped", "dense"])


@PATHS
def test_mgdm_matches_reference_binary_and_soft(channels):
    q, k, v = _qkv(frames=5, tokens=48, channels=channels, scale=2.0)
    masks = _blob_masks(5, 6, 8).reshape(5, 48)
    out = dual_consistency_attention(q, k, v, HEADS, masks=masks)
    assert _rel(out, reference(q, k, v, HEADS, masks=masks)) < 1e-5
    soft = masks.clone()
    soft[:, ::3] = torch.linspace(0, 1, soft[:, ::3].numel()).reshape(5, -1)
    out = dual_consistency_attention(q, k, v, HEADS, (0.5, 0.2, 0.3), masks=soft)
    assert _rel(out, reference(q, k, v, HEADS, (0.5, 0.2, 0.3), masks=soft)) < 1e-5


@PATHS
def test_mgdm_exclusion_background_keys_do_not_reach_character_queries(channels):
    q, k, v = _qkv(frames=4, tokens=48, channels=channels)
    masks = _blob_masks(4, 6, 8).reshape(4, 48)
    out = dual_consistency_attention(q, k, v, HEADS, masks=masks)
    bg = masks < 0.5
    k2, v2 = k.clone(), v.clone()
    k2[bg] = torch.randn_like(k2[bg]) * 5
    v2[bg] = torch.randn_like(v2[bg]) * 5
    out2 = dual_consistency_attention(q, k2, v2, HEADS, masks=masks)
    char = ~bg
    char[0] = False  # frame 0 is plain self-attention by definition
    assert torch.allclose(out[char], out2[char], atol=1e-6)
    assert not torch.allclose(out[~char], out2[~char], atol=1e-3)
    # and without masks the background keys do reach them
    a = dual_consistency_attention(q, k, v, HEADS)
    b = dual_consistency_attention(q, k2, v2, HEADS)
    assert not torch.allclose(a[char], b[char], atol=1e-3)


@PATHS
def test_mgdm_empty_region_falls_back_and_never_nan(channels):
    q, k, v = _qkv(frames=4, tokens=48, channels=channels)
    masks = _blob_masks(4, 6, 8).reshape(4, 48)
    masks[0] = 0.0  # no character in the source frame
    masks[2] = 1.0  # no background in frame 2
    out = dual_consistency_attention(q, k, v, HEADS, masks=masks)
    assert torch.isfinite(out).all()
    assert _rel(out, reference(q, k, v, HEADS, masks=masks)) < 1e-5
    # character queries of frame 1 see frame 0 unmasked (empty character region there)
    zeros = dual_consistency_attention(q, k, v, HEADS, masks=torch.zeros(4, 48))
    ones = dual_consistency_attention(q, k, v, HEADS, masks=torch.ones(4, 48))
    plain = dual_consistency_attention(q, k, v, HEADS)
    assert _rel(zeros, plain.double()) < 1e-5 and _rel(ones, plain.double()) < 1e-5


@PATHS
def test_large_logits_no_nan(channels):
    q, k, v = _qkv(frames=3, channels=channels, scale=60.0)
    masks = _blob_masks(3, 6, 8).reshape(3, 48)
    out = dual_consistency_attention(q, k, v, HEADS, masks=masks)
    assert torch.isfinite(out).all()


def test_injected_attention_function_is_used():
    calls = []

    def attn(q, k, v, heads, mask=None, **kw):
        calls.append(mask is not None)
        from attention import sdpa_attention
        return sdpa_attention(q, k, v, heads, mask=mask)

    q, k, v = _qkv(frames=3)
    out = dual_consistency_attention(q, k, v, HEADS, attention=attn)
    assert calls == [False] * 3 and _rel(out, reference(q, k, v, HEADS)) < 1e-5
    calls.clear()
    masks = _blob_masks(3, 6, 8).reshape(3, 48)
    out = dual_consistency_attention(q, k, v, HEADS, masks=masks, attention=attn)
    assert all(calls[:6]) and len(calls) == 7 and _rel(out, reference(q, k, v, HEADS, masks=masks)) < 1e-5
    calls.clear()  # dense path: three masked calls
    q, k, v = _qkv(frames=3, channels=64)
    out = dual_consistency_attention(q, k, v, HEADS, masks=masks, attention=attn)
    assert calls == [True] * 3 and _rel(out, reference(q, k, v, HEADS, masks=masks)) < 1e-5


def test_gradients_match_reference():
    q, k, v = (t.double().requires_grad_() for t in _qkv(frames=3, tokens=12, channels=8))
    masks = (torch.arange(36).reshape(3, 12) % 3 == 0).double()
    for m in (None, masks):
        out = dual_consistency_attention(q, k, v, 2, masks=m)
        gq, gk = torch.autograd.grad(out.square().sum(), (q, k))
        ref = reference(q, k, v, 2, masks=m)
        rq, rk = torch.autograd.grad(ref.square().sum(), (q, k))
        assert torch.allclose(gq, rq, atol=1e-9) and torch.allclose(gk, rk, atol=1e-9)


# -- patch ------------------------------------------------------------------------------------------------

def _opts(cond_or_uncond, block=("output", 3), shape=(6, 8), heads=HEADS, **pa):
    opts = {"n_heads": heads, "dim_head": 8, "attn_precision": None, "block": block, "block_index": 0,
            "original_shape": [2, 4, *shape], "cond_or_uncond": list(cond_or_uncond)}
    if pa:
        opts["poseanimate"] = pa
    return opts


@pytest.mark.parametrize("layout", [[0], [1], [1, 0], [0, 1], [1, 0, 1]])
def test_patch_chunk_layouts(layout):
    frames = 4
    chunks = [_qkv(frames=frames, seed=s) for s in range(len(layout))]
    q, k, v = (torch.cat([c[i] for c in chunks]) for i in range(3))
    patch = DCAPatch()
    out = patch(q, k, v, _opts(layout))
    for c, (cq, ck, cv) in enumerate(chunks):
        assert _rel(out[c * frames:(c + 1) * frames], reference(cq, ck, cv, HEADS)) < 1e-5
    assert patch.applied[("output", 3, 0)] == 1


def test_patch_single_frame_per_chunk_is_plain():
    q, k, v = _qkv(frames=2)
    out = DCAPatch()(q, k, v, _opts([1, 0]))
    for i in range(2):
        assert _rel(out[i], _attn64(q[i], k[i], v[i], HEADS)) < 1e-5


def test_patch_passes_through_other_blocks():
    q, k, v = _qkv(frames=4)
    patch = DCAPatch()
    out = patch(q, k, v, _opts([0], block=("input", 1)))
    plain = torch.stack([_attn64(q[i], k[i], v[i], HEADS) for i in range(4)])
    assert _rel(out, plain) < 1e-5
    assert patch.calls[("input", 1, 0)] == 1 and not patch.applied
    explicit = DCAPatch(blocks=[("output", 4)])
    assert _rel(explicit(q, k, v, _opts([0], block=("output", 3))), plain) < 1e-5
    assert _rel(explicit(q, k, v, _opts([0], block=("output", 4))), reference(q, k, v, HEADS)) < 1e-5
    with pytest.raises(ValueError, match="^blocks: "):
        DCAPatch(blocks=[("output", "x")])


def test_patch_unmappable_batch_warns_once(caplog):
    q, k, v = _qkv(frames=5)
    patch = DCAPatch()
    with caplog.at_level(logging.WARNING, logger="attention.patch"):
        out = patch(q, k, v, _opts([1, 0]))  # 5 frames do not split into 2 chunks
        patch(q, k, v, _opts([1, 0]))
        patch(q, k, v, _opts([0], frame_ids=[0, 1, 2]))
    plain = torch.stack([_attn64(q[i], k[i], v[i], HEADS) for i in range(5)])
    assert _rel(out, plain) < 1e-5
    assert len([r for r in caplog.records if "plain self-attention" in r.message]) == 1
    assert not patch.applied


def test_patch_survives_deepcopy_and_shares_counters():
    masks = _blob_masks(4, 12, 16)
    patch = DCAPatch(weights=(0.5, 0.25, 0.25), masks=masks)
    model_options = {"transformer_options": {"patches_replace": {"attn1": {("output", 3): patch}}}}
    clone = copy.deepcopy(model_options)["transformer_options"]["patches_replace"]["attn1"][("output", 3)]
    assert clone is not patch and clone.weights == patch.weights and torch.equal(clone.masks, patch.masks)
    q, k, v = _qkv(frames=4)
    assert torch.equal(clone(q, k, v, _opts([0])), patch(q, k, v, _opts([0])))
    assert patch.applied[("output", 3, 0)] == 2 and clone.calls is patch.calls


def test_patch_masks_resized_to_layer_grid():
    frames = 4
    masks_img = _blob_masks(frames, 24, 32)  # 4x the 6x8 token grid
    q, k, v = _qkv(frames=frames)
    patch = DCAPatch(masks=masks_img)
    out = patch(q, k, v, _opts([0], shape=(12, 16)))  # latent 12x16 -> layer 6x8 (48 tokens)
    tok = torch.nn.functional.interpolate(masks_img[:, None], size=(6, 8), mode="area").reshape(frames, 48)
    assert _rel(out, reference(q, k, v, HEADS, masks=tok)) < 1e-5
    # transformer_options masks override the patch's own
    other = _blob_masks(frames, 6, 8, seed=3)
    out2 = patch(q, k, v, _opts([0], shape=(12, 16), masks=other))
    assert _rel(out2, reference(q, k, v, HEADS, masks=other.reshape(frames, 48))) < 1e-5


def test_patch_frame_ids_with_masks_index_global_frames():
    masks = _blob_masks(8, 6, 8).reshape(8, 48)
    q, k, v = _qkv(frames=8)
    full = reference(q, k, v, HEADS, masks=masks)
    patch = DCAPatch(masks=masks.reshape(8, 6, 8))
    carry = {}
    outs = []
    for window in ([0, 1, 2], [3, 4, 5], [6, 7]):
        outs.append(patch(q[window], k[window], v[window],
                          _opts([0], frame_ids=window, kv_carry=carry)))
    assert _rel(torch.cat(outs), full) < 1e-5


@pytest.mark.parametrize("windows", [[[0, 1, 2], [3, 4, 5], [6, 7]], [[0], [1], [2, 3, 4, 5, 6, 7]],
                                     [[0, 1, 2, 3, 4, 5, 6, 7]]])
def test_windowed_kv_carry_equals_all_at_once(windows):
    frames, layout = 8, [1, 0]
    chunks = [_qkv(frames=frames, seed=s) for s in range(2)]
    q, k, v = (torch.cat([c[i] for c in chunks]) for i in range(3))
    patch = DCAPatch(weights=(0.6, 0.25, 0.15))
    full = patch(q, k, v, _opts(layout))
    carry = {}
    outs = []
    for w in windows:
        sel = w + [frames + i for i in w]
        outs.append(patch(q[sel], k[sel], v[sel], _opts(layout, frame_ids=w, kv_carry=carry)))
    windowed = torch.cat([torch.cat([o[:len(w)] for o, w in zip(outs, windows)]),
                          torch.cat([o[len(w):] for o, w in zip(outs, windows)])])
    assert torch.allclose(windowed, full, atol=1e-6)
    entry = carry[("output", 3, 0, 0)]
    assert torch.equal(entry["first"][0], chunks[1][1][:1]) and torch.equal(entry["prev"][1], chunks[1][2][-1:])
    assert set(carry) == {("output", 3, 0, 0), ("output", 3, 0, 1)}


def test_window_without_carry_is_unmappable(caplog):
    q, k, v = _qkv(frames=3)
    patch = DCAPatch()
    with caplog.at_level(logging.WARNING, logger="attention.patch"):
        out = patch(q, k, v, _opts([0], frame_ids=[3, 4, 5], kv_carry={}))
    assert _rel(out, torch.stack([_attn64(q[i], k[i], v[i], HEADS) for i in range(3)])) < 1e-5
    assert "lacks frame 0" in caplog.text


def test_window_with_source_prepended_uses_carry_prev():
    q, k, v = _qkv(frames=6)
    full = reference(q, k, v, HEADS)
    patch = DCAPatch()
    carry = {}
    first = patch(q[:3], k[:3], v[:3], _opts([0], frame_ids=[0, 1, 2], kv_carry=carry))
    sel = [0, 3, 4, 5]
    second = patch(q[sel], k[sel], v[sel], _opts([0], frame_ids=sel, kv_carry=carry))
    assert _rel(torch.cat([first, second[1:]]), full) < 1e-5


def test_dca_chunk_external_first_and_prev():
    q, k, v = _qkv(frames=6)
    full = reference(q, k, v, HEADS)
    out = dca_chunk(q[3:], k[3:], v[3:], HEADS, (0.7, 0.15, 0.15), has_source=False,
                    first_kv=(k[:1], v[:1]), prev_kv=(k[2:5], v[2:5]))
    assert _rel(out, full[3:]) < 1e-5


class _FakePatcher:
    def __init__(self, unet):
        self.model = type("M", (), {"diffusion_model": unet})()
        self.set = []

    def set_model_attn1_replace(self, patch, name, number, transformer_index=None):
        self.set.append(("attn1", name, number, transformer_index))

    def set_model_attn2_replace(self, patch, name, number, transformer_index=None):
        self.set.append(("attn2", name, number, transformer_index))


def test_install_patches_on_blocks_with_attention():
    class ST(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer_blocks = torch.nn.ModuleList([torch.nn.Identity()])

    unet = torch.nn.Module()
    unet.input_blocks = torch.nn.ModuleList([torch.nn.Identity(), torch.nn.Sequential(torch.nn.Identity(), ST())])
    unet.middle_block = torch.nn.Sequential(ST())
    unet.output_blocks = torch.nn.ModuleList([torch.nn.Sequential(ST()), torch.nn.Identity(),
                                              torch.nn.Sequential(torch.nn.Identity(), ST())])
    m = _FakePatcher(unet)
    assert install_patches(m, dca=DCAPatch()) == [("attn1", "output", 0), ("attn1", "output", 2)]
    m = _FakePatcher(unet)
    install_patches(m, dca=DCAPatch(blocks=[("output", 2, 0), ("input", 1)]))
    assert m.set == [("attn1", "input", 1, None), ("attn1", "output", 2, 0)]


def test_patch_bad_arguments():
    with pytest.raises(ValueError, match="^masks: .*0, 1"):
        DCAPatch(masks=torch.full((2, 4, 4), 2.0))
    with pytest.raises(ValueError, match="^masks: "):
        DCAPatch(masks=torch.ones(2, 2, 4, 4))
    with pytest.raises(ValueError, match="^weights: "):
        DCAPatch(weights=(1, 1, 1))


def test_patch_masks_not_covering_frames_warn_and_run_unmasked(caplog):
    q, k, v = _qkv(frames=4)
    patch = DCAPatch(masks=_blob_masks(2, 6, 8))  # masks for 2 frames, chunk of 4
    with caplog.at_level(logging.WARNING, logger="attention.patch"):
        out = patch(q, k, v, _opts([0]))
        patch(q, k, v, _opts([0]))
    assert _rel(out, reference(q, k, v, HEADS)) < 1e-5
    assert len([r for r in caplog.records if "without masks" in r.message]) == 1


def test_patch_gradients_flow_through_windows_and_masks():
    """pacm optimises embeddings through the UNet: the patch must stay differentiable, kv_carry included."""
    q, k, v = (t.double().requires_grad_() for t in _qkv(frames=4, tokens=12, channels=8))
    masks = (torch.arange(48).reshape(4, 3, 4) % 3 == 0).double()
    patch = DCAPatch(masks=masks)
    carry = {}
    outs = [patch(q[w], k[w], v[w], _opts([0], shape=(3, 4), heads=2, frame_ids=w, kv_carry=carry))
            for w in ([0, 1], [2, 3])]
    gq, gk = torch.autograd.grad(torch.cat(outs).square().sum(), (q, k))
    ref = reference(q, k, v, 2, masks=masks.reshape(4, 12))
    rq, rk = torch.autograd.grad(ref.square().sum(), (q, k))
    assert torch.allclose(gq, rq, atol=1e-9) and torch.allclose(gk, rk, atol=1e-9)
