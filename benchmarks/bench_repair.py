"""What PATA's repair does to the bundled pose sequences at the frame counts the workflows use.

    python benchmarks/bench_repair.py            # table on stdout
    python benchmarks/bench_repair.py --json out.json

For each bundled sequence (assets/poses) and each frame count, the sequence is subsampled exactly as Load Pose
Sequence's ``frames`` input does (``pipeline.sample_poses``: evenly, first and last included) and run through
``pata.repair_sequence`` with its defaults. Printed per row:

    dropped   visible keypoints of the input that the repair left missing (confidence 0)
    added     keypoints missing in the input that the repair filled in
    moved     the largest displacement of a keypoint visible in both, as a fraction of the body height
    changed   keypoints moved by more than 3 % of the body height

Body height: ``pata.body_height``, the median over the frames of the vertical extent of the visible body
keypoints (eyes to ankles, about 0.9 of a person's height). The bundled sequences are clean motion, so a good repair drops
nothing and moves nothing by more than light smoothing (a few percent).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pata  # noqa: E402
import pipeline  # noqa: E402

SEQUENCES = ("walk", "turn", "dance", "wave")
FRAME_COUNTS = (6, 8, 12, 16, 24, 0)  # 0 = all
CHANGED = 0.03


def measure(seq: np.ndarray, out: np.ndarray) -> dict:
    """Keypoints dropped, the largest move (fraction of body height) and how many moved by > CHANGED."""
    height = pata.body_height(seq)
    vis_in, vis_out = seq[..., 2] > 0, out[..., 2] > 0
    both = vis_in & vis_out
    move = np.hypot(*(out[..., :2] - seq[..., :2]).transpose(2, 0, 1)) / height
    move = np.where(both, move, 0.0)
    worst = np.unravel_index(int(np.argmax(move)), move.shape)
    return {"dropped": int((vis_in & ~vis_out).sum()), "added": int((~vis_in & vis_out).sum()),
            "moved": float(move.max()),
            "changed": int((move > CHANGED).sum()), "worst": (int(worst[0]), pata.KEYPOINT_NAMES[worst[1]]),
            "visible": int(vis_in.sum())}


def load(name: str) -> np.ndarray:
    data = pata.load_pose_json(ROOT / "assets" / "poses" / f"{name}.json")
    return pata.from_pose_keypoint(data)[0]


def rows(sequences=SEQUENCES, counts=FRAME_COUNTS):
    for name in sequences:
        full = load(name)
        for frames in counts:
            seq = pipeline.sample_poses(full, frames)
            out = pata.repair_sequence(seq)
            yield {"sequence": name, "frames": len(seq), "requested": frames or "all", **measure(seq, out)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    table = list(rows())
    print(f"{'sequence':<9}{'frames':>7}{'visible':>9}{'dropped':>9}{'added':>7}{'moved':>9}{'changed':>9}"
          "  worst (frame, keypoint)")
    for r in table:
        print(f"{r['sequence']:<9}{str(r['requested']):>7}{r['visible']:>9}{r['dropped']:>9}{r['added']:>7}{r['moved']:>8.1%}"
              f"{r['changed']:>9}  {r['worst'][0]}, {r['worst'][1]}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
