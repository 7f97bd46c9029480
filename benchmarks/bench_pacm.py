"""PACM engine benchmark: time and peak memory of every stage, batched vs frame-by-frame optimisation.

    python benchmarks/bench_pacm.py                                  # tiny UNet on CPU (the figures in docs/pacm.md)
    python benchmarks/bench_pacm.py --size sd15 --device cuda --frames 16 --res 512 --steps 50 --iters 5
    python benchmarks/bench_pacm.py --denoiser mypkg.mod:make --device cuda   # any pacm Denoiser factory

``--size tiny`` is ``testing.tiny_unet.make_tiny_denoiser()`` (178k-parameter UNet); ``--size sd15`` is the same
code at SD1.5's sizes with random weights (859.5M UNet + 361M ControlNet copy, context 77 x 768).
``--denoiser module:function`` calls ``function(device=..., dtype=...)`` for any object implementing the
Denoiser protocol of DEVELOPERS.md (give ``--tokens``/``--context-dim`` to match it).

Every stage reports its model evaluations (``pacm.EvalCount``: forwards and forward+backward passes in sample
units). ``--mode``, ``--optimize-steps``, ``--warm-start``, ``--adaptive``, ``--loss-scale`` select the optimisation
schedule (docs/pacm.md).

Frame-by-frame optimisation (the paper's loop) is timed on ``--single-frames`` frames (default 2) and
extrapolated linearly to all frames; the batched run optimises all frames in micro-batches. Peak memory is
``torch.cuda.max_memory_allocated`` per stage on CUDA, and on CPU the peak of live tensor bytes created by the
stage (``testing.memtrack.PeakMemory``, measured in a second, untimed pass; ``--no-memory`` skips it).
"""
from __future__ import annotations

import argparse
import importlib
import pathlib
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pacm  # noqa: E402
from testing.memtrack import PeakMemory  # noqa: E402
from testing.tiny_unet import make_tiny_denoiser, sd15_config  # noqa: E402


class Counting:
    """Wraps a Denoiser and counts model evaluations and evaluated frames."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0
        self.items = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, x, sigma, context, hint, transformer_options):
        self.calls += 1
        self.items += x.shape[0]
        return self.inner(x, sigma, context, hint, transformer_options)

    def grad_context(self):
        return self.inner.grad_context()


def build(args):
    dtype = getattr(torch, args.dtype)
    if args.denoiser:
        mod, fn = args.denoiser.split(":")
        return getattr(importlib.import_module(mod), fn)(device=args.device, dtype=dtype), "custom"
    if args.size == "sd15":
        cfg = sd15_config()
        model = make_tiny_denoiser(seed=0, out_scale=1.0, in_scale=1.0, full_control=True, device=args.device,
                                   dtype=dtype, **cfg)
    else:
        model = make_tiny_denoiser(seed=0, device=args.device, dtype=dtype)
    unet = sum(p.numel() for p in model.unet.parameters())
    ctrl = sum(p.numel() for p in model.control.parameters()) if model.control is not None else 0
    return model, f"{args.size} ({unet / 1e6:.3f}M-parameter UNet + {ctrl / 1e6:.3f}M pose control)"


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, device, memory: bool):
    """(result, seconds, peak bytes or None). On CUDA the peak comes from the same run."""
    dev = torch.device(device)
    if dev.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    seconds = time.perf_counter() - t0
    peak = None
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) - base
    elif memory:
        with PeakMemory() as pm:
            fn()
        peak = pm.peak
    return out, seconds, peak


def scaling(model, inv, args):
    """Peak working memory of sample_frames (2 steps) for several N, windowed vs all at once."""
    short = pacm.InversionResult(sigmas=inv.sigmas[[0, inv.steps // 2, -1]].clone(),
                                 trajectory=inv.trajectory[[0, inv.steps // 2, -1]], cond=inv.cond,
                                 uncond=inv.uncond[[0, inv.steps // 2]], hint=inv.hint, cfg=inv.cfg)
    g = torch.Generator().manual_seed(1)
    res = inv.hint.shape[-1]
    print(f"\nsample_frames peak working memory (2 steps), window {args.window} vs all frames at once:")
    for n in [int(v) for v in args.scaling.split(",")]:
        emb = pacm.PoseEmbeddings(uncond=short.uncond[None].expand(n, -1, -1, -1).clone(),
                                  hints=(torch.rand(n, 3, res, res, generator=g) > 0.95).float(),
                                  sigmas=short.sigmas, cfg=short.cfg)
        peaks = []
        for window in (args.window, None):
            _, _, peak = measure(lambda: pacm.sample_frames(model, short, emb, window_size=window), args.device, True)
            peaks.append(peak / 2**20)
        print(f"  N = {n:3d}: windowed {peaks[0]:8.2f} MiB   all at once {peaks[1]:8.2f} MiB")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["tiny", "sd15"], default="tiny")
    ap.add_argument("--denoiser", default=None, help="module:function returning a pacm Denoiser")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"])
    ap.add_argument("--frames", type=int, default=16, help="target frames N (frame 0, the source, comes extra)")
    ap.add_argument("--res", type=int, default=None, help="image size (latent = res / 8); default 64 tiny, 512 sd15")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--iters", type=int, default=5, help="inner Adam iterations per step")
    ap.add_argument("--window", type=int, default=4, help="frames per model evaluation in sample_frames")
    ap.add_argument("--batch-size", type=int, default=None, help="optimisation micro-batch (default: auto)")
    ap.add_argument("--mode", choices=["inner", "alg1"], default="inner",
                    help="optimisation schedule: inner Adam loop per step, or the paper's Alg. 1 (one step)")
    ap.add_argument("--optimize-steps", type=int, default=None, help="optimise only the first K steps")
    ap.add_argument("--warm-start", action="store_true", help="start each frame from its predecessor's embeddings")
    ap.add_argument("--adaptive", type=float, default=None, help="adaptive inner-loop stop (relative decrease)")
    ap.add_argument("--loss-scale", type=float, default=None, help="loss scale (default: automatic by dtype)")
    ap.add_argument("--single-frames", type=int, default=2, help="frames timed frame by frame (extrapolated)")
    ap.add_argument("--tokens", type=int, default=77)
    ap.add_argument("--context-dim", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--no-memory", action="store_true", help="skip the CPU peak-memory pass")
    ap.add_argument("--no-dca", action="store_true", help="sample without attention.DCAPatch on the output blocks")
    ap.add_argument("--scaling", default="8,16,32",
                    help="frame counts for the windowed vs all-at-once peak-memory comparison ('' to skip)")
    args = ap.parse_args(argv)
    if args.optimize_steps is not None and args.optimize_steps < 1:
        ap.error("--optimize-steps: must be >= 1; omit it to optimise every step")
    if args.adaptive is not None and not 0 < args.adaptive < 1:
        ap.error("--adaptive: must be a fraction between 0 and 1, e.g. 0.05")
    if args.loss_scale is not None and args.loss_scale < 1:
        ap.error("--loss-scale: must be >= 1 (a power of two such as 4096), or omit it for automatic")
    if args.threads:
        torch.set_num_threads(args.threads)
    res = args.res or (512 if args.size == "sd15" else 64)
    inner, label = build(args)
    dca_note = "no DCA patch"
    if not args.no_dca and hasattr(inner, "with_patch"):
        try:
            from attention import DCAPatch
        except ImportError:
            DCAPatch = None
        if DCAPatch is not None:
            patch = DCAPatch()
            for blk in inner.unet.attention_blocks():
                if blk[0] == "output":
                    inner = inner.with_patch("attn1", blk, patch)
            dca_note = "attention.DCAPatch on every output block with attention"
    model = Counting(inner)
    dim = args.context_dim or getattr(getattr(inner, "unet", None), "context_dim", 768)
    wd = torch.float32
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(4, res // 8, res // 8, generator=g, dtype=wd)
    cond = torch.randn(args.tokens, dim, generator=g, dtype=wd)
    hint = (torch.rand(3, res, res, generator=g) > 0.95).float()
    hints = (torch.rand(args.frames, 3, res, res, generator=g) > 0.95).float()
    memory = not args.no_memory

    print(f"PACM benchmark: model {label}; device {args.device} {args.dtype}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"  {args.frames} target frames + source, image {res}x{res} (latent 4x{res // 8}x{res // 8}), "
          f"context {args.tokens}x{dim}, {args.steps} steps (ddim_uniform), {args.iters} inner iterations, "
          f"window {args.window}; {dca_note}")
    rows = []

    def stage(name, fn):
        c0, i0 = model.calls, model.items
        counts = pacm.EvalCount()
        out, sec, peak = measure(lambda: fn(counts), args.device, memory)
        calls = model.calls - c0
        items = model.items - i0
        if peak is not None and torch.device(args.device).type == "cpu":
            calls //= 2    # the memory pass repeats the stage
            items //= 2
            counts = pacm.EvalCount(counts.forward // 2, counts.forward_backward // 2)
        rows.append((name, sec, peak, calls, items, counts))
        return out, sec

    opt = dict(inner_steps=args.iters, mode=args.mode, optimize_steps=args.optimize_steps,
               warm_start=args.warm_start, adaptive=args.adaptive, loss_scale=args.loss_scale)
    inv, t_inv = stage("ddim_invert",
                       lambda c: pacm.ddim_invert(model, latent, cond, hint, steps=args.steps, counts=c))
    inv, t_pa = stage("pose_aware_inversion",
                      lambda c: pacm.pose_aware_inversion(model, inv, inner_steps=args.iters, adaptive=args.adaptive,
                                                          loss_scale=args.loss_scale, counts=c))
    emb, t_opt = stage(f"optimize_pose_embeddings, batched ({args.frames} frames)",
                       lambda c: pacm.optimize_pose_embeddings(model, inv, hints, frames_per_batch=args.batch_size,
                                                               counts=c, **opt))
    k = max(1, min(args.single_frames, args.frames))
    single, t_single = stage(f"optimize frame by frame ({k} frames, batch_size=1)",
                             lambda c: pacm.optimize_pose_embeddings(model, inv, hints[:k], frames_per_batch=1, counts=c,
                                                                     **opt))
    frames, t_sample = stage(f"sample_frames ({args.frames + 1} frames, window {args.window})",
                             lambda c: pacm.sample_frames(model, inv, emb, window_size=args.window, counts=c))

    print(f"\nschedule: mode {args.mode}, optimize_steps {args.optimize_steps}, warm_start {args.warm_start}, "
          f"adaptive {args.adaptive}, loss_scale {emb.settings['loss_scale']:g}")
    print(f"\n{'stage':58s} {'time [s]':>9s} {'peak [MiB]':>11s} {'calls':>7s} {'frame evals':>12s} "
          f"{'fwd':>7s} {'fwd+bwd':>8s} {'fwd-equiv':>10s}")
    for name, sec, peak, calls, items, counts in rows:
        p = "-" if peak is None else f"{peak / 2**20:.1f}"
        print(f"{name:58s} {sec:9.2f} {p:>11s} {calls:7d} {items:12d} {counts.forward:7d} "
              f"{counts.forward_backward:8d} {counts.equivalents:10d}")
    print("(fwd, fwd+bwd: the engine's EvalCount in sample units; fwd-equiv = fwd + 3 * fwd+bwd)")
    per_frame_single = t_single / k
    per_frame_batched = t_opt / args.frames
    total = t_inv + t_pa + t_opt + t_sample
    print(f"\nmicro-batch used: {emb.settings['frames_per_batch']}")
    print(f"frame-by-frame optimisation, extrapolated to {args.frames} frames: {per_frame_single * args.frames:.2f} s")
    if rows[3][5].equivalents and rows[2][5].equivalents:
        print(f"batched vs frame-by-frame optimisation speed ratio: {per_frame_single / per_frame_batched:.2f}x")
    else:
        print("batched vs frame-by-frame optimisation speed ratio: n/a (no optimisation pass ran)")
    err = float((emb.uncond[:k] - single.uncond).norm() / single.uncond.norm())
    print(f"batched vs frame-by-frame embeddings, relative difference: {err:.2e}")
    print(f"whole run (batched, all four stages): {total:.2f} s")
    if args.scaling:
        scaling(model, inv, args)
    if torch.device(args.device).type == "cuda":
        weights = torch.cuda.memory_allocated(args.device)
        worst = max(r[2] for r in rows)
        print(f"peak CUDA memory over the run: {(weights + worst) / 2**30:.2f} GiB "
              f"(weights and inputs {weights / 2**30:.2f} GiB + worst stage {worst / 2**30:.2f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
