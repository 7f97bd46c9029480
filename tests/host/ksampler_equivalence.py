"""KSampler equivalence, the contract of what a user wires in: for one CFG evaluation, the PACM stages' denoiser
against ComfyUI's own sampling path (``CFGGuider`` -> ``sampling_function`` -> ``calc_cond_batch``), on the same
MODEL, latent, sigma, CONDITIONING and cfg, with the uncond rows' embedding set to what a KSampler uses (the
negative's text). Each remix setup a user builds either matches in every layout the stages call the model in, or
is refused before any model work with the node, the input and the fix.

Layouts (``LAYOUTS``): ``sampling`` (Sample Frames and Mask Extract: one call holding the uncond and the cond row of
a frame, ``frame_ids``), ``optimisation`` (Pose-Aware Inversion's CFG step and Pose Embedding Optimize: a cond-only
call, then the uncond row alone inside the gradient path, ``row_frames``), ``guidance 1`` (the DDIM inversion: the
cond row alone at cfg 1).

Run as a script to print the table of docs/host.md:
``python tests/host/ksampler_equivalence.py --comfyui /path/to/ComfyUI``.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Callable

import torch

LAYOUTS = ("sampling", "optimisation", "guidance 1")
TOLERANCE = 1e-5  # relative (max abs / max abs): batched vs single convolutions round differently in float32
NODE = "Sample Frames"
FRAME = 2  # the frame the evaluation is for (per-frame images of a ControlNet: image 2)
CFG = 5.0


@dataclasses.dataclass
class Env:
    """Tiny models and inputs for one family: the MODEL, the pose ControlNet, a second ControlNet, texts, images."""

    family: str
    patcher: object
    pose_cn: object
    second_cn: object
    positive: list
    negative: list
    pose_image: torch.Tensor     # IMAGE (1, H, W, 3)
    frames_image: torch.Tensor   # IMAGE (3, H, W, 3): one image per frame
    x: torch.Tensor              # latent in the model's space
    sigma: float


@dataclasses.dataclass
class Setup:
    """One remix graph: ``build(env)`` -> (MODEL, positive, negative) as wired into a KSampler (before the pose
    ControlNet, which the PACM nodes take as their own input); ``expect``: "match" or the refused input's name;
    ``what``: the table's words."""

    name: str
    family: str
    build: Callable
    expect: str
    what: str


def _out(result):
    """A node's outputs, V1 (tuple) or V3 (io.NodeOutput)."""
    return tuple(result.result) if hasattr(result, "result") else tuple(result)


def _apply_cn(positive, negative, cn, image, strength=1.0, start=0.0, end=1.0):
    import nodes as comfy_nodes

    return _out(comfy_nodes.ControlNetApplyAdvanced().apply_controlnet(positive, negative, cn, image, strength,
                                                                         start, end))


def make_env(family: str) -> Env:
    from tiny_models import build_tiny_sd15, build_tiny_sdxl

    g = torch.Generator().manual_seed(11)
    if family == "sdxl":
        patcher, pose_cn = build_tiny_sdxl(with_control=True)
        _, second = build_tiny_sdxl(seed=5, with_control=True)
        width, pooled = 2048, 1280
    else:
        patcher, pose_cn = build_tiny_sd15()
        _, second = build_tiny_sd15(seed=5)
        width, pooled = 768, 768
    positive = [[torch.randn(1, 77, width, generator=g), {"pooled_output": torch.randn(1, pooled, generator=g)}]]
    negative = [[torch.randn(1, 77, width, generator=g), {"pooled_output": torch.randn(1, pooled, generator=g)}]]
    x = torch.randn(1, 4, 8, 8, generator=g)
    sigma = float(patcher.model.model_sampling.sigmas[400])
    return Env(family, patcher, pose_cn, second, positive, negative, torch.rand(1, 64, 64, 3, generator=g),
               torch.rand(3, 64, 64, 3, generator=g), x, sigma)


# ---- the setups: what a user wires into a KSampler --------------------------------------------------------------
def _plain(env):
    return env.patcher, env.positive, env.negative


def _lora(env):
    key = "diffusion_model.output_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
    if key not in env.patcher.model.state_dict():
        key = next(k for k in env.patcher.model.state_dict() if k.endswith("attn2.to_k.weight"))
    m = env.patcher.clone()
    w = env.patcher.model.state_dict()[key]
    m.add_patches({key: ("diff", (torch.full_like(w, 0.03),))}, 1.0)
    return m, env.positive, env.negative  # a CLIP LoRA only changes the text embeddings the CONDITIONING holds


def _second_both(env):
    pos, neg = _apply_cn(env.positive, env.negative, env.second_cn, env.frames_image, 0.7, 0.1, 0.9)
    return env.patcher, pos, neg


def _second_positive_only(env):
    import nodes as comfy_nodes

    (pos,) = _out(comfy_nodes.ControlNetApplyAdvanced().apply_controlnet(
        env.positive, env.negative, env.second_cn, env.frames_image, 0.6, 0.0, 1.0)[:1])
    return env.patcher, pos, env.negative


def _second_old(env):
    import nodes as comfy_nodes

    (pos,) = _out(comfy_nodes.ControlNetApply().apply_controlnet(env.positive, env.second_cn, env.frames_image, 0.6))
    return env.patcher, pos, env.negative  # ComfyUI copies it to the negative (control_apply_to_uncond)


def _combine(env):
    import nodes as comfy_nodes

    (pos,) = _out(comfy_nodes.ConditioningCombine().combine(env.positive, env.negative))
    return env.patcher, pos, env.negative


def _area(env):
    import nodes as comfy_nodes

    (pos,) = _out(comfy_nodes.ConditioningSetArea().append(env.positive, 32, 32, 0, 0, 1.0))
    return env.patcher, pos, env.negative


def _mask(env):
    import nodes as comfy_nodes

    mask = torch.zeros(64, 64)
    mask[:, :32] = 1.0
    (pos,) = _out(comfy_nodes.ConditioningSetMask().append(env.positive, mask, "default", 1.0))
    return env.patcher, pos, env.negative


def _timestep_range(env):
    import nodes as comfy_nodes

    (pos,) = _out(comfy_nodes.ConditioningSetTimestepRange().set_range(env.positive, 0.0, 0.5))
    return env.patcher, pos, env.negative


def _full_timestep_range(env):
    import nodes as comfy_nodes

    (pos,) = _out(comfy_nodes.ConditioningSetTimestepRange().set_range(env.positive, 0.0, 1.0))
    return env.patcher, pos, env.negative


def _hook_lora(env):
    import comfy.hooks
    import node_helpers

    hooks = comfy.hooks.HookGroup()
    hooks.add(comfy.hooks.WeightHook())
    pos = node_helpers.conditioning_set_values(env.positive, {"hooks": hooks})
    return env.patcher, pos, env.negative


def _rescale_cfg(env):
    from comfy_extras.nodes_model_advanced import RescaleCFG

    (m,) = _out(RescaleCFG().patch(env.patcher, 0.7))
    return m, env.positive, env.negative


def _pag(env):
    from comfy_extras.nodes_pag import PerturbedAttentionGuidance

    (m,) = _out(PerturbedAttentionGuidance.execute(env.patcher, 3.0))
    return m, env.positive, env.negative


def _sag(env):
    from comfy_extras.nodes_sag import SelfAttentionGuidance

    (m,) = _out(SelfAttentionGuidance.execute(env.patcher, 0.5, 2.0))
    return m, env.positive, env.negative


class _Counting:
    """A wrapper that counts its calls (stands for Torch Compile Model's APPLY_MODEL wrapper, or any other)."""

    def __init__(self):
        self.calls = 0

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, *args, **kwargs):
        self.calls += 1
        return executor(*args, **kwargs)


def _apply_model_wrapper(env):
    import comfy.patcher_extension

    m = env.patcher.clone()
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "counting", _Counting())
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "counting", _Counting())
    return m, env.positive, env.negative


def _torch_compile(env):
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    m = env.patcher.clone()
    set_torch_compile_wrapper(m, backend="eager")
    return m, env.positive, env.negative


def _easycache(env):
    from comfy_extras.nodes_easycache import EasyCacheNode

    (m,) = _out(EasyCacheNode.execute(env.patcher, 0.2, 0.15, 0.95, False))
    return m, env.positive, env.negative


def _unet_wrapper(env):
    m = env.patcher.clone()
    m.set_model_unet_function_wrapper(lambda apply, a: apply(a["input"], a["timestep"], **a["c"]) * 0.5)
    return m, env.positive, env.negative


def _attn2_patch(env):
    from comfy.ldm.modules.attention import optimized_attention

    def ip_adapter_like(q, k, v, extra_options):  # another pack's cross-attention patch: weighs the text down
        return 0.8 * optimized_attention(q, k, v, extra_options["n_heads"])

    m = env.patcher.clone()
    for block in ("input", "middle", "output"):
        for number in range(12):
            m.set_model_attn2_replace(ip_adapter_like, block, number)
    return m, env.positive, env.negative


def _sdxl_sizes(env):
    import node_helpers

    pos = node_helpers.conditioning_set_values(env.positive, {"width": 1024, "height": 768, "crop_w": 0,
                                                              "crop_h": 16, "target_width": 1024,
                                                              "target_height": 1024})
    neg = node_helpers.conditioning_set_values(env.negative, {"width": 512, "height": 512})
    pos, neg = _apply_cn(pos, neg, env.second_cn, env.frames_image, 0.5)
    return env.patcher, pos, neg


SETUPS = [
    Setup("plain", "sd15", _plain, "match", "the pose ControlNet ('Apply ControlNet' on both prompts) alone"),
    Setup("lora", "sd15", _lora, "match", "a LoRA on the MODEL (and one on the CLIP: other text embeddings)"),
    Setup("two_controlnets", "sd15", _second_both, "match", "a second ControlNet through 'Apply ControlNet' on positive "
          "and negative, strength 0.7, 0.1 to 0.9, one image per frame"),
    Setup("controlnet_positive_only", "sd15", _second_positive_only, "match", "a second ControlNet on the positive "
          "only"),
    Setup("controlnet_old", "sd15", _second_old, "match", "'Apply ControlNet (OLD)' on the positive (ComfyUI copies it "
          "to a negative without ControlNets; the pose ControlNet on both sides is one)"),
    Setup("combine", "sd15", _combine, "positive", "'Conditioning (Combine)': two entries"),
    Setup("area", "sd15", _area, "positive", "'Conditioning (Set Area)'"),
    Setup("mask", "sd15", _mask, "positive", "'Conditioning (Set Mask)'"),
    Setup("timestep_range", "sd15", _timestep_range, "positive", "'Conditioning Set Timestep Range' 0 to 0.5"),
    Setup("timestep_range_full", "sd15", _full_timestep_range, "match", "'Conditioning Set Timestep Range' 0 to 1"),
    Setup("hook_lora", "sd15", _hook_lora, "positive", "a hook on the conditioning ('Create Hook LoRA', ...)"),
    Setup("rescale_cfg", "sd15", _rescale_cfg, "match", "RescaleCFG (a sampler_cfg_function)"),
    Setup("pag", "sd15", _pag, "model", "Perturbed-Attention Guidance (a post-CFG function)"),
    Setup("sag", "sd15", _sag, "model", "Self-Attention Guidance (a post-CFG function)"),
    Setup("apply_model_wrapper", "sd15", _apply_model_wrapper, "match", "APPLY_MODEL and DIFFUSION_MODEL wrappers "
          "on the MODEL (as Torch Compile Model adds)"),
    Setup("torch_compile", "sd15", _torch_compile, "match", "Torch Compile Model's wrapper (backend 'eager')"),
    Setup("easycache", "sd15", _easycache, "model", "EasyCache (sampler-level wrappers, a step cache)"),
    Setup("unet_wrapper", "sd15", _unet_wrapper, "match", "a model_function_wrapper (unet function wrapper)"),
    Setup("attn2_patch", "sd15", _attn2_patch, "match", "another pack's cross-attention replace patch"),
    Setup("sdxl_sizes", "sdxl", _sdxl_sizes, "match", "SDXL with size conditioning per prompt and a second "
          "ControlNet on both"),
]


# ---- the two sides -----------------------------------------------------------------------------------------------
def ksampler_x0(patcher, positive, negative, x, sigma: float, cfg: float) -> torch.Tensor:
    """The denoised prediction ComfyUI's sampling path makes for latent ``x`` (the model's space) at ``sigma``: a
    one-step KSAMPLER whose sampler function calls the model once, through CFGGuider as a KSampler does."""
    import comfy.samplers

    captured = {}

    def one_call(model, noisy, sigmas, extra_args=None, callback=None, disable=None):
        captured["x0"] = model(noisy, sigmas[0] * noisy.new_ones([noisy.shape[0]]), **(extra_args or {}))
        return noisy

    guider = comfy.samplers.CFGGuider(patcher)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    latent = patcher.model.process_latent_out(x)  # the guider takes VAE-space latents (process_latent_in inside)
    guider.sample(torch.zeros_like(x), latent, comfy.samplers.KSAMPLER(one_call), torch.tensor([sigma, 0.0]),
                  disable_pbar=True, seed=0)
    return captured["x0"].float()


def pack_x0(patcher, pose_cn, positive, negative, env: Env, layout: str, cfg: float) -> torch.Tensor:
    """The same evaluation through the PACM stages' denoiser, the uncond rows given the negative's text."""
    from poseanimate.nodes.host import ComfyDenoiser, engine_mode, plain, read_conditioning

    cond = read_conditioning(positive, negative, NODE, pose_controlnet=pose_cn is not None)
    den = ComfyDenoiser(patcher, pose_cn, strength=0.9, start_percent=0.0, end_percent=1.0,
                        cond_control=cond.control, uncond_control=cond.uncond_control, adm=cond.adm,
                        uncond_adm=cond.uncond_adm, node=NODE)
    hint = plain(env.pose_image.movedim(-1, 1))
    x = plain(env.x)  # the engine hands the denoiser normal tensors (it runs outside inference mode)
    pos, neg = cond.context, cond.negative_context if cond.negative_context is not None else cond.context
    with engine_mode():
        sigma = torch.tensor([env.sigma])
        if layout == "sampling":
            out = den(torch.cat([x, x]), sigma.expand(2), torch.cat([neg, pos]), torch.cat([hint, hint]),
                      {"cond_or_uncond": [1, 0], "poseanimate": {"frame_ids": [FRAME]}})
            return den.combine_cfg(out[1:], out[:1], cfg, x, sigma).float()
        rows = {"poseanimate": {"row_frames": [FRAME]}}
        x0_c = den(x, sigma, pos, hint, {"cond_or_uncond": [0], **rows})
        if layout == "guidance 1":
            return x0_c.float()
        with den.grad_context():
            emb = neg.clone().requires_grad_(True)
            x0_u = den(x, sigma, emb, hint, {"cond_or_uncond": [1], **rows})
            out = den.combine_cfg(x0_c, x0_u, cfg, x, sigma)
            out.square().mean().backward()  # the optimisation differentiates it
        assert emb.grad is not None and torch.isfinite(emb.grad).all()
        return out.detach().float()


def _unet_calls(patcher):
    """A counter of UNet forward calls (hooks on the shared diffusion model)."""
    calls = []
    handle = patcher.model.diffusion_model.register_forward_pre_hook(lambda m, a: calls.append(1))
    return calls, handle


def evaluate(setup: Setup, env: Env) -> dict:
    """``{"result": "match" | "refused", "input": ..., "layouts": {layout: relative difference}, "message": ...}``."""
    from poseanimate.nodes._common import PoseAnimateError

    patcher, positive, negative = setup.build(env)
    calls, handle = _unet_calls(patcher)
    try:
        with torch.inference_mode():
            pack = {}
            try:
                for layout in LAYOUTS:
                    pack[layout] = pack_x0(patcher, env.pose_cn, positive, negative, env, layout,
                                           1.0 if layout == "guidance 1" else CFG)
            except PoseAnimateError as err:
                message = str(err)
                refused_input = message.split("input '")[1].split("'")[0] if "input '" in message else None
                return {"result": "refused", "input": refused_input, "message": message,
                        "model_calls_before_refusal": len(calls)}
            full_pos, full_neg = _apply_cn(positive, negative, env.pose_cn, env.pose_image, 0.9)
            full_pos = _with_frame_image(full_pos)
            full_neg = _with_frame_image(full_neg)
            out = {}
            for layout in LAYOUTS:
                ref = ksampler_x0(patcher, full_pos, full_neg, env.x, env.sigma, 1.0 if layout == "guidance 1" else CFG)
                out[layout] = float((pack[layout] - ref).abs().max() / ref.abs().max())
            return {"result": "match" if max(out.values()) < TOLERANCE else "differs", "layouts": out}
    finally:
        handle.remove()


def _with_frame_image(conditioning):
    """The KSampler's view of frame ``FRAME``: ControlNets with one image per frame get that frame's image."""
    out = []
    for ctx, options in conditioning:
        options = dict(options)
        head = options.get("control")
        if head is not None:
            copies, link = [], head
            while link is not None:
                c = link.copy()
                hint = link.cond_hint_original
                if hint.shape[0] > 1:
                    hint = hint[FRAME:FRAME + 1]
                c.set_cond_hint(hint, link.strength, link.timestep_percent_range, vae=link.vae,
                                extra_concat=list(link.extra_concat_orig))
                copies.append(c)
                link = link.previous_controlnet
            for c, prev in zip(copies, copies[1:]):
                c.set_previous_controlnet(prev)
            options["control"] = copies[0]
        out.append([ctx, options])
    return out


def table(results: dict) -> str:
    """The docs/host.md table, one row a setup."""
    lines = ["| setup | what the user wires | PACM stages | " + " | ".join(LAYOUTS) + " |",
             "|---|---|---|" + "---:|" * len(LAYOUTS)]
    for setup in SETUPS:
        r = results[setup.name]
        if r["result"] == "refused":
            cells = ["refused, input '" + str(r["input"]) + "'"] + ["-"] * len(LAYOUTS)
        else:
            cells = [r["result"]] + [f"{r['layouts'][k]:.1e}" for k in LAYOUTS]
        lines.append(f"| {setup.name} ({setup.family}) | {setup.what} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_all() -> dict:
    envs = {}
    results = {}
    for setup in SETUPS:
        if setup.family not in envs:
            with torch.inference_mode():
                envs[setup.family] = make_env(setup.family)
        results[setup.name] = evaluate(setup, envs[setup.family])
    return results


if __name__ == "__main__":
    import argparse
    import os
    import pathlib

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comfyui", required=True)
    args = ap.parse_args()
    here = pathlib.Path(__file__).resolve().parent
    root = here.parents[1]
    os.environ["COMFYUI_PATH"] = args.comfyui
    sys.path[:0] = [args.comfyui, str(here)]
    import importlib.util

    spec = importlib.util.spec_from_file_location("poseanimate", root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["poseanimate"] = pack
    spec.loader.exec_module(pack)
    sys.path.insert(1, str(root))
    from testing.comfy_stubs import stub_absent

    stub_absent()
    import comfy.options  # noqa: F401
    from comfy.cli_args import args as comfy_args

    comfy_args.cpu = True
    print(table(run_all()))  # noqa: T201 (the table for docs/host.md)
