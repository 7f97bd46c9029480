"""Host adapter: pacm's Denoiser protocol over ComfyUI's MODEL, CONTROL_NET and CONDITIONING.

ComfyUI is imported lazily inside functions, so ``nodes.host`` imports without ComfyUI.
"""
from .adapter import ComfyDenoiser, install_out_of_place_control, merge_transformer_options, plain, engine_mode, plain_fields
from .checks import check_control_net, check_sd15_model, model_family
from .conditioning import Conditioning, read_conditioning
from . import compat, gradpath
from .progress import ComfyProgress

__all__ = [
    "ComfyDenoiser",
    "ComfyProgress",
    "Conditioning",
    "check_control_net",
    "compat",
    "gradpath",
    "check_sd15_model",
    "engine_mode",
    "install_out_of_place_control",
    "merge_transformer_options",
    "model_family",
    "plain",
    "plain_fields",
    "read_conditioning",
]
