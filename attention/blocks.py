"""Block selection and token-grid geometry shared by the attention patches."""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

DEFAULT_BLOCKS = ("output",)


def normalise_blocks(blocks) -> Tuple:
    """``blocks``: None (every output block), a block name, or an iterable of names / (name, id) /
    (name, id, transformer_index) entries. Returns a tuple of str or tuple entries."""
    if blocks is None:
        return DEFAULT_BLOCKS
    if isinstance(blocks, str):
        blocks = (blocks,)
    out = []
    for b in blocks:
        if isinstance(b, str):
            out.append(b)
        elif isinstance(b, (tuple, list)) and 2 <= len(b) <= 3 and isinstance(b[0], str) \
                and all(isinstance(x, int) for x in b[1:]):
            out.append(tuple(b))
        else:
            raise ValueError(f"blocks: entry {b!r} is not a block name ('output'), (name, id) or "
                             "(name, id, transformer_index). "
                             "Fix: use e.g. ['output'] or [('output', 3), ('output', 4)]")
    if not out:
        raise ValueError("blocks: empty. Fix: list at least one block, e.g. ['output']")
    return tuple(out)


def block_selected(blocks: Sequence, block, block_index: int) -> bool:
    if block is None:
        return False
    name, bid = block[0], block[1]
    for b in blocks:
        if isinstance(b, str):
            if b == name:
                return True
        elif b[0] == name and b[1] == bid and (len(b) == 2 or b[2] == block_index):
            return True
    return False


def token_grid(tokens: int, original_shape: Optional[Sequence[int]], fallback_hw: Optional[Tuple[int, int]] = None):
    """(h, w) of a layer's token grid: halve the latent size (rounding up, as the UNet's stride-2 convs do)
    until it has ``tokens`` cells. Returns None if no such size exists."""
    if original_shape is not None and len(original_shape) >= 2:
        h, w = int(original_shape[-2]), int(original_shape[-1])
    elif fallback_hw is not None:
        h, w = fallback_hw
    else:
        r = int(round(tokens ** 0.5))
        return (r, r) if r * r == tokens else None
    for _ in range(16):
        if h * w == tokens:
            return h, w
        if h * w < tokens or (h == 1 and w == 1):
            return None
        h, w = (h + 1) // 2, (w + 1) // 2
    return None


def grid_factor(tokens: int, original_shape: Optional[Sequence[int]]) -> Optional[int]:
    """Downsampling factor (1, 2, 4, 8, ...) of a layer with ``tokens`` tokens relative to the latent."""
    if original_shape is None or len(original_shape) < 2:
        return None
    h, w = int(original_shape[-2]), int(original_shape[-1])
    f = 1
    for _ in range(16):
        if h * w == tokens:
            return f
        if h * w < tokens or (h == 1 and w == 1):
            return None
        h, w, f = (h + 1) // 2, (w + 1) // 2, f * 2
    return None


def resize_masks(masks: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    """(N, H, W) masks -> (N, h*w) at a token grid: area average when shrinking, bilinear when growing."""
    h, w = hw
    m = masks.float().unsqueeze(1)
    if (m.shape[-2], m.shape[-1]) != (h, w):
        if m.shape[-2] >= h and m.shape[-1] >= w:
            m = F.interpolate(m, size=(h, w), mode="area")
        else:
            m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
    return m.clamp_(0, 1).reshape(masks.shape[0], h * w)


def attention_block_ids(diffusion_model, block_name: str = "output") -> List[int]:
    """Ids of ``block_name`` blocks ("input", "middle", "output") of a ComfyUI UNet that contain attention.

    Duck-typed: a block has attention if some submodule has ``transformer_blocks`` (a SpatialTransformer).
    """
    attr = {"input": "input_blocks", "middle": "middle_block", "output": "output_blocks"}[block_name]
    container = getattr(diffusion_model, attr)
    blocks: Iterable = [container] if block_name == "middle" else container
    ids = []
    for i, blk in enumerate(blocks):
        if any(hasattr(m, "transformer_blocks") for m in blk.modules()):
            ids.append(i)
    return ids
