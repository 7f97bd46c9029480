"""The pure input checks the PACM nodes share (the custom types' values live in ``pipeline.types``).

No ComfyUI import here: CI tests these helpers without the host.
"""
from __future__ import annotations

import torch

from .._common import input_error


def latent_samples(latent, node: str, input_name: str = "latent") -> torch.Tensor:
    """The (1, 4, h, w) samples of a single-image LATENT, or a clear error."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
        raise input_error(node, input_name, "expected a LATENT with a (B, 4, h, w) 'samples' tensor",
                          "connect the LATENT output of 'VAE Encode' applied to the source image")
    if samples.shape[0] != 1:
        raise input_error(node, input_name, f"the latent batch holds {samples.shape[0]} images; "
                          "PoseAnimate animates one source image",
                          "encode a single source image, or pick one with 'Latent From Batch'")
    from ...pipeline.families import FAMILIES

    channels = {f.latent_channels for f in FAMILIES.values()}
    if samples.shape[1] not in channels:
        raise input_error(node, input_name, f"the latent has {samples.shape[1]} channels (SD1.5 and SDXL: "
                          f"{'/'.join(map(str, sorted(channels)))})",
                          "encode the source image with the VAE of your SD1.5 or SDXL checkpoint")
    return samples


def image_to_hints(image, node: str, input_name: str, min_count: int = 1) -> torch.Tensor:
    """ComfyUI IMAGE (B, H, W, C) in 0..1 -> pose hints (B, 3, H, W) float32; alpha is dropped."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise input_error(node, input_name, f"expected an IMAGE batch (B, H, W, 3), got {shape}",
                          "connect a pose IMAGE (e.g. the 'poses' output of PATA Align)")
    if image.shape[0] < min_count:
        raise input_error(node, input_name, f"got {image.shape[0]} pose image(s), need at least {min_count} "
                          "(frame 0 is the source pose, then one pose per target frame)",
                          "connect the full pose batch from PATA Align (source pose first)")
    return image[..., :3].movedim(-1, 1).float().clamp(0.0, 1.0)


def check_same_prompt(context: torch.Tensor, reference: torch.Tensor, node: str, input_name: str = "positive"):
    """The embeddings of a later stage only make sense with the prompt the inversion was made with."""
    ref = reference.detach().float().cpu().reshape(-1, reference.shape[-1])
    ctx = context.detach().float().cpu().reshape(-1, context.shape[-1])
    if ctx.shape != ref.shape or not torch.allclose(ctx, ref, rtol=1e-3, atol=1e-4):
        raise input_error(node, input_name, "this conditioning is not the prompt the inversion was made with",
                          "connect the same positive CONDITIONING as on Pose-Aware Inversion")

