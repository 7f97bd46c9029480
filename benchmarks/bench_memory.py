"""Working memory of a forward and of a forward+backward (the optimising stages' gradient path) against ComfyUI's
own estimate (``BaseModel.memory_required``), per sample, on the CPU: the figures behind
``pipeline.runner.MemoryPolicy`` (docs/host.md, "Memory requests").

    python benchmarks/bench_memory.py --comfyui $COMFYUI_PATH [--full] [--sizes 64 128] [--threads 1]

For each model (ComfyUI's tiny SD1.5 test UNet + ControlNet; with ``--full`` the full-size SD1.5 UNet +
ControlNet of bench_scale, random weights) and image size, one UNet + ControlNet call of 1 and of 2 samples is
measured with ``testing.memtrack.PeakMemory`` (bytes of tensor storages alive at the peak, weights and inputs
excluded; deterministic), first as a forward, then as a forward+backward into the embedding through
``ComfyDenoiser.grad_context()``. The marginal cost of one sample (2 samples - 1 sample) is divided by ComfyUI's
per-sample estimate. Prints a table and, with ``--out``, writes JSON.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def measure(patcher, cnet, size: int, batch: int, grad: bool) -> int:
    import torch

    from poseanimate.nodes.host import ComfyDenoiser, engine_mode
    from testing.memtrack import PeakMemory

    den = ComfyDenoiser(patcher, cnet)
    h = size // 8
    g = torch.Generator().manual_seed(0)
    with engine_mode():
        x = torch.randn(batch, 4, h, h, generator=g)
        ctx = torch.randn(1, 77, 768, generator=g)
        hint = torch.rand(batch, 3, size, size, generator=g)
        sigma = den.sigmas[[500] * batch]
        den(x, sigma, ctx.expand(batch, -1, -1), hint, {"cond_or_uncond": [1] * batch})  # load, warm caches
        if grad:
            with den.grad_context():
                emb = ctx.clone().requires_grad_(True)
                with PeakMemory() as pm:
                    out = den(x, sigma, emb.expand(batch, -1, -1), hint, {"cond_or_uncond": [1] * batch})
                    out.square().mean().backward()
                    del out
        else:
            with PeakMemory() as pm:
                den(x, sigma, ctx.expand(batch, -1, -1), hint, {"cond_or_uncond": [1] * batch})
    return pm.peak


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--comfyui", required=True, help="path of a ComfyUI checkout")
    p.add_argument("--full", action="store_true", help="also the full-size SD1.5 UNet + ControlNet (slow)")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="image sizes (multiples of 64)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    if any(s % 64 for s in args.sizes):
        print(f"--sizes: every size must be a multiple of 64, got {args.sizes}", file=sys.stderr)
        return 2
    scale = _load("bench_scale", ROOT / "benchmarks" / "bench_scale.py")
    scale.bootstrap(argparse.Namespace(comfyui=args.comfyui, device="cpu", threads=args.threads))
    sys.path.insert(1, str(ROOT))  # testing/ (after ComfyUI: the root's nodes/ must not shadow its nodes.py)
    sys.path.insert(1, str(ROOT / "tests" / "host"))
    import torch

    from tiny_models import build_tiny_sd15

    torch.set_num_threads(args.threads)
    models = [("tiny", build_tiny_sd15)]
    if args.full:
        models.append(("sd15-full", lambda: scale.build_models(torch.float32, 0)[:2]))
    rows = []
    print(f"{'model':10} {'size':>5} {'estimate/sample MiB':>20} {'fwd/sample MiB':>15} {'fwd+bwd/sample MiB':>19} "
          f"{'fwd/est':>8} {'fwd+bwd/est':>12} {'fwd+bwd/fwd':>12}")
    for name, build in models:
        with torch.inference_mode():
            patcher, cnet = build()
        for size in args.sizes:
            h = size // 8
            est = int(patcher.model.memory_required([1, 4, h, h]))
            with torch.inference_mode():
                fwd = [measure(patcher, cnet, size, b, False) for b in (1, 2)]
                bwd = [measure(patcher, cnet, size, b, True) for b in (1, 2)]
            f1, g1 = fwd[1] - fwd[0], bwd[1] - bwd[0]
            row = {"model": name, "size": size, "estimate_per_sample": est, "forward_peak": fwd,
                   "forward_backward_peak": bwd, "forward_per_sample": f1, "forward_backward_per_sample": g1,
                   "forward_ratio": f1 / est, "forward_backward_ratio": g1 / est, "backward_over_forward": g1 / f1}
            rows.append(row)
            print(f"{name:10} {size:5d} {est / 2**20:20.2f} {f1 / 2**20:15.2f} {g1 / 2**20:19.2f} "
                  f"{f1 / est:8.2f} {g1 / est:12.2f} {g1 / f1:12.2f}")
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
