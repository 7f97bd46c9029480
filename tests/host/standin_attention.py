"""Stand-in attention kernels built like the real ones, for ComfyUI's own attention functions to call on the CPU.

Each computes exactly what torch SDPA computes (so a run under it can be compared with a PyTorch-attention run to
float rounding), but the way the real kernel does it:

* :class:`SageKernel`: a forward-only kernel like ``sageattention.sageattn`` (a C++/Triton kernel outside autograd:
  its output has no ``grad_fn``) that refuses head dims above ``limit`` (sage: 128), upon which ComfyUI's
  ``attention_sage`` logs the error and falls back to its PyTorch attention. On real SD1.5 (head dims 40/80/160)
  only the 160-wide layers fall back; ``limit`` scales that to the tiny test models.
* :class:`FlashKernel`: ``flash_attn_func``, which ComfyUI calls inside its ``torch.library.custom_op``
  (``flash_attention::flash_attn`` on 0.3.64, ``comfy::flash_attn`` on 0.33) that registers no autograd formula.
* :class:`ForwardOnlyOverride`: an ``optimized_attention_override`` another pack might set on a MODEL (e.g. to run
  its own kernel): forward-only as well.

``install(monkeypatch, backend)`` makes ComfyUI's ``optimized_attention`` the named backend, as the user's start-up
flag does (``--use-sage-attention``, ``--use-flash-attention``, ``--use-pytorch-cross-attention``, or the
CPU default, sub-quadratic attention); it returns the kernel (with its ``calls``) or None.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _sdpa(q, k, v, mask=None, scale=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


class SageKernel:
    """``sageattn(q, k, v, tensor_layout="HND"|"NHD", attn_mask=None, sm_scale=None, ...)``, forward only."""

    def __init__(self, limit: int = 128):
        self.limit = limit
        self.calls = 0
        self.refused = 0

    def __call__(self, q, k, v, tensor_layout="HND", is_causal=False, attn_mask=None, sm_scale=None, **kwargs):
        if q.shape[-1] > self.limit:
            self.refused += 1
            raise RuntimeError(f"stand-in sage: head dim {q.shape[-1]} > {self.limit} is not supported")
        self.calls += 1
        with torch.no_grad():  # a kernel outside autograd
            if tensor_layout == "NHD":
                out = _sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask, sm_scale)
                return out.transpose(1, 2).detach()
            return _sdpa(q, k, v, attn_mask, sm_scale).detach()


class FlashKernel:
    """``flash_attn_func(q, k, v, dropout_p=0.0, causal=False, softmax_scale=None)`` with (B, L, H, D) tensors."""

    def __init__(self):
        self.calls = 0

    def __call__(self, q, k, v, dropout_p=0.0, causal=False, softmax_scale=None, **kwargs):
        self.calls += 1
        out = _sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, softmax_scale)
        return out.transpose(1, 2).contiguous()


class ForwardOnlyOverride:
    """An ``optimized_attention_override`` from another pack: runs the backend it is handed, outside autograd."""

    def __init__(self):
        self.calls = 0

    def __call__(self, func, *args, **kwargs):
        self.calls += 1
        with torch.no_grad():
            return func(*args, **kwargs).detach()


BACKENDS = ("pytorch", "sub_quad", "sage", "flash")


def install(monkeypatch, backend: str, sage_limit: int = 128):
    """Make ComfyUI's ``optimized_attention`` (and ``optimized_attention_masked``) the named backend, as its
    start-up flags do; sage and flash run the stand-in kernels above. Returns the kernel or None."""
    import comfy.ldm.modules.attention as host

    kernel = None
    if backend == "sage":
        kernel = SageKernel(sage_limit)
        monkeypatch.setattr(host, "sageattn", kernel, raising=False)
        fn = host.attention_sage
    elif backend == "flash":
        kernel = FlashKernel()
        monkeypatch.setattr(host, "flash_attn_func", kernel, raising=False)
        fn = host.attention_flash
    elif backend == "sub_quad":
        fn = host.attention_sub_quad
    elif backend == "pytorch":
        fn = host.attention_pytorch
    else:
        raise ValueError(f"backend: one of {BACKENDS}")
    monkeypatch.setattr(host, "optimized_attention", fn)
    monkeypatch.setattr(host, "optimized_attention_masked", fn)
    return kernel
