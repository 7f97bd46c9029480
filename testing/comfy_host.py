"""The test hosts' own differences between ComfyUI versions (the pack's live in ``nodes/host/compat.py``): how the
host tests and benchmarks drive ComfyUI's executor and write tiny checkpoint files. Detected from features, never
version strings. Imported by the host tests and the benchmarks only, lazily importing ComfyUI.

* ``prompt_executor(execution, server, **kw)``: ``execution.PromptExecutor`` with the cache arguments a host needs
  (0.33 reads ``cache_args["ram"]`` on every run).
* ``state_dict_for_saving(model, clip_sd, vae_sd)``: a checkpoint's state dict (0.33 takes the UNet's state dict as
  the first argument, 0.3.64 reads it from the model itself).
"""
from __future__ import annotations

import inspect

# what cache_args a host that needs them gets (0.33: LRU off, RAM headroom as its CLI default)
DEFAULT_CACHE_ARGS = {"lru": 0, "ram": 16.0, "ram_inactive": 16.0}


def _accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def prompt_executor(execution, server, **kwargs):
    """``execution.PromptExecutor(server, **kwargs)``, adding ``cache_args`` where the host's executor takes it."""
    if _accepts(execution.PromptExecutor.__init__, "cache_args") and "cache_args" not in kwargs:
        kwargs["cache_args"] = dict(DEFAULT_CACHE_ARGS)
    return execution.PromptExecutor(server, **kwargs)


def state_dict_for_saving(model, clip_state_dict=None, vae_state_dict=None) -> dict:
    """A checkpoint's state dict from a ``BaseModel`` (its UNet) plus CLIP and VAE state dicts."""
    if _accepts(model.state_dict_for_saving, "unet_state_dict"):
        return model.state_dict_for_saving(model.diffusion_model.state_dict(), clip_state_dict=clip_state_dict,
                                           vae_state_dict=vae_state_dict)
    return model.state_dict_for_saving(clip_state_dict=clip_state_dict, vae_state_dict=vae_state_dict)
