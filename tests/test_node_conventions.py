"""Every registered node follows the pack's V1-API conventions (tooltips, categories, descriptions)."""
from __future__ import annotations

import pytest

from poseanimate import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

NODES = sorted(NODE_CLASS_MAPPINGS.items())


def _inputs(cls):
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"}
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            yield name, entry


@pytest.mark.parametrize("node_id,cls", NODES, ids=[n for n, _ in NODES])
def test_node_conventions(node_id, cls):
    assert node_id.startswith("PoseAnimate")
    assert NODE_DISPLAY_NAME_MAPPINGS[node_id]
    assert cls.CATEGORY == "PoseAnimate" or cls.CATEGORY.startswith("PoseAnimate/")
    assert isinstance(cls.DESCRIPTION, str) and cls.DESCRIPTION.strip()
    assert callable(getattr(cls, cls.FUNCTION))
    for name, entry in _inputs(cls):
        assert isinstance(entry, tuple) and 1 <= len(entry) <= 2, name
        opts = entry[1] if len(entry) == 2 else {}
        assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
        kind = entry[0]
        if isinstance(kind, str) and kind.isupper() and kind not in {"INT", "FLOAT", "STRING", "BOOLEAN"}:
            assert not kind.startswith("POSEANIMATE") or kind.startswith("POSEANIMATE_"), kind
    n_out = len(cls.RETURN_TYPES)
    assert len(cls.RETURN_NAMES) == n_out
    assert len(cls.OUTPUT_TOOLTIPS) == n_out and all(cls.OUTPUT_TOOLTIPS)
