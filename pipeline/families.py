"""Model families, one profile each: what the pack knows of SD1.5 and of SDXL, in one place.

The host checks (``nodes/host/checks.py``), the host adapter, Cross-Attention Mask Extract, DCA Patch Model and the
memory policy (``pipeline.runner``) read a family's facts from its :class:`ModelFamily` (the recipes in
``pipeline/defaults.py`` import nothing, so their sizes are literals, tested equal to ``default_size``); adding a
family means filling one profile here (and, where its host classes differ, teaching ``nodes/host/checks.py`` to
detect it). No ComfyUI import: the facts are plain values.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Memory:
    """Bytes one sample of one model call holds at its peak, per byte of the compute dtype: ``per_pixel`` times the
    latent's pixels plus ``fixed`` (the text's keys and values, ...), measured with
    ``benchmarks/bench_memory.py`` (bytes of tensor storages alive at the peak, weights and inputs excluded; linear
    in the latent's pixels to float precision from 64 to 512 px; fp16 within 1 % of fp32 per byte)."""

    per_pixel: float
    fixed: float

    def bytes(self, latent_pixels: int, dtype_size: int) -> float:
        return dtype_size * (self.per_pixel * latent_pixels + self.fixed)


@dataclass(frozen=True)
class ModelFamily:
    """One model family as the PACM stages drive it.

    name: as messages say it ("SD1.5", "SDXL"); context_dim: the text embedding's width; adm_channels: the width of
    the pooled/size conditioning ``y`` (None: none); latent_channels; default_size: the image size its recipes use
    (``pipeline.FULL`` / ``FULL_SDXL``); controlnet_example: an OpenPose ControlNet to name in messages;
    dca_blocks: the decoder blocks with self-attention that DCA Patch Model's 'all output blocks' patches (the node
    finds those by structure; its 'SD1.5 output 3-11' choice is SD1.5's); mask_factors: the latent-size divisors of
    the cross-attention layers Mask Extract reads; tokenizer: how the subject's tokens are found (a description:
    ``attention.find_token_positions`` finds the tokenizer by structure); unet / controlnet: working memory of a
    forward and of a forward+backward into the embedding (:class:`Memory`), per sample, for the UNet and for each
    ControlNet that runs on the sample."""

    name: str
    context_dim: int
    adm_channels: int | None
    latent_channels: int
    default_size: int
    controlnet_example: str
    dca_blocks: tuple
    mask_factors: tuple
    tokenizer: str
    unet_forward: Memory
    unet_forward_backward: Memory
    controlnet_forward: Memory
    controlnet_forward_backward: Memory

    def working_memory(self, latent_pixels: int, dtype_size: int, grad: bool, controlnets: int = 1) -> int:
        """Bytes one sample holds in a forward (``grad`` False) or a forward+backward, with ``controlnets``
        ControlNets running on it."""
        unet, control = ((self.unet_forward_backward, self.controlnet_forward_backward) if grad else
                         (self.unet_forward, self.controlnet_forward))
        total = unet.bytes(latent_pixels, dtype_size) + max(int(controlnets), 0) * control.bytes(latent_pixels,
                                                                                                  dtype_size)
        return int(total)


# Measured on the full-size UNet + OpenPose ControlNet, random weights, ComfyUI 0.3.64's classes, the CPU, fp32 and
# fp16 (benchmarks/bench_memory.py --arch sd15 --sizes 64 128 256 512; docs/host.md, "Memory"): the ControlNet's
# share is (UNet + ControlNet) - UNet. Forward passes attend with PyTorch attention (torch SDPA, memory linear in
# the tokens, like the kernels of NVIDIA cards); gradient passes always do (nodes/host/gradpath.py).
SD15 = ModelFamily(
    name="SD1.5", context_dim=768, adm_channels=None, latent_channels=4, default_size=512,
    controlnet_example="control_v11p_sd15_openpose", dca_blocks=tuple(("output", i) for i in range(3, 12)),
    mask_factors=(4, 2), tokenizer="CLIP-L",
    unet_forward=Memory(8324.0, 1601.0), unet_forward_backward=Memory(78821.2, 1921920.0),
    controlnet_forward=Memory(680.0, 0.0), controlnet_forward_backward=Memory(26154.3, 887040.0),
)
SDXL = ModelFamily(
    name="SDXL", context_dim=2048, adm_channels=2816, latent_channels=4, default_size=1024,
    controlnet_example="xinsir controlnet-openpose-sdxl-1.0", dca_blocks=tuple(("output", i) for i in range(0, 6)),
    mask_factors=(4, 2), tokenizer="CLIP-L positions (the same as CLIP-G's)",
    unet_forward=Memory(5032.6, 11841.0), unet_forward_backward=Memory(148681.5, 12812864.0),
    controlnet_forward=Memory(1182.9, 15360.0), controlnet_forward_backward=Memory(66536.5, 6309420.0),
)  # measured likewise (--arch sdxl --sizes 64 128 256, fp32: 15 GB of weights leave no room for more on this CPU)
FAMILIES = {f.name: f for f in (SD15, SDXL)}
