"""Gradients into the embedding through the host's own layers, with no copy of the weights.

ComfyUI runs nodes in ``torch.inference_mode()`` and keeps weights however its loader chose: parameters made in
inference mode, weights cast per call (manual cast, ``--lowvram`` partial loading, LoRA weight functions), or,
from 0.33 on NVIDIA, dynamic VRAM, where a streamed layer computes with a cached ``_v_weight`` made during an
earlier inference-mode forward or with a cast buffer shared between layers and refilled on every call. Autograd
cannot save an inference tensor, and a saved cast buffer may hold another layer's weights by the time backward
reads it (a silently wrong gradient).

So the optimising stages never let autograd see a weight. While :func:`host_layers` is active, every
weight-bearing layer of the UNet and ControlNets (Linear, Conv2d, GroupNorm, LayerNorm) whose input needs a
gradient runs as :class:`_HostLayer`: the forward is the layer's own (whatever the host does to fetch its
weights), and the backward fetches the weights again through the host (``compat.cast_weights``) and computes
the input gradient from them: ``g @ W`` for Linear, the transposed convolution for Conv2d, and a recomputation
with a copy of the (per-channel, small) affine parameters for the norms. Weights never need gradients here, so
no weight gradient is computed. Nothing is copied, and ComfyUI's memory manager sees every weight.

Attention is the one other operation a gradient pass must differentiate through, and the user's backend may have no
backward: sage attention is a forward-only kernel (and falls back to PyTorch attention only above head dim 128, so a
gradient through SD1.5's 40/80-wide heads would be silently partial), ComfyUI wraps flash attention in a
``torch.library.custom_op`` without an autograd formula, and xformers, sage3, comfy-kitchen's int8 attention or an
``optimized_attention_override`` from another pack may be the same. So inside a gradient pass every attention call
of the UNet and the ControlNets runs :class:`GradAttention` (ComfyUI's PyTorch attention, torch SDPA, which has a
backward on every device and dtype) through ComfyUI's own switch, ``transformer_options["optimized_attention_override"]``
(``wrap_attn``): the denoiser puts it in every call's options, and :func:`host_layers` adds it to the options of
each ``CrossAttention`` layer, because ComfyUI's ControlNets call their attention layers without options (a host
without ``wrap_attn``, older than 0.3.64, is refused before any work: ``compat.attention_override_supported``). The
switch reaches every call that passes its ``transformer_options`` on, as ComfyUI's layers do; an attention replace
patch of another pack that calls ``optimized_attention`` without them runs the user's backend in the gradient pass
too (the denoiser's ``check_grad_support`` warns, naming the patch). Forward-only passes keep the user's backend.

:func:`unsupported_layers` names, before any work, what this cannot handle, each with its cause: parameter-holding
layers of other kinds, scaled-fp8 layers (a per-layer scale outside the weight cast), and weights stored in
quantised formats (tensor subclasses such as GGUF's or comfy-kitchen's, integer storage). fp8 weights that the host
casts per call are fine: the backward fetches them through the same cast.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from . import compat

_SUPPORTED = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm)
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
OVERRIDE_KEY = "optimized_attention_override"  # ComfyUI's attention switch in transformer_options (wrap_attn)


class GradAttention:
    """ComfyUI's ``optimized_attention_override`` for gradient passes: ``override(func, q, k, v, heads, ...)`` runs
    ComfyUI's PyTorch attention (torch SDPA: a backward on every device and dtype, masks honoured) instead of
    ``func``, the user's backend. Called past ComfyUI's switch (``wrap_attn`` sees its own marker in ``kwargs`` and
    does not ask the override again). ``calls`` counts the attention calls it served."""

    def __init__(self):
        self.calls = 0

    def __call__(self, func, *args, **kwargs):
        from comfy.ldm.modules import attention as host  # looked up at call time, as ComfyUI's layers do

        self.calls += 1
        return host.attention_pytorch(*args, **kwargs)


def _attention_forward(forward, attention: GradAttention):
    """``module.forward`` of a ``CrossAttention`` layer in a gradient pass: the layer's own forward with
    :class:`GradAttention` as the attention override of its call (ComfyUI's ControlNets pass their layers no
    transformer_options, the UNet its own)."""
    def run(*args, **kwargs):
        options = dict(kwargs.get("transformer_options") or {})
        options[OVERRIDE_KEY] = attention
        kwargs["transformer_options"] = options
        return forward(*args, **kwargs)

    return run


def _walk(modules):
    seen = set()
    for root in modules:
        for m in root.modules():
            if id(m) not in seen:
                seen.add(id(m))
                yield m


_FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
                    if hasattr(torch, n))
# parameters held directly by a module of another kind that only ever meet inputs without a gradient: the union
# ControlNet's task embedding is added to pooled hint features (comfy.cldm.cldm.ControlNet.union_controlnet_merge),
# which never depend on the text embedding the optimisation differentiates into
_HINT_ONLY_PARAMETERS = {("ControlNet", "task_embedding")}

# the causes unsupported_layers reports, each with its fix
QUANTISED = "quantised"
SCALED = "scaled"
LAYER = "layer"
FIXES = {
    QUANTISED: "load the checkpoint (and ControlNet) in fp16, bf16 or fp32, or plainly in fp8 (not GGUF or another "
               "quantised format)",
    SCALED: "load the checkpoint unscaled (fp16, bf16, fp32 or plain fp8; not a 'scaled fp8' file)",
    LAYER: "use a model and ControlNet made of ComfyUI's standard layers",
}


def unsupported_layers(modules, casts_per_call: bool = False) -> list[tuple[str, str]]:
    """What :func:`host_layers` cannot differentiate through: ``(cause, what)`` per layer (empty when all is well),
    ``cause`` one of :data:`FIXES`. Accepted: Linear, Conv2d, GroupNorm and LayerNorm layers whose weights are float
    tensors, or fp8 tensors the host casts per call (fp8 checkpoints, ``--fp8_e4m3fn-unet``, dynamic VRAM loading a
    file's fp8 weights): the backward fetches them through the same cast. ``casts_per_call``: the model casts
    every layer's weights per call (a manual-cast dtype, dynamic VRAM), also before its first load."""
    problems = []
    for m in _walk(modules):
        own = [(n, p) for n, p in m._parameters.items() if p is not None]
        if not own:
            continue
        kind = type(m).__name__
        if not isinstance(m, _SUPPORTED):
            own = [(n, p) for n, p in own if (kind, n) not in _HINT_ONLY_PARAMETERS]
            if own:
                problems.append((LAYER, f"a layer of class {kind} from {type(m).__module__} holding "
                                        f"{', '.join(n for n, _ in own)}, which the gradient path does not know"))
            continue
        if isinstance(m, torch.nn.Conv2d) and (m.padding_mode != "zeros" or isinstance(m.padding, str)):
            problems.append((LAYER, f"{kind} with padding {m.padding!r} / mode {m.padding_mode!r}"))
            continue
        extra = [n for n, _ in own if n not in ("weight", "bias")]
        if extra:
            problems.append((SCALED, f"{kind} with {', '.join(extra)} (a scaled-fp8 layer: its forward applies a "
                                     "per-layer scale outside the weight cast the backward repeats)"))
            continue
        for name, p in own:
            if type(p) not in (torch.Tensor, torch.nn.Parameter):
                problems.append((QUANTISED, f"{kind}.{name} stored as {type(p).__name__} (a quantised format)"))
            elif p.dtype in _FP8_DTYPES and not (compat.is_host_layer(m) and (
                    casts_per_call or getattr(m, "comfy_cast_weights", False) or m.weight_function)):
                problems.append((QUANTISED, f"{kind}.{name} stored as {p.dtype} in a layer that does not cast it"))
            elif p.dtype not in _FLOAT_DTYPES + _FP8_DTYPES:
                problems.append((QUANTISED, f"{kind}.{name} stored as {p.dtype} (a quantised format)"))
    return problems


class _HostLayer(torch.autograd.Function):
    """y = layer(x) by the layer's own forward; dL/dx from weights fetched again through the host."""

    @staticmethod
    def forward(ctx, x, module, forward):
        ctx.module = module
        ctx.x_shape = x.shape
        if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
            ctx.save_for_backward(x)
        return forward(x)

    @staticmethod
    def backward(ctx, g):
        m = ctx.module
        g = g.contiguous()
        if isinstance(m, torch.nn.Linear):
            with torch.no_grad(), compat.cast_weights(m, g) as (w, _b):
                gx = g.matmul(w.to(g.dtype))
        elif isinstance(m, torch.nn.Conv2d):
            with torch.no_grad(), compat.cast_weights(m, g) as (w, _b):
                gx = torch.nn.grad.conv2d_input(ctx.x_shape, w.to(g.dtype), g, m.stride, m.padding, m.dilation,
                                                m.groups)
        else:
            (x,) = ctx.saved_tensors
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                with compat.cast_weights(m, x) as (w, b):
                    # per-channel affine parameters, copied as normal tensors (autograd cannot save inference ones)
                    w = None if w is None else w.detach().clone()
                    b = None if b is None else b.detach().clone()
                if isinstance(m, torch.nn.GroupNorm):
                    y = F.group_norm(xr, m.num_groups, w, b, m.eps)
                else:
                    y = F.layer_norm(xr, m.normalized_shape, w, b, m.eps)
                (gx,) = torch.autograd.grad(y, xr, g)
        return gx, None, None


def _grad_forward(module, forward):
    def run(*args, **kwargs):
        tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
        if not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors):
            with torch.no_grad():  # weights are frozen here, whatever their requires_grad says
                return forward(*args, **kwargs)
        if len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor):
            return _HostLayer.apply(args[0], module, forward)
        raise ValueError(f"model: its {type(module).__name__} layer was called with extra arguments during a gradient "
                         "pass, which the gradient path cannot differentiate. Fix: use a model of ComfyUI's standard "
                         "layers, or set inner_steps to 0 (no gradient pass)")

    return run


@contextlib.contextmanager
def host_layers(modules, attention: GradAttention | None = None):
    """While active, the weight-bearing layers of ``modules`` differentiate into their inputs through the host's
    weights, and their attention layers attend with ``attention`` (see the module docstring). Each layer's
    ``forward`` is put back on exit, whatever happens."""
    installed = []
    attention_class = compat.attention_layer_class()
    try:
        for m in _walk(modules):
            if isinstance(m, _SUPPORTED) and any(p is not None for p in m._parameters.values()):
                wrap = _grad_forward
            elif attention is not None and attention_class is not None and isinstance(m, attention_class):
                wrap = lambda _module, forward: _attention_forward(forward, attention)  # noqa: E731
            else:
                continue
            own = m.__dict__.get("forward")
            installed.append((m, own))
            m.forward = wrap(m, own if own is not None else type(m).forward.__get__(m))
        yield len(installed)
    finally:
        for m, own in reversed(installed):
            if own is None:
                m.__dict__.pop("forward", None)
            else:
                m.forward = own
