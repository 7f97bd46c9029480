"""PATA scripts: the example poses are reproducible, and the contact sheet renders."""
from __future__ import annotations

import pathlib

import numpy as np
from scripts_loader import load_script

# Import the pure layer now, at collection: the scripts `import pata` when they run, and pytest (importlib
# mode) sets up the repository root's own __init__.py as a package named after the clone's folder, which
# would shadow the pure layer for a clone that happens to be called "pata".
import pata  # noqa: F401

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_example_poses_are_what_the_script_makes(tmp_path, capsys):
    load_script("make_example_poses").main(["--out", str(tmp_path)])
    shipped = sorted(p.name for p in (ROOT / "assets" / "poses").glob("*.json"))
    assert shipped == sorted(p.name for p in tmp_path.glob("*.json"))
    for name in shipped:
        assert (tmp_path / name).read_bytes() == (ROOT / "assets" / "poses" / name).read_bytes(), name


def test_contact_sheet_renders(tmp_path, capsys):
    mod = load_script("pose_contact_sheet")
    poses = ROOT / "assets" / "poses"
    sheet = mod.contact_sheet(poses / "wave.json", poses / "character.json", transition=3, mode="retarget",
                              columns=4, thumb_height=48)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3
    assert sheet.shape[0] > 3 * 48 and (sheet > 100).any()
    out = tmp_path / "sheet.png"
    mod.main([str(poses / "turn.json"), "--source", str(poses / "character.json"), "--transition", "2",
              "--columns", "4", "--thumb-height", "40", "--out", str(out)])
    assert out.stat().st_size > 1000 and "wrote" in capsys.readouterr().out
