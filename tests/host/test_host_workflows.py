"""The checked list of ComfyUI core nodes (tests/data/comfy_core_nodes.json) matches the real ComfyUI."""
from __future__ import annotations

import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("make_workflows", ROOT / "scripts" / "make_workflows.py")
mw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mw)


def test_checked_core_list_matches_comfyui():
    import os

    checked = json.loads(mw.CORE_SPECS.read_text())
    live = mw.extract_core(os.environ["COMFYUI_PATH"])
    assert live["comfyui_version"] == checked["comfyui_version"]
    missing = sorted(set(checked["ids"]) - set(live["ids"]))
    assert not missing, f"core node ids in the checked list that this ComfyUI lacks: {missing}"
    for key, spec in checked["nodes"].items():
        assert live["nodes"][key] == spec, f"{key}: INPUT_TYPES/outputs differ from ComfyUI; rerun --extract-core"
