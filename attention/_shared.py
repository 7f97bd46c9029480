"""Run state shared by a patch object and every deep copy of it (ComfyUI's clone() deep-copies patches)."""
from __future__ import annotations

import collections
import inspect
import logging

from .dca import sdpa_attention


def _takes_transformer_options(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD or (p.name == "transformer_options" and p.kind is not p.POSITIONAL_ONLY)
               for p in params)


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


class CountedPatch:
    """Mixin for patch objects that keep a :class:`SharedState` in ``self.state`` (shared by deep copies) and
    an optional host attention function in ``self.attention`` (None = torch SDPA)."""

    state: SharedState
    attention = None

    def _attn(self, extra_options):
        """The attention function to call and its extra keyword arguments.

        A host function gets ``attn_precision`` and, if it takes ``transformer_options`` (by name or through
        ``**kwargs``, as ComfyUI's ``optimized_attention`` does), the call's options as
        ``transformer_options``, as ComfyUI's own attention layers pass them: that is how ComfyUI applies a
        model's ``optimized_attention_override`` (its attention backend switch) to every call.
        """
        if self.attention is None:
            return sdpa_attention, {}
        kw = {"attn_precision": extra_options.get("attn_precision")}
        known = self.__dict__.get("_attn_signature")
        if known is None or known[0] is not self.attention:
            known = self._attn_signature = (self.attention, _takes_transformer_options(self.attention))
        if known[1]:
            kw["transformer_options"] = extra_options
        return self.attention, kw

    @property
    def calls(self):
        """Calls per (block_name, block_id, block_index)."""
        return self.state.calls

    @property
    def applied(self):
        """Calls per (block_name, block_id, block_index) where the patch's own work ran."""
        return self.state.applied

    def reset_counters(self) -> None:
        self.state.reset()
