"""SDXL-family models through every PACM stage: a tiny SDXL-architecture UNet + ControlNet built with ComfyUI's own
SDXL classes (2048-wide context, 2816-wide ADM conditioning from the pooled output and sizes, attention in output
blocks 0-5 with several layers each), random weights, under inference_mode as ComfyUI runs nodes."""
from __future__ import annotations

import pytest
import torch

from tiny_models import build_tiny_sd15, build_tiny_sd2, build_tiny_sdxl, build_tiny_sdxl_refiner

from poseanimate.nodes._common import PoseAnimateError
from poseanimate.nodes.dca_patch import PoseAnimateDCAPatchModel
from poseanimate.nodes.embedding_optimize import PoseAnimatePoseEmbeddingOptimize
from poseanimate.nodes.host import ComfyDenoiser, read_conditioning
from poseanimate.nodes.inversion import PoseAnimatePoseAwareInversion
from poseanimate.nodes.sample_frames import PoseAnimateSampleFrames

STEPS = 2


def _scene(n_targets=2, seed=0, sizes=None):
    g = torch.Generator().manual_seed(seed)
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=g) * 5}
    extra = {"pooled_output": torch.randn(1, 1280, generator=g), **(sizes or {})}
    positive = [[torch.randn(1, 77, 2048, generator=g), extra]]
    poses = torch.rand(n_targets + 1, 64, 64, 3, generator=g)
    return latent, positive, poses


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_adapter_gives_the_unet_and_controlnet_the_ksampler_adm():
    """y = encode_adm(pooled_output, width/height = the latent's pixel size unless the conditioning sets them), to
    the UNet and the ControlNet, as ComfyUI's samplers make it; equal to ComfyUI's own path bit for bit."""
    patcher, cnet = build_tiny_sdxl(with_control=True)
    latent, positive, poses = _scene()
    den = ComfyDenoiser(patcher, cnet, strength=0.8, adm=read_conditioning(positive, None, 'test').adm)
    assert den.family == "SDXL" and den.context_dim == 2048
    ctx, pooled = positive[0][0], positive[0][1]["pooled_output"]
    x = latent["samples"]
    hint = poses[:1].movedim(-1, 1)
    sigma = den.sigmas[[500]]
    out = den(x, sigma, ctx, hint, {"cond_or_uncond": [0]})

    model = patcher.model
    y = model.encode_adm(pooled_output=pooled, width=64, height=64, device=torch.device("cpu"))
    c = cnet.copy().set_cond_hint(hint, 0.8, (0.0, 1.0))
    c.pre_run(model, lambda p: model.model_sampling.percent_to_sigma(p))
    to = {"cond_or_uncond": [0], "sigmas": sigma}
    ctrl = c.get_control(x, sigma, {"c_crossattn": ctx, "y": y}, 1, to)
    ref = model.apply_model(x, sigma, c_crossattn=ctx, control=ctrl, transformer_options=to, y=y)
    assert torch.equal(out, ref)
    other = ComfyDenoiser(patcher, cnet, strength=0.8, adm=read_conditioning(_scene(sizes={"width": 1024})[1], None, 'test').adm)
    assert not torch.allclose(other(x, sigma, ctx, hint, {"cond_or_uncond": [0]}), out)  # the sizes reach y


def test_every_stage_on_sdxl_with_dca_on_its_up_blocks():
    patcher, cnet = build_tiny_sdxl(with_control=True)
    latent, positive, poses = _scene()
    inv, rec = PoseAnimatePoseAwareInversion().invert(patcher, cnet, latent, positive, poses[:1], STEPS, 7.5, 1, 1e-5)
    assert set(inv.extra_cond) == {"pooled_output"}  # the inversion's conditioning rides with it
    (emb,) = PoseAnimatePoseEmbeddingOptimize().optimize(inv, patcher, cnet, positive, poses, 1, 0)
    assert torch.isfinite(emb.poses.uncond).all() and emb.poses.uncond.shape[-1] == 2048
    assert not torch.equal(emb.poses.uncond[0], inv.cond.expand_as(emb.poses.uncond[0]))  # gradients flowed
    (dca,) = PoseAnimateDCAPatchModel().patch(patcher, 0.7, 0.15, 0.15, "all output blocks", "", None)
    seen = set()

    def recording(fn):
        def attn1(q, k, v, extra_options):
            seen.add((extra_options["block"], extra_options["block_index"]))
            return fn(q, k, v, extra_options)

        return attn1

    dca = dca.clone()
    for key, fn in list(dca.model_options["transformer_options"]["patches_replace"]["attn1"].items()):
        dca.set_model_attn1_replace(recording(fn), *key)
    (frames,) = PoseAnimateSampleFrames().sample(dca, cnet, positive, emb, 0)
    assert frames["samples"].shape == (3, 4, 8, 8) and torch.isfinite(frames["samples"]).all()
    # every layer of SDXL's attention output blocks: 0-2 hold 3 layers each here, 3-5 two (SDXL: 10 and 2)
    assert seen == {(("output", b), i) for b in range(3) for i in range(3)} | \
        {(("output", b), i) for b in range(3, 6) for i in range(2)}
    # frame 0 is the inversion's reconstruction: the same y (pooled output, sizes) in inversion and sampling
    (plain,) = PoseAnimateSampleFrames().sample(patcher, cnet, positive, emb, 0)
    assert _rel(plain["samples"][0], rec["samples"][0]) < 1e-4


@pytest.mark.parametrize("case", ["sd15_controlnet_on_sdxl", "sdxl_controlnet_on_sd15", "sd15_prompt_on_sdxl",
                                  "refiner", "sd2", "no_pooled_output"])
def test_bad_pairs_are_refused_before_any_work(case):
    latent, positive, poses = _scene()
    sdxl, sdxl_cn = build_tiny_sdxl(with_control=True)
    sd15, sd15_cn = build_tiny_sd15()
    sd15_prompt = [[torch.randn(1, 77, 768), {"pooled_output": None}]]
    args = {
        "sd15_controlnet_on_sdxl": (sdxl, sd15_cn, positive, "control_net", "made for an SD1.5 model, the MODEL is SDXL"),
        "sdxl_controlnet_on_sd15": (sd15, sdxl_cn, sd15_prompt, "control_net", "made for an SDXL model, the MODEL is SD1.5"),
        "sd15_prompt_on_sdxl": (sdxl, sdxl_cn, sd15_prompt, "positive", "768 wide \\(SD1.5\\) but the MODEL is SDXL"),
        "refiner": (build_tiny_sdxl_refiner(), sdxl_cn, positive, "model", "SDXLRefiner model is not an SD1.5 or SDXL"),
        "sd2": (build_tiny_sd2(), sd15_cn, positive, "model", "is not an SD1.5 or SDXL model"),
        "no_pooled_output": (sdxl, sdxl_cn, [[positive[0][0], {}]], "positive", "no pooled output"),
    }[case]
    model, cn, pos, name, words = args
    calls = []
    model.set_model_unet_function_wrapper(lambda f, a: calls.append(1) or f(a["input"], a["timestep"], **a["c"]))
    with pytest.raises(PoseAnimateError, match=f"^Pose-Aware Inversion: input '{name}': .*{words}.*Fix: "):
        PoseAnimatePoseAwareInversion().invert(model, cn, latent, pos, poses[:1], STEPS, 7.5, 1, 1e-5)
    assert calls == []


def test_subject_tokens_are_found_with_the_sdxl_tokenizer():
    """Cross-Attention Mask Extract reads the subject's token positions with SDXL's tokenizer (CLIP-L's, the same
    positions as CLIP-G's)."""
    import comfy.sdxl_clip

    from poseanimate.pipeline import check_subject
    from poseanimate.attention.tokens import find_token_positions

    tok = comfy.sdxl_clip.SDXLTokenizer()
    assert check_subject(tok, "a knight in silver armour walking", "knight") == [2]
    assert find_token_positions(tok, "a knight in silver armour walking", "silver armour") == [4, 5]
    assert find_token_positions(tok.clip_g, "a knight in silver armour walking", "knight") == [2]


# ------------------------------------------------------------------ workflow full_sdxl in ComfyUI's executor


@pytest.fixture(scope="module")
def sdxl_runner(tmp_path_factory):
    from comfy_exec import ComfyRunner
    from tiny_checkpoint import write_tiny_sdxl_checkpoint, write_tiny_sdxl_controlnet

    base = tmp_path_factory.mktemp("comfy_sdxl")
    runner = ComfyRunner(base)
    with torch.inference_mode(False):
        write_tiny_sdxl_checkpoint(base / "checkpoints" / "tiny-sdxl.safetensors")
        write_tiny_sdxl_controlnet(base / "controlnet" / "tiny-openpose-sdxl.safetensors")
    import folder_paths

    folder_paths.filename_list_cache.clear()
    yield runner
    runner.close()


def test_full_sdxl_workflow_runs_in_the_executor(sdxl_runner):
    """The bundled API twin of full_sdxl, with tiny SDXL model files (an SDXL-layout UNet at 320 channels that
    ComfyUI's loader detects as SDXL, the real CLIP-L + CLIP-G architecture, random weights; a matching SDXL
    ControlNet), 64x64 pictures, 2 DDIM steps and 1 inner iteration: every frame comes out."""
    import json
    import pathlib

    from PIL import Image

    root = pathlib.Path(__file__).resolve().parents[2]
    graph = json.loads((root / "workflows" / "api" / "full_sdxl.json").read_text())
    for node in graph.values():
        ct, ins = node["class_type"], node["inputs"]
        if ct == "CheckpointLoaderSimple":
            ins["ckpt_name"] = "tiny-sdxl.safetensors"
        elif ct == "ControlNetLoader":
            ins["control_net_name"] = "tiny-openpose-sdxl.safetensors"
        for axis in ("width", "height"):
            if axis in ins and not isinstance(ins[axis], list):
                ins[axis] = 64
        if ct == "PoseAnimatePoseAwareInversion":
            ins["steps"], ins["inner_steps"] = 2, 1
        if ct == "PoseAnimatePoseEmbeddingOptimize":
            ins["inner_steps"] = 1
    name = next(n["inputs"]["image"] for n in graph.values() if n["class_type"] == "LoadImage")
    img = Image.new("RGB", (96, 128), (200, 200, 200))
    for y in range(20, 120):
        for x in range(36, 60):
            img.putpixel((x, y), (180, 30, 40))
    img.save(sdxl_runner.base / "input" / name)
    ok, history, messages, valid = sdxl_runner.run(graph)
    assert valid[0], (valid[1], valid[3])
    assert ok, [m[1].get("exception_message") for m in messages if m[0] == "execution_error"]
    save = next(i for i, n in graph.items() if n["class_type"] == "SaveImage")
    align = next(n for n in graph.values() if n["class_type"] == "PoseAnimatePATAAlign")["inputs"]
    seq = next(n for n in graph.values() if n["_meta"]["title"] == "Pose sequence")["inputs"]
    assert len(history["outputs"][save]["images"]) == 1 + align["transition_frames"] + seq["frames"]
