"""StickWorld quality benchmark: the shipped PoseAnimate path (the pipeline steps with the bundled `full`
workflow's node settings), its ablations, a plain pose-ControlNet baseline, and the speed/quality frontier of
cheaper optimisation settings, on held-out StickWorld characters x backgrounds x the bundled pose sequences.

    python benchmarks/bench_stickworld.py                        # docs/stickworld: the table, the frontier, the sheet
    python benchmarks/bench_stickworld.py --seed 7 --no-frontier --out out/heldout   # another held-out case set
    python benchmarks/bench_stickworld.py --cases 2 --frames 4 --steps 10 --inner 2  # a quick look
    python benchmarks/bench_stickworld.py --only 0-3 --out out/a   # the same run split over two processes,
    python benchmarks/bench_stickworld.py --only 4-7 --out out/b   # then joined:
    python benchmarks/bench_stickworld.py --merge out/a out/b      # (writes --out, default docs/stickworld)
    python benchmarks/bench_stickworld.py --frontier-only --seed 7 --only 0-1 --out out/s7a   # frontier rows only
    python benchmarks/bench_stickworld.py --seeds out/s20240 out/s7 out/s11   # one frontier over case seeds

Writes into --out: stickworld_bench.json (settings, per-case and mean metrics, the means over characters whose
silhouette extends past the skeleton and over the others, model evaluations, timings), stickworld_bench.md (the
table), stickworld_sheet.png (contact sheet of the first --sheet-cases cases) and, unless --no-frontier,
speed_frontier.json and speed_frontier.png. Prints the tables. --frontier-only runs the frontier rows alone
(speed_frontier.json; parts without the reference row are joined with --merge, which unites a case's rows).
--seeds joins the merged frontiers of several case seeds into one speed_frontier.json: per seed its rows, the mean
over seeds, and the fast default chosen on every seed (``frontier.choose_fast_seeds``).
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

import pacm  # noqa: E402
import pipeline  # noqa: E402
from stickworld import frontier  # noqa: E402
from stickworld.bench import (BENCH_SEED, VARIANTS, Settings, make_cases, markdown_table, run_case,  # noqa: E402
                              score_case, shipped_evals, summarise)
from stickworld.model import WEIGHTS, load_model  # noqa: E402
from stickworld.pictures import contact_sheet, save_png  # noqa: E402
from stickworld.world import pose_hint  # noqa: E402

NAME = "bench_stickworld.py"


def fail(flag: str, problem: str, fix: str) -> None:
    sys.exit(f"{NAME}: {flag}: {problem}. Fix: {fix}")


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


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(WEIGHTS))
    ap.add_argument("--cases", type=int, default=8, help="held-out cases (sequences cycle wave, walk, dance, turn)")
    ap.add_argument("--frames", type=int, default=8, help="target frames per sequence")
    ap.add_argument("--steps", type=int, default=0, help="DDIM steps (0 = the full workflow's)")
    ap.add_argument("--inner", type=int, default=-1, help="Adam iterations per step, inversion and frames "
                                                           "(-1 = the full workflow's)")
    ap.add_argument("--cfg", type=float, default=0.0, help="guidance scale (0 = the full workflow's); with "
                                                            "--variants baseline it measures StickWorld's "
                                                            "sensitivity to guidance")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--rows", default=",".join(frontier.DEFAULT_ROWS), help=f"frontier rows, of {','.join(frontier.ROWS)}")
    ap.add_argument("--no-frontier", action="store_true", help="skip the speed/quality frontier")
    ap.add_argument("--frontier-only", action="store_true", help="run the frontier rows alone (no variants)")
    ap.add_argument("--seeds", nargs="+", default=[], metavar="DIR",
                    help="join the speed_frontier.json of one merged folder per case seed into --out; runs nothing")
    ap.add_argument("--seed", type=int, default=BENCH_SEED, help="seed of the held-out case set")
    ap.add_argument("--noise-seed", type=int, default=0, help="seed of the baseline's noise")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "stickworld"))
    ap.add_argument("--sheet-cases", type=int, default=2)
    ap.add_argument("--only", default="", help="run only these case numbers (e.g. 0-3 or 4,5,6,7), to split a run "
                                              "over processes; join the parts with --merge")
    ap.add_argument("--merge", nargs="+", default=[], metavar="DIR",
                    help="join the --out folders of partial runs (made with --only) into --out; runs nothing")
    args = ap.parse_args(argv)
    for flag, value, least in (("--cases", args.cases, 1), ("--frames", args.frames, 1), ("--steps", args.steps, 0),
                               ("--inner", args.inner, -1), ("--threads", args.threads, 0),
                               ("--sheet-cases", args.sheet_cases, 0)):
        if value < least:
            fail(flag, f"must be at least {least}, got {value}", f"pass {flag} {max(least, 1)} or more")
    if args.cfg != 0 and args.cfg < 1:
        fail("--cfg", f"must be 0 (the workflow's) or at least 1, got {args.cfg}", "pass 0, or 1 or more")
    if not pathlib.Path(args.weights).is_file():
        fail("--weights", f"no file {args.weights}", "pass the path of a StickWorld checkpoint (.pt)")
    try:
        args.only_cases = sorted({i for part in args.only.split(",") if part.strip() for i in (
            range(int(part.split("-")[0]), int(part.split("-")[1]) + 1) if "-" in part else [int(part)])})
    except ValueError:
        fail("--only", f"cannot read {args.only!r}", "write case numbers or ranges, e.g. 0-3 or 4,5")
    if any(i < 0 or i >= args.cases for i in args.only_cases):
        fail("--only", f"case numbers must lie in 0..{args.cases - 1}", "pass numbers below --cases")
    for folder in args.merge:
        if not any((pathlib.Path(folder) / f).is_file() for f in ("stickworld_bench.json", "speed_frontier.json")):
            fail("--merge", f"no stickworld_bench.json or speed_frontier.json in {folder}",
                 "pass the --out folders of finished partial runs")
    for folder in args.seeds:
        if not (pathlib.Path(folder) / "speed_frontier.json").is_file():
            fail("--seeds", f"no speed_frontier.json in {folder}", "pass one merged frontier folder per case seed")
    if args.frontier_only and args.no_frontier:
        fail("--frontier-only", "contradicts --no-frontier", "pass one of them")
    if args.seeds and (args.merge or args.only):
        fail("--seeds", "joins finished folders and runs nothing; --merge and --only do not apply",
             "join each seed's parts with --merge first, then pass the merged folders to --seeds alone")
    if args.frontier_only and args.variants != ",".join(VARIANTS):
        fail("--variants", "--frontier-only runs the frontier rows alone, no variant", "drop --variants")
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in args.variant_list if v not in VARIANTS]
    if bad or not args.variant_list:
        fail("--variants", f"unknown or empty {bad}", f"choose from {','.join(VARIANTS)}")
    args.row_list = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in args.row_list if r not in frontier.ROWS]
    if bad:
        fail("--rows", f"unknown {bad}", f"choose from {','.join(frontier.ROWS)}")
    if not args.no_frontier and not args.frontier_only and (frontier.REFERENCE not in args.row_list
                                                            or "full" not in args.variant_list):
        fail("--rows", f"the frontier needs the reference row '{frontier.REFERENCE}' and the variant 'full'",
             "keep both, or pass --no-frontier")
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    if args.seeds:
        return report_seeds(args)
    if args.merge:
        return report(args, *merge(args.merge))
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = load_model(args.weights)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is a user error here
        fail("--weights", f"cannot load {args.weights} ({type(exc).__name__}: {exc})",
             "pass a checkpoint written by scripts/stickworld_train.py")
    recipe = pipeline.FULL
    if args.steps:
        recipe = recipe.replace(steps=args.steps)
    if args.inner >= 0:
        recipe = recipe.replace(inversion_inner_steps=args.inner, inner_steps=args.inner)
    if args.cfg:
        recipe = recipe.replace(cfg=args.cfg)
    settings = Settings(recipe=recipe)
    cases = make_cases(args.cases, frames=args.frames, seed=args.seed)
    per_case, evals, timings, rows, frontier_cases = {}, {}, {}, [], {}
    extended = []
    for i, case in enumerate(cases):
        if args.only_cases and i not in args.only_cases:
            continue
        t = time.time()
        if args.frontier_only:
            frontier_cases[case.name] = frontier.run_rows(model, case, args.row_list, settings)
            timings[case.name] = round(time.time() - t, 1)
            print(f"{case.name}: {timings[case.name]} s  ({case.prompt})", flush=True)
            continue
        result = run_case(model, case, args.variant_list, settings, seed=args.noise_seed)
        per_case[case.name] = score_case(case, result)
        run = result["_runs"]["pata"]
        evals[case.name] = {"shipped": shipped_evals(run), "stages": run.evals}
        if not args.no_frontier:
            frontier_cases[case.name] = frontier.run_rows(model, case, args.row_list, settings, reference_run=run)
        timings[case.name] = round(time.time() - t, 1)
        if case.character.extended:
            extended.append(case.name)
        print(f"{case.name}: {timings[case.name]} s  ({case.prompt})", flush=True)
        if i < args.sheet_cases:
            rows += sheet_rows(case, result)
    run_info = {"settings": settings.record() | {"cases": args.cases, "frames": args.frames, "seed": args.seed,
                                                 "noise_seed": args.noise_seed,
                                                 "weights": pathlib.Path(args.weights).name},
                "model": getattr(model, "meta", {})}
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if rows:
        save_png(out / "stickworld_sheet.png", contact_sheet(rows))
    return report(args, run_info, per_case, evals, timings, extended, frontier_cases)


def recorded_settings(settings: dict, *drop: str) -> dict:
    """A run's recorded settings, comparable across runs: a recipe field added after a run is recorded there as
    missing (it ran with the field's default); ``drop`` leaves keys out (e.g. "seed" across case seeds)."""
    out = {k: v for k, v in settings.items() if k not in drop}
    out["recipe"] = {**pipeline.Recipe().as_dict(), **settings["recipe"]}
    return out


def merge(folders) -> tuple:
    """The per-case results of partial runs (``--only``, ``--frontier-only``), joined; a case's frontier rows from
    several parts are united."""
    run_info, per_case, evals, timings, extended, frontier_cases = None, {}, {}, {}, [], {}
    for folder in folders:
        bench, fr = pathlib.Path(folder) / "stickworld_bench.json", pathlib.Path(folder) / "speed_frontier.json"
        part = json.loads((bench if bench.is_file() else fr).read_text())
        part["settings"] = recorded_settings(part["settings"])
        if run_info is not None and part["settings"] != run_info["settings"]:
            fail("--merge", f"{folder} ran with other settings", "merge only parts of one run")
        run_info = run_info or {"settings": part["settings"], "model": {}}
        run_info["model"] = run_info["model"] or part.get("model", {})
        if bench.is_file():
            per_case.update(part["per_case"])
            evals.update(part["evals"]["per_case"])
            for case, sec in part["seconds"]["per_case"].items():
                timings[case] = timings.get(case, 0.0) + sec
            extended += part["cases_extended_silhouette"]
        if fr.is_file():
            doc = json.loads(fr.read_text())
            for case, rows in doc["per_case"].items():
                frontier_cases.setdefault(case, {}).update(rows)
            if not bench.is_file():
                for case, sec in doc.get("seconds", {}).items():
                    timings[case] = timings.get(case, 0.0) + sec
    return run_info, per_case, evals, timings, extended, frontier_cases


def shipped_mean(evals: dict) -> dict:
    """Mean evaluations of the shipped path per case, in forward-equivalents at the measured forward+backward
    cost (recomputed from the counts, so parts recorded at another price agree)."""
    cost = frontier.FORWARD_BACKWARD_COST
    for e in evals.values():  # parts recorded at another price: the counts decide
        counts = pacm.EvalCount(e["shipped"]["forward"], e["shipped"]["forward_backward"])
        e["shipped"]["equivalents"] = counts.equivalents_at(cost)
    mean = {k: float(np.mean([e["shipped"][k] for e in evals.values()])) for k in ("forward", "forward_backward")}
    mean["equivalents"] = pacm.EvalCount(**mean).equivalents_at(cost)
    mean["forward_backward_cost"] = cost
    return mean


def report(args, run_info, per_case, evals, timings, extended, frontier_cases) -> dict:
    """Write the JSON, Markdown and frontier files for the cases in ``per_case`` and print the tables."""
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not per_case:  # frontier rows alone
        report_frontier(out, run_info["settings"], frontier_cases, timings)
        print(f"total {round(sum(timings.values()), 1)} s of case time; wrote {out}")
        return {"settings": run_info["settings"], "frontier": frontier_cases}
    plain = [c for c in per_case if c not in extended]
    summary = summarise(per_case)
    report = {
        **run_info, "mean": summary,
        "mean_extended_silhouette": summarise(per_case, extended) if extended else {},
        "mean_skeleton_silhouette": summarise(per_case, plain) if plain else {},
        "cases_extended_silhouette": extended, "per_case": per_case,
        "evals": {"shipped_mean": shipped_mean(evals), "per_case": evals},
        "seconds": {"total": round(sum(timings.values()), 1), "per_case": timings},
    }
    table = markdown_table(summary)
    (out / "stickworld_bench.json").write_text(json.dumps(report, indent=1, default=list) + "\n")
    (out / "stickworld_bench.md").write_text(table + "\n")
    print(table)
    for label, names in (("extended silhouettes", extended), ("skeleton silhouettes", plain)):
        if names and len(names) < len(per_case):
            print(f"\n{label} ({len(names)} cases):\n" + markdown_table(summarise(per_case, names)))
    if frontier_cases:
        report_frontier(out, report["settings"], frontier_cases)
    print(f"total {report['seconds']['total']} s of case time; wrote {out}")
    return report


def frontier_table(rows: dict, reference: dict | None) -> str:
    head = "| row | evals | share | pose IoU | identity | background | temporal |\n|---|---|---|---|---|---|---|"
    lines = [f"| {n} | {s['evals']:.0f} | {s['evals'] / reference['evals']:.1%} | " if reference else
             f"| {n} | {s['evals']:.0f} | - | " for n, s in rows.items()]
    return "\n".join([head] + [line + f"{s['pose_iou']:.3f} | {s['identity']:.3f} | {s['background']:.4f} | "
                                       f"{s['temporal']:.4f} |" for line, s in zip(lines, rows.values())])


def report_frontier(out: pathlib.Path, settings: dict, frontier_cases: dict, timings: dict | None = None) -> None:
    """speed_frontier.json (and, with the reference row, its plot) for one case seed; prints the table."""
    rows_summary = frontier.summarise_rows(frontier_cases)
    ref = rows_summary.get(frontier.REFERENCE)
    # one rule for one seed and for several (choose_fast_seeds)
    fast = (frontier.choose_fast_seeds({str(settings.get("seed")): rows_summary}) if ref else
            {"name": None, "meets_target": False, "why": "no reference row in this part"})
    doc = {"reference": frontier.REFERENCE, "fast_default": fast["name"], "fast_target": fast,
           "rows": rows_summary, "settings": settings, "per_case": frontier_cases}
    if timings:
        doc["seconds"] = timings  # case time of frontier-only runs (with the variants: stickworld_bench.json)
    (out / "speed_frontier.json").write_text(json.dumps(doc, indent=1, default=list) + "\n")
    if ref:
        frontier.plot_frontier(rows_summary, out / "speed_frontier.png", fast=fast["name"])
    print("\n" + frontier_table(rows_summary, ref))
    print(f"fast default: {fast}")


def report_seeds(args) -> dict:
    """One speed_frontier.json over the case seeds of ``--seeds`` (one merged frontier folder each)."""
    docs = [json.loads((pathlib.Path(f) / "speed_frontier.json").read_text()) for f in args.seeds]
    seeds = [d["settings"]["seed"] for d in docs]
    if len(set(seeds)) != len(seeds):
        fail("--seeds", f"case seeds repeat: {seeds}", "pass one merged folder per case seed (join parts with --merge)")
    for folder, d in zip(args.seeds, docs):
        if any(frontier.REFERENCE not in rows for rows in d["per_case"].values()):
            fail("--seeds", f"{folder} lacks the reference row '{frontier.REFERENCE}' in some case",
                 "merge in the part that ran it")
        if recorded_settings(d["settings"], "seed") != recorded_settings(docs[0]["settings"], "seed"):
            fail("--seeds", f"{folder} ran with other settings than {args.seeds[0]}", "join runs of one setting")
    doc = frontier.combine_seeds({str(d["settings"]["seed"]): d for d in docs})
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed_frontier.json").write_text(json.dumps(doc, indent=1, default=list) + "\n")
    frontier.plot_frontier(doc["rows"], out / "speed_frontier.png", fast=doc["fast_default"])
    for seed, part in doc["seeds"].items():
        print(f"\nseed {seed} ({len(part['cases'])} cases):\n" + frontier_table(part["rows"],
                                                                              part["rows"][frontier.REFERENCE]))
    print(f"\nmean over seeds {list(doc['seeds'])}:\n" + frontier_table(doc["rows"], doc["rows"][frontier.REFERENCE]))
    print(f"fast default: {doc['fast_target']}")
    return doc


if __name__ == "__main__":
    main()
