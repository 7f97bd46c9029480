"""Test bootstrap: make the pack importable as ``poseanimate`` whatever its folder is called.

ComfyUI imports a custom-node folder as a package under the folder's own name; the tests do the same
under the fixed name ``poseanimate`` so they run from any clean clone. The repository root is also put
on ``sys.path`` so the pure layers import as top-level ``pata``, ``attention`` and ``pacm`` the way
scripts and benchmarks use them.

The repository root holds the pack's ``__init__.py``, so pytest makes it a ``Package`` node and, before the
first test, imports that file as a stand-alone module to look for ``setup_module``. Under a folder name
that is not a Python identifier (``ComfyUI-PoseAnimate``, the README's clone name) that import has no
parent package and the pack's relative import fails, failing every test. The root is the ComfyUI
registration, not a test package: ``pytest_collection_modifyitems`` below turns that one setup step off.
"""
from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _register_pack() -> None:
    if "poseanimate" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        "poseanimate", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["poseanimate"] = module
    spec.loader.exec_module(module)


if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
TESTS = str(ROOT / "tests")  # shared test helpers (pata_poses, scripts_loader) import by name
if TESTS not in sys.path:
    sys.path.insert(1, TESTS)
_register_pack()


def _no_package_setup() -> None:
    """The pack's root ``__init__.py`` defines no setup_module/teardown_module; nothing to run."""


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        for node in item.listchain():
            if isinstance(node, pytest.Package) and node.path == ROOT:
                node.setup = _no_package_setup
                return


@pytest.fixture(scope="module")
def single_thread():
    """Run a module on one intra-op thread: tiny models' operators only add contention on 2 shared cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
