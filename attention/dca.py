"""Dual consistency attention (DCAM) with mask-guided decoupling (MGDM), exact to the paper's formulas.

For one chunk of frames with the source frame 0 first::

    out_0 = A(Q_0, K_0, V_0)
    out_i = l1 * A(Q_i, K_0, V_0) + l2 * A(Q_i, K_{i-1}, V_{i-1}) + l3 * A(Q_i, K_i, V_i)      (i >= 1)

``A`` is multi-head scaled-dot-product attention computed by a fused kernel (torch SDPA by default, or an
injected ComfyUI-style attention function); no score matrix over all frames is ever built. The three
attentions are batched: self- and previous-frame attention run as one batched call each, and every frame's
queries against frame 0 run as *one* long query sequence against frame 0's keys (queries are independent,
so concatenating them along the sequence is exact and needs no copy of K_0).

MGDM (masks ``m`` in [0, 1], one per token) has two formulations, chosen by ``mgdm``.

``mgdm="exclude"`` (default): a reference frame's keys split into character keys
(``m >= 0.5``) and background keys (``m < 0.5``); character queries attend only to character keys and
background queries only to background keys (excluded keys get a ``-inf`` attention bias that depends on the
key only, so it broadcasts and costs no score-sized memory). A query with a soft mask gets the paper's
eq. (10) blend ``m * A_char + (1 - m) * A_background``. If a reference frame has no character (or no
background) keys, that term falls back to unmasked attention for those queries, so no row is ever fully
masked and no NaN can appear. To keep the cost near three attentions, queries are gathered per region
(padded to the largest region across frames) instead of running both regions for every query; a soft query
(0 < m < 1) simply belongs to both groups.

``mgdm="multiply"`` (the paper's decoupling by multiplying with the mask): a reference frame ``r`` with key
masks ``m_r`` is split into a character part ``(K_r * m_r, V_r * m_r)`` and a background part
``(K_r * (1 - m_r), V_r * (1 - m_r))`` (per token, all channels), and a query with mask ``m`` gets
``m * A(Q, K_r m_r, V_r m_r) + (1 - m) * A(Q, K_r (1 - m_r), V_r (1 - m_r))`` for each of the three terms.
Zeroed keys still take part in the softmax (score 0) with zero values, so the other region's keys dilute
the attention instead of being removed; an empty region gives a zero term. No bias is used (the fused
kernel runs unmasked) and no NaN can appear. The same query grouping as above keeps the cost near three
attentions; the scaled K/V are built one term, and at most a quarter of the term's frames, at a time.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

DEFAULT_WEIGHTS = (0.7, 0.15, 0.15)
MGDM_MODES = ("exclude", "multiply")
AttentionFn = Callable[..., torch.Tensor]
KV = Tuple[torch.Tensor, torch.Tensor]


def validate_weights(weights) -> Tuple[float, float, float]:
    """Return ``weights`` as three floats ``(l1, l2, l3)``; raise ``ValueError`` naming ``weights`` if invalid."""
    try:
        values = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        raise ValueError(
            f"weights: expected three numbers (first frame, previous frame, current frame), got {weights!r}. "
            f"Fix: pass e.g. {DEFAULT_WEIGHTS}"
        ) from None
    if len(values) != 3:
        raise ValueError(
            f"weights: expected three numbers (first frame, previous frame, current frame), got {len(values)}. "
            f"Fix: pass e.g. {DEFAULT_WEIGHTS}"
        )
    if not all(math.isfinite(w) for w in values) or min(values) < 0:
        raise ValueError(f"weights: every weight must be a finite number >= 0, got {values}. "
                         f"Fix: use non-negative weights that sum to 1, e.g. {DEFAULT_WEIGHTS}")
    if abs(sum(values) - 1.0) > 1e-4:
        raise ValueError(f"weights: the three weights must sum to 1, got {values} (sum {sum(values):.6g}). "
                         f"Fix: divide them by their sum or use e.g. {DEFAULT_WEIGHTS}")
    return values


def validate_mgdm(mgdm) -> str:
    """Return ``mgdm`` if it names an MGDM formulation; raise ``ValueError`` naming ``mgdm`` otherwise."""
    if not isinstance(mgdm, str) or mgdm not in MGDM_MODES:
        raise ValueError(f"mgdm: expected one of {', '.join(repr(m) for m in MGDM_MODES)}, got {mgdm!r}. "
                         "Fix: pass 'exclude' (each region keeps its own keys only) or 'multiply' "
                         "(keys/values multiplied by the mask)")
    return mgdm


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                   mask: Optional[torch.Tensor] = None, **_ignored) -> torch.Tensor:
    """Multi-head attention with torch's fused SDPA, in ComfyUI's layout.

    ``q`` (B, Lq, heads*d), ``k``/``v`` (B, Lk, heads*d); ``mask`` an additive bias broadcastable to
    (B, Lq, Lk) (this module passes (B, 1, Lk)). Extra keywords (``attn_precision``) are accepted and ignored.
    Same signature as ComfyUI's ``optimized_attention``, so either can be injected where an attention
    function is taken.
    """
    b, lq, c = q.shape
    d = c // heads
    qh = q.reshape(b, lq, heads, d).transpose(1, 2)
    kh = k.reshape(k.shape[0], k.shape[1], heads, d).transpose(1, 2)
    vh = v.reshape(v.shape[0], v.shape[1], heads, d).transpose(1, 2)
    if mask is not None:
        mask = mask.to(q.dtype)
        if mask.ndim == 3:
            mask = mask.unsqueeze(1)  # heads
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, lq, c)


def _key_bias(key_masks: torch.Tensor, character: bool, dtype: torch.dtype) -> torch.Tensor:
    """(B, Lk) key masks -> (B, 1, Lk) additive bias keeping one region's keys (all keys if it is empty)."""
    keep = key_masks >= 0.5 if character else key_masks < 0.5
    keep = keep | ~keep.any(dim=1, keepdim=True)  # empty region in this reference frame: unmasked attention
    bias = torch.zeros(keep.shape, dtype=dtype, device=key_masks.device)
    return bias.masked_fill_(~keep, float("-inf")).unsqueeze(1)


def _region_groups(query_masks: torch.Tensor):
    """Yield (is_character, index (B, M), valid (B, M), weight (B, M)) gathering each region's queries.

    A query belongs to the character group when m > 0 (weight m) and to the background group when m < 1
    (weight 1 - m). Rows are padded to the largest group size; padding entries have valid False, weight 0.
    """
    for character in (True, False):
        sel = query_masks > 0 if character else query_masks < 1
        m = int(sel.sum(dim=1).max()) if sel.numel() else 0
        if m == 0:
            continue
        order = torch.argsort((~sel).to(torch.uint8), dim=1, stable=True)[:, :m]  # selected first
        valid = torch.gather(sel, 1, order)
        weight = torch.gather(query_masks if character else 1 - query_masks, 1, order) * valid
        yield character, order, valid, weight


def _dense_bias(query_char: torch.Tensor, key_masks: torch.Tensor, dtype) -> torch.Tensor:
    """(B, Lq) bool character queries, (B or 1, Lk) key masks -> (B, Lq, Lk) additive region bias."""
    return torch.where(query_char.unsqueeze(-1), _key_bias(key_masks, True, dtype),
                       _key_bias(key_masks, False, dtype))


def _prev_segments(prev_kv, nt: int):
    """``prev_kv`` as [(t0, t1, K, V)]: targets t0..t1-1 attend to K[0..], V[0..] (one piece or several)."""
    pieces = [prev_kv] if len(prev_kv) == 2 and isinstance(prev_kv[0], torch.Tensor) else list(prev_kv)
    segs, t0 = [], 0
    for kp, vp in pieces:
        segs.append((t0, t0 + kp.shape[0], kp, vp))
        t0 += kp.shape[0]
    if t0 != nt:
        raise ValueError(f"prev_kv: holds {t0} previous frames for {nt} target frames. Fix: pass one per target")
    return segs


def _dense_binary(q, k, v, heads, weights, s, k0, v0, segs, masks, m0, mp, attn, kw):
    l1, l2, l3 = weights
    n, L, C = q.shape
    nt = n - s
    char = masks >= 0.5
    bias = _dense_bias(char, masks, q.dtype)
    if s:
        bias[0] = 0  # the source frame keeps plain self-attention
    out = attn(q, k, v, heads, mask=bias, **kw)
    out_t = out[s:].mul_(l3)
    for a, b, kp, vp in segs:
        bias = _dense_bias(char[s + a:s + b], mp[a:b], q.dtype)
        out_t[a:b].add_(attn(q[s + a:s + b], kp, vp, heads, mask=bias, **kw), alpha=l2)
    bias = _dense_bias(char[s:].reshape(1, nt * L), m0, q.dtype)
    out_t.add_(attn(q[s:].reshape(1, nt * L, C), k0, v0, heads, mask=bias, **kw).reshape(nt, L, C), alpha=l1)
    return out


MULTIPLY_SLICES = 4  # "multiply" builds its scaled K/V for at most 1/4 of a term's frames at a time


def _region_term(qg, kr, vr, key_masks, character, mgdm, heads, attn, kw):
    """One MGDM attention term for gathered queries ``qg`` against one reference region, as pieces
    ``(a, b, out)`` covering frames a..b-1 of ``qg`` in order (one piece for "exclude")."""
    if mgdm == "exclude":
        yield 0, qg.shape[0], attn(qg, kr, vr, heads, mask=_key_bias(key_masks, character, qg.dtype), **kw)
        return
    w_all = (key_masks if character else 1 - key_masks).to(qg.dtype).unsqueeze(-1)
    n = kr.shape[0]
    step = max(1, -(-n // MULTIPLY_SLICES))
    if torch.is_grad_enabled() and (kr.requires_grad or vr.requires_grad):
        for a in range(0, n, step):
            b = min(n, a + step)
            yield a, b, attn(qg[a:b], kr[a:b] * w_all[a:b], vr[a:b] * w_all[a:b], heads, **kw)
        return
    # one pair of buffers reused by every slice (stream-ordered on CUDA, so reuse is safe)
    kb = torch.empty((min(step, n),) + tuple(kr.shape[1:]), dtype=qg.dtype, device=qg.device)
    vb = torch.empty_like(kb)
    for a in range(0, n, step):
        b = min(n, a + step)
        ks, vs = kb[:b - a], vb[:b - a]
        torch.mul(kr[a:b], w_all[a:b], out=ks)
        torch.mul(vr[a:b], w_all[a:b], out=vs)
        yield a, b, attn(qg[a:b], ks, vs, heads, **kw)


def _term(qg, kr, vr, key_masks, character, mgdm, heads, attn, kw):
    """:func:`_region_term` as one tensor."""
    pieces = [o for _, _, o in _region_term(qg, kr, vr, key_masks, character, mgdm, heads, attn, kw)]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def dca_chunk(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
              weights: Sequence[float] = DEFAULT_WEIGHTS, *,
              has_source: bool = True,
              first_kv: Optional[KV] = None,
              prev_kv=None,
              masks: Optional[torch.Tensor] = None,
              first_mask: Optional[torch.Tensor] = None,
              prev_masks: Optional[torch.Tensor] = None,
              attention: Optional[AttentionFn] = None,
              attention_kwargs: Optional[dict] = None,
              mgdm: str = "exclude") -> torch.Tensor:
    """The one DCA/MGDM core, for one chunk of ``n`` frames (used by the public function and the patch).

    ``q, k, v`` (n, L, C). If ``has_source``, position 0 is frame 0 and gets plain self-attention; the other
    positions ("targets", in order) get DCA. ``first_kv`` = frame 0's (K, V), each (1, L, C), required when
    the chunk lacks frame 0 (default: position 0 of the chunk). ``prev_kv`` = each target's previous-frame
    (K, V), each (n_targets, L, C), or a list of such (K, V) pieces covering the targets in order (pieces
    avoid copying K/V into one tensor; default: the preceding chunk position, ``k[:-1]``, which needs
    ``has_source``). ``masks`` (n, L) are the chunk frames' masks (queries and current-frame keys);
    ``first_mask`` (1, L) and ``prev_masks`` (n_targets, L) are the reference frames' masks (defaults follow
    the K/V defaults). ``mgdm`` ("exclude" or "multiply", see the module docstring) picks the MGDM
    formulation when masks are given. Weights are taken as given (validate with :func:`validate_weights`).
    """
    attn = attention or sdpa_attention
    kw = attention_kwargs or {}
    validate_mgdm(mgdm)
    l1, l2, l3 = (float(w) for w in weights)
    n, L, C = q.shape
    s = 1 if has_source else 0
    nt = n - s
    if first_kv is None:
        if not has_source:
            raise ValueError("first_kv: a chunk without frame 0 needs frame 0's keys/values. Fix: pass first_kv")
        first_kv = (k[:1], v[:1])
    if prev_kv is None:
        if not has_source:
            raise ValueError("prev_kv: a chunk without frame 0 needs its first frame's previous keys/values. "
                             "Fix: pass prev_kv")
        prev_kv = (k[:-1], v[:-1])
    k0, v0 = first_kv
    if nt == 0:
        return attn(q, k, v, heads, **kw)
    segs = _prev_segments(prev_kv, nt)
    qt, kt, vt = q[s:], k[s:], v[s:]
    grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (q, k, v, k0, v0, *(x for seg in segs for x in seg[2:])))

    if masks is None:
        self_all = attn(q, k, v, heads, **kw)
        if grad:
            first = attn(qt.reshape(1, nt * L, C), k0, v0, heads, **kw).reshape(nt, L, C)
            prev = [attn(qt[a:b], kp, vp, heads, **kw) for a, b, kp, vp in segs]
            mixed = l3 * self_all[s:] + l1 * first + l2 * (prev[0] if len(prev) == 1 else torch.cat(prev))
            return torch.cat([self_all[:s], mixed]) if s else mixed
        # in place, one extra term alive at a time
        self_t = self_all[s:].mul_(l3)
        self_t.add_(attn(qt.reshape(1, nt * L, C), k0, v0, heads, **kw).reshape(nt, L, C), alpha=l1)
        for a, b, kp, vp in segs:
            self_t[a:b].add_(attn(qt[a:b], kp, vp, heads, **kw), alpha=l2)
        return self_all

    masks = masks.to(device=q.device, dtype=torch.float32)
    m0 = masks[:1] if first_mask is None else first_mask.to(masks)
    mp = masks[s - 1:n - 1] if prev_masks is None else prev_masks.to(masks)
    mt = masks[s:]
    binary = not grad and bool(((mt == 0) | (mt == 1)).all())
    if mgdm == "exclude" and binary and L <= C:
        # short sequences: a dense (query, key) region bias costs no more memory than the output and keeps
        # the fused kernel at full query length (the grouped path below pays for short, padded groups)
        return _dense_binary(q, k, v, heads, (l1, l2, l3), s, k0, v0, segs, masks, m0, mp, attn, kw)
    flat_q = qt.reshape(nt * L, C)
    rows = torch.arange(nt, device=q.device).unsqueeze(1) * L
    # flat output buffer with one spare row that absorbs the padding entries of the binary fast path
    if binary:
        out = torch.empty(n * L + 1, C, dtype=q.dtype, device=q.device)
    else:
        out = torch.zeros(n * L + (0 if grad else 1), C, dtype=q.dtype, device=q.device)
    for character, index, valid, weight in _region_groups(mt):
        m = index.shape[1]
        flat = index + rows  # (nt, m) token index into flat_q
        qg = flat_q.index_select(0, flat.reshape(-1)).reshape(nt, m, C)
        q1 = qg.reshape(1, nt * m, C)  # every target's queries against frame 0, as one sequence
        if grad:
            o = l3 * _term(qg, kt, vt, mt, character, mgdm, heads, attn, kw)
            prev = [_term(qg[a:b], kp, vp, mp[a:b], character, mgdm, heads, attn, kw) for a, b, kp, vp in segs]
            o = o + l2 * (prev[0] if len(prev) == 1 else torch.cat(prev))
            o = o + l1 * _term(q1, k0, v0, m0, character, mgdm, heads, attn, kw).reshape(nt, m, C)
            o = o * weight.to(q.dtype).unsqueeze(-1)
            out = out.index_add(0, (flat + s * L).reshape(-1), o.reshape(-1, C))
            continue
        # accumulate term by term so at most two group-sized results are alive
        o = None
        for a, b, r in _region_term(qg, kt, vt, mt, character, mgdm, heads, attn, kw):
            if o is None and b == nt:
                o = r.mul_(l3)
            else:
                o = torch.empty_like(qg) if o is None else o
                torch.mul(r, l3, out=o[a:b])
        for a, b, kp, vp in segs:
            for c, d, r in _region_term(qg[a:b], kp, vp, mp[a:b], character, mgdm, heads, attn, kw):
                o[a + c:a + d].add_(r, alpha=l2)
        r = None  # release the last term before the next one is computed
        o.add_(_term(q1, k0, v0, m0, character, mgdm, heads, attn, kw).reshape(nt, m, C), alpha=l1)
        del qg, q1
        if binary:  # every query lies in exactly one group: copy, pads go to the spare row
            dst = torch.where(valid, flat + s * L, n * L)
            out.index_copy_(0, dst.reshape(-1), o.reshape(-1, C))
        else:
            o.mul_(weight.to(q.dtype).unsqueeze(-1))
            out.index_add_(0, (flat + s * L).reshape(-1), o.reshape(-1, C))
    if grad:
        out = out.reshape(n, L, C)
        return torch.cat([attn(q[:1], k[:1], v[:1], heads, **kw), out[1:]]) if s else out
    out = out[:n * L].view(n, L, C)
    if s:
        out[:1] = attn(q[:1], k[:1], v[:1], heads, **kw)
    return out


def _check_qkv(q, k, v, heads):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.ndim != 3:
            raise ValueError(f"{name}: expected a tensor (F, L, heads*d), got "
                             f"{getattr(t, 'shape', type(t).__name__)}. Fix: pass one chunk of frames, frame 0 first")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"k: q, k and v must have the same shape (F, L, heads*d), got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}. Fix: pass self-attention projections of one chunk")
    if not isinstance(heads, int) or heads < 1 or q.shape[-1] % heads:
        raise ValueError(f"heads: must be a positive integer dividing the channel count {q.shape[-1]}, got {heads!r}. "
                         "Fix: pass the attention layer's head count")


def check_token_masks(masks, frames: int, tokens: int) -> torch.Tensor:
    """Validate per-token masks (frames, tokens) in [0, 1]; raise ``ValueError`` naming ``masks``."""
    if not isinstance(masks, torch.Tensor) or tuple(masks.shape) != (frames, tokens):
        raise ValueError(f"masks: expected a tensor of shape (F, L) = ({frames}, {tokens}), got "
                         f"{tuple(getattr(masks, 'shape', ())) or type(masks).__name__}. "
                         "Fix: pass one mask value per frame and token, or None")
    if masks.is_floating_point():
        bad = not bool(torch.isfinite(masks).all()) or bool((masks < 0).any() or (masks > 1).any())
    else:
        masks = masks.float()
        bad = bool((masks < 0).any() or (masks > 1).any())
    if bad:
        raise ValueError("masks: values must lie in [0, 1] (1 = character, 0 = background). "
                         "Fix: clamp or normalise them")
    return masks


def dual_consistency_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                               weights: Sequence[float] = DEFAULT_WEIGHTS, masks: Optional[torch.Tensor] = None,
                               *, attention: Optional[AttentionFn] = None, mgdm: str = "exclude") -> torch.Tensor:
    """Dual consistency attention (DCAM) for one chunk of frames, frame 0 (the source) first.

    Args:
        q, k, v: (F, L, heads*d) projected queries/keys/values of the chunk's self-attention.
        heads: number of attention heads.
        weights: (l1, l2, l3) for the first-frame, previous-frame and own-frame attention; non-negative,
            summing to 1. Default (0.7, 0.15, 0.15).
        masks: optional (F, L) character masks in [0, 1] (MGDM); None for plain DCA.
        attention: optional attention function ``fn(q, k, v, heads, mask=None)`` in the same (B, L, C)
            layout (e.g. ComfyUI's ``optimized_attention``); default torch SDPA.
        mgdm: MGDM formulation used with ``masks``: "exclude" (default; character queries attend only to
            character keys, background queries only to background keys) or "multiply" (keys and values
            multiplied by the mask, resp. 1 - mask); see the module docstring.

    Returns (F, L, heads*d). Frame 0 gets plain self-attention, frame i >= 1
    ``l1*A(Q_i,K_0,V_0) + l2*A(Q_i,K_{i-1},V_{i-1}) + l3*A(Q_i,K_i,V_i)``.
    """
    _check_qkv(q, k, v, heads)
    w = validate_weights(weights)
    validate_mgdm(mgdm)
    if masks is not None:
        masks = check_token_masks(masks, q.shape[0], q.shape[1])
    return dca_chunk(q, k, v, heads, w, masks=masks, attention=attention, mgdm=mgdm)
