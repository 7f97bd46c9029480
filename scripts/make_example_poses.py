"""Generate the bundled example pose sequences in assets/poses/ (deterministic, no randomness).

    python scripts/make_example_poses.py [--out assets/poses]

A small 3-D stick figure is posed by joint angles per frame, turned about the vertical axis and
projected orthographically to an OpenPose 18-keypoint body, then written as POSE_KEYPOINT JSON in
pixel coordinates (as the DWPose estimator writes it). Files: wave, walk, turn, dance (sequences) and
character (a single source pose with other proportions, on another canvas, for trying PATA out).
"""
from __future__ import annotations

import json
import math
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from _cli import CliError, Parser, atomic_output  # noqa: E402

from pata.figure import ADULT, body3d, project  # noqa: E402


def wave(f: int, n: int):
    t = 2 * math.pi * f / n
    p = {"r_shoulder": (120, 10), "r_elbow": (160 + 25 * math.sin(2 * t), 10), "l_shoulder": (10, 5),
         "l_elbow": (6, 15), "lean": 3 * math.sin(t), "head_yaw": 10 * math.sin(t)}
    return p, 10.0, (0.0, 0.0)


def walk(f: int, n: int):
    t = 2 * math.pi * 2 * f / n  # two strides
    s = math.sin(t)
    p = {"r_hip": (2, 28 * s), "l_hip": (2, -28 * s),
         "r_knee": (2, 28 * s - 25 * max(0.0, -math.cos(t))), "l_knee": (2, -28 * s - 25 * max(0.0, math.cos(t))),
         "r_shoulder": (8, -22 * s), "l_shoulder": (8, 22 * s), "r_elbow": (6, -22 * s + 25), "l_elbow": (6, 22 * s + 25),
         "crouch": 0.04 * abs(math.cos(t)), "head_yaw": 0.0}
    return p, 70.0, (-90.0 + 180.0 * f / (n - 1), 0.0)


def turn(f: int, n: int):
    u = f / (n - 1)
    yaw = 180.0 * (0.5 - 0.5 * math.cos(math.pi * u))
    p = {"r_shoulder": (25, 0), "l_shoulder": (25, 0), "r_elbow": (30, 20), "l_elbow": (30, 20)}
    return p, yaw, (0.0, 0.0)


def dance(f: int, n: int):
    t = 2 * math.pi * f / n
    s, c = math.sin(2 * t), math.cos(2 * t)
    p = {"r_shoulder": (95 + 60 * s, 0), "l_shoulder": (95 - 60 * s, 0),
         "r_elbow": (140 + 40 * s, 15), "l_elbow": (140 - 40 * s, 15),
         "r_hip": (12 + 6 * c, 10), "l_hip": (12 - 6 * c, 10), "r_knee": (4, -8), "l_knee": (4, -8),
         "lean": 9 * math.sin(t), "crouch": 0.08 * (1 - c) / 2, "head_yaw": 15 * math.sin(t)}
    return p, 25 * math.sin(t), (30 * math.sin(t), 0.0)


SEQUENCES = {"wave": (wave, 32), "walk": (walk, 40), "turn": (turn, 24), "dance": (dance, 48)}
CANVAS = (512, 768)


def _frame(body: np.ndarray, width: int, height: int) -> dict:
    flat = [round(float(v), 2) for v in body.reshape(-1)]
    return {"people": [{"pose_keypoints_2d": flat, "face_keypoints_2d": None, "hand_left_keypoints_2d": None,
                        "hand_right_keypoints_2d": None}], "canvas_width": width, "canvas_height": height}


def make_sequence(name: str) -> list[dict]:
    fn, n = SEQUENCES[name]
    w, h = CANVAS
    frames = []
    for f in range(n):
        p, yaw, off = fn(f, n)
        frames.append(_frame(project(body3d(p), yaw, (w / 2, 0.48 * h), 0.26 * h, off), w, h))
    return frames


def make_character() -> list[dict]:
    """One source pose: a shorter, long-legged character standing on a 640x640 canvas."""
    prop = dict(ADULT, upper_arm=0.62, forearm=0.58, thigh=1.0, shin=0.95, shoulder=0.3, neck_nose=0.42)
    p = {"r_shoulder": (20, 0), "l_shoulder": (35, 0), "r_elbow": (10, 10), "l_elbow": (70, 10)}
    return [_frame(project(body3d(p, prop), 15.0, (330, 300), 150.0), 640, 640)]


def main(argv=None) -> None:
    ap = Parser(prog="make_example_poses.py", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "assets" / "poses"), help="output folder")
    args = ap.parse_args(argv)
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        ap.fail(CliError(f"--out: {out} is a file, not a folder. Fix: name a folder (it is created if missing)"))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        ap.fail(CliError(f"--out: cannot create the folder {out} ({exc.strerror or exc}). Fix: choose a folder "
                         f"you can write to"))
    files = {name: make_sequence(name) for name in SEQUENCES}
    files["character"] = make_character()
    for name, frames in files.items():
        with atomic_output(out / f"{name}.json") as tmp:
            tmp.write_text(json.dumps(frames, separators=(",", ":")) + "\n")
        print(f"{out / (name + '.json')}: {len(frames)} frames")


if __name__ == "__main__":
    main()
