"""Time and peak memory of the DCA layer (with and without MGDM masks) next to plain self-attention.

SD1.5 shapes: latent 64x64, so the upsampling blocks' token grids are 16x16 (width 1280), 32x32 (640) and
64x64 (320); 8 heads; 16 frames (one chunk, frame 0 first). Each variant runs on the same q, k, v:

    plain   torch SDPA self-attention of every frame (what the UNet does without the patch)
    dca     attention.dual_consistency_attention(q, k, v, 8)
    dca+mgdm  the same with binary character masks (an ellipse that drifts across frames, ~30% of tokens)
    mgdm-mul  the same with MGDM's "multiply" formulation (mgdm="multiply")
    win / win+mgdm  (with --window W) the DCAPatch attn1 patch run window by window (W frames each, frame ids
              and one kv_carry dict, as pacm.sample_frames calls it); equals the all-at-once result

Time: best of the repeats. "x plain" compares CPU time (process_time, all threads) on the CPU, where wall
time on a shared machine mostly measures the neighbours, and wall time on CUDA.

Peak memory: on CUDA torch.cuda.max_memory_allocated() minus the memory held before the call; on the CPU the
growth of the process's peak resident set (VmHWM, reset through /proc/self/clear_refs before each call), which
counts every allocation including the kernels' scratch space. Inputs are allocated before the measurement.

    python benchmarks/bench_dca.py            # full: 16 frames, 3 repeats (minutes on a small CPU)
    python benchmarks/bench_dca.py --quick    # 4 frames, 1 repeat, widths 640 and 1280 only
"""
from __future__ import annotations

import argparse
import gc
import os
import re
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from attention import DCAPatch, dual_consistency_attention, sdpa_attention  # noqa: E402

SHAPES = {320: 64, 640: 32, 1280: 16}  # width -> token grid side at latent 64x64


def _fixed_mmap_threshold():
    """Make glibc return freed large blocks to the OS at once, so resident-set growth tracks live tensors."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD: 64 KiB, and it stops adapting
        libc.mallopt(-1, 1 << 16)  # M_TRIM_THRESHOLD
        return True
    except (OSError, AttributeError):
        return False


def _status(field):
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1)) * 1024


def _cpu_peak(fn):
    """Run fn and return (result, peak RSS growth in bytes) or (result, None) where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status("VmRSS")
    except OSError:
        return fn(), None
    out = fn()
    return out, max(_status("VmHWM") - base, 0)


def measure(fn, device, repeats):
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del out
    else:
        out, peak = _cpu_peak(fn)
        del out
    return min(walls), min(cpus), peak


def ellipse_masks(frames, side, device):
    yy, xx = torch.meshgrid(torch.arange(side, device=device).float(), torch.arange(side, device=device).float(),
                            indexing="ij")
    ms = []
    for f in range(frames):
        cx = side * (0.35 + 0.3 * f / max(frames - 1, 1))
        ms.append((((yy - side * 0.5) / (side * 0.38)) ** 2 + ((xx - cx) / (side * 0.25)) ** 2 <= 1).float())
    return torch.stack(ms).reshape(frames, side * side)


def windowed(q, k, v, heads, window, masks=None, side=None):
    """DCAPatch over consecutive windows of ``window`` frames sharing one kv_carry dict (one chunk, cond)."""
    frames = q.shape[0]
    patch = DCAPatch(masks=None if masks is None else masks.reshape(frames, side, side))
    carry = {}
    out = torch.empty_like(q)
    for lo in range(0, frames, window):
        hi = min(frames, lo + window)
        opts = {"n_heads": heads, "block": ("output", 3), "block_index": 0, "cond_or_uncond": [0],
                "original_shape": [hi - lo, 4, side, side],
                "poseanimate": {"frame_ids": list(range(lo, hi)), "kv_carry": carry}}
        out[lo:hi] = patch(q[lo:hi], k[lo:hi], v[lo:hi], opts)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="4 frames, 1 repeat, widths 640 and 1280")
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--widths", type=int, nargs="*", default=None, choices=sorted(SHAPES))
    p.add_argument("--window", type=int, default=None,
                   help="also time the attn1 patch run in windows of this many frames (kv_carry)")
    p.add_argument("--variants", nargs="*", default=None,
                   choices=["dca", "dca+mgdm", "mgdm-mul", "win", "win+mgdm"],
                   help="only these variants (plain always runs; win variants need --window)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="default float16 on CUDA, float32 on CPU")
    a = p.parse_args(argv)
    if a.window is not None and a.window < 1:
        p.error(f"--window: must be >= 1 frames, got {a.window}; pass e.g. --window 4")
    if not a.device.startswith("cuda"):
        _fixed_mmap_threshold()
    device = torch.device(a.device)
    dtype = getattr(torch, a.dtype) if a.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    frames = a.frames or (4 if a.quick else 16)
    repeats = a.repeats or (1 if a.quick else 3)
    widths = a.widths or ([640, 1280] if a.quick else [320, 640, 1280])
    heads = 8
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# bench_dca: torch {torch.__version__}, {dev_name}, {dtype}, {frames} frames, {heads} heads, "
          f"best of {repeats}, latent 64x64")
    print(f"{'width':>5} {'tokens':>6} {'variant':>9} {'wall ms':>9} {'cpu ms':>9} {'x plain':>8} "
          f"{'peak MiB':>9} {'x plain':>8}")
    g = torch.Generator(device="cpu").manual_seed(0)
    for width in widths:
        side = SHAPES[width]
        L = side * side
        q, k, v = (torch.randn(frames, L, width, generator=g).to(device, dtype) for _ in range(3))
        masks = ellipse_masks(frames, side, device)
        variants = {
            "plain": lambda: sdpa_attention(q, k, v, heads),
            "dca": lambda: dual_consistency_attention(q, k, v, heads),
            "dca+mgdm": lambda: dual_consistency_attention(q, k, v, heads, masks=masks),
            "mgdm-mul": lambda: dual_consistency_attention(q, k, v, heads, masks=masks, mgdm="multiply"),
        }
        if a.window:
            variants["win"] = lambda: windowed(q, k, v, heads, a.window, side=side)
            variants["win+mgdm"] = lambda: windowed(q, k, v, heads, a.window, masks, side)
        if a.variants is not None:
            for name in [n for n in variants if n != "plain" and n not in a.variants]:
                del variants[name]
        base_t = base_m = None
        with torch.inference_mode():
            for name, fn in variants.items():
                wall, cpu, m = measure(fn, device, repeats)
                t = cpu if device.type == "cpu" else wall
                if name == "plain":
                    base_t, base_m = t, m
                mib = f"{m / 2**20:9.1f}" if m is not None else f"{'n/a':>9}"
                mr = f"{m / base_m:8.2f}" if m is not None and base_m else f"{'n/a':>8}"
                print(f"{width:>5} {L:>6} {name:>9} {wall * 1e3:9.1f} {cpu * 1e3:9.1f} {t / base_t:8.2f} {mib} {mr}",
                      flush=True)
        variants.clear()  # drop the closures before the next width allocates its inputs


if __name__ == "__main__":
    main()
