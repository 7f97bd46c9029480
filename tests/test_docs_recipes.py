"""The docs state the shipped settings from one place: pipeline.FULL / FAST / FULL_SDXL (Recipe.summary()).

A change to a recipe that is not carried into the README, docs/workflows.md and the workflow notes fails here."""
from __future__ import annotations

import json
import pathlib

import pytest

import pipeline

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKFLOWS_MD = (ROOT / "docs" / "workflows.md").read_text()
README = (ROOT / "README.md").read_text()


def _row(name: str) -> str:
    return next(line for line in WORKFLOWS_MD.splitlines() if line.startswith(f"| `{name}` |"))


@pytest.mark.parametrize("name, recipe", [("full", pipeline.FULL), ("fast", pipeline.FAST),
                                          ("full_sdxl", pipeline.FULL_SDXL)])
def test_workflow_table_states_the_recipe(name, recipe):
    assert recipe.summary() in _row(name)


def test_readme_states_the_fast_recipe():
    assert pipeline.FAST.summary() in README.replace("\n", " ")


@pytest.mark.parametrize("name, recipe", [("fast", pipeline.FAST), ("full_sdxl", pipeline.FULL_SDXL)])
def test_workflow_notes_state_the_recipe(name, recipe):
    ui = json.loads((ROOT / "workflows" / f"{name}.json").read_text())
    notes = " ".join(" ".join(str(w) for w in n.get("widgets_values", [])) for n in ui["nodes"]
                     if n["type"] in ("Note", "MarkdownNote"))
    assert recipe.summary() in notes.replace("\n", " ")


def test_summary_changes_with_the_recipe():
    """The check can fail: another recipe reads differently."""
    assert pipeline.FAST.summary() != pipeline.FULL.summary()
    assert pipeline.FULL.replace(steps=20).summary() not in _row("full")


def _host_md_defaults() -> dict:
    """{node id: {input: default text}} from docs/host.md's input tables (one input per row, a default given)."""
    import re

    out, node = {}, None
    for line in (ROOT / "docs" / "host.md").read_text().splitlines():
        m = re.match(r"^### .*\(`(PoseAnimate\w+)`\)", line)
        if m:
            node = out.setdefault(m.group(1), {})
            continue
        m = re.match(r"^\| `(\w+)`(?: \(optional\))? \| [^|]* \| ([^|]+) \|", line)
        if node is not None and m and m.group(2).strip():
            node[m.group(1)] = m.group(2).strip()
        if line.startswith("## "):
            node = None
    return out


def test_host_md_states_the_node_defaults():
    """docs/host.md's default column of the PACM nodes is what INPUT_TYPES says (the fast preset's values)."""
    from poseanimate.nodes.embedding_optimize import PoseAnimatePoseEmbeddingOptimize
    from poseanimate.nodes.inversion import PoseAnimatePoseAwareInversion
    from poseanimate.nodes.sample_frames import PoseAnimateSampleFrames

    documented = _host_md_defaults()
    checked = 0
    for cls in (PoseAnimatePoseAwareInversion, PoseAnimatePoseEmbeddingOptimize, PoseAnimateSampleFrames):
        types = cls.INPUT_TYPES()
        inputs = {**types["required"], **types.get("optional", {})}
        for name, text in documented[cls.__name__].items():
            default = inputs[name][1]["default"]
            if isinstance(default, bool):
                assert text == str(default).lower(), (cls.__name__, name)
            elif isinstance(default, (int, float)):
                assert float(text) == float(default), (cls.__name__, name)
            else:
                assert text == default, (cls.__name__, name)
            checked += 1
    assert checked >= 12
