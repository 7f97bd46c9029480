"""The GPU check, one command: every PACM stage through the nodes on full-size random-weight models, under the
configurations users run (dynamic VRAM on and off, PyTorch / sage / flash attention where importable), at the fast
and the full preset's per-step settings; per stage: time, peak memory, the memory policy's predicted peak, the frames
per call it chose, and the embedding gradient's agreement with an fp32 reference.

    python benchmarks/gpu_check.py --comfyui /path/to/ComfyUI                # CUDA: SD1.5 at 512 px, 16 frames
    python benchmarks/gpu_check.py --comfyui /path/to/ComfyUI --sdxl        # also SDXL at 1024 px, if time allows
    python benchmarks/gpu_check.py --comfyui /path/to/ComfyUI --device cpu --tiny   # the host tests' tiny models
    python benchmarks/gpu_check.py --device cpu --tiny                       # no ComfyUI: the pipeline's stages on
                                                                             # the test UNet (CI runs this)

Each configuration runs in a subprocess of its own (ComfyUI picks its attention backend and VRAM mode at import, from
its flags). ``--minutes`` bounds the whole run: configurations that would start after it are listed as skipped;
``--steps`` cuts the DDIM steps of both presets (the inner iterations per step stay the presets'), and the table says
so. Peak memory: ``torch.cuda.max_memory_allocated`` above what was allocated before the stage on CUDA, the bytes of
tensor storages alive at the peak (``testing.memtrack``) on the CPU; predicted: the runner's priced bytes for the
largest call it prepared (``pipeline.runner.MemoryPolicy``), which the peak should stay under. Gradient: cosine and
relative L2 error of d(loss)/d(embedding) of one CFG step against the same model in fp32 (the reference run has
PyTorch attention; in fp32 runs the two agree to rounding).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
STAGES = ("Pose-Aware Inversion", "Pose Embedding Optimize", "DCA Patch Model", "Sample Frames")
MIB = 2 ** 20


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout; without it (only "
                    "with --tiny --device cpu) the pipeline's stages run on the test UNet, no nodes")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--tiny", action="store_true", help="the host tests' tiny models at 64 px instead of full size")
    ap.add_argument("--sdxl", action="store_true", help="also SDXL base + ControlNet at 1024 px")
    ap.add_argument("--frames", type=int, default=16, help="all frames, the source included")
    ap.add_argument("--steps", type=int, default=0, help="cut both presets to this many DDIM steps (0 = theirs)")
    ap.add_argument("--minutes", type=float, default=8.0, help="time budget of the whole run")
    ap.add_argument("--out", default=None, help="write every row as JSON here")
    ap.add_argument("--config", default=None, help=argparse.SUPPRESS)  # a worker's configuration (JSON)
    args = ap.parse_args(argv)
    if args.frames < 2:
        ap.error("--frames: the source and at least one target")
    if args.comfyui is None and not (args.tiny and args.device == "cpu"):
        ap.error("--comfyui: a ComfyUI checkout (or COMFYUI_PATH) is needed, except for --tiny --device cpu")
    return args


def configurations(args) -> list[dict]:
    """Every (family, preset, VRAM mode, attention) to run, cheapest first."""
    families = ["sd15"] + (["sdxl"] if args.sdxl else [])
    attentions = ["pytorch"] if args.device == "cpu" or args.comfyui is None else ["pytorch", "sage", "flash"]
    vram = ["dynamic", "static"] if args.device == "cuda" else ["static"]
    return [{"family": f, "preset": p, "vram": v, "attention": a}
            for f in families for p in ("fast", "full") for v in vram for a in attentions]


# ---- one configuration, in its own process ---------------------------------------------------------------------
def _bootstrap(args, config):
    """ComfyUI imported with the configuration's flags (bench_scale's bootstrap, then the flags before model code)."""
    import bench_scale as scale  # a sibling: benchmark scripts run with benchmarks/ first on sys.path
    scale.bootstrap(argparse.Namespace(comfyui=args.comfyui, device=args.device, threads=0))
    from comfy.cli_args import args as flags  # read by comfy.model_management at its import, which comes later

    flags.use_sage_attention = config["attention"] == "sage"
    flags.use_flash_attention = config["attention"] == "flash"
    flags.use_pytorch_cross_attention = config["attention"] == "pytorch"
    if hasattr(flags, "disable_dynamic_vram"):
        flags.disable_dynamic_vram = config["vram"] == "static"
    sys.path.insert(1, str(ROOT))
    sys.path.insert(1, str(ROOT / "tests" / "host"))
    return scale


def _presets(args, config):
    from pipeline import FAST, FULL

    recipe = FAST if config["preset"] == "fast" else FULL
    return recipe.replace(steps=args.steps) if args.steps else recipe


def _record_prepare():
    """Wrap pipeline.stages.prepare: (frames per call, priced bytes of that call) of every stage prepared."""
    from poseanimate.pipeline import runner, stages

    seen = []
    real = stages.prepare

    def prepare(host, stage, requested=0, argument="requested", policy=runner.MEMORY):
        n = real(host, stage, requested, argument, policy)
        seen.append((n, policy.per_sample(host, stage) * stage.samples_per_frame * n))
        return n

    stages.prepare = prepare
    return seen


class _Peak:
    def __init__(self, device):
        self.device = device

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            from testing.memtrack import PeakMemory

            self.track = PeakMemory().__enter__()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.track.__exit__(*exc)
            self.peak = self.track.peak
        return False


def _gradient_agreement(scale, config, patcher, cnet, positive, hint, dtype):
    """Cosine and relative L2 error of the embedding gradient of one CFG step against the fp32 model."""
    import torch
    import torch.nn.functional as F

    from poseanimate.nodes.host import ComfyDenoiser, engine_mode, plain, read_conditioning

    def grad(p, c):
        cond = read_conditioning(positive, None, "GPU check")
        den = ComfyDenoiser(p, c, adm=cond.adm, node="GPU check")
        with engine_mode():
            g = torch.Generator().manual_seed(7)
            lat = hint.shape[-1] // 8
            x = torch.randn(1, 4, lat, lat, generator=g) * float(den.sigmas[600])
            sigma = den.sigmas[[600]]
            with den.grad_context():
                emb = plain(cond.context).clone().requires_grad_(True)
                out = den(x, sigma, emb, plain(hint), {"cond_or_uncond": [1]})
                out.square().mean().backward()
        return emb.grad.double().flatten()

    a = grad(patcher, cnet)
    if dtype == torch.float32:
        b = a
    else:
        ref, ref_cn = _build(scale, config, torch.float32)
        b = grad(ref, ref_cn)
    return float(F.cosine_similarity(a, b, dim=0)), float((a - b).norm() / b.norm())


def _build(scale, config, dtype):
    if config.get("tiny"):
        from tiny_models import build_tiny_sd15, build_tiny_sdxl

        return build_tiny_sdxl(with_control=True) if config["family"] == "sdxl" else build_tiny_sd15(dtype=dtype)
    return scale.build_models(dtype, 0, config["family"])[:2]


def run_config(args, config) -> list[dict]:
    """Every stage of one configuration through the nodes; one row per stage."""
    scale = _bootstrap(args, config)
    import torch

    import comfy.model_management as mm
    from comfy.ldm.modules import attention as host

    from poseanimate.nodes.dca_patch import PoseAnimateDCAPatchModel
    from poseanimate.nodes.embedding_optimize import PoseAnimatePoseEmbeddingOptimize
    from poseanimate.nodes.host import compat
    from poseanimate.nodes.inversion import PoseAnimatePoseAwareInversion
    from poseanimate.nodes.sample_frames import PoseAnimateSampleFrames

    backend = getattr(host.optimized_attention, "__name__", "?")
    if config["attention"] not in backend:
        return [{**config, "skipped": f"{config['attention']} attention is not importable here (ComfyUI uses "
                                      f"{backend})"}]
    device = mm.get_torch_device()
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    recipe = _presets(args, config)
    size = 64 if config.get("tiny") else (1024 if config["family"] == "sdxl" else 512)
    prepared = _record_prepare()
    rows = []
    with torch.inference_mode():
        patcher, cnet = _build(scale, config, dtype)
        g = torch.Generator().manual_seed(0)
        lat = size // 8
        latent = {"samples": torch.randn(1, 4, lat, lat, generator=g) * 5}
        width = 2048 if config["family"] == "sdxl" else 768
        pooled = torch.randn(1, 1280, generator=g) if config["family"] == "sdxl" else None
        positive = [[torch.randn(1, 77, width, generator=g), {"pooled_output": pooled}]]
        poses = torch.rand(args.frames, size, size, 3, generator=g)
        stages = {
            "Pose-Aware Inversion": lambda: PoseAnimatePoseAwareInversion().invert(
                patcher, cnet, latent, positive, poses[:1], recipe.steps, recipe.cfg, recipe.inversion_inner_steps,
                recipe.early_stop),
            "Pose Embedding Optimize": lambda: PoseAnimatePoseEmbeddingOptimize().optimize(
                out["Pose-Aware Inversion"][0], patcher, cnet, positive, poses, recipe.inner_steps, 0,
                schedule=recipe.schedule, optimize_steps=recipe.optimize_steps, warm_start=recipe.warm_start,
                adaptive=recipe.adaptive, keyframe_interval=recipe.keyframe_interval),
            "DCA Patch Model": lambda: PoseAnimateDCAPatchModel().patch(patcher, *recipe.weights, recipe.blocks, "",
                                                                          None),
            "Sample Frames": lambda: PoseAnimateSampleFrames().sample(
                out["DCA Patch Model"][0], cnet, positive, out["Pose Embedding Optimize"][0], 0,
                uncond_pose=recipe.uncond_pose, hold_background=recipe.hold_background,
                hold_dilate=recipe.hold_dilate),
        }
        out = {}
        for name in STAGES:
            before = len(prepared)
            t = time.perf_counter()
            with _Peak(device) as peak:
                out[name] = stages[name]()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            calls = prepared[before:]
            rows.append({**config, "stage": name, "seconds": round(time.perf_counter() - t, 2),
                         "peak_mib": round(peak.peak / MIB, 1),
                         "predicted_mib": round(max((b for _, b in calls), default=0) / MIB, 1),
                         "frames_per_call": max((n for n, _ in calls), default=0),
                         "dynamic_vram": compat.uses_dynamic_vram(patcher), "attention_backend": backend,
                         "steps": recipe.steps, "dtype": str(dtype).replace("torch.", "")})
        finite = bool(torch.isfinite(out["Sample Frames"][0]["samples"]).all())
        cosine, error = _gradient_agreement(scale, config, patcher, cnet, positive, poses[:1].movedim(-1, 1), dtype)
    for r in rows:
        r.update(frames_finite=finite, gradient_cosine=round(cosine, 6), gradient_rel_error=round(error, 6))
    return rows


def run_tiny_pipeline(args, config) -> list[dict]:
    """Without ComfyUI: the pipeline's stage functions on the test UNet (``testing.tiny_unet``), the same rows."""
    sys.path.insert(0, str(ROOT))
    import torch
    import torch.nn.functional as F

    import pipeline
    from testing.tiny_unet import make_tiny_denoiser

    recipe = _presets(args, config)
    prepared = _record_prepare_plain(pipeline)
    model = make_tiny_denoiser(seed=0)
    g = torch.Generator().manual_seed(0)
    latent, cond = torch.randn(4, 8, 8, generator=g), torch.randn(8, 32, generator=g)
    hints = torch.rand(args.frames, 3, 64, 64, generator=g)
    rows, out = [], {}
    stages = {
        "Pose-Aware Inversion": lambda: pipeline.invert(
            model, latent, cond, hints[0], control=pipeline.ControlSettings(), steps=recipe.steps, cfg=recipe.cfg,
            inner_steps=recipe.inversion_inner_steps, early_stop=recipe.early_stop),
        "Pose Embedding Optimize": lambda: pipeline.optimise(
            model, out["Pose-Aware Inversion"], hints[1:], inner_steps=recipe.inner_steps, schedule=recipe.schedule,
            keyframe_interval=recipe.keyframe_interval),
        "DCA Patch Model": lambda: pipeline.patch_model(model, dca=pipeline.make_dca(recipe.weights))[0],
        "Sample Frames": lambda: pipeline.sample(
            out["DCA Patch Model"], out["Pose-Aware Inversion"], out["Pose Embedding Optimize"],
            uncond_pose=recipe.uncond_pose,
            hold_masks=pipeline.hold_masks_from_images(hints, latent.shape[-2:], dilate=recipe.hold_dilate)
            if recipe.hold_background else None),
    }
    from testing.memtrack import PeakMemory

    for name in STAGES:
        before = len(prepared)
        t = time.perf_counter()
        with PeakMemory() as pm:
            out[name] = stages[name]()
        calls = prepared[before:]
        rows.append({**config, "stage": name, "seconds": round(time.perf_counter() - t, 2),
                     "peak_mib": round(pm.peak / MIB, 3), "predicted_mib": 0.0,
                     "frames_per_call": max((n for n, _ in calls), default=0), "dynamic_vram": False,
                     "attention_backend": "torch SDPA", "steps": recipe.steps, "dtype": "float32"})
    finite = bool(torch.isfinite(out["Sample Frames"]).all())

    def grad(m):
        emb = cond.to(m.dtype).clone().requires_grad_(True)
        with m.grad_context(), torch.enable_grad():
            x = latent.to(m.dtype)[None] * 3.0
            m(x, torch.full((1,), 3.0, dtype=m.dtype), emb[None], hints[:1].to(m.dtype), {"cond_or_uncond": [1]}
              ).square().mean().backward()
        return emb.grad.double().flatten()

    a, b = grad(model), grad(make_tiny_denoiser(seed=0, dtype=torch.float64))
    cosine, error = float(F.cosine_similarity(a, b, dim=0)), float((a - b).norm() / b.norm())
    for r in rows:
        r.update(frames_finite=finite, gradient_cosine=round(cosine, 6), gradient_rel_error=round(error, 6))
    return rows


def _record_prepare_plain(pipeline):
    seen = []
    real = pipeline.stages.prepare

    def prepare(host, stage, requested=0, argument="frames_per_call", policy=pipeline.MEMORY):
        n = real(host, stage, requested, argument, policy)
        seen.append((n, 0))
        return n

    pipeline.stages.prepare = prepare
    return seen


# ---- the driver --------------------------------------------------------------------------------------------------
HEAD = (f"{'family':6} {'preset':6} {'vram':7} {'attention':9} {'stage':24} {'s':>7} {'peak MiB':>9} "
        f"{'predicted':>9} {'per call':>8} {'grad cos':>9} {'grad err':>9}")


def line(r) -> str:
    if "skipped" in r:
        return f"{r['family']:6} {r['preset']:6} {r['vram']:7} {r['attention']:9} skipped: {r['skipped']}"
    return (f"{r['family']:6} {r['preset']:6} {r['vram']:7} {r['attention']:9} {r['stage']:24} {r['seconds']:7.2f} "
            f"{r['peak_mib']:9.1f} {r['predicted_mib']:9.1f} {r['frames_per_call']:8d} {r['gradient_cosine']:9.5f} "
            f"{r['gradient_rel_error']:9.2e}")


def main(argv=None) -> int:
    args = parse(argv)
    if args.config:
        config = json.loads(args.config)
        rows = run_tiny_pipeline(args, config) if args.comfyui is None else run_config(args, config)
        print("ROWS " + json.dumps(rows), flush=True)
        return 0
    start = time.time()
    rows = []
    print(HEAD, flush=True)
    for config in configurations(args):
        config["tiny"] = bool(args.tiny)
        if time.time() - start > 60 * args.minutes:
            rows.append({**config, "skipped": f"the {args.minutes:g}-minute budget was spent"})
            print(line(rows[-1]), flush=True)
            continue
        cmd = [sys.executable, __file__, "--device", args.device, "--frames", str(args.frames), "--steps",
               str(args.steps), "--config", json.dumps(config)] + (["--tiny"] if args.tiny else [])
        env = dict(os.environ)
        if args.comfyui:
            cmd += ["--comfyui", args.comfyui]
        else:
            env.pop("COMFYUI_PATH", None)
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        found = [ln for ln in done.stdout.splitlines() if ln.startswith("ROWS ")]
        if done.returncode or not found:
            rows.append({**config, "skipped": f"failed (exit {done.returncode}): "
                                              f"{(done.stderr.strip().splitlines() or ['?'])[-1]}"})
            print(line(rows[-1]), flush=True)
            continue
        for r in json.loads(found[-1][5:]):
            rows.append(r)
            print(line(r), flush=True)
    steps = {r["steps"] for r in rows if "steps" in r}
    print(f"steps per preset run: {sorted(steps)}" + (" (cut by --steps)" if args.steps else "")
          + f"; {args.frames} frames; {time.time() - start:.0f} s in all")
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    failed = [r for r in rows if "failed" in r.get("skipped", "")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
