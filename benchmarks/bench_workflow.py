"""The bundled workflow `full`, end to end in ComfyUI's own executor, on a full-size SD1.5 UNet + OpenPose
ControlNet (random weights, written as model files ComfyUI's loaders read), at a small size on the CPU; saves
the frames Sample Frames made, so that two hosts can be compared on the same graph.

    python benchmarks/bench_workflow.py --comfyui /path/to/ComfyUI-0.3.64 --models /tmp/sd15 --out a.pt
    python benchmarks/bench_workflow.py --comfyui /path/to/ComfyUI-0.33.0 --models /tmp/sd15 --out b.pt
    python benchmarks/bench_workflow.py --compare a.pt b.pt

The model files are written once into ``--models`` (reused when present): the checkpoint holds bench_scale's
full-size SD1.5 UNet (859.5M parameters, 1/sqrt(fan-in) random weights, stored in float16), the real CLIP-L
architecture (random) and a TAESD VAE (random); the ControlNet file holds the full-size SD1.5 ControlNet. What
the run swaps in the bundled API graph is what the host tests swap (tests/host/test_host_workflows.py): model
file names, image sizes (``--size``), DDIM steps (``--steps``) and inner iterations (``--inner``). The latents
of Sample Frames are recorded from inside the executor and saved with torch.save. Prints the wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CKPT, CNET = "sd15-full-random.safetensors", "sd15-full-openpose-random.safetensors"


def compare(a: str, b: str) -> int:
    import torch

    x, y = torch.load(a), torch.load(b)
    if x.shape != y.shape:
        print(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
        return 1
    diff = (x - y).abs()
    print(f"frames {tuple(x.shape)}: max abs diff {float(diff.max()):.3e}, relative (norm) "
          f"{float((x - y).norm() / y.norm()):.3e}, max |value| {float(y.abs().max()):.3f}")
    return 0


def run(args) -> int:
    os.environ["COMFYUI_PATH"] = args.comfyui  # the host tests' executor runner reads it
    import bench_scale as scale  # a sibling: benchmark scripts run with benchmarks/ first on sys.path
    scale.bootstrap(argparse.Namespace(comfyui=args.comfyui, device="cpu", threads=args.threads))
    sys.path.insert(1, str(ROOT / "tests" / "host"))  # the executor runner and model writers of the host tests
    import torch

    from comfy_exec import ComfyRunner
    from tiny_checkpoint import write_tiny_checkpoint, write_tiny_controlnet

    models = pathlib.Path(args.models)
    base = models / "comfy_base"
    runner = ComfyRunner(base)
    t0 = time.perf_counter()
    with torch.inference_mode():
        if not (base / "checkpoints" / CKPT).is_file():
            write_tiny_checkpoint(base / "checkpoints" / CKPT, unet=dict(scale.SD15_UNET, num_heads=8,
                                                                         num_head_channels=-1),
                                  init=scale.init_weights_, dtype=torch.float16)
        if not (base / "controlnet" / CNET).is_file():
            write_tiny_controlnet(base / "controlnet" / CNET, unet=dict(scale.SD15_UNET, num_heads=8,
                                                                        num_head_channels=-1),
                                  init=scale.init_weights_, dtype=torch.float16)
    print(f"model files ready in {time.perf_counter() - t0:.1f} s", flush=True)
    import folder_paths

    folder_paths.filename_list_cache.clear()
    graph = json.loads((ROOT / "workflows" / "api" / "full.json").read_text())
    for node in graph.values():
        ct, ins = node["class_type"], node["inputs"]
        if ct == "CheckpointLoaderSimple":
            ins["ckpt_name"] = CKPT
        elif ct == "ControlNetLoader":
            ins["control_net_name"] = CNET
        for axis in ("width", "height"):
            if axis in ins and not isinstance(ins[axis], list):
                ins[axis] = args.size
        if ct == "PoseAnimatePoseAwareInversion":
            ins["steps"], ins["inner_steps"] = args.steps, args.inner
        if ct == "PoseAnimatePoseEmbeddingOptimize":
            ins["inner_steps"] = args.inner
    from PIL import Image

    name = next(n["inputs"]["image"] for n in graph.values() if n["class_type"] == "LoadImage")
    img = Image.new("RGB", (96, 128), (200, 200, 200))
    for y in range(20, 120):
        for x in range(36, 60):
            img.putpixel((x, y), (180, 30, 40))
    img.save(runner.base / "input" / name)
    from poseanimate.nodes.sample_frames import PoseAnimateSampleFrames

    recorded = []
    original = PoseAnimateSampleFrames.sample

    def sample(self, *a, **k):
        out = original(self, *a, **k)
        recorded.append(out[0]["samples"].clone())
        return out

    PoseAnimateSampleFrames.sample = sample
    try:
        t0 = time.perf_counter()
        ok, _history, messages, valid = runner.run(graph)
        wall = time.perf_counter() - t0
    finally:
        PoseAnimateSampleFrames.sample = original
        runner.close()
    if not (valid[0] and ok and recorded):
        errors = [m[1].get("exception_message") for m in messages if m[0] == "execution_error"]
        print(f"workflow failed: valid={valid[0]} ok={ok} {valid[1] if not valid[0] else errors}")
        return 1
    torch.save(recorded[-1], args.out)
    import comfyui_version

    print(f"ComfyUI {comfyui_version.__version__}: workflow 'full' ran in {wall:.1f} s; frames "
          f"{tuple(recorded[-1].shape)} finite {bool(torch.isfinite(recorded[-1]).all())} -> {args.out}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--comfyui", help="path of a ComfyUI checkout whose requirements are installed")
    p.add_argument("--models", default="/tmp/poseanimate_sd15_full", help="folder for the model files (reused)")
    p.add_argument("--out", default="frames.pt", help="where to save the frames (torch.save)")
    p.add_argument("--size", type=int, default=64, help="image size (multiple of 64)")
    p.add_argument("--steps", type=int, default=2, help="DDIM steps of Pose-Aware Inversion")
    p.add_argument("--inner", type=int, default=1, help="inner iterations of both optimising stages")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two saved frame files and exit")
    args = p.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    if not args.comfyui:
        print("bench_workflow: --comfyui: missing; give the path of a ComfyUI checkout", file=sys.stderr)
        return 2
    if args.size % 64 or args.size < 64:
        print(f"bench_workflow: --size: must be a multiple of 64, got {args.size}", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
