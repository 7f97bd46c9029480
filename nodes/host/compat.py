"""The one place where ComfyUI versions differ for this pack (tested: 0.3.64 and 0.33.0; docs/host.md).

Every difference is detected from a feature (a signature, an attribute), never from a version string, so a
later ComfyUI with the same features works and one without them fails here, by name.

* ``cast_weights(module, like)``: the weight and bias a layer's own forward computes with, fetched the way the
  host fetches them (``comfy.ops.cast_bias_weight``: manual cast, lowvram/partial loading, LoRA weight
  functions, 0.33's dynamic VRAM with cached or shared cast buffers), released the way the host releases them
  (``uncast_bias_weight`` where it exists).
* ``uses_dynamic_vram(patcher)``: whether a MODEL streams its weights through dynamic VRAM
  (``ModelPatcherDynamic``): weights cast per call, so fp8 weights are fine for the gradient path.
* ``mask_attention(attention)``: an attention function that honours ``mask=`` (ComfyUI's PyTorch attention)
  where the host's optimised attention would drop it (sage attention on hosts that do not check for masks).
* ``attention_override_supported()``: whether the host's attention functions honour
  ``transformer_options["optimized_attention_override"]`` (``wrap_attn``: 0.3.64 and 0.33 both do);
  ``attention_layer_class()``: the host's attention layer class (``CrossAttention``), for the gradient path.
* ``prepare_state(patcher, timestep, model_options)``: the MODEL's ON_PREPARE_STATE callbacks before a model call,
  as ``calc_cond_batch`` calls them (0.33 passes ``model_options`` too, 0.3.64 does not).
"""
from __future__ import annotations

import contextlib
import inspect

import torch


def _accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _offloadable_cast() -> bool:
    """Whether the host's cast takes ``offloadable=True`` and wants ``uncast_bias_weight`` after use (0.33+)."""
    import comfy.ops

    return _accepts(comfy.ops.cast_bias_weight, "offloadable") and hasattr(comfy.ops, "uncast_bias_weight")


def is_host_layer(module) -> bool:
    """A layer of ``comfy.ops`` (it has the host's weight/bias function lists and may cast per call)."""
    return hasattr(module, "weight_function") and hasattr(module, "bias_function")


@contextlib.contextmanager
def cast_weights(module, like: torch.Tensor):
    """``(weight, bias)`` of ``module`` on ``like``'s device in ``like``'s dtype, as its forward sees them.

    Fetched afresh on every call (a cast buffer may since hold another layer's weights) and released on exit."""
    if not is_host_layer(module):
        bias = module.bias.to(like.device, like.dtype) if getattr(module, "bias", None) is not None else None
        yield module.weight.to(like.device, like.dtype), bias
        return
    import comfy.ops  # looked up at call time, as comfy.ops' own layers do

    if _offloadable_cast():
        weight, bias, stream = comfy.ops.cast_bias_weight(module, like, offloadable=True)
        try:
            yield weight, bias
        finally:
            comfy.ops.uncast_bias_weight(module, weight, bias, stream)
    else:
        yield comfy.ops.cast_bias_weight(module, like)[:2]


def uses_dynamic_vram(patcher) -> bool:
    """Whether ``patcher`` streams weights through dynamic VRAM (ComfyUI 0.33+, ``ModelPatcherDynamic``)."""
    is_dynamic = getattr(patcher, "is_dynamic", None)
    if callable(is_dynamic):
        try:
            return bool(is_dynamic())
        except TypeError:
            return False
    return type(patcher).__name__ == "ModelPatcherDynamic"


def mask_attention(attention):
    """``attention`` where it honours ``mask=``, else ComfyUI's PyTorch attention (which does).

    The one known mask-dropper is the host's sage attention where its module does not say whether sage takes
    masks (0.3.64 passes the mask to ``sageattn``, whose ``**kwargs`` drop it); 0.33 checks
    ``SAGE_ATTENTION_SUPPORTS_MASK`` itself and falls back on its own."""
    from comfy.ldm.modules import attention as host

    sage = getattr(host, "attention_sage", None)
    if attention is not None and attention is sage and not hasattr(host, "SAGE_ATTENTION_SUPPORTS_MASK"):
        return host.attention_pytorch
    return attention


def attention_override_supported() -> bool:
    """Whether the host's attention functions are wrapped by ``wrap_attn``, which hands every call to
    ``transformer_options["optimized_attention_override"]`` when it is set (0.3.64 and 0.33 both are)."""
    from comfy.ldm.modules import attention as host

    return hasattr(host, "wrap_attn")


def attention_layer_class():
    """The host's attention layer (``comfy.ldm.modules.attention.CrossAttention``), or None."""
    from comfy.ldm.modules import attention as host

    return getattr(host, "CrossAttention", None)


def prepare_state(patcher, timestep, model_options: dict) -> None:
    """``patcher.prepare_state`` as ComfyUI's ``calc_cond_batch`` calls it before the model evaluates a batch (the
    arguments the host's own ``ModelPatcher.prepare_state`` takes, as a sampler passes them to any subclass)."""
    from comfy.model_patcher import ModelPatcher

    if _accepts(ModelPatcher.prepare_state, "model_options"):
        patcher.prepare_state(timestep, model_options)
    else:
        patcher.prepare_state(timestep)
