"""Real-scale benchmark of the shipped PACM path: full-size SD1.5 UNet + OpenPose ControlNet (random weights)
built with ComfyUI's own classes, every stage run THROUGH THE NODES inside ``torch.inference_mode()``.

    python benchmarks/bench_scale.py --comfyui /path/to/ComfyUI --device cpu --size 64 --frames 3 --steps 4 \\
        --inner 1 --threads 1 --out scale_cpu.json
    python benchmarks/bench_scale.py --comfyui /path/to/ComfyUI --device cuda --size 512 --frames 16 \\
        --preset paper --dtype fp16 --out scale_16_paper.json

Stages (node classes, called as ComfyUI calls them): Pose-Aware Inversion, Pose Embedding Optimize,
Cross-Attention Mask Extract, DCA Patch Model, Sample Frames. ``--frames`` counts every frame, the source
included (49 = the bundled walk sequence: source + 48 targets).

Per stage: model evaluations COUNTED (not estimated) by a ``model_function_wrapper`` in the MODEL clone's
``model_options`` that every node's ComfyDenoiser calls once per UNet evaluation: forward-only samples and
forward+backward samples (a call made while ``torch.is_grad_enabled()``, i.e. one whose output is
back-propagated) are counted separately, in samples (the batch size of each call), plus the number of calls
and the largest batch. Wall time per stage. Peak memory per stage: on CUDA ``torch.cuda.max_memory_allocated``
(reset before each stage); on the CPU the peak resident set ``VmHWM`` of /proc/self/status, reset before each
stage by writing 5 to /proc/self/clear_refs (where that reset is refused, the process-wide ``ru_maxrss`` so
far is reported, flagged in the table).

Weights are random (``--seed``), scaled by 1/sqrt(fan-in) so activations stay O(1); no weights are loaded.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import pathlib
import platform
import resource
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

SD15_UNET = dict(
    use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
    adm_in_channels=None, in_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
    transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], channel_mult=[1, 2, 4, 4], transformer_depth_middle=1,
    use_linear_in_transformer=False, context_dim=768, transformer_depth_output=[1] * 9 + [0] * 3,
    use_temporal_attention=False, use_temporal_resblock=False,
)  # SD1.5: output blocks are built popping from the end, so attention sits in output blocks 3-11

SDXL_UNET = dict(
    use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
    num_classes="sequential", adm_in_channels=2816, in_channels=4, model_channels=320, num_res_blocks=[2, 2, 2],
    transformer_depth=[0, 0, 2, 2, 10, 10], channel_mult=[1, 2, 4], transformer_depth_middle=10,
    use_linear_in_transformer=True, context_dim=2048, num_head_channels=64,
    transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], use_temporal_attention=False, use_temporal_resblock=False,
)  # SDXL base: attention in output blocks 0-2 (10 layers, 1280 channels) and 3-5 (2 layers, 640 channels)
ARCHS = {"sd15": ("SD15", SD15_UNET, 768), "sdxl": ("SDXL", SDXL_UNET, 2048)}


def _recipes() -> dict:
    """The shipped settings, read from pipeline/defaults.py (by path: it imports nothing but dataclasses)."""
    spec = importlib.util.spec_from_file_location("poseanimate_defaults", ROOT / "pipeline" / "defaults.py")
    defaults = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = defaults  # dataclasses look their module up
    spec.loader.exec_module(defaults)
    return {"full": defaults.FULL, "paper": defaults.FULL, "fast": defaults.FAST, "full_sdxl": defaults.FULL_SDXL}


PRESETS = _recipes()  # the bundled workflows' settings: 'full' (= 'paper') and 'fast', from pipeline.FULL / FAST
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
PROMPT = "a person walking, full body"


class FlagError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        print(f"bench_scale: {message}; see --help", file=sys.stderr)
        sys.exit(2)


def parse_args(argv=None):
    p = _Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout (or COMFYUI_PATH)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="the settings of pipeline.FULL ('full' = 'paper') or "
                   "pipeline.FAST ('fast'), as the bundled workflows; explicit flags override them (default: full)")
    p.add_argument("--frames", type=int, default=None, help="all frames, source included (default 16)")
    p.add_argument("--size", type=int, default=None, help="image side in pixels, a multiple of 64 (default 512)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: preset, else 50)")
    p.add_argument("--inner", type=int, default=None,
                   help="inner iterations per step of both optimising stages (default: the preset's)")
    p.add_argument("--capture-steps", type=int, default=None, help="Mask Extract capture steps, 0 = all")
    p.add_argument("--early-stop", type=float, default=0.0,
                   help="inversion early stop; 0 (default) runs every inner iteration (the upper bound)")
    p.add_argument("--dtype", default="fp32", help="fp32 | fp16 | bf16 (UNet and ControlNet weights)")
    p.add_argument("--arch", default="sd15", choices=sorted(ARCHS),
                   help="sd15: SD1.5 UNet + ControlNet; sdxl: SDXL base UNet (2.6B) + an SDXL OpenPose ControlNet")
    p.add_argument("--window", type=int, default=0, help="frames per sampling call; 0 = auto (free memory)")
    p.add_argument("--frames-per-batch", type=int, default=0, help="optimisation micro-batch; 0 = auto")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-mask-extract", action="store_true", help="skip Cross-Attention Mask Extract")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    recipe = PRESETS[args.preset or "full"]
    args.recipe = recipe
    args.steps = recipe.steps if args.steps is None else args.steps
    args.capture_steps = recipe.capture_steps if args.capture_steps is None else args.capture_steps
    args.inversion_inner = recipe.inversion_inner_steps if args.inner is None else args.inner
    args.inner = recipe.inner_steps if args.inner is None else args.inner
    args.frames = 16 if args.frames is None else args.frames
    args.size = 512 if args.size is None else args.size
    return args


def validate(args) -> None:
    if not args.comfyui or not (pathlib.Path(args.comfyui) / "comfy" / "model_management.py").is_file():
        raise FlagError(f"--comfyui: {args.comfyui!r} is not a ComfyUI checkout; pass its folder or set COMFYUI_PATH")
    if args.frames < 2:
        raise FlagError(f"--frames: must be >= 2 (the source plus at least one target), got {args.frames}")
    if args.size < 64 or args.size % 64:
        raise FlagError(f"--size: must be a multiple of 64 and >= 64 (SD1.5 downsamples the 1/8 latent 3 times), "
                        f"got {args.size}")
    if args.steps < 1:
        raise FlagError(f"--steps: must be >= 1, got {args.steps}")
    if args.inner < 0:
        raise FlagError(f"--inner: must be >= 0, got {args.inner}")
    if args.capture_steps < 0:
        raise FlagError(f"--capture-steps: must be >= 0 (0 = all steps), got {args.capture_steps}")
    if args.early_stop < 0:
        raise FlagError(f"--early-stop: must be >= 0, got {args.early_stop}")
    if args.dtype not in DTYPES:
        raise FlagError(f"--dtype: must be one of {', '.join(DTYPES)}, got {args.dtype!r}")
    if args.window < 0:
        raise FlagError(f"--window: must be >= 0 (0 = auto), got {args.window}")
    if args.frames_per_batch < 0:
        raise FlagError(f"--frames-per-batch: must be >= 0 (0 = auto), got {args.frames_per_batch}")
    if args.threads < 0:
        raise FlagError(f"--threads: must be >= 0, got {args.threads}")
    dev = args.device
    if dev != "cpu" and not (dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise FlagError(f"--device: must be cpu, cuda or cuda:N, got {dev!r}")
    if args.out is not None and not pathlib.Path(args.out).resolve().parent.is_dir():
        raise FlagError(f"--out: the folder of {args.out!r} does not exist; create it or pick another path")


def bootstrap(args):
    """Import ComfyUI as tests/host/conftest.py does; force its CPU mode only for --device cpu."""
    if "poseanimate" not in sys.modules:  # the pack imports as 'poseanimate' whatever its folder is called
        spec = importlib.util.spec_from_file_location("poseanimate", ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["poseanimate"] = module
        spec.loader.exec_module(module)
    if args.comfyui not in sys.path:
        sys.path.insert(0, args.comfyui)
    if args.device.startswith("cuda:"):  # ComfyUI uses the current device: show it only device N (before CUDA init)
        os.environ["CUDA_VISIBLE_DEVICES"] = args.device[5:]
    spec = importlib.util.spec_from_file_location("comfy_stubs", ROOT / "testing" / "comfy_stubs.py")
    stubs = importlib.util.module_from_spec(spec)  # by path: the repository root on sys.path would shadow
    spec.loader.exec_module(stubs)                 # ComfyUI's nodes.py with the pack's nodes/ package
    stubs.stub_absent()  # torchvision / torchaudio stand-ins where absent (docs/host.md)
    import comfy.options  # noqa: F401
    from comfy.cli_args import args as comfy_args

    if args.device == "cpu":
        comfy_args.cpu = True
    import torch

    if args.device != "cpu" and not torch.cuda.is_available():
        raise FlagError(f"--device: {args.device} requested but torch sees no CUDA device; use --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)


def init_weights_(module, seed: int) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            for name, p in m.named_parameters(recurse=False):
                if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                    p.fill_(1.0 if name == "weight" else 0.0)
                elif name == "bias" or p.ndim < 2:
                    p.zero_()
                else:
                    fan_in = p[0].numel()
                    p.copy_((torch.randn(p.shape, generator=gen) / math.sqrt(fan_in)).to(p.dtype))


def build_models(dtype, seed: int, arch: str = "sd15"):
    """(ModelPatcher, comfy.controlnet.ControlNet) at SD1.5's or SDXL's real sizes, random weights, ComfyUI
    classes (an SDXL OpenPose ControlNet such as xinsir's is a full copy of the SDXL encoder, ADM included)."""
    import torch

    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.ops
    import comfy.supported_models

    config_name, unet, _ctx = ARCHS[arch]
    cfg = getattr(comfy.supported_models, config_name)(dict(unet))
    cfg.set_inference_dtype(dtype, None)
    cfg.unet_config["dtype"] = dtype
    model = cfg.get_model({}, "", device=torch.device("cpu"))
    init_weights_(model.diffusion_model, seed)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    cn_cfg = dict(cfg.unet_config)
    cn_cfg.pop("out_channels")
    cn_cfg.update(hint_channels=3, operations=comfy.ops.disable_weight_init, dtype=dtype, device=torch.device("cpu"))
    control_model = comfy.cldm.cldm.ControlNet(**cn_cfg)
    init_weights_(control_model, seed + 1)
    control = comfy.controlnet.ControlNet(control_model, load_device=mm.get_torch_device(), manual_cast_dtype=None)
    n_unet = sum(p.numel() for p in model.diffusion_model.parameters())
    n_cn = sum(p.numel() for p in control_model.parameters())
    return patcher, control, n_unet, n_cn


class EvalCounter:
    """model_function_wrapper: counts UNet evaluations in samples, forward-only vs forward+backward."""

    def __init__(self):
        self.reset()

    def __deepcopy__(self, memo):  # ModelPatcher.clone() deep-copies model_options: clones count here too
        return self

    def reset(self):
        self.forward = 0
        self.forward_backward = 0
        self.calls = 0
        self.max_batch = 0

    def __call__(self, apply_model, args):
        import torch

        b = int(args["input"].shape[0])
        self.calls += 1
        self.max_batch = max(self.max_batch, b)
        if torch.is_grad_enabled():
            self.forward_backward += b
        else:
            self.forward += b
        return apply_model(args["input"], args["timestep"], **args["c"])


class PeakMemory:
    """Per-stage peak: CUDA max allocated, or the CPU resident-set high-water mark (VmHWM, reset per stage)."""

    def __init__(self, device):
        self.device = device
        self.cpu_reset = False

    @property
    def kind(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated"
        return "VmHWM (peak RSS, reset per stage)" if self.cpu_reset else "ru_maxrss (process peak so far)"

    def start(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.cpu_reset = True
        except OSError:
            self.cpu_reset = False

    def peak_mib(self) -> float:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.cpu_reset:
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(args) -> dict:
    import torch

    import comfy.model_management as mm
    import comfy.sd1_clip
    import comfy.sdxl_clip

    from poseanimate.nodes.dca_patch import PoseAnimateDCAPatchModel
    from poseanimate.nodes.embedding_optimize import PoseAnimatePoseEmbeddingOptimize
    from poseanimate.nodes.inversion import PoseAnimatePoseAwareInversion
    from poseanimate.nodes.mask_extract import PoseAnimateCrossAttentionMaskExtract
    from poseanimate.nodes.sample_frames import PoseAnimateSampleFrames

    dtype = getattr(torch, DTYPES[args.dtype])
    device = mm.get_torch_device()
    counter = EvalCounter()
    mem = PeakMemory(device)
    rows = []

    class _Clip:  # Mask Extract uses only the CLIP's tokenizer (ComfyUI's real SD1.5 tokenizer)
        tokenizer = comfy.sd1_clip.SD1Tokenizer() if args.arch == "sd15" else comfy.sdxl_clip.SDXLTokenizer()

    with torch.inference_mode():  # as ComfyUI's executor runs every node (loaders included)
        t0 = time.perf_counter()
        patcher, cnet, n_unet, n_cn = build_models(dtype, args.seed, args.arch)
        build_s = time.perf_counter() - t0
        model = patcher.clone()
        model.set_model_unet_function_wrapper(counter)
        g = torch.Generator().manual_seed(args.seed)
        lat = args.size // 8
        latent = {"samples": torch.randn(1, 4, lat, lat, generator=g) * 5}
        ctx_dim = ARCHS[args.arch][2]
        pooled = torch.randn(1, 1280, generator=g) if args.arch == "sdxl" else None
        positive = [[torch.randn(1, 77, ctx_dim, generator=g), {"pooled_output": pooled}]]
        poses = torch.rand(args.frames, args.size, args.size, 3, generator=g)

        def stage(name, fn):
            counter.reset()
            mem.start()
            t = time.perf_counter()
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            wall = time.perf_counter() - t
            rows.append({"stage": name, "forward_samples": counter.forward,
                         "forward_backward_samples": counter.forward_backward, "calls": counter.calls,
                         "max_batch": counter.max_batch, "wall_s": round(wall, 3),
                         "peak_mib": round(mem.peak_mib(), 1)})
            print(_row(rows[-1]), flush=True)
            return out

        mem.start()  # learns whether the CPU peak can be reset per stage (for the header)
        print(_header(mem), flush=True)
        inv, _rec = stage("Pose-Aware Inversion", lambda: PoseAnimatePoseAwareInversion().invert(
            model, cnet, latent, positive, poses[:1], args.steps, args.recipe.cfg, args.inversion_inner,
            args.early_stop))
        (emb,) = stage("Pose Embedding Optimize", lambda: PoseAnimatePoseEmbeddingOptimize().optimize(
            inv, model, cnet, positive, poses, args.inner, args.frames_per_batch, schedule=args.recipe.schedule,
            optimize_steps=args.recipe.optimize_steps, warm_start=args.recipe.warm_start,
            adaptive=args.recipe.adaptive, keyframe_interval=args.recipe.keyframe_interval))
        masks = None
        if not args.no_mask_extract:
            masks, _preview = stage("Cross-Attention Mask Extract", lambda: PoseAnimateCrossAttentionMaskExtract(
            ).extract(model, cnet, _Clip(), emb, PROMPT, "person", 0.0, args.capture_steps, args.window, 1))
        (dca,) = stage("DCA Patch Model", lambda: PoseAnimateDCAPatchModel().patch(
            model, 0.7, 0.15, 0.15, "all output blocks", "", masks))
        (frames,) = stage("Sample Frames", lambda: PoseAnimateSampleFrames().sample(
            dca, cnet, positive, emb, args.window, None, uncond_pose=args.recipe.uncond_pose,
            hold_background=args.recipe.hold_background, hold_dilate=args.recipe.hold_dilate))
        finite = bool(torch.isfinite(frames["samples"]).all())

    total = {k: sum(r[k] for r in rows) for k in ("forward_samples", "forward_backward_samples", "calls", "wall_s")}
    print(_row({"stage": "total", **total, "max_batch": max(r["max_batch"] for r in rows),
                "peak_mib": max(r["peak_mib"] for r in rows)}))
    print(f"models: UNet {n_unet / 1e6:.1f}M + ControlNet {n_cn / 1e6:.1f}M parameters ({args.dtype}), built in "
          f"{build_s:.1f} s; frames finite: {finite}; memory: {mem.kind}")
    return {
        "settings": {k: getattr(args, k) for k in ("frames", "size", "steps", "inversion_inner", "inner",
                                                    "capture_steps", "early_stop",
                                                    "dtype", "arch", "window", "frames_per_batch", "device",
                                                    "threads",
                                                    "seed", "preset")},
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
                        or platform.machine()),
        "torch": torch.__version__, "memory_kind": mem.kind, "unet_params": n_unet, "controlnet_params": n_cn,
        "build_s": round(build_s, 2), "frames_finite": finite, "stages": rows, "total": total,
    }


def _header(mem) -> str:
    return (f"{'stage':<30} {'fwd samples':>11} {'fwd+bwd samples':>15} {'calls':>6} {'max batch':>9} "
            f"{'wall [s]':>9} {'peak [MiB]':>10}   (peak: {mem.kind})")


def _row(r) -> str:
    return (f"{r['stage']:<30} {r['forward_samples']:>11} {r['forward_backward_samples']:>15} {r['calls']:>6} "
            f"{r['max_batch']:>9} {r['wall_s']:>9.2f} {r['peak_mib']:>10.1f}")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        validate(args)
        bootstrap(args)
    except FlagError as exc:
        print(f"bench_scale: {exc}", file=sys.stderr)
        return 2
    result = run(args)
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
