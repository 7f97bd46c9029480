"""Cross-attention capture: an ``attn2`` replace patch that records per-frame attention maps of chosen tokens."""
from __future__ import annotations

import logging
from typing import Iterable, Optional, Sequence

import torch
import torch.nn.functional as F

from ._shared import CountedPatch, SharedState
from .blocks import block_selected, grid_factor, normalise_blocks, token_grid

logger = logging.getLogger(__name__)


class AttentionMapStore:
    """Accumulates per-frame maps (sum and count) at one fixed grid; shared, not duplicated, by deepcopy.

    Keep a reference to the store you handed to :class:`CrossAttentionCapture`; after sampling (whatever
    ComfyUI cloned meanwhile) read ``store.maps()``. Also tracks the denoising step for the capture.
    """

    def __init__(self) -> None:
        self._sum = {}
        self._count = {}
        self.size = None
        self.step = -1
        self._last_sigma = None
        self._first_key = None

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    def reset(self) -> None:
        self.__init__()

    def frames(self):
        """Sorted global frame ids with at least one recorded map."""
        return sorted(self._sum)

    def count(self, frame: int) -> int:
        return self._count.get(frame, 0)

    def add(self, frame_ids: Sequence[int], maps: torch.Tensor, size=None) -> None:
        """Add (F, h, w) maps for ``frame_ids``; resized (bilinear) to the store's grid (``size`` on first use)."""
        maps = maps.detach().float()
        if self.size is None:
            self.size = tuple(size) if size is not None else tuple(maps.shape[-2:])
        if tuple(maps.shape[-2:]) != self.size:
            maps = F.interpolate(maps.unsqueeze(1), size=self.size, mode="bilinear", align_corners=False).squeeze(1)
        maps = maps.cpu()
        for f, m in zip(frame_ids, maps):
            f = int(f)
            if f in self._sum:
                self._sum[f] += m
                self._count[f] += 1
            else:
                self._sum[f] = m.clone()
                self._count[f] = 1

    def maps(self, frames: Optional[Iterable[int]] = None) -> torch.Tensor:
        """(F, h, w) mean maps for ``frames`` (default every recorded frame, in order)."""
        frames = self.frames() if frames is None else [int(f) for f in frames]
        if not frames:
            raise ValueError("frames: no attention maps were recorded. Fix: run sampling with the capture patch "
                             "installed (check its blocks, factors, steps and token positions)")
        missing = [f for f in frames if f not in self._sum]
        if missing:
            raise ValueError(f"frames: no maps recorded for frames {missing} (recorded: {self.frames()}). Fix: ask "
                             "only for recorded frames, or sample every frame with the capture patch installed")
        return torch.stack([self._sum[f] / self._count[f] for f in frames])

    def advance(self, extra_options: dict, key) -> int:
        """Update and return the step index: a new sigma starts a step; without sigmas, a revisit of the first
        layer seen does."""
        sigmas = extra_options.get("sigmas")
        if isinstance(sigmas, torch.Tensor) and sigmas.numel():
            sigma = float(sigmas.detach().reshape(-1).max())
            if self._last_sigma is None or sigma != self._last_sigma:
                self._last_sigma = sigma
                self.step += 1
            return self.step
        if self._first_key is None:
            self._first_key = key
            self.step += 1
        elif key == self._first_key:
            self.step += 1
        return self.step


class CrossAttentionCapture(CountedPatch):
    """ComfyUI ``attn2`` replace patch: normal cross-attention output, plus maps of chosen tokens.

    Records ``softmax(Q K^T / sqrt(d))`` restricted to ``token_positions`` (columns of the 77-token context),
    averaged over heads and positions, per frame of the conditional chunk (``cond_or_uncond`` entry 0), into
    ``store`` (an :class:`AttentionMapStore`, created if not given), which averages over layers and steps.

    Args:
        token_positions: positions in the 77-token sequence (see :func:`find_token_positions`).
        store: where maps accumulate; shared by every deep copy of the patch.
        factors: record on layers whose token grid is the latent size / factor (default (4, 2): SD1.5's
            output blocks 3-8 at 64x64 latents); None records at every resolution.
        blocks: which blocks may record (default every output block; install it there too).
        steps: step indices to record (None = all); a step starts when ``sigmas`` changes (or, without
            ``sigmas`` in transformer_options, when the first layer is called again).
        sigma_range: optional (low, high): record only while low <= sigma <= high (needs ``sigmas``).
        attention: optional attention function ``fn(q, k, v, heads, mask=None, attn_precision=None)``.
    """

    def __init__(self, token_positions: Sequence[int], store: Optional[AttentionMapStore] = None,
                 factors: Optional[Sequence[int]] = (4, 2), blocks=None, steps: Optional[Iterable[int]] = None,
                 sigma_range: Optional[Sequence[float]] = None, attention=None):
        try:
            positions = sorted({int(p) for p in token_positions})
        except (TypeError, ValueError):
            positions = []
        if not positions or positions[0] < 0:
            raise ValueError(f"token_positions: expected a non-empty list of token indices >= 0, got "
                             f"{token_positions!r}. Fix: get them from find_token_positions(tokenizer, prompt, words)")
        self.token_positions = positions
        self.store = store if store is not None else AttentionMapStore()
        self.factors = None if factors is None else tuple(sorted({int(f) for f in factors}))
        if self.factors is not None and (not self.factors or self.factors[0] < 1):
            raise ValueError(f"factors: expected downsampling factors such as (4, 2) or None, got {factors!r}. "
                             "Fix: pass integers >= 1, e.g. (4, 2), or None to record at every resolution")
        self.blocks = normalise_blocks(blocks)
        self.steps = None if steps is None else frozenset(int(s) for s in steps)
        if sigma_range is not None:
            lo, hi = (float(x) for x in sigma_range)
            if lo > hi:
                raise ValueError(f"sigma_range: low {lo} exceeds high {hi}. Fix: pass (low, high) with low <= high")
            sigma_range = (lo, hi)
        self.sigma_range = sigma_range
        self.attention = attention
        self.state = SharedState()

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        heads = int(extra_options["n_heads"])
        attn, kw = self._attn(extra_options)
        out = attn(q, k, v, heads, **kw)
        block = extra_options.get("block")
        block_index = int(extra_options.get("block_index", 0) or 0)
        key = (block[0], block[1], block_index) if block is not None else (None, None, block_index)
        self.state.calls[key] += 1
        step = self.store.advance(extra_options, key)
        if not block_selected(self.blocks, block, block_index):
            return out
        shape = extra_options.get("original_shape")
        if self.factors is not None and grid_factor(q.shape[1], shape) not in self.factors:
            return out
        if self.steps is not None and step not in self.steps:
            return out
        if self.sigma_range is not None:
            sigmas = extra_options.get("sigmas")
            if not isinstance(sigmas, torch.Tensor):
                self.state.warn_once(logger, "sigma", "PoseAnimate capture: sigma_range is set but the model call "
                                     "carries no sigmas; recording every step")
            else:
                sigma = float(sigmas.detach().reshape(-1).max())
                if not self.sigma_range[0] <= sigma <= self.sigma_range[1]:
                    return out
        self._record(q, k, heads, extra_options, shape)
        self.state.applied[key] += 1
        return out

    def _record(self, q, k, heads, extra_options, shape):
        chunks = list(extra_options.get("cond_or_uncond") or [0])
        batch, tokens = q.shape[0], q.shape[1]
        pa = extra_options.get("poseanimate") or {}
        ids = pa.get("frame_ids")
        frames = batch // len(chunks) if batch % len(chunks) == 0 else 0
        ids = list(range(frames)) if ids is None else [int(i) for i in ids]
        hw = token_grid(tokens, shape)
        if not frames or len(ids) != frames or hw is None or k.shape[1] <= self.token_positions[-1]:
            self.state.warn_once(
                logger, "layout",
                f"PoseAnimate capture: cannot map a batch of {batch} (cond_or_uncond={chunks}, frame_ids "
                f"{pa.get('frame_ids')}, {tokens} tokens, context length {k.shape[1]}) to frames and token "
                f"positions {self.token_positions}; not recording such calls (this warning is shown once)")
            return
        if 0 not in chunks:
            return
        c = chunks.index(0)
        qc, kc = q[c * frames:(c + 1) * frames], k[c * frames:(c + 1) * frames]
        maps = token_maps(qc, kc, heads, self.token_positions)
        finest = min(self.factors) if self.factors else 1
        h, w = int(shape[-2]), int(shape[-1])
        for _ in range(finest.bit_length() - 1):
            h, w = (h + 1) // 2, (w + 1) // 2
        self.store.add(ids, maps.reshape(frames, *hw), size=(h, w))


@torch.no_grad()
def token_maps(q: torch.Tensor, k: torch.Tensor, heads: int, positions: Sequence[int],
               max_bytes: int = 64 << 20) -> torch.Tensor:
    """(F, L, C) queries, (F, T, C) keys -> (F, L): softmax(QK^T/sqrt(d)) over all T keys, averaged over
    heads and the chosen key positions. Works in frame groups so the (F, heads, L, T) scores stay bounded."""
    f, L, C = q.shape
    d = C // heads
    per_frame = heads * L * k.shape[1] * 4
    step = max(1, max_bytes // max(per_frame, 1))
    idx = torch.as_tensor(list(positions), device=q.device)
    out = []
    for i in range(0, f, step):
        qh = q[i:i + step].float().reshape(-1, L, heads, d).transpose(1, 2)
        kh = k[i:i + step].float().reshape(qh.shape[0], -1, heads, d).transpose(1, 2)
        p = torch.softmax(qh @ kh.transpose(-1, -2) * d ** -0.5, dim=-1)
        out.append(p.index_select(-1, idx).mean(dim=(1, 3)))
    return torch.cat(out)
