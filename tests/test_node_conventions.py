"""Every node class in nodes/ follows the pack's V1-API conventions and is registered."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import poseanimate.nodes as nodes_pkg
from poseanimate import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def _discover():
    found = {}
    for info in pkgutil.iter_modules(nodes_pkg.__path__):
        module = importlib.import_module(f"{nodes_pkg.__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and hasattr(cls, "INPUT_TYPES") and hasattr(cls, "FUNCTION"):
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


DISCOVERED = _discover()


def test_every_node_class_is_registered():
    registered = set(NODE_CLASS_MAPPINGS.values())
    missing = sorted(name for name, cls in DISCOVERED.items() if cls not in registered)
    assert not missing, f"node classes not in NODE_CLASS_MAPPINGS: {missing}"
    assert set(NODE_CLASS_MAPPINGS) == set(NODE_DISPLAY_NAME_MAPPINGS)


@pytest.mark.parametrize("cls", list(DISCOVERED.values()), ids=list(DISCOVERED))
def test_node_conventions(cls):
    assert cls.CATEGORY == "PoseAnimate" or cls.CATEGORY.startswith("PoseAnimate/")
    assert isinstance(cls.DESCRIPTION, str) and cls.DESCRIPTION.strip()
    assert callable(getattr(cls, cls.FUNCTION))
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"}
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            assert isinstance(entry, tuple) and 1 <= len(entry) <= 2, name
            opts = entry[1] if len(entry) == 2 else {}
            assert opts.get("tooltip"), f"{cls.__name__}.{name} has no tooltip"
            kind = entry[0]
            if isinstance(kind, str) and kind.startswith("POSEANIMATE"):
                assert kind.startswith("POSEANIMATE_"), kind
    n_out = len(cls.RETURN_TYPES)
    assert len(cls.RETURN_NAMES) == n_out
    assert len(cls.OUTPUT_TOOLTIPS) == n_out and all(cls.OUTPUT_TOOLTIPS)
    assert len(set(cls.RETURN_NAMES)) == n_out
