"""Run state shared by a patch object and every deep copy of it (ComfyUI's clone() deep-copies patches)."""
from __future__ import annotations

import collections
import logging


class SharedState:
    """Counters, one-time warning flags and caches; ``copy.deepcopy`` returns the same object."""

    def __init__(self) -> None:
        self.calls = collections.Counter()    # (block_name, block_id, block_index) -> calls
        self.applied = collections.Counter()  # same key -> calls where the patch's own work ran
        self.warned = set()
        self.cache = {}

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    def warn_once(self, logger: logging.Logger, kind: str, message: str) -> None:
        if kind not in self.warned:
            self.warned.add(kind)
            logger.warning(message)

    def reset(self) -> None:
        self.calls.clear()
        self.applied.clear()
        self.warned.clear()
        self.cache.clear()
