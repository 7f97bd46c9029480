"""Tiny model *files* that ComfyUI's own loaders accept as SD1.5 (host tests only).

``write_tiny_checkpoint`` writes a ``.safetensors`` checkpoint that ``CheckpointLoaderSimple`` loads as SD1.5:
a UNet with SD1.5's widths (320 channels, 768-wide cross-attention, 8 heads) but one resolution level and one
res block, so ComfyUI's model detection picks the SD15 config (attention at input 1, middle 0, output 0-1);
the real SD1.5 CLIP-L text encoder architecture (ComfyUI builds it from its own config whatever the file says,
so it cannot be made smaller; stored in float16, random weights); and a TAESD VAE (ComfyUI's loader accepts
TAESD weights inside a checkpoint), random weights. ``write_tiny_controlnet`` writes a matching
``control_model.*`` ControlNet file that ``ControlNetLoader`` detects as SD1.5. Outputs are noise, but every
tensor flows through ComfyUI's real loaders, samplers, encoders and decoders.
"""
from __future__ import annotations

import torch

from tiny_models import init_weights_

from testing import comfy_host as compat

CKPT_UNET = dict(
    use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
    adm_in_channels=None, in_channels=4, model_channels=320, num_res_blocks=[1], transformer_depth=[1],
    channel_mult=[1], transformer_depth_middle=1, use_linear_in_transformer=False, context_dim=768,
    transformer_depth_output=[1, 1], num_heads=8, num_head_channels=-1,
    use_temporal_attention=False, use_temporal_resblock=False,
)


def write_tiny_checkpoint(path, seed: int = 0, in_channels: int = 4, reuse_from=None, unet=None, init=None,
                          dtype=None) -> None:
    """``in_channels=8`` gives an SD1.5 InstructPix2Pix-shaped checkpoint (ComfyUI loads it as
    ``SD15_instructpix2pix``: not an SD1.5 text-to-image model). ``reuse_from``: copy the CLIP and VAE
    tensors of an earlier tiny checkpoint instead of building new ones (saves seconds). ``unet``: another UNet
    config (e.g. full-size SD1.5's, benchmarks/bench_workflow.py) with ``init(module, seed)`` for its weights,
    stored in ``dtype`` (default float32)."""
    import comfy.sd
    import comfy.supported_models
    import comfy.taesd.taesd
    import comfy.utils

    config_cls = comfy.supported_models.SD15 if in_channels == 4 else comfy.supported_models.SD15_instructpix2pix
    cfg = config_cls(dict(unet or CKPT_UNET, in_channels=in_channels))
    cfg.set_inference_dtype(torch.float32, None)
    model = cfg.get_model({}, "", device=torch.device("cpu"))
    (init or init_weights_)(model.diffusion_model, seed)
    if reuse_from is not None:
        old = comfy.utils.load_torch_file(str(reuse_from))
        sd = {k: v for k, v in old.items() if not k.startswith("model.diffusion_model.")}
        sd.update({f"model.diffusion_model.{k}": v.contiguous() for k, v in model.diffusion_model.state_dict().items()})
        comfy.utils.save_torch_file(sd, str(path))
        return
    clip = comfy.sd.CLIP(cfg.clip_target(), embedding_directory=None)
    init_weights_(clip.cond_stage_model, seed + 2)
    with torch.no_grad():  # keep CLIP's embeddings sane so the text features stay finite
        for name, p in clip.cond_stage_model.named_parameters():
            if "embedding" in name:
                p.mul_(0.4)
    taesd = comfy.taesd.taesd.TAESD(latent_channels=4)
    init_weights_(taesd, seed + 3)
    vae_sd = dict(taesd.state_dict())
    clip_sd = {k: v.half() if v.is_floating_point() else v for k, v in clip.get_sd().items()}
    sd = compat.state_dict_for_saving(model, clip_sd, vae_sd)
    sd = {k: (v.to(dtype) if dtype is not None and k.startswith("model.diffusion_model.") else v).contiguous()
          for k, v in sd.items()}
    comfy.utils.save_torch_file(sd, str(path))


def write_tiny_controlnet(path, seed: int = 1, unet=None, init=None, dtype=None) -> None:
    import comfy.cldm.cldm
    import comfy.ops
    import comfy.utils

    cfg = dict(unet or CKPT_UNET)
    cfg.pop("out_channels")
    cfg.update(hint_channels=3, operations=comfy.ops.disable_weight_init, dtype=torch.float32,
               device=torch.device("cpu"))
    control = comfy.cldm.cldm.ControlNet(**cfg)
    (init or init_weights_)(control, seed)
    sd = {f"control_model.{k}": (v.to(dtype) if dtype is not None else v).contiguous()
          for k, v in control.state_dict().items()}
    comfy.utils.save_torch_file(sd, str(path))


# SDXL's layout with every level at 320 channels: ComfyUI's model detection reads it as SDXL (model_channels 320,
# transformer_depth [0, 0, 2, 2, 10, 10], 2048-wide context, 2816-wide ADM), at 283M UNet parameters instead of 2.6B
CKPT_SDXL_UNET = dict(
    use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
    num_classes="sequential", adm_in_channels=2816, in_channels=4, model_channels=320, num_res_blocks=[2, 2, 2],
    transformer_depth=[0, 0, 2, 2, 10, 10], channel_mult=[1, 1, 1], transformer_depth_middle=10,
    use_linear_in_transformer=True, context_dim=2048, num_head_channels=64,
    transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], use_temporal_attention=False, use_temporal_resblock=False,
)


def write_tiny_sdxl_checkpoint(path, seed: int = 0) -> None:
    """A checkpoint ``CheckpointLoaderSimple`` loads as SDXL: the small-width SDXL UNet above (float16), the real
    SDXL CLIP-L + CLIP-G architecture (ComfyUI builds it from its own config; random weights, float16) and a
    TAESD VAE (random). About 2 GB."""
    import comfy.sd
    import comfy.supported_models
    import comfy.taesd.taesd
    import comfy.utils

    cfg = comfy.supported_models.SDXL(dict(CKPT_SDXL_UNET))
    cfg.set_inference_dtype(torch.float32, None)
    model = cfg.get_model({}, "", device=torch.device("cpu"))
    init_weights_(model.diffusion_model, seed)
    clip = comfy.sd.CLIP(cfg.clip_target(), embedding_directory=None)
    init_weights_(clip.cond_stage_model, seed + 2)
    with torch.no_grad():
        for name, p in clip.cond_stage_model.named_parameters():
            if "embedding" in name:
                p.mul_(0.4)
    taesd = comfy.taesd.taesd.TAESD(latent_channels=4)
    init_weights_(taesd, seed + 3)
    clip_sd = {k: v.half() if v.is_floating_point() else v for k, v in clip.get_sd().items()}
    sd = compat.state_dict_for_saving(model, clip_sd, dict(taesd.state_dict()))
    sd = {k: (v.half() if k.startswith("model.diffusion_model.") and v.is_floating_point() else v).contiguous()
          for k, v in sd.items()}
    comfy.utils.save_torch_file(sd, str(path))


def write_tiny_sdxl_controlnet(path, seed: int = 1) -> None:
    """A ``control_model.*`` ControlNet file that ``ControlNetLoader`` detects as SDXL (the UNet above's layout)."""
    write_tiny_controlnet(path, seed, unet=CKPT_SDXL_UNET, dtype=torch.float16)
