"""Tiny random-weight SD1.5- and SDXL-architecture models built with ComfyUI's own classes (host tests only)."""
from __future__ import annotations

import torch

TINY_UNET = dict(
    use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
    adm_in_channels=None, in_channels=4, model_channels=32, num_res_blocks=[2, 2, 2, 2],
    transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], channel_mult=[1, 2, 4, 4], transformer_depth_middle=1,
    use_linear_in_transformer=False, context_dim=768, transformer_depth_output=[1] * 9 + [0] * 3,
    use_temporal_attention=False, use_temporal_resblock=False,
)


def init_weights_(module: torch.nn.Module, seed: int = 0) -> None:
    """comfy.ops.disable_weight_init leaves weights uninitialised: give them small deterministic values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            for name, p in m.named_parameters(recurse=False):
                if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                    p.fill_(1.0 if name == "weight" else 0.0)
                elif name == "bias":
                    p.zero_()
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


def build_tiny_sd15(seed: int = 0, dtype: torch.dtype = torch.float32, manual_cast_dtype=None):
    """Return (ModelPatcher, comfy.controlnet.ControlNet) for a tiny SD1.5-shaped UNet and ControlNet.

    ``dtype`` is the UNet's weight dtype; ``manual_cast_dtype`` the compute dtype ComfyUI casts weights to
    per layer (as for fp8/bf16 checkpoints on devices that compute in another dtype)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    cfg = comfy.supported_models.SD15(dict(TINY_UNET))
    cfg.set_inference_dtype(dtype, manual_cast_dtype)
    cfg.unet_config["dtype"] = dtype
    model = cfg.get_model({}, "", device=torch.device("cpu"))
    init_weights_(model.diffusion_model, seed)
    patcher = comfy.model_patcher.ModelPatcher(
        model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
    )
    return patcher, _control(cfg, seed + 1)


TINY_SDXL = dict(  # SDXL's layout at small widths: 3 levels, attention at the lower two, several layers per block
    use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
    num_classes="sequential", adm_in_channels=2816, in_channels=4, model_channels=32, num_res_blocks=[2, 2, 2],
    transformer_depth=[0, 0, 2, 2, 3, 3], channel_mult=[1, 2, 2], transformer_depth_middle=3,
    use_linear_in_transformer=True, context_dim=2048, num_head_channels=16,
    transformer_depth_output=[0, 0, 0, 2, 2, 2, 3, 3, 3], use_temporal_attention=False, use_temporal_resblock=False,
)


def _control(cfg, seed: int):
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.model_management as mm
    import comfy.ops

    cn_cfg = dict(cfg.unet_config)
    cn_cfg.pop("out_channels")
    cn_cfg.update(hint_channels=3, operations=comfy.ops.disable_weight_init, dtype=torch.float32,
                  device=torch.device("cpu"))
    control_model = comfy.cldm.cldm.ControlNet(**cn_cfg)
    init_weights_(control_model, seed)
    return comfy.controlnet.ControlNet(control_model, load_device=mm.get_torch_device(), manual_cast_dtype=None)


def build_tiny_sdxl(seed: int = 0, with_control: bool = False):
    """A tiny SDXL-architecture ModelPatcher built with ComfyUI's SDXL classes (2048-wide context, 2816-wide ADM
    conditioning from the pooled output and sizes, attention in output blocks 0-2 at two levels, several layers);
    with ``with_control`` also a matching SDXL ControlNet: (patcher, control)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    cfg = comfy.supported_models.SDXL(dict(TINY_SDXL))
    cfg.set_inference_dtype(torch.float32, None)
    model = cfg.get_model({}, "", device=torch.device("cpu"))
    init_weights_(model.diffusion_model, seed)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    return (patcher, _control(cfg, seed + 1)) if with_control else patcher


def build_tiny_sdxl_refiner(seed: int = 0):
    """A tiny SDXL-refiner-shaped ModelPatcher (1280-wide context, 2560-wide ADM): not a base model."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    unet = dict(TINY_SDXL, context_dim=1280, adm_in_channels=2560)
    cfg = comfy.supported_models.SDXLRefiner(unet)
    cfg.set_inference_dtype(torch.float32, None)
    model = cfg.get_model({}, "", device=torch.device("cpu"))
    init_weights_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def build_tiny_sd2(seed: int = 0):
    """A tiny SD2-shaped ModelPatcher (1024-wide context): same UNet family, wrong text width."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    unet = dict(TINY_UNET, context_dim=1024, use_linear_in_transformer=True, num_head_channels=16)
    cfg = comfy.supported_models.SD20(unet)
    cfg.set_inference_dtype(torch.float32, None)
    model = cfg.get_model({}, "", device=torch.device("cpu"))
    init_weights_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def snapshot_weights(module: torch.nn.Module) -> dict:
    """Every parameter and buffer object of ``module`` with a copy of its values."""
    return {k: (v, v.detach().clone()) for k, v in module.state_dict(keep_vars=True).items()}


def assert_weights_unchanged(module: torch.nn.Module, snap: dict) -> None:
    """The same parameter and buffer objects, with the same values and no gradients, as in ``snap``."""
    now = module.state_dict(keep_vars=True)
    assert set(now) == set(snap)
    for k, (obj, val) in snap.items():
        assert now[k] is obj, f"{k}: parameter object was replaced"
        assert torch.equal(now[k], val), f"{k}: values changed"
        assert now[k].grad is None, f"{k}: got a gradient"
