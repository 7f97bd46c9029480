"""See PoseAnimate work in a minute on any machine: animate a held-out StickWorld character with a bundled
pose sequence, using the shipped 1.5M-parameter StickWorld model and the same engine code the nodes run.

    python scripts/stickworld_demo.py                               # writes stickworld_demo.gif
    python scripts/stickworld_demo.py --sequence walk --character 3 --steps 50 --inner 5 --out walk.gif

Each GIF frame shows the source image, the target pose (after PATA) and the generated frame. StickWorld
measures the method's mechanics on a tiny synthetic world; it says nothing about SD1.5's image quality.
"""
from __future__ import annotations

import pathlib
import sys
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from _cli import CliError, Parser, atomic_output, float_between, int_at_least, output_path, readable_file  # noqa: E402

from pipeline import FULL  # noqa: E402
from stickworld.bench import SEQUENCES, Settings, make_case, run_case, score_case  # noqa: E402
from stickworld.model import WEIGHTS, load_model  # noqa: E402
from stickworld.pictures import to_uint8, upscale, write_gif  # noqa: E402
from stickworld.world import pose_hint  # noqa: E402



def build_parser() -> Parser:
    ap = Parser(prog="stickworld_demo.py", description=__doc__.splitlines()[0])
    ap.add_argument("--sequence", default="dance", choices=SEQUENCES, help="bundled pose sequence")
    ap.add_argument("--character", type=int_at_least(0), default=0, help="held-out character / background number")
    ap.add_argument("--frames", type=int_at_least(1), default=12, help="target frames taken from the sequence")
    ap.add_argument("--steps", type=int_at_least(1), default=25, help="DDIM steps (the paper: 50)")
    ap.add_argument("--inner", type=int_at_least(1), default=3, help="Adam iterations per step (the paper: 5)")
    ap.add_argument("--scale", type=int_at_least(1, 64), default=4,
                    help="pixel upscaling of the 32x32 frames in the GIF (1-64)")
    ap.add_argument("--fps", type=float_between(0.01, 100.0, low_open=False), default=6.0,
                    help="GIF frames per second (GIF delays are in 1/100 s: up to 100)")
    ap.add_argument("--weights", default=str(WEIGHTS), help="StickWorld checkpoint (default: the shipped one)")
    ap.add_argument("--out", default="stickworld_demo.gif", help="output GIF path")
    return ap


def _load_weights(path: pathlib.Path):
    try:
        return load_model(path)
    except Exception as exc:  # noqa: BLE001 (any failure here means the file is not a StickWorld checkpoint)
        raise CliError(f"--weights: {path} is not a StickWorld checkpoint (loading it failed: {type(exc).__name__}). "
                       f"Fix: leave --weights out to use the shipped {WEIGHTS.name}, or pass one written by "
                       f"scripts/stickworld_train.py") from None


def main(argv=None) -> pathlib.Path:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:  # every check before the minute of compute
        out = output_path("--out", args.out, (".gif",))
        model = _load_weights(readable_file("--weights", args.weights, "weights file"))
    except CliError as exc:
        ap.fail(exc)
    t0 = time.time()
    case = make_case(args.character, args.sequence, args.frames)
    print(f"character {args.character}: {case.prompt!r}; sequence {args.sequence}, {args.frames} frames")
    recipe = FULL.replace(steps=args.steps, inversion_inner_steps=args.inner, inner_steps=args.inner)
    result = run_case(model, case, ["full"], Settings(recipe=recipe))
    full = result["full"]
    source, _ = case.draw(case.source_pose)
    hints = pose_hint(full["poses"], case.size)
    frames = [np.concatenate([source, hint, frame], axis=1) for hint, frame in zip(hints, full["frames"])]
    with atomic_output(out) as tmp:
        write_gif(tmp, np.stack([upscale(to_uint8(f), args.scale) for f in frames]), fps=args.fps)
    scores = score_case(case, result)["full"]
    print("scores: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    print(f"wrote {out} ({len(frames)} frames: source | pose | generated) in {time.time() - t0:.0f} s "
          f"on {torch.get_num_threads()} CPU threads")
    return out


if __name__ == "__main__":
    main()
