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
