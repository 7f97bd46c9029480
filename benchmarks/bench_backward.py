"""CPU time of a forward+backward (the optimising stages' gradient pass into the embedding) relative to a forward,
at the same batch: the price of one forward+backward in forward-equivalents (``pacm.EvalCount.equivalents``).

    python benchmarks/bench_backward.py [--comfyui $COMFYUI_PATH] [--repeats 5] [--threads 1]

Models: StickWorld's shipped model (``assets/stickworld``, 32x32, batch 4) always; with ``--comfyui`` also the
full-size SD1.5 UNet + ControlNet of bench_scale (random weights, 64x64 pictures, batch 2) through
``ComfyDenoiser`` and its gradient path. Each figure is the smallest ``time.process_time`` of ``--repeats`` runs
after one warm-up, so other jobs on the machine inflate it less. Prints a table and the ratios.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _time(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def stickworld(repeats: int):
    import torch

    import numpy as np

    from stickworld.model import WEIGHTS, images_to_latents, load_model

    model = load_model(WEIGHTS)
    den = model.denoiser()
    g = torch.Generator().manual_seed(0)
    x = images_to_latents(np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32))
    sigma = den.sigmas[[500] * 4]
    with torch.no_grad():
        ctx = model.encode(["figure in red shirt and blue trousers on plain background"] * 4)
    hint = torch.rand(4, 3, 32, 32, generator=g)

    def forward():
        with torch.no_grad():
            den(x, sigma, ctx, hint, {"cond_or_uncond": [1] * 4})

    def forward_backward():
        with den.grad_context(), torch.enable_grad():
            e = ctx.detach().clone().requires_grad_(True)
            loss = den(x, sigma, e, hint, {"cond_or_uncond": [1] * 4}).square().mean()
            torch.autograd.grad(loss, e)  # as the engine: the embedding's gradient only

    return _time(forward, repeats), _time(forward_backward, repeats)


def sd15(comfyui: str, threads: int, repeats: int):
    import bench_scale as scale  # a sibling: benchmark scripts run with benchmarks/ first on sys.path
    scale.bootstrap(argparse.Namespace(comfyui=comfyui, device="cpu", threads=threads))
    import torch

    from poseanimate.nodes.host import ComfyDenoiser, engine_mode

    with torch.inference_mode():
        patcher, cnet, _, _ = scale.build_models(torch.float32, 0)
        den = ComfyDenoiser(patcher, cnet)
        g = torch.Generator().manual_seed(0)
        with engine_mode():
            x = torch.randn(2, 4, 8, 8, generator=g)
            ctx = torch.randn(2, 77, 768, generator=g)
            hint = torch.rand(2, 3, 64, 64, generator=g)
            sigma = den.sigmas[[500, 500]]

            def forward():
                den(x, sigma, ctx, hint, {"cond_or_uncond": [1, 1]})

            def forward_backward():
                with den.grad_context():
                    e = ctx.clone().requires_grad_(True)
                    loss = den(x, sigma, e, hint, {"cond_or_uncond": [1, 1]}).square().mean()
                    torch.autograd.grad(loss, e)

            return _time(forward, repeats), _time(forward_backward, repeats)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--comfyui", default=None, help="a ComfyUI checkout: also time the full-size SD1.5 models")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.repeats < 1:
        print("bench_backward: --repeats: must be 1 or more", file=sys.stderr)
        return 2
    sys.path.insert(1, str(ROOT))
    import torch

    torch.set_num_threads(args.threads)
    rows = [("stickworld (32 px, batch 4)", *stickworld(args.repeats))]
    if args.comfyui:
        rows.append(("sd15 full size + ControlNet (64 px, batch 2)", *sd15(args.comfyui, args.threads, args.repeats)))
    print(f"{'model':46} {'forward [s]':>12} {'fwd+bwd [s]':>12} {'ratio':>7}")
    for name, f, fb in rows:
        print(f"{name:46} {f:12.4f} {fb:12.4f} {fb / f:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
