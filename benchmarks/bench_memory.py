"""Working memory of one model call, forward and forward+backward (the optimising stages' gradient path), per
sample, in bytes the pass really holds, beside the two estimates ComfyUI's ``BaseModel.memory_required`` gives (its
CPU / no-flash branch, area x 0.15 MiB, and its NVIDIA branch with PyTorch flash attention or xformers, area x dtype
size x 0.01 MiB): the figures behind the memory profiles of ``pipeline.families`` (docs/host.md, "Memory").

    python benchmarks/bench_memory.py --comfyui $COMFYUI_PATH --arch sd15 --sizes 64 128 256 --threads 1
    python benchmarks/bench_memory.py --comfyui $COMFYUI_PATH --arch sdxl --sizes 64 128 --threads 1
    python benchmarks/bench_memory.py --comfyui $COMFYUI_PATH --arch tiny --sizes 64 128

Models: ``sd15`` / ``sdxl`` the full-size UNet + OpenPose ControlNet of bench_scale (random weights, ComfyUI's
classes), ``tiny`` the host tests' tiny SD1.5-shaped pair. For each image size, one call of 1 and of 2 samples is
measured with ``testing.memtrack.PeakMemory`` (bytes of tensor storages alive at the peak, weights and inputs
excluded; deterministic, device-independent), with and without the ControlNet, as a forward and as a
forward+backward into the text embedding through ``ComfyDenoiser.grad_context()`` (which attends with PyTorch
attention whatever the backend). Forward passes attend with ``--attention`` (default pytorch: torch SDPA, memory
linear in the tokens like the NVIDIA kernels; ``sub_quad`` is the CPU default). The marginal sample (2 samples - 1)
and the first sample are reported per latent pixel and per byte of the compute dtype, the unit the profiles use.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
MIB = 2 ** 20


def measure(patcher, cnet, size: int, batch: int, grad: bool, context_dim: int, pooled: bool) -> int:
    """Peak bytes of one call of ``batch`` samples at ``size`` px (forward, or forward+backward into the embedding)."""
    import torch

    from poseanimate.nodes.host import ComfyDenoiser, engine_mode
    from testing.memtrack import PeakMemory

    g = torch.Generator().manual_seed(0)
    adm = {"pooled_output": torch.randn(1, 1280, generator=g)} if pooled else None
    den = ComfyDenoiser(patcher, cnet, adm=adm)
    h = size // 8
    dtype = den.compute_dtype
    with engine_mode():
        x = torch.randn(batch, 4, h, h, generator=g)
        ctx = torch.randn(1, 77, context_dim, generator=g)
        hint = torch.rand(batch, 3, size, size, generator=g) if cnet is not None else None
        sigma = den.sigmas[[500] * batch]
        options = {"cond_or_uncond": [1] * batch}
        den(x, sigma, ctx.expand(batch, -1, -1), hint, dict(options))  # load, warm caches
        if grad:
            with den.grad_context():
                emb = ctx.clone().requires_grad_(True)
                with PeakMemory() as pm:
                    out = den(x, sigma, emb.expand(batch, -1, -1).to(dtype), hint, dict(options))
                    out.square().mean().backward()
                    del out
        else:
            with PeakMemory() as pm:
                den(x, sigma, ctx.expand(batch, -1, -1), hint, dict(options))
    return pm.peak


def comfy_estimates(patcher, size: int) -> tuple[int, int]:
    """ComfyUI's per-sample estimate on its CPU / no-flash branch and on its NVIDIA branch (flash or xformers)."""
    import comfy.model_management as mm

    shape = [1, 4, size // 8, size // 8]
    old = mm.xformers_enabled
    try:
        mm.xformers_enabled = lambda: False
        cpu_branch = int(patcher.model.memory_required(shape)) if not mm.pytorch_attention_flash_attention() else None
        mm.xformers_enabled = lambda: True
        nvidia = int(patcher.model.memory_required(shape))
    finally:
        mm.xformers_enabled = old
    return cpu_branch, nvidia


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--comfyui", required=True, help="path of a ComfyUI checkout")
    p.add_argument("--arch", choices=("tiny", "sd15", "sdxl"), default="sd15")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    p.add_argument("--attention", choices=("pytorch", "sub_quad"), default="pytorch",
                   help="the forward passes' attention backend")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="image sizes (multiples of 64)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    if any(s % 64 for s in args.sizes):
        print(f"--sizes: every size must be a multiple of 64, got {args.sizes}", file=sys.stderr)
        return 2
    import bench_scale as scale  # a sibling: benchmark scripts run with benchmarks/ first on sys.path
    scale.bootstrap(argparse.Namespace(comfyui=args.comfyui, device="cpu", threads=args.threads))
    sys.path.insert(1, str(ROOT))  # testing/ (after ComfyUI: the root's nodes/ must not shadow its nodes.py)
    sys.path.insert(1, str(ROOT / "tests" / "host"))
    import torch

    import comfy.ldm.modules.attention as host

    host.optimized_attention = getattr(host, f"attention_{args.attention}")
    host.optimized_attention_masked = host.optimized_attention
    torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    with torch.inference_mode():
        if args.arch == "tiny":
            from tiny_models import build_tiny_sd15

            patcher, cnet = build_tiny_sd15(dtype=dtype)
        else:
            patcher, cnet = scale.build_models(dtype, 0, args.arch)[:2]
    context_dim, pooled = (2048, True) if args.arch == "sdxl" else (768, False)
    item = torch.tensor([], dtype=dtype).element_size()
    rows = []
    print(f"{args.arch} {args.dtype}, forward attention {args.attention}; per sample: bytes per latent pixel per "
          "byte of the compute dtype (MiB in brackets)")
    print(f"{'size':>5} {'control':>7} {'est cpu':>9} {'est nvidia':>10} | {'fwd 1st':>16} {'fwd next':>16} | "
          f"{'fwd+bwd 1st':>16} {'fwd+bwd next':>16}")
    for size in args.sizes:
        area = (size // 8) ** 2
        est_cpu, est_nv = comfy_estimates(patcher, size)
        for control in (cnet, None):
            with torch.inference_mode():
                fwd = [measure(patcher, control, size, b, False, context_dim, pooled) for b in (1, 2)]
                bwd = [measure(patcher, control, size, b, True, context_dim, pooled) for b in (1, 2)]
            row = {"arch": args.arch, "dtype": args.dtype, "attention": args.attention, "size": size,
                   "latent_pixels": area, "controlnet": control is not None, "estimate_cpu_branch": est_cpu,
                   "estimate_nvidia_branch": est_nv, "forward": fwd, "forward_backward": bwd,
                   "forward_first": fwd[0], "forward_next": fwd[1] - fwd[0],
                   "forward_backward_first": bwd[0], "forward_backward_next": bwd[1] - bwd[0]}
            rows.append(row)

            def cell(v):
                return f"{v / area / item:7.0f} ({v / MIB:6.1f})"

            print(f"{size:5d} {str(control is not None):>7} {(est_cpu or 0) / MIB:9.2f} {est_nv / MIB:10.2f} | "
                  f"{cell(row['forward_first'])} {cell(row['forward_next'])} | {cell(row['forward_backward_first'])} "
                  f"{cell(row['forward_backward_next'])}", flush=True)
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
