"""MGDM formulations: "exclude" (default) and "multiply" (keys/values multiplied by the mask), checked against a
naive float64 per-frame implementation; windows, empty regions, soft masks, per-call override, host function."""
from __future__ import annotations

import copy
import logging

import pytest
import torch

from attention import DCAPatch, dual_consistency_attention, sdpa_attention
from attention.dca import dca_chunk

HEADS = 4


def _attn64(q, k, v, heads):
    """softmax(Q K^T / sqrt(d)) V per head, float64, one frame: q (Lq, C), k/v (Lk, C)."""
    d = q.shape[-1] // heads
    qh, kh, vh = (t.double().reshape(t.shape[0], heads, d).transpose(0, 1) for t in (q, k, v))
    p = torch.softmax(qh @ kh.transpose(1, 2) / d ** 0.5, dim=-1)
    return (p @ vh).transpose(0, 1).reshape(q.shape[0], -1)


def _multiply64(q, k, v, heads, mq, mk):
    """The multiply term, written out: reference frame split by its mask into character (K*m, V*m) and
    background (K*(1-m), V*(1-m)); the query's output is m_q * A(char) + (1 - m_q) * A(background)."""
    mk = mk.double()[:, None]
    k, v = k.double(), v.double()
    char = _attn64(q, k * mk, v * mk, heads)
    bg = _attn64(q, k * (1 - mk), v * (1 - mk), heads)
    m = mq.double()[:, None]
    return m * char + (1 - m) * bg


def reference_multiply(q, k, v, heads, weights, masks):
    """Frame 0 plain self-attention; frame i: sum over (first, previous, own) of weight * multiply term."""
    out = [_attn64(q[0], k[0], v[0], heads)]
    for i in range(1, q.shape[0]):
        acc = 0
        for w, r in zip(weights, (0, i - 1, i)):
            acc = acc + w * _multiply64(q[i], k[r], v[r], heads, masks[i], masks[r])
        out.append(acc)
    return torch.stack(out)


def _rel(a, b):
    return float((a.double() - b).norm() / b.norm())


def _qkv(frames=5, tokens=48, channels=32, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(frames, tokens, channels, generator=g) * scale for _ in range(3)]


def _blob_masks(frames, h=6, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    ms = []
    for f in range(frames):
        cy, cx = h / 2 + torch.randn(1, generator=g).item(), w / 3 + f
        ms.append((((yy - cy) / (h / 3)) ** 2 + ((xx - cx) / (w / 4)) ** 2 <= 1).float())
    return torch.stack(ms)


def _soft(masks):
    soft = masks.clone()
    soft[:, ::3] = torch.linspace(0, 1, soft[:, ::3].numel()).reshape(masks.shape[0], -1)
    return soft


def _opts(cond_or_uncond, shape=(6, 8), heads=HEADS, **pa):
    opts = {"n_heads": heads, "dim_head": 8, "attn_precision": None, "block": ("output", 3), "block_index": 0,
            "original_shape": [2, 4, *shape], "cond_or_uncond": list(cond_or_uncond)}
    if pa:
        opts["poseanimate"] = pa
    return opts


W = (0.5, 0.2, 0.3)


@pytest.mark.parametrize("channels", [32, 64])
def test_multiply_matches_naive_reference_binary_and_soft(channels):
    q, k, v = _qkv(frames=5, tokens=48, channels=channels, scale=2.0)
    masks = _blob_masks(5).reshape(5, 48)
    for m in (masks, _soft(masks)):
        out = dual_consistency_attention(q, k, v, HEADS, W, masks=m, mgdm="multiply")
        assert out.shape == q.shape and out.dtype == q.dtype
        assert _rel(out, reference_multiply(q, k, v, HEADS, W, m)) < 1e-5


def test_multiply_differs_from_exclude_and_from_plain():
    q, k, v = _qkv(frames=4, scale=2.0)
    masks = _blob_masks(4).reshape(4, 48)
    mul = dual_consistency_attention(q, k, v, HEADS, masks=masks, mgdm="multiply")
    exc = dual_consistency_attention(q, k, v, HEADS, masks=masks)
    plain = dual_consistency_attention(q, k, v, HEADS)
    assert (mul[1:] - exc[1:]).abs().max() > 1e-2 and (mul[1:] - plain[1:]).abs().max() > 1e-2
    assert torch.allclose(mul[0], plain[0], atol=1e-6)  # the source frame keeps plain self-attention


def test_exclude_is_the_default():
    q, k, v = _qkv(frames=4)
    masks = _soft(_blob_masks(4).reshape(4, 48))
    assert torch.equal(dual_consistency_attention(q, k, v, HEADS, masks=masks),
                       dual_consistency_attention(q, k, v, HEADS, masks=masks, mgdm="exclude"))


@pytest.mark.parametrize("channels", [32, 64])
def test_multiply_empty_regions_never_nan(channels):
    q, k, v = _qkv(frames=4, tokens=48, channels=channels, scale=3.0)
    masks = _blob_masks(4).reshape(4, 48)
    masks[0] = 0.0  # no character in the source frame
    masks[2] = 1.0  # no background in frame 2
    for m in (masks, torch.zeros(4, 48), torch.ones(4, 48)):
        out = dual_consistency_attention(q, k, v, HEADS, masks=m, mgdm="multiply")
        assert torch.isfinite(out).all()
        assert _rel(out, reference_multiply(q, k, v, HEADS, (0.7, 0.15, 0.15), m)) < 1e-5
    # all background: every key is kept (multiplied by 1): plain DCA
    zeros = dual_consistency_attention(q, k, v, HEADS, masks=torch.zeros(4, 48), mgdm="multiply")
    assert _rel(zeros, dual_consistency_attention(q, k, v, HEADS).double()) < 1e-5


def test_multiply_large_logits_no_nan():
    q, k, v = _qkv(frames=3, scale=60.0)
    out = dual_consistency_attention(q, k, v, HEADS, masks=_soft(_blob_masks(3).reshape(3, 48)), mgdm="multiply")
    assert torch.isfinite(out).all()


def test_multiply_runs_unmasked_kernels_through_the_injected_function():
    calls = []

    def attn(q, k, v, heads, mask=None, **kw):
        calls.append(mask is not None)
        return sdpa_attention(q, k, v, heads, mask=mask)

    q, k, v = _qkv(frames=3)
    masks = _blob_masks(3).reshape(3, 48)
    out = dual_consistency_attention(q, k, v, HEADS, masks=masks, attention=attn, mgdm="multiply")
    assert len(calls) >= 7 and not any(calls)  # 2 regions x 3 terms (or more slices) + the source frame
    assert _rel(out, reference_multiply(q, k, v, HEADS, (0.7, 0.15, 0.15), masks)) < 1e-5


def test_bad_mgdm_raises():
    q, k, v = _qkv(frames=2)
    for bad in ("mul", None, 1):
        with pytest.raises(ValueError, match="^mgdm: .*'exclude'"):
            dual_consistency_attention(q, k, v, HEADS, mgdm=bad)
        with pytest.raises(ValueError, match="^mgdm: "):
            DCAPatch(mgdm=bad)
    with pytest.raises(ValueError, match="^mgdm: "):
        dca_chunk(q, k, v, HEADS, mgdm="both")


def test_multiply_gradients_match_reference():
    q, k, v = (t.double().requires_grad_() for t in _qkv(frames=3, tokens=12, channels=8))
    masks = (torch.arange(36).reshape(3, 12) % 3 == 0).double()
    masks[1, :4] = 0.25
    out = dual_consistency_attention(q, k, v, 2, masks=masks, mgdm="multiply")
    gq, gk, gv = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref = reference_multiply(q, k, v, 2, (0.7, 0.15, 0.15), masks)
    rq, rk, rv = torch.autograd.grad(ref.square().sum(), (q, k, v))
    assert all(torch.allclose(a, b, atol=1e-9) for a, b in ((gq, rq), (gk, rk), (gv, rv)))


# -- patch ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mgdm", ["exclude", "multiply"])
@pytest.mark.parametrize("windows", [[[0, 1, 2], [3, 4, 5], [6, 7]], [[0], [1], [2, 3, 4, 5, 6, 7]],
                                     [[0, 1, 2], [0, 3, 4], [0, 5, 6, 7]]])
def test_windowed_equals_all_at_once(mgdm, windows):
    frames, layout = 8, [1, 0]
    chunks = [_qkv(frames=frames, seed=s) for s in range(2)]
    q, k, v = (torch.cat([c[i] for c in chunks]) for i in range(3))
    masks = _soft(_blob_masks(frames).reshape(frames, 48)).reshape(frames, 6, 8)
    patch = DCAPatch(weights=W, masks=masks, mgdm=mgdm)
    full = patch(q, k, v, _opts(layout))
    ref = reference_multiply(chunks[0][0], chunks[0][1], chunks[0][2], HEADS, W, masks.reshape(frames, 48))
    if mgdm == "multiply":
        assert _rel(full[:frames], ref) < 1e-5
    carry = {}
    got = {}
    for w in windows:
        sel = w + [frames + i for i in w]
        out = patch(q[sel], k[sel], v[sel], _opts(layout, frame_ids=w, kv_carry=carry))
        for j, f in enumerate(w):
            got[f] = (out[j], out[len(w) + j])
    windowed = torch.cat([torch.stack([got[f][0] for f in range(frames)]),
                          torch.stack([got[f][1] for f in range(frames)])])
    assert torch.allclose(windowed, full, atol=1e-6)


def test_per_call_mgdm_overrides_the_patch():
    q, k, v = _qkv(frames=4)
    masks = _blob_masks(4)
    exclude, multiply = DCAPatch(masks=masks), DCAPatch(masks=masks, mgdm="multiply")
    assert multiply.mgdm == "multiply" and exclude.mgdm == "exclude"
    a = exclude(q, k, v, _opts([0], mgdm="multiply"))
    assert torch.equal(a, multiply(q, k, v, _opts([0])))
    b = multiply(q, k, v, _opts([0], mgdm="exclude"))
    assert torch.equal(b, exclude(q, k, v, _opts([0])))
    assert torch.equal(multiply(q, k, v, _opts([0], mgdm=None)), a)  # None: the patch's own


def test_bad_per_call_mgdm_warns_once_and_uses_the_patch_choice(caplog):
    q, k, v = _qkv(frames=4)
    patch = DCAPatch(masks=_blob_masks(4), mgdm="multiply")
    with caplog.at_level(logging.WARNING, logger="attention.patch"):
        out = patch(q, k, v, _opts([0], mgdm="divide"))
        patch(q, k, v, _opts([0], mgdm="divide"))
    assert torch.equal(out, patch(q, k, v, _opts([0])))
    assert len([r for r in caplog.records if "mgdm" in r.message]) == 1


def test_patch_with_mgdm_survives_deepcopy():
    patch = DCAPatch(masks=_blob_masks(4), mgdm="multiply")
    model_options = {"transformer_options": {"patches_replace": {"attn1": {("output", 3): patch}}}}
    clone = copy.deepcopy(model_options)["transformer_options"]["patches_replace"]["attn1"][("output", 3)]
    assert clone is not patch and clone.mgdm == "multiply" and clone.state is patch.state
    q, k, v = _qkv(frames=4)
    assert torch.equal(clone(q, k, v, _opts([0])), patch(q, k, v, _opts([0])))


def test_host_function_gets_every_call_and_transformer_options_when_it_takes_them():
    """A ComfyUI-style function (``**kwargs``) also receives ``transformer_options`` (ComfyUI's
    optimized_attention applies ``optimized_attention_override`` from it); a strict one does not."""
    seen = []

    def host(q, k, v, heads, mask=None, attn_precision=None, **kwargs):
        seen.append((mask is not None, "transformer_options" in kwargs))
        return sdpa_attention(q, k, v, heads, mask=mask)

    def strict(q, k, v, heads, mask=None, attn_precision=None):
        seen.append((mask is not None, False))
        return sdpa_attention(q, k, v, heads, mask=mask)

    q, k, v = _qkv(frames=4)
    masks = _blob_masks(4)
    for mgdm in ("exclude", "multiply"):
        seen.clear()
        out = DCAPatch(masks=masks, attention=host, mgdm=mgdm)(q, k, v, _opts([0]))
        assert seen and all(t for _, t in seen)
        assert any(m for m, _ in seen) == (mgdm == "exclude")
        ref = DCAPatch(masks=masks, mgdm=mgdm)(q, k, v, _opts([0]))
        assert torch.allclose(out, ref, atol=1e-6)
        seen.clear()
        strict_patch = DCAPatch(masks=masks, attention=strict, mgdm=mgdm)
        strict_patch(q, k, v, _opts([0]))
        assert seen
        clone = copy.deepcopy(strict_patch)  # after a call (the signature check is cached on the patch)
        assert torch.equal(clone(q, k, v, _opts([0])), strict_patch(q, k, v, _opts([0])))


@pytest.mark.parametrize("masked", [False, True])
def test_window_previous_frames_are_views_not_copies(masked):
    """A window [f..f+w) attends to frames f-1..f+w-2: kv_carry's one frame plus a view of its own K/V (no
    copy of the window's K/V); every multi-frame K the attention function sees is the window's own."""
    seen = []

    def attn(q, k, v, heads, mask=None, **kw):
        seen.append((k.shape[0], k.untyped_storage().data_ptr()))
        return sdpa_attention(q, k, v, heads, mask=mask)

    q, k, v = _qkv(frames=8)
    patch = DCAPatch(masks=_blob_masks(8) if masked else None, attention=attn)
    carry = {}
    patch(q[:4], k[:4], v[:4], _opts([0], frame_ids=[0, 1, 2, 3], kv_carry=carry))
    seen.clear()
    kw = k[4:].clone()
    patch(q[4:], kw, v[4:].clone(), _opts([0], frame_ids=[4, 5, 6, 7], kv_carry=carry))
    multi = [p for n, p in seen if n > 1]
    assert multi and all(p == kw.untyped_storage().data_ptr() for p in multi)


def test_dca_chunk_prev_pieces_equal_one_tensor_and_are_checked():
    q, k, v = _qkv(frames=6)
    masks = _soft(_blob_masks(6).reshape(6, 48))
    for mgdm in ("exclude", "multiply"):
        kw = dict(has_source=False, first_kv=(k[:1], v[:1]), masks=masks[3:], first_mask=masks[:1],
                  prev_masks=masks[2:5], mgdm=mgdm)
        one = dca_chunk(q[3:], k[3:], v[3:], HEADS, W, prev_kv=(k[2:5], v[2:5]), **kw)
        pieces = dca_chunk(q[3:], k[3:], v[3:], HEADS, W, prev_kv=[(k[2:3], v[2:3]), (k[3:5], v[3:5])], **kw)
        assert torch.allclose(one, pieces, atol=1e-6)
    with pytest.raises(ValueError, match="^prev_kv: .*2 previous frames for 3 target"):
        dca_chunk(q[3:], k[3:], v[3:], HEADS, W, has_source=False, first_kv=(k[:1], v[:1]), prev_kv=(k[2:4], v[2:4]))
    with pytest.raises(ValueError, match="^prev_kv: "):
        dca_chunk(q[3:], k[3:], v[3:], HEADS, W, has_source=False, first_kv=(k[:1], v[:1]), prev_kv=[])
