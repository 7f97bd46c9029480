"""The speed/quality frontier: the shipped path (``full``) under cheaper optimisation schedules and settings, each
costed in model evaluations counted by the model and scored on the StickWorld benchmark's held-out cases.

``ROWS`` maps a row name to the recipe changes it makes to the reference (``pipeline.FULL``, the paper's
setting). ``run_rows`` animates one case with every row, sharing the inversion between rows whose inversion
settings agree (its evaluations are still charged to every row that uses it).
"""
from __future__ import annotations

import numpy as np

import pacm
import pipeline

from .bench import FORWARD_BACKWARD_COST, Run, Settings, aligned_poses, score_case, shipped_evals

REFERENCE = "paper"
ROWS: dict[str, dict] = {
    "paper": {},                                                      # 50 steps, 5 inner iterations (FULL)
    "alg1": {"schedule": "algorithm 1", "inner_steps": 1},                              # one gradient step per step
    "first10": {"optimize_steps": 10},                                # optimise the 10 noisiest steps only
    "adaptive": {"adaptive": 0.3},                                    # stop when an iteration gains < 30 %
    "npi": {"inversion_inner_steps": 0, "inner_steps": 0},            # negative-prompt inversion, no optimisation
    "fast_old": {"steps": 20, "inversion_inner_steps": 2, "inner_steps": 2, "capture_steps": 8},  # old `fast`
    "alg1_s25": {"schedule": "algorithm 1", "inner_steps": 1, "steps": 25},
    "alg1_s20_inv2": {"schedule": "algorithm 1", "inner_steps": 1, "steps": 20, "inversion_inner_steps": 2},
    "warm": {"warm_start": True},                                     # frames in order, one at a time
    # negative-prompt inversion that keeps guidance: the unconditional rows see the source's pose, so CFG pushes
    # each frame from the source's pose towards its own (npi's rows are identical: guidance 1)
    "npi_src": {"inversion_inner_steps": 0, "inner_steps": 0, "uncond_pose": "source"},
    "npi_src_cfg2": {"inversion_inner_steps": 0, "inner_steps": 0, "uncond_pose": "source", "cfg": 2.0},
    # alg1_s20_inv2 with warm start: each frame starts from the previous frame's embeddings
    "alg1_s20_warm": {"schedule": "algorithm 1", "inner_steps": 1, "steps": 20, "inversion_inner_steps": 2,
                      "warm_start": True},
    # structural rows: spend where it pays. The source's inversion at the paper's 5 iterations (it is one frame)
    "alg1_s20_inv5": {"schedule": "algorithm 1", "inner_steps": 1, "steps": 20, "inversion_inner_steps": 5},
    # keyframes: optimise every k-th frame, interpolate the embeddings of the frames between; the saving buys steps
    "alg1_s20_inv2_kf2": {"schedule": "algorithm 1", "inner_steps": 1, "steps": 20, "inversion_inner_steps": 2,
                          "keyframe_interval": 2},
    "alg1_s25_inv2_kf2": {"schedule": "algorithm 1", "inner_steps": 1, "steps": 25, "inversion_inner_steps": 2,
                          "keyframe_interval": 2},
    "alg1_s25_inv5_kf2": {"schedule": "algorithm 1", "inner_steps": 1, "steps": 25, "inversion_inner_steps": 5,
                          "keyframe_interval": 2},
    "alg1_s30_inv2_kf3": {"schedule": "algorithm 1", "inner_steps": 1, "steps": 30, "inversion_inner_steps": 2,
                          "keyframe_interval": 3},
    # background held from the source outside the source's and the frame's skeleton bodies (static camera)
    "alg1_s20_inv2_hold": {"schedule": "algorithm 1", "inner_steps": 1, "steps": 20, "inversion_inner_steps": 2,
                           "hold_background": True},
    "alg1_s20_inv2_hold2": {"schedule": "algorithm 1", "inner_steps": 1, "steps": 20, "inversion_inner_steps": 2,
                            "hold_background": True, "hold_dilate": 2},
    # both
    "alg1_s20_inv2_kf2_hold": {"schedule": "algorithm 1", "inner_steps": 1, "steps": 20, "inversion_inner_steps": 2,
                               "keyframe_interval": 2, "hold_background": True},
    "alg1_s25_inv2_kf2_hold": {"schedule": "algorithm 1", "inner_steps": 1, "steps": 25, "inversion_inner_steps": 2,
                               "keyframe_interval": 2, "hold_background": True},
    "alg1_s25_inv5_kf2_hold": {"schedule": "algorithm 1", "inner_steps": 1, "steps": 25, "inversion_inner_steps": 5,
                               "keyframe_interval": 2, "hold_background": True},
    "alg1_s30_inv2_kf3_hold": {"schedule": "algorithm 1", "inner_steps": 1, "steps": 30, "inversion_inner_steps": 2,
                               "keyframe_interval": 3, "hold_background": True},
    "alg1_s20_inv2_kf3_hold": {"schedule": "algorithm 1", "inner_steps": 1, "steps": 20, "inversion_inner_steps": 2,
                               "keyframe_interval": 3, "hold_background": True},
    "alg1_s15_inv2_kf2_hold": {"schedule": "algorithm 1", "inner_steps": 1, "steps": 15, "inversion_inner_steps": 2,
                               "keyframe_interval": 2, "hold_background": True},
    # the same holds with the bodies drawn from the pose images alone (Sample Frames without pose_keypoint)
    "alg1_s20_inv2_kf2_hold_img": {"schedule": "algorithm 1", "inner_steps": 1, "steps": 20,
                                   "inversion_inner_steps": 2, "keyframe_interval": 2, "hold_background": True,
                                   "hold_source": "pose images"},
    "alg1_s20_inv2_kf3_hold_img": {"schedule": "algorithm 1", "inner_steps": 1, "steps": 20,
                                   "inversion_inner_steps": 2, "keyframe_interval": 3, "hold_background": True,
                                   "hold_source": "pose images"},
    "alg1_s15_inv2_kf2_hold_img": {"schedule": "algorithm 1", "inner_steps": 1, "steps": 15,
                                   "inversion_inner_steps": 2, "keyframe_interval": 2, "hold_background": True,
                                   "hold_source": "pose images"},
}
# The rows the benchmark runs by default: the reference, negative-prompt inversion, and the Algorithm 1 rows near
# the fast target (at most 20 % of the reference's evaluations at FORWARD_BACKWARD_COST: alg1_s20_*; alg1_s25 is
# just above). The others run with --rows: npi_src / npi_src_cfg2 (measured on the default seed only: docs),
# alg1, first10, fast_old (27-44 % of the reference), warm start on the paper setting (the reference's passes,
# one frame at a time) and adaptive stopping (about two thirds of the reference), left out for CPU time.
DEFAULT_ROWS = ("paper", "npi", "alg1_s25", "alg1_s20_inv2", "alg1_s20_warm")


def row_recipe(name: str, base: pipeline.Recipe = pipeline.FULL) -> pipeline.Recipe:
    if name not in ROWS:
        raise ValueError(f"rows: unknown row {name!r}; choose from {list(ROWS)}")
    return base.replace(**ROWS[name])


def run_rows(model, case, rows=None, settings: Settings | None = None, reference_run: Run | None = None) -> dict:
    """``{row: {"scores": {...}, "evals": {...}}}`` for one case. ``reference_run``: the main benchmark's ``full``
    run of this case (its recipe must equal the reference row's), reused instead of running the paper setting
    again."""
    settings = settings or Settings()
    rows = list(ROWS) if rows is None else list(rows)
    inversions: dict = {}
    out = {}
    for name in rows:
        recipe = row_recipe(name, settings.recipe)
        if reference_run is not None and recipe == reference_run.recipe:
            run = reference_run
        else:
            run = Run(model, case, aligned_poses(case, recipe), Settings(
                recipe=recipe, source_mask=settings.source_mask, subject=settings.subject, window=settings.window))
            key = (recipe.steps, recipe.cfg, recipe.inversion_inner_steps, recipe.early_stop)
            if key in inversions:
                shared = inversions[key]
                run._cache["invert"] = shared._cache["invert"]
                run.evals["invert"] = dict(shared.evals["invert"])
            run.pose_aware()
            inversions.setdefault(key, run)
        frames = run.full()
        m = len(case.targets)
        result = {"full": {"frames": frames, "poses": run.poses, "targets": slice(len(run.poses) - m, len(run.poses))}}
        out[name] = {"scores": score_case(case, result)["full"], "evals": shipped_evals(run)}
    return out


def summarise_rows(per_case: dict, cost: float = FORWARD_BACKWARD_COST) -> dict:
    """Mean scores and mean evaluations per row over cases; ``evals`` in forward-equivalents with a
    forward+backward at ``cost`` forwards (recorded as ``forward_backward_cost``)."""
    rows = {r for case in per_case.values() for r in case}
    out = {}
    for r in [r for r in ROWS if r in rows]:
        items = [case[r] for case in per_case.values() if r in case]
        entry = {k: float(np.mean([i["scores"][k] for i in items])) for k in items[0]["scores"]}
        entry["evals_forward"] = float(np.mean([i["evals"]["forward"] for i in items]))
        entry["evals_forward_backward"] = float(np.mean([i["evals"]["forward_backward"] for i in items]))
        entry["evals"] = pacm.EvalCount(entry["evals_forward"], entry["evals_forward_backward"]).equivalents_at(cost)
        entry["forward_backward_cost"] = float(cost)
        entry["settings"] = ROWS[r]
        out[r] = entry
    return out


def keeps_guidance(name: str, base: pipeline.Recipe = pipeline.FULL) -> bool:
    """Whether a row's CFG acts: with no embedding optimisation in either stage and the unconditional rows under
    the frames' own poses, every unconditional row equals its conditional row (guidance 1 whatever the scale)."""
    r = row_recipe(name, base)
    return bool(r.inversion_inner_steps or r.inner_steps or r.uncond_pose != "target") and r.cfg != 1.0


def choose_fast_seeds(per_seed: dict, reference: str = REFERENCE, budget: float = 0.2,
                      tolerance: float = 0.05) -> dict:
    """The fast default over several case seeds (``{seed: rows summary}``): the cheapest row that keeps guidance
    (:func:`keeps_guidance`; StickWorld alone cannot show what SD1.5 loses without it) and meets the target on every
    seed (its cost: the largest share over seeds): at most ``budget`` of the reference's evaluations, identity and
    background at most ``tolerance`` worse than the reference's, and pose IoU and temporal change no more than
    ``tolerance`` worse either. If none does, the row whose worst seed loses least (identity + background, relative
    to that seed's reference) among those within the budget on every seed; ``meets_target`` False. ``misses``
    lists, per row, the seeds where it misses the target."""
    names = [n for n in ROWS if n != reference and all(n in rows for rows in per_seed.values())]

    def share(rows, n):
        return rows[n]["evals"] / rows[reference]["evals"]

    def rel(rows, n, k):
        return rows[n][k] / rows[reference][k] - 1.0

    misses = {n: sorted(seed for seed, rows in per_seed.items()
                        if share(rows, n) > budget or rel(rows, n, "identity") > tolerance
                        or rel(rows, n, "background") > tolerance or rel(rows, n, "temporal") > tolerance
                        or -rel(rows, n, "pose_iou") > tolerance) for n in names}
    guided = [n for n in names if keeps_guidance(n)]
    meets = [n for n in guided if not misses[n]]
    if meets:
        name = min(meets, key=lambda n: max(share(rows, n) for rows in per_seed.values()))
        return {"name": name, "meets_target": True, "misses": misses,
                "why": f"cheapest row that keeps guidance, within {budget:.0%} of the reference's evaluations "
                       f"with identity and background within {tolerance:.0%} (pose IoU and temporal change no "
                       f"more than {tolerance:.0%} worse) on every case seed"}
    within = [n for n in guided if all(share(rows, n) <= budget for rows in per_seed.values())]
    if not within:
        return {"name": None, "meets_target": False, "misses": misses,
                "why": f"no row that keeps guidance is within {budget:.0%} of the evaluations on every seed"}
    name = min(within, key=lambda n: max(rel(rows, n, "identity") + rel(rows, n, "background")
                                         for rows in per_seed.values()))
    return {"name": name, "meets_target": False, "misses": misses,
            "why": f"no row that keeps guidance and is within {budget:.0%} of the evaluations keeps identity "
                   f"and background within {tolerance:.0%} on every case seed; this one's worst seed loses least"}


def combine_seeds(docs: dict, cost: float = FORWARD_BACKWARD_COST) -> dict:
    """One frontier over case seeds from each seed's speed_frontier.json (``{seed: doc}``): ``seeds`` holds each
    seed's cases and rows (:func:`summarise_rows`), ``rows`` the mean over seeds (each seed weighs the same) of the
    rows every seed has, and the fast default is :func:`choose_fast_seeds`'s."""
    seeds = {seed: {"cases": sorted(d["per_case"]), "rows": summarise_rows(d["per_case"], cost)}
             for seed, d in docs.items()}
    common = [n for n in ROWS if all(n in s["rows"] for s in seeds.values())]
    mean = {}
    for n in common:
        items = [s["rows"][n] for s in seeds.values()]
        mean[n] = {k: float(np.mean([i[k] for i in items])) for k in items[0] if isinstance(items[0][k], float)}
        mean[n]["settings"] = ROWS[n]
    fast = choose_fast_seeds({seed: s["rows"] for seed, s in seeds.items()})
    settings = dict(next(iter(docs.values()))["settings"])
    settings.pop("seed", None)
    return {"reference": REFERENCE, "fast_default": fast["name"], "fast_target": fast, "rows": mean,
            "seeds": seeds, "settings": settings, "per_case": {seed: d["per_case"] for seed, d in docs.items()}}


def plot_frontier(summary: dict, path, reference: str = REFERENCE, fast: str | None = None,
                  size=(720, 300)) -> None:
    """Two panels side by side: identity distance and background error (lower is better) against model
    evaluations (log axis), one labelled point per row; the reference in red, the fast default in green."""
    import cv2

    from .pictures import save_png

    names = list(summary)
    ev = np.log10([summary[n]["evals"] for n in names])
    lo, hi = np.floor(ev.min() * 4) / 4 - 0.1, np.ceil(ev.max() * 4) / 4 + 0.1
    panel_w, h = size[0] // 2, size[1]
    pad = 46
    panels = []
    for metric, title in (("identity", "identity distance"), ("background", "background error")):
        img = np.full((h, panel_w, 3), 255, np.uint8)
        vals = np.array([summary[n][metric] for n in names])
        vlo, vhi = 0.0, float(vals.max()) * 1.15 or 1.0

        def xy(e, v):
            x = pad + (e - lo) / (hi - lo) * (panel_w - pad - 12)
            y = h - pad - (v - vlo) / (vhi - vlo) * (h - pad - 24)
            return int(round(x)), int(round(y))

        cv2.rectangle(img, (pad, 24), (panel_w - 12, h - pad), (200, 200, 200), 1)
        for e in np.arange(np.ceil(lo * 2) / 2, hi, 0.5):
            x, _ = xy(e, vlo)
            cv2.putText(img, f"{10 ** e:.0f}", (x - 12, h - pad + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1,
                        cv2.LINE_AA)
        for v in np.linspace(vlo, vhi, 4)[1:]:
            _, y = xy(lo, v)
            cv2.putText(img, f"{v:.3g}", (2, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"{title} (lower is better)", (pad, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1,
                    cv2.LINE_AA)
        cv2.putText(img, "model evaluations per case (log)", (pad, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                    (0, 0, 0), 1, cv2.LINE_AA)
        for n, e, v in zip(names, ev, vals):
            colour = (40, 40, 210) if n == reference else (40, 170, 40) if n == fast else (160, 90, 30)
            x, y = xy(e, v)
            cv2.circle(img, (x, y), 3, colour, -1, cv2.LINE_AA)
            cv2.putText(img, n, (x + 4, y - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.3, colour, 1, cv2.LINE_AA)
        panels.append(img[..., ::-1])  # drawn in BGR, saved as RGB
    save_png(path, np.concatenate(panels, axis=1))
