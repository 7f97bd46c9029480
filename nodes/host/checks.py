"""Input checks for the host models: refuse what the PACM engine cannot drive, with the node's own words.

Everything here imports ComfyUI lazily, so the pack (and CI) imports without it.
"""
from __future__ import annotations

from ...pipeline.families import FAMILIES, SD15, SDXL
from .._common import input_error

# the facts come from the family profiles (pipeline.families); these names are for the checks below
SD15_CONTEXT_DIM = SD15.context_dim
SDXL_CONTEXT_DIM = SDXL.context_dim
SDXL_ADM_CHANNELS = SDXL.adm_channels
SD15_LATENT_CHANNELS = SD15.latent_channels
CONTEXT_DIMS = {f.name: f.context_dim for f in FAMILIES.values()}

_MODEL_FIX = ("load an SD1.5 or SDXL-family checkpoint (SDXL base, Illustrious, Pony, NoobAI; fine-tunes, merges and "
              "LoRAs welcome) with 'Load Checkpoint' and connect its MODEL here")


def _describe(model) -> str:
    cfg = getattr(model, "model_config", None)
    name = type(cfg).__name__ if cfg is not None else type(model).__name__
    return f"a {name} model"


def _schedule_problems(model, types: str, schedule: str) -> list:
    """What the PACM engine needs of any family: EPS or v-prediction on a discrete 1000-step sigma table."""
    import comfy.model_base

    problems = []
    if getattr(model, "model_type", None) not in (comfy.model_base.ModelType.EPS, comfy.model_base.ModelType.V_PREDICTION):
        problems.append(f"its prediction type is {getattr(model, 'model_type', None)} ({types})")
    sigmas = getattr(getattr(model, "model_sampling", None), "sigmas", None)
    if sigmas is None or sigmas.ndim != 1 or sigmas.shape[0] != 1000:
        problems.append(f"its noise schedule is not {schedule}")
    return problems


def check_sd15_model(model_patcher, node: str, input_name: str = "model"):
    """Return the ``comfy.model_base.BaseModel`` inside a MODEL after checking that it is SD1.5-shaped.

    SD1.5-shaped means: an ``openaimodel.UNetModel`` with 4 latent channels, 768-wide cross-attention,
    no class/ADM conditioning, SD1.5 latent format and a discrete 1000-step EPS or v-prediction schedule.
    Tiny or fine-tuned checkpoints that ComfyUI loads as SD1.5 pass (the width of the UNet is not checked).
    """
    import comfy.latent_formats
    import comfy.model_base
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    model = getattr(model_patcher, "model", None)
    if model is None or not hasattr(model_patcher, "model_options") or not isinstance(model, comfy.model_base.BaseModel):
        raise input_error(node, input_name, f"expected a MODEL (a ComfyUI ModelPatcher), got {type(model_patcher).__name__}",
                          "connect the MODEL output of 'Load Checkpoint' (optionally through LoRA or patch nodes)")
    cfg = getattr(model, "model_config", None)
    unet_cfg = dict(getattr(cfg, "unet_config", {}) or {})
    problems = []
    if not isinstance(model.diffusion_model, UNetModel):
        problems.append(f"its denoiser is a {type(model.diffusion_model).__name__}, not an SD-style UNet")
    else:
        context_dim = unet_cfg.get("context_dim")
        in_channels = unet_cfg.get("in_channels", SD15_LATENT_CHANNELS)
        if context_dim != SD15_CONTEXT_DIM:
            problems.append(f"its cross-attention width is {context_dim} (SD1.5: {SD15_CONTEXT_DIM})")
        if in_channels != SD15_LATENT_CHANNELS:
            problems.append(f"it takes {in_channels} input channels (SD1.5: {SD15_LATENT_CHANNELS})")
        if unet_cfg.get("adm_in_channels") is not None or getattr(model.diffusion_model, "num_classes", None) is not None:
            problems.append("it expects extra pooled/size conditioning (SDXL-style ADM)")
    if not isinstance(getattr(model, "latent_format", None), comfy.latent_formats.SD15):
        problems.append(f"its latent format is {type(getattr(model, 'latent_format', None)).__name__} (SD1.5: SD15)")
    problems += _schedule_problems(model, "SD1.5: EPS or V_PREDICTION", "SD1.5's discrete 1000-step schedule")
    if problems:
        raise input_error(node, input_name, f"{_describe(model)} is not an SD1.5 or SDXL model (against SD1.5: "
                          + "; ".join(problems) + ")", _MODEL_FIX)
    return model


def model_family(model_patcher, node: str, input_name: str = "model") -> str:
    """"SD1.5" or "SDXL" for a MODEL the PACM engine can drive (detected from the model, never a switch), else a
    clear error naming what the model is (an SDXL refiner, SD2, another family)."""
    import comfy.latent_formats
    import comfy.model_base

    model = getattr(model_patcher, "model", None)
    sdxl = getattr(comfy.model_base, "SDXL", None)
    if sdxl is None or not isinstance(model, sdxl):  # (an SDXLRefiner is no SDXL subclass: it lands here)
        check_sd15_model(model_patcher, node, input_name)  # SD1.5, or its error (which names SDXL-style models)
        return "SD1.5"
    unet_cfg = dict(getattr(getattr(model, "model_config", None), "unet_config", {}) or {})
    problems = []
    if unet_cfg.get("context_dim") != SDXL_CONTEXT_DIM:
        problems.append(f"its cross-attention width is {unet_cfg.get('context_dim')} (SDXL: {SDXL_CONTEXT_DIM})")
    if unet_cfg.get("adm_in_channels") != SDXL_ADM_CHANNELS:
        problems.append(f"its pooled/size conditioning is {unet_cfg.get('adm_in_channels')} wide (SDXL: "
                        f"{SDXL_ADM_CHANNELS}; a refiner has 2560)")
    if unet_cfg.get("in_channels", SD15_LATENT_CHANNELS) != SD15_LATENT_CHANNELS:
        problems.append(f"it takes {unet_cfg.get('in_channels')} input channels (SDXL: 4)")
    if not isinstance(getattr(model, "latent_format", None), comfy.latent_formats.SDXL):
        problems.append(f"its latent format is {type(getattr(model, 'latent_format', None)).__name__} (SDXL: SDXL)")
    problems += _schedule_problems(model, "EPS or V_PREDICTION", "the discrete 1000-step schedule")
    if problems:
        raise input_error(node, input_name, f"{_describe(model)} is an SDXL model the PACM engine cannot drive: "
                          + "; ".join(problems), _MODEL_FIX)
    return "SDXL"


def _control_context_dim(control_net):
    cm = getattr(control_net, "control_model", None)
    ctx = getattr(cm, "context_dim", None) if cm is not None else None
    if ctx is None and cm is not None:
        # comfy.cldm.cldm.ControlNet does not keep context_dim; read it off the first cross-attention.
        for mod in cm.modules():
            k = getattr(mod, "to_k", None)
            if k is not None and getattr(mod, "to_q", None) is not None and k.in_features != mod.to_q.in_features:
                return k.in_features
    return ctx


def check_control_net(control_net, node: str, input_name: str = "control_net", family: str = "SD1.5"):
    """Check that CONTROL_NET is an image-hint ControlNet usable with a UNet of ``family`` ("SD1.5" or "SDXL");
    return it. (A Control-LoRA builds its model from the UNet's when it runs: its family is not read here.)"""
    import comfy.controlnet

    if control_net is None:
        return None
    if not isinstance(control_net, comfy.controlnet.ControlBase):
        raise input_error(node, input_name, f"expected a CONTROL_NET, got {type(control_net).__name__}",
                          "connect the CONTROL_NET output of 'Load ControlNet Model' (an OpenPose ControlNet of the model's "
                          "family)")
    if getattr(control_net, "latent_format", None) is not None:
        raise input_error(node, input_name, "this ControlNet needs a VAE-encoded hint (an SD3/Flux-style ControlNet)",
                          "use an SD1.5 or SDXL OpenPose ControlNet such as control_v11p_sd15_openpose")
    ctx = _control_context_dim(control_net)
    want = CONTEXT_DIMS[family]
    if ctx is not None and ctx != want:
        other = next((f for f, d in CONTEXT_DIMS.items() if d == ctx), None)
        made_for = f"an {other} model" if other else f"a model with {ctx}-wide text embeddings"
        example = FAMILIES[family].controlnet_example
        raise input_error(node, input_name, f"this ControlNet was made for {made_for}, the MODEL is {family}",
                          f"use an {family} OpenPose ControlNet (e.g. {example}) with this model")
    return control_net
