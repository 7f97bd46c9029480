"""Per-frame character masks from cross-attention maps (pure torch)."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F


def otsu_threshold(values: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1] (maximises the between-class variance of a histogram)."""
    hist = torch.histc(values.float().flatten(), bins=bins, min=0.0, max=1.0).double()
    total = hist.sum()
    if total <= 0:
        return 0.5
    centers = (torch.arange(bins, dtype=torch.float64) + 0.5) / bins
    w0 = torch.cumsum(hist, 0)
    w1 = total - w0
    s0 = torch.cumsum(hist * centers, 0)
    mu0 = s0 / w0.clamp_min(1e-12)
    mu1 = (s0[-1] - s0) / w1.clamp_min(1e-12)
    between = w0 * w1 * (mu0 - mu1) ** 2
    between[(w0 == 0) | (w1 == 0)] = -1
    i = int(torch.argmax(between))
    return (i + 1) / bins  # values above the upper edge of bin i are foreground


def _dilate(x: torch.Tensor, r: int) -> torch.Tensor:
    return F.max_pool2d(x, 2 * r + 1, stride=1, padding=r) if r > 0 else x


def _erode(x: torch.Tensor, r: int) -> torch.Tensor:
    return -F.max_pool2d(-x, 2 * r + 1, stride=1, padding=r) if r > 0 else x


def largest_component(mask: torch.Tensor) -> torch.Tensor:
    """Keep the largest 4-connected component of each (N, 1, H, W) binary mask (label propagation)."""
    n, _, h, w = mask.shape
    fg = mask > 0.5
    labels = torch.arange(1, h * w + 1, dtype=torch.float32).reshape(1, 1, h, w).expand(n, 1, h, w).clone()
    labels = labels * fg
    for _ in range(h * w):
        p = F.pad(labels, (1, 1, 1, 1))
        nb = torch.stack([labels, p[..., :-2, 1:-1], p[..., 2:, 1:-1], p[..., 1:-1, :-2], p[..., 1:-1, 2:]]).amax(0)
        nb = nb * fg
        if torch.equal(nb, labels):
            break
        labels = nb
    out = torch.zeros_like(mask)
    for i in range(n):
        lab = labels[i].flatten().long()
        lab = lab[lab > 0]
        if lab.numel():
            best = torch.bincount(lab).argmax()
            out[i] = (labels[i] == best).float()
    return out


def masks_from_attention_maps(maps: torch.Tensor, threshold: Union[str, float] = "otsu",
                              size: Optional[Sequence[int]] = None, *, open_close: int = 1,
                              keep_largest: bool = True, dilate: int = 0) -> torch.Tensor:
    """Turn (F, h, w) cross-attention maps into (F, H, W) float character masks in {0, 1}.

    Per frame: normalise to [0, 1] (min-max; a constant map gives an empty mask), threshold (Otsu's method
    by default, or a fixed value in (0, 1)), open then close with a (2*open_close+1)^2 square (0 = skip),
    keep the largest 4-connected component, optionally dilate by ``dilate`` pixels, then resize to
    ``size`` = (H, W) (bilinear on the cleaned mask, re-thresholded at 0.5; default the maps' own size).
    """
    if not isinstance(maps, torch.Tensor):
        try:
            maps = torch.as_tensor(maps)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"maps: expected a tensor (F, h, w), got {type(maps).__name__}. "
                             "Fix: pass the attention maps as a tensor (F, h, w), "
                             "e.g. AttentionMapStore.maps()") from None
    if maps.ndim == 2:
        maps = maps.unsqueeze(0)
    if maps.ndim != 3 or maps.numel() == 0:
        raise ValueError(f"maps: expected a tensor (F, h, w) of attention maps, got shape {tuple(maps.shape)}. "
                         "Fix: pass one (h, w) map per frame, e.g. AttentionMapStore.maps()")
    if isinstance(threshold, str):
        if threshold.lower() != "otsu":
            raise ValueError(f"threshold: expected 'otsu' or a number in (0, 1), got {threshold!r}. "
                             "Fix: pass 'otsu' or e.g. 0.5")
        fixed = None
    else:
        try:
            fixed = float(threshold)
        except (TypeError, ValueError):
            raise ValueError(f"threshold: expected 'otsu' or a number in (0, 1), got {threshold!r}. "
                             "Fix: pass 'otsu' or e.g. 0.5") from None
        if not 0.0 < fixed < 1.0:
            raise ValueError(f"threshold: a fixed threshold must lie in (0, 1) (maps are normalised per frame), "
                             f"got {fixed}. Fix: pass 'otsu' or a number such as 0.5")
    if size is not None:
        try:
            size = (int(size[0]), int(size[1]))
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"size: expected (height, width), got {size!r}. "
                             "Fix: pass two integers (height, width), or None for the maps' own size") from None
        if min(size) < 1:
            raise ValueError(f"size: height and width must be positive, got {size}. "
                             "Fix: pass at least 1 pixel each, or None for the maps' own size")
    for name, val in (("open_close", open_close), ("dilate", dilate)):
        if not isinstance(val, int) or val < 0:
            raise ValueError(f"{name}: expected an integer >= 0 (pixels), got {val!r}. Fix: pass 0 (off) or a whole "
                             "number of pixels")

    x = maps.detach().float().cpu()
    x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    lo = x.amin(dim=(1, 2), keepdim=True)
    hi = x.amax(dim=(1, 2), keepdim=True)
    span = hi - lo
    x = torch.where(span > 1e-12, (x - lo) / span.clamp_min(1e-12), torch.zeros_like(x))
    binary = torch.zeros_like(x)
    for i in range(x.shape[0]):
        if span[i] <= 1e-12:
            continue
        t = otsu_threshold(x[i]) if fixed is None else fixed
        binary[i] = (x[i] > t).float()
    m = binary.unsqueeze(1)
    if open_close:
        m = _erode(_dilate(_dilate(_erode(m, open_close), open_close), open_close), open_close)
    if keep_largest:
        m = largest_component(m)
    if dilate:
        m = _dilate(m, dilate)
    if size is not None and tuple(m.shape[-2:]) != size:
        m = (F.interpolate(m, size=size, mode="bilinear", align_corners=False) > 0.5).float()
    return m.squeeze(1).to(maps.device)
