"""benchmarks/gpu_check.py through the nodes on this host, in its CPU mode with the tiny models: every stage of both
presets runs, and every row carries the figures the GPU run will print."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_gpu_check_runs_every_stage_through_the_nodes(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--comfyui",
                           os.environ["COMFYUI_PATH"], "--device", "cpu", "--tiny", "--steps", "2", "--frames", "3",
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    rows = json.loads(out.read_text())
    assert not any("skipped" in r for r in rows), rows
    assert {(r["preset"], r["stage"]) for r in rows} == {(p, s) for p in ("fast", "full") for s in (
        "Pose-Aware Inversion", "Pose Embedding Optimize", "DCA Patch Model", "Sample Frames")}
    for r in rows:
        assert r["frames_finite"] and r["gradient_cosine"] > 0.9999 and r["attention_backend"] == "attention_pytorch"
        if r["stage"] in ("Pose Embedding Optimize", "Sample Frames"):
            assert r["frames_per_call"] >= 1 and r["predicted_mib"] > 0 and r["peak_mib"] > 0
