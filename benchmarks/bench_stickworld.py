"""StickWorld quality benchmark: PoseAnimate, its ablations and a plain pose-ControlNet baseline on held-out
StickWorld characters x backgrounds x the bundled pose sequences, with the shipped trained model.

    python benchmarks/bench_stickworld.py                       # the full benchmark (docs/stickworld.md's table)
    python benchmarks/bench_stickworld.py --cases 2 --frames 4 --steps 10 --inner 2   # a quick look

Writes ``stickworld_bench.json`` (settings, per-case and mean metrics, timings), ``stickworld_bench.md`` (the
table) and ``stickworld_sheet.png`` (contact sheet: the target poses, then every variant's frames, for the
first ``--sheet-cases`` cases) into ``--out``, and prints the table.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stickworld.bench import VARIANTS, Settings, make_cases, markdown_table, run_case, score_case, summarise  # noqa: E402
from stickworld.model import WEIGHTS, load_model  # noqa: E402
from stickworld.pictures import contact_sheet, save_png  # noqa: E402
from stickworld.world import pose_hint  # noqa: E402



def sheet_rows(case, result) -> list:
    """The source and the PATA poses, then one row per variant; a variant without transition frames
    (no_pata) gets blank cells there so that target frames line up in columns."""
    full = result.get("full") or next(v for k, v in result.items() if not k.startswith("_"))
    src_img, _ = case.draw(case.source_pose)
    rows = [(case.name, np.concatenate([src_img[None], pose_hint(full["poses"][1:], case.size)]))]
    width = max(len(r["frames"]) for k, r in result.items() if not k.startswith("_"))
    for v in VARIANTS:
        if v in result:
            frames = result[v]["frames"]
            blank = np.ones((width - len(frames),) + frames.shape[1:], frames.dtype)
            rows.append((v, np.concatenate([frames[:1], blank, frames[1:]])))
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(WEIGHTS))
    ap.add_argument("--cases", type=int, default=8, help="held-out cases (sequences cycle wave, walk, dance, turn)")
    ap.add_argument("--frames", type=int, default=8, help="target frames per sequence")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--inner", type=int, default=5, help="Adam iterations per step")
    ap.add_argument("--transition", type=int, default=3, help="PATA transition frames")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "stickworld"))
    ap.add_argument("--sheet-cases", type=int, default=2)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    model = load_model(args.weights)
    settings = Settings(steps=args.steps, inner_steps=args.inner, transition=args.transition)
    cases = make_cases(args.cases, frames=args.frames)
    per_case, timings, rows = {}, {}, []
    t_all = time.time()
    for i, case in enumerate(cases):
        t = time.time()
        result = run_case(model, case, variants, settings, seed=args.seed)
        per_case[case.name] = score_case(case, result)
        timings[case.name] = round(time.time() - t, 1)
        print(f"{case.name}: {timings[case.name]} s  ({case.prompt})", flush=True)
        if i < args.sheet_cases:
            rows += sheet_rows(case, result)
    summary = summarise(per_case)
    table = markdown_table(summary)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"settings": vars(settings) | {"cases": args.cases, "frames": args.frames, "seed": args.seed,
                                            "weights": pathlib.Path(args.weights).name},
              "model": getattr(model, "meta", {}), "mean": summary, "per_case": per_case,
              "seconds": {"total": round(time.time() - t_all, 1), "per_case": timings}}
    (out / "stickworld_bench.json").write_text(json.dumps(report, indent=1, default=list) + "\n")
    (out / "stickworld_bench.md").write_text(table + "\n")
    if rows:
        save_png(out / "stickworld_sheet.png", contact_sheet(rows))
    print(table)
    print(f"total {report['seconds']['total']} s; wrote {out}")
    return report


if __name__ == "__main__":
    main()
