"""See PoseAnimate work in a minute on any machine: animate a held-out StickWorld character with a bundled
pose sequence, using the shipped 1.5M-parameter StickWorld model and the same engine code the nodes run.

    python scripts/stickworld_demo.py                               # writes stickworld_demo.gif
    python scripts/stickworld_demo.py --sequence walk --character 3 --steps 50 --inner 5 --out walk.gif

Each GIF frame shows the source image, the target pose (after PATA) and the generated frame. StickWorld
measures the method's mechanics on a tiny synthetic world; it says nothing about SD1.5's image quality.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline import FULL  # noqa: E402
from stickworld.bench import SEQUENCES, Settings, make_case, run_case, score_case  # noqa: E402
from stickworld.model import WEIGHTS, load_model  # noqa: E402
from stickworld.pictures import to_uint8, upscale, write_gif  # noqa: E402
from stickworld.world import pose_hint  # noqa: E402



def main(argv=None) -> pathlib.Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequence", default="dance", choices=SEQUENCES, help="bundled pose sequence")
    ap.add_argument("--character", type=int, default=0, help="held-out character / background number")
    ap.add_argument("--frames", type=int, default=12, help="target frames taken from the sequence")
    ap.add_argument("--steps", type=int, default=25, help="DDIM steps (the paper: 50)")
    ap.add_argument("--inner", type=int, default=3, help="Adam iterations per step (the paper: 5)")
    ap.add_argument("--scale", type=int, default=4, help="pixel upscaling of the 32x32 frames in the GIF")
    ap.add_argument("--fps", type=float, default=6.0)
    ap.add_argument("--weights", default=str(WEIGHTS))
    ap.add_argument("--out", default="stickworld_demo.gif")
    args = ap.parse_args(argv)
    t0 = time.time()
    model = load_model(args.weights)
    case = make_case(args.character, args.sequence, args.frames)
    print(f"character {args.character}: {case.prompt!r}; sequence {args.sequence}, {args.frames} frames")
    recipe = FULL.replace(steps=args.steps, inversion_inner_steps=args.inner, inner_steps=args.inner)
    result = run_case(model, case, ["full"], Settings(recipe=recipe))
    full = result["full"]
    source, _ = case.draw(case.source_pose)
    hints = pose_hint(full["poses"], case.size)
    frames = [np.concatenate([source, hint, frame], axis=1) for hint, frame in zip(hints, full["frames"])]
    out = pathlib.Path(args.out)
    write_gif(out, np.stack([upscale(to_uint8(f), args.scale) for f in frames]), fps=args.fps)
    scores = score_case(case, result)["full"]
    print("scores: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    print(f"wrote {out} ({len(frames)} frames: source | pose | generated) in {time.time() - t0:.0f} s "
          f"on {torch.get_num_threads()} CPU threads")
    return out


if __name__ == "__main__":
    main()
