"""``DCAPatch``: DCAM/MGDM as a ComfyUI ``attn1`` replace patch, plus installation on a ModelPatcher."""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import torch

from ._shared import CountedPatch, SharedState
from .blocks import attention_block_ids, block_selected, normalise_blocks, resize_masks, token_grid
from .dca import DEFAULT_WEIGHTS, MGDM_MODES, dca_chunk, validate_mgdm, validate_weights

logger = logging.getLogger(__name__)


def check_image_masks(masks, name: str = "masks") -> Optional[torch.Tensor]:
    """Validate (N, H, W) character masks in [0, 1] (a (H, W) mask is taken as one frame)."""
    if masks is None:
        return None
    if not isinstance(masks, torch.Tensor) or masks.ndim not in (2, 3) or masks.numel() == 0:
        raise ValueError(f"{name}: expected a tensor (N, H, W) of per-frame character masks, got "
                         f"{tuple(getattr(masks, 'shape', ())) or type(masks).__name__}. Fix: pass one mask per frame")
    masks = masks.detach().float()
    if masks.ndim == 2:
        masks = masks.unsqueeze(0)
    if not bool(torch.isfinite(masks).all()) or bool((masks < 0).any() or (masks > 1).any()):
        raise ValueError(f"{name}: values must lie in [0, 1] (1 = character). Fix: clamp or normalise the masks")
    return masks


class DCAPatch(CountedPatch):
    """ComfyUI ``attn1`` replace patch running dual consistency attention (and MGDM when masks are given).

    Call signature (ComfyUI's): ``patch(q, k, v, extra_options) -> out`` with q, k, v (B, L, heads*d).

    Args:
        weights: (l1, l2, l3) first-frame / previous-frame / own-frame weights, non-negative, summing to 1.
        masks: optional (N, H, W) character masks in [0, 1], indexed by global frame id, any resolution
            (resized to each layer's token grid, area-averaged). ``transformer_options["poseanimate"]["masks"]``
            overrides them per call.
        blocks: where DCA acts: None = every ("output", *) block, or a list of names / (name, id) /
            (name, id, transformer_index). Other blocks it is installed on get plain attention.
        attention: optional attention function ``fn(q, k, v, heads, mask=None, attn_precision=None)``
            (ComfyUI's ``comfy.ldm.modules.attention.optimized_attention`` fits); default torch SDPA. Every
            attention call of the patch goes through it, the masked MGDM calls included.
        mgdm: MGDM formulation with masks, "exclude" (default) or "multiply" (see
            :func:`attention.dual_consistency_attention`); ``transformer_options["poseanimate"]["mgdm"]``
            overrides it per call.

    Batch layout: ``extra_options["cond_or_uncond"]`` lists the chunks (the batch is those chunks
    concatenated); every chunk holds the same frames, by default frames 0..F-1 with frame 0 (the source)
    first, or ``transformer_options["poseanimate"]["frame_ids"]`` (see DEVELOPERS.md, DCAM windows; the
    ``kv_carry`` dict there is read and written). A batch it cannot map to frames gets plain attention and
    one logged warning.

    ``patch.calls`` / ``patch.applied`` count calls per (block_name, block_id, block_index) (all calls /
    calls where DCA ran); they are shared with every deep copy, so they can be read on the patch object you
    installed after ComfyUI cloned the model.
    """

    def __init__(self, weights: Sequence[float] = DEFAULT_WEIGHTS, masks: Optional[torch.Tensor] = None,
                 blocks=None, attention=None, mgdm: str = "exclude"):
        self.weights = validate_weights(weights)
        self.mgdm = validate_mgdm(mgdm)
        self.masks = check_image_masks(masks)
        self.blocks = normalise_blocks(blocks)
        self.attention = attention
        self.state = SharedState()

    # -- introspection -------------------------------------------------------------------------------------
    def applies_to(self, block, block_index: int = 0) -> bool:
        return block_selected(self.blocks, block, block_index)

    # -- the patch -----------------------------------------------------------------------------------------
    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        heads = int(extra_options["n_heads"])
        block = extra_options.get("block")
        block_index = int(extra_options.get("block_index", 0) or 0)
        key = (block[0], block[1], block_index) if block is not None else (None, None, block_index)
        self.state.calls[key] += 1
        attn, kw = self._attn(extra_options)
        if not self.applies_to(block, block_index):
            return attn(q, k, v, heads, **kw)
        plan = self._plan(q, k, v, extra_options)
        if isinstance(plan, str):
            self.state.warn_once(logger, "layout", f"PoseAnimate DCA: {plan}; using plain self-attention "
                                 "for such batches (this warning is shown once)")
            return attn(q, k, v, heads, **kw)
        frames, chunks, ids, pa = plan
        masks = self._token_masks(q, extra_options, pa, ids)
        mgdm = self._mgdm(pa)
        carry = pa.get("kv_carry")
        outs = []
        for c, kind in enumerate(chunks):
            sl = slice(c * frames, (c + 1) * frames)
            outs.append(self._chunk(q[sl], k[sl], v[sl], heads, ids, masks, carry,
                                    (key[0], key[1], block_index, kind), attn, kw, mgdm))
        self.state.applied[key] += 1
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _plan(self, q, k, v, extra_options):
        if not (q.shape == k.shape == v.shape):
            return f"q/k/v shapes differ ({tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)})"
        chunks = list(extra_options.get("cond_or_uncond") or [0])
        batch = q.shape[0]
        if batch % len(chunks):
            return f"batch of {batch} does not split into {len(chunks)} chunks (cond_or_uncond={chunks})"
        frames = batch // len(chunks)
        pa = extra_options.get("poseanimate") or {}
        ids = pa.get("frame_ids")
        ids = list(range(frames)) if ids is None else [int(i) for i in ids]
        if len(ids) != frames:
            return f"frame_ids has {len(ids)} entries but each chunk holds {frames} frames"
        if len(set(ids)) != len(ids) or min(ids) < 0:
            return f"frame_ids {ids} must be distinct non-negative frame indices"
        if 0 in ids[1:]:
            return f"frame 0 must come first in its chunk (frame_ids {ids})"
        carry = pa.get("kv_carry")
        if ids[0] != 0:
            block = extra_options.get("block") or (None, None)
            bi = int(extra_options.get("block_index", 0) or 0)
            for kind in chunks:
                entry = (carry or {}).get((block[0], block[1], bi, kind)) or {}
                if "first" not in entry:
                    return f"chunk of frames {ids} lacks frame 0 and kv_carry holds no frame-0 keys for it"
                if ids[0] - 1 not in ids and "prev" not in entry:
                    return f"chunk of frames {ids} lacks frame {ids[0] - 1} and kv_carry holds no previous frame"
        return frames, chunks, ids, pa

    def _mgdm(self, pa):
        mgdm = pa.get("mgdm", None)
        if mgdm is None:
            return self.mgdm
        if mgdm not in MGDM_MODES:
            self.state.warn_once(logger, "mgdm", f"PoseAnimate DCA: poseanimate mgdm must be one of {MGDM_MODES}, "
                                 f"got {mgdm!r}; using the patch's own {self.mgdm!r} (this warning is shown once)")
            return self.mgdm
        return mgdm

    def _token_masks(self, q, extra_options, pa, ids):
        source = pa.get("masks", None)
        if source is None:
            source = self.masks
        if source is None:
            return None
        if not isinstance(source, torch.Tensor) or source.ndim not in (2, 3):
            self.state.warn_once(logger, "masks", "PoseAnimate DCA: poseanimate masks must be a tensor (N, H, W); "
                                 "running DCA without masks (this warning is shown once)")
            return None
        need = max(ids)
        hw = token_grid(q.shape[1], extra_options.get("original_shape"),
                        fallback_hw=(source.shape[-2], source.shape[-1]))
        if source.ndim == 2:
            source = source.unsqueeze(0)
        if hw is None or source.ndim != 3 or source.shape[0] <= need:
            self.state.warn_once(
                logger, "masks",
                f"PoseAnimate DCA: masks of shape {tuple(source.shape)} do not cover frame {need} or the layer's "
                f"{q.shape[1]} tokens; running DCA without masks (this warning is shown once)")
            return None
        cache = self.state.cache
        ck = (id(source), hw, q.device)
        hit = cache.get(ck)
        if hit is None or hit[0] is not source:
            if len(cache) > 32:
                cache.clear()
            hit = (source, resize_masks(source.to(q.device), hw))
            cache[ck] = hit
        return hit[1]

    def _chunk(self, q, k, v, heads, ids, masks, carry, carry_key, attn, kw, mgdm):
        n = q.shape[0]
        has_source = ids[0] == 0
        entry = carry.get(carry_key) if carry is not None else None
        entry = entry or {}
        s = 1 if has_source else 0
        pos = {g: j for j, g in enumerate(ids)}
        # reference for each target: chunk position, or -1 for kv_carry["prev"]
        refs = []
        for j in range(s, n):
            g = ids[j]
            if g - 1 in pos:
                refs.append(pos[g - 1])
            elif j == s and "prev" in entry:
                refs.append(-1)
            else:
                refs.append(j - 1)
        ref_ids = [ids[r] if r >= 0 else ids[s] - 1 for r in refs]
        first_kv = None if has_source else tuple(t.to(q) for t in entry["first"])
        prev_kv = None
        if not (has_source and refs == list(range(n - 1))):
            # one piece per run of consecutive references: chunk slices are views, so a window
            # [f..f+w) costs no copy of its K/V (only kv_carry's one previous frame is separate)
            prev_kv = []
            for r in refs:
                if r >= 0 and prev_kv and prev_kv[-1][0] >= 0 and prev_kv[-1][1] == r:
                    prev_kv[-1][1] = r + 1
                else:
                    prev_kv.append([r, r + 1])
            prev_kv = [tuple(t.to(q) for t in entry["prev"]) if a < 0 else (k[a:b], v[a:b])
                       for a, b in prev_kv]
        mq = m0 = mp = None
        if masks is not None:
            mq = masks[ids]
            m0 = masks[:1]
            mp = masks[ref_ids]
        out = dca_chunk(q, k, v, heads, self.weights, has_source=has_source, first_kv=first_kv, prev_kv=prev_kv,
                        masks=mq, first_mask=m0, prev_masks=mp, attention=attn, attention_kwargs=kw, mgdm=mgdm)
        if carry is not None:
            # copies, not views: a view would keep this window's whole K/V (every DCA block, every chunk
            # kind) alive until the next window; the copy is one frame per block
            new = dict(entry)
            if has_source:
                new["first"] = (k[:1].clone(), v[:1].clone())
            new["prev"] = (k[-1:].clone(), v[-1:].clone())
            carry[carry_key] = new
        return out


def install_patches(model, dca: Optional[DCAPatch] = None, capture=None):
    """Install ``dca`` (attn1) and/or ``capture`` (attn2) on a ComfyUI ModelPatcher, in place.

    Call it on a ``clone()`` of the model (``m = model.clone(); install_patches(m, dca=...)``). Each patch
    is installed on every block with attention that its ``blocks`` selection covers (found by walking
    ``model.model.diffusion_model``). Returns the list of ``(kind, block_name, block_id[, index])`` installed.
    Duck-typed: needs only ``set_model_attn1_replace`` / ``set_model_attn2_replace`` and the UNet.
    """
    unet = model.model.diffusion_model
    installed = []
    for patch, kind, setter in ((dca, "attn1", "set_model_attn1_replace"),
                                (capture, "attn2", "set_model_attn2_replace")):
        if patch is None:
            continue
        for name in ("input", "middle", "output"):
            try:
                ids = attention_block_ids(unet, name)
            except AttributeError:
                continue
            for bid in ids:
                exact = [b for b in patch.blocks if not isinstance(b, str) and b[0] == name and b[1] == bid]
                if name in patch.blocks or any(len(b) == 2 for b in exact):
                    getattr(model, setter)(patch, name, bid)
                    installed.append((kind, name, bid))
                else:
                    for b in exact:
                        getattr(model, setter)(patch, name, bid, b[2])
                        installed.append((kind, name, bid, b[2]))
    return installed
