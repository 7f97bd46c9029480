"""Command-line scripts answer bad input with one line that names the flag and the fix, exit non-zero, print no
traceback, and fail before any heavy work; outputs are written whole or not at all. (The headless command's
own checks are in test_headless.py.)"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
from scripts_loader import load_script

import pata  # noqa: F401  (see test_pata_scripts.py: import the pure layer before the scripts do)

ROOT = pathlib.Path(__file__).resolve().parents[1]
POSES = ROOT / "assets" / "poses"


def _one_line_error(capsys, main, argv, prog: str, status: int = 2) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == status
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines and "Traceback" not in err, err
    errors = [x for x in lines if x.startswith(f"{prog}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err  # at most log lines before it, one error line
    assert "Fix:" in errors[0], errors[0]
    return errors[0]


# ------------------------------------------------------------------------------------ stickworld_demo.py


@pytest.fixture(scope="module")
def demo():
    return load_script("stickworld_demo")


@pytest.mark.parametrize("argv, expected", [
    (["--fps", "0"], "argument --fps: must be at least 0.01 and at most 100, got 0"),
    (["--fps", "nan"], "argument --fps: 'nan' is not a finite number"),
    (["--scale", "0"], "argument --scale: must be between 1 and 64, got 0"),
    (["--frames", "0"], "argument --frames: must be at least 1, got 0"),
    (["--frames", "-3"], "argument --frames: must be at least 1, got -3"),
    (["--steps", "0"], "argument --steps: must be at least 1, got 0"),
    (["--inner", "0"], "argument --inner: must be at least 1, got 0"),
    (["--steps", "ten"], "argument --steps: 'ten' is not a whole number"),
    (["--character", "-1"], "argument --character: must be at least 0, got -1"),
])
def test_demo_bad_numbers(demo, capsys, tmp_path, argv, expected):
    out = tmp_path / "demo.gif"
    line = _one_line_error(capsys, demo.main, [*argv, "--out", str(out)], "stickworld_demo.py")
    assert expected in line, line
    assert not out.exists()


def test_demo_missing_weights(demo, capsys, tmp_path):
    line = _one_line_error(capsys, demo.main, ["--weights", str(tmp_path / "nope.pt"),
                                               "--out", str(tmp_path / "d.gif")], "stickworld_demo.py")
    assert f"--weights: no such weights file: {tmp_path / 'nope.pt'}" in line


def test_demo_weights_that_are_not_a_checkpoint(demo, capsys, tmp_path):
    bad = tmp_path / "weights.pt"
    bad.write_text("not a checkpoint")
    line = _one_line_error(capsys, demo.main, ["--weights", str(bad), "--out", str(tmp_path / "d.gif")],
                           "stickworld_demo.py")
    assert f"--weights: {bad} is not a StickWorld checkpoint" in line and "stickworld.pt" in line, line
    assert not (tmp_path / "d.gif").exists()


@pytest.mark.parametrize("name, expected", [
    ("missing/demo.gif", "--out: the folder {tmp}/missing does not exist"),
    ("demo.png", "--out: {tmp}/demo.png must end in .gif"),
])
def test_demo_bad_out(demo, capsys, tmp_path, name, expected):
    line = _one_line_error(capsys, demo.main, ["--out", str(tmp_path / name)], "stickworld_demo.py")
    assert expected.format(tmp=tmp_path) in line, line


def test_demo_as_a_command_prints_one_line_without_traceback(tmp_path):
    """The same through the real command line (exit status and stderr as a user sees them)."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "stickworld_demo.py"), "--scale", "0",
                          "--out", str(tmp_path / "x.gif")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "stickworld_demo.py: error: argument --scale: must be between 1 and 64, got 0. "
        "Fix: see stickworld_demo.py --help"]
    assert not (tmp_path / "x.gif").exists()


# ---------------------------------------------------------------------------------- pose_contact_sheet.py


@pytest.fixture(scope="module")
def sheet():
    return load_script("pose_contact_sheet")


@pytest.mark.parametrize("content, expected", [
    ({"foo": 1}, "TARGET: {path} is not a pose file (no frame has a 'people' list)"),
    ([{"a": 1}, {"b": 2}], "TARGET: {path} is not a pose file"),
    ("not json", "TARGET: bad.json is not valid JSON"),
    ([1, 2], "TARGET: frame 0 is not a dict with a 'people' list"),
    ([{"people": [], "canvas_width": 64, "canvas_height": 64}], "TARGET: every target frame is empty"),
])
def test_contact_sheet_target_that_is_not_a_usable_pose_file(sheet, capsys, tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    out = tmp_path / "sheet.png"
    line = _one_line_error(capsys, sheet.main, [str(path), "--out", str(out)], "pose_contact_sheet.py")
    assert expected.format(path=path) in line, line
    assert not out.exists()


def test_contact_sheet_source_that_is_not_a_pose_file(sheet, capsys, tmp_path):
    bad = tmp_path / "source.json"
    bad.write_text(json.dumps({"name": "not a pose"}))
    line = _one_line_error(capsys, sheet.main, [str(POSES / "walk.json"), "--source", str(bad),
                                                "--out", str(tmp_path / "s.png")], "pose_contact_sheet.py")
    assert f"--source: {bad} is not a pose file" in line, line


@pytest.mark.parametrize("argv, expected", [
    (["{tmp}/missing.json"], "TARGET: no such pose file: {tmp}/missing.json"),
    ([str(POSES / "walk.json"), "--source", "{tmp}/none.json"], "--source: no such pose file: {tmp}/none.json"),
    ([str(POSES / "walk.json"), "--columns", "0"], "argument --columns: must be between 1 and 64, got 0"),
    ([str(POSES / "walk.json"), "--thumb-height", "-5"], "argument --thumb-height: must be between 16 and 2048"),
    ([str(POSES / "walk.json"), "--transition", "-1"], "argument --transition: must be at least 0, got -1"),
    ([str(POSES / "walk.json"), "--out", "{tmp}/no/dir/s.png"], "--out: the folder {tmp}/no/dir does not exist"),
    ([str(POSES / "walk.json"), "--out", "{tmp}/s.jpg"], "--out: {tmp}/s.jpg must end in .png"),
])
def test_contact_sheet_bad_arguments(sheet, capsys, tmp_path, argv, expected):
    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "s.png")]
    line = _one_line_error(capsys, sheet.main, argv, "pose_contact_sheet.py")
    assert expected.format(tmp=tmp_path) in line, line


def test_contact_sheet_writes_whole_files_only(sheet, capsys, tmp_path):
    out = tmp_path / "s.png"
    sheet.main([str(POSES / "turn.json"), "--columns", "3", "--thumb-height", "32", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.png"]  # no temporary file left behind


# ------------------------------------------------------------------ make_example_poses.py, make_workflows.py


def test_make_example_poses_out_that_is_a_file(capsys, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    line = _one_line_error(capsys, load_script("make_example_poses").main, ["--out", str(target)],
                           "make_example_poses.py")
    assert f"--out: {target} is a file, not a folder" in line


def test_make_workflows_bad_arguments(capsys, tmp_path):
    mw = load_script("make_workflows")
    line = _one_line_error(capsys, mw.main, ["--picture", str(tmp_path / "no" / "w.png")], "make_workflows.py")
    assert f"--picture: the folder {tmp_path / 'no'} does not exist" in line
    line = _one_line_error(capsys, mw.main, ["--extract-core", "--comfyui", str(tmp_path)], "make_workflows.py")
    assert f"--comfyui: {tmp_path} is not a ComfyUI checkout" in line


# ------------------------------------------------------------------------------------------------ _cli


def test_atomic_output_leaves_nothing_when_the_writer_fails(tmp_path):
    cli = load_script("_cli")
    target = tmp_path / "out.gif"
    with pytest.raises(RuntimeError):
        with cli.atomic_output(target) as tmp:
            assert tmp.suffix == ".gif" and tmp.parent == tmp_path
            tmp.write_bytes(b"GIF89a half")
            raise RuntimeError("writer failed half way")
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with cli.atomic_output(target) as tmp:
            tmp.write_bytes(b"new, broken")
            raise RuntimeError("again")
    assert target.read_bytes() == b"old"  # the previous good file is kept


def test_bench_scale_presets_are_the_shipped_recipes():
    """bench_scale measures the settings that ship: its presets are pipeline.FULL and pipeline.FAST."""
    import dataclasses
    import importlib.util

    import pipeline

    spec = importlib.util.spec_from_file_location("bench_scale_presets", ROOT / "benchmarks" / "bench_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert dataclasses.asdict(module.PRESETS["full"]) == dataclasses.asdict(pipeline.FULL)
    assert dataclasses.asdict(module.PRESETS["paper"]) == dataclasses.asdict(pipeline.FULL)
    assert dataclasses.asdict(module.PRESETS["fast"]) == dataclasses.asdict(pipeline.FAST)
    args = module.parse_args(["--preset", "fast", "--comfyui", "x"])
    assert (args.steps, args.inner, args.inversion_inner) == (pipeline.FAST.steps, pipeline.FAST.inner_steps,
                                                              pipeline.FAST.inversion_inner_steps)


def test_gpu_check_runs_its_cpu_mode_without_comfyui(tmp_path):
    """benchmarks/gpu_check.py never rots: its CPU mode (--device cpu --tiny, no ComfyUI) runs every stage of both
    presets and reports each with a finite gradient agreement; the host tests run it through the nodes."""
    env = {k: v for k, v in __import__("os").environ.items() if k != "COMFYUI_PATH"}
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny",
                           "--steps", "2", "--frames", "3", "--out", str(out)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = __import__("json").loads(out.read_text())
    stages = {(r["preset"], r["stage"]) for r in rows if "stage" in r}
    assert len(stages) == 8 and not any("skipped" in r for r in rows)
    assert all(r["frames_finite"] and r["gradient_cosine"] > 0.999 for r in rows)
    assert "Pose Embedding Optimize" in done.stdout and "cut by --steps" in done.stdout
