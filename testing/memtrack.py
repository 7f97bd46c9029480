"""Deterministic peak-memory measurement of live tensor storages (CPU or any device).

``with PeakMemory() as pm: ...`` counts the bytes of every tensor storage created by an operator inside the
block while it is alive (a ``TorchDispatchMode`` records each new output storage and a weakref finalizer on
the storage removes it when it is freed); ``pm.peak`` is the highest total, ``pm.live`` the current one.
Storages that existed before the block (inputs, weights) are not counted, so ``peak`` is the working memory
of the block. Views and in-place results alias an existing storage and add nothing. Deterministic for a
given computation (no allocator caching, no sampling); it slows every operator down, so use it on small
runs. On CUDA, ``torch.cuda.max_memory_allocated`` is the usual alternative.
"""
from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakMemory(TorchDispatchMode):
    """Tracks live bytes of tensor storages allocated inside the ``with`` block; see the module docstring."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self.allocations = 0
        self._sizes: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self._sizes:
            return
        n = int(storage.nbytes())
        self._sizes[key] = n
        self.live += n
        self.allocations += 1
        if self.live > self.peak:
            self.peak = self.live
        weakref.finalize(storage, self._free, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        aliasing = any(r.alias_info is not None for r in func._schema.returns)
        if not aliasing:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and not t.is_meta:
                    self._track(t)
        return out
