"""Host tests: run against a real ComfyUI checkout on the CPU. Reported as skipped (with the reason) unless
COMFYUI_PATH is set.

Set COMFYUI_PATH to a ComfyUI checkout whose requirements are installed in the running Python (0.3.64 and 0.33
are tested; docs/host.md). ComfyUI imports torchvision (and, from 0.33, torchvision.ops and torchaudio) only for
code these tests never exercise; where a package is absent, ``testing.comfy_stubs`` puts a stand-in in its place,
and only then.
"""
from __future__ import annotations

import os
import sys

import pytest

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tiny_models and other host helpers
from testing.comfy_stubs import stub_absent  # noqa: E402


SKIP_REASON = "COMFYUI_PATH not set: host tests need a ComfyUI checkout (COMFYUI_PATH=/path/to/ComfyUI)"


class _HostModuleWithoutComfyUI(pytest.File):
    """A host test module seen without ComfyUI: reported as skipped with the reason, never imported
    (the modules import comfy at top level)."""

    def collect(self):
        pytest.skip(SKIP_REASON, allow_module_level=True)


def pytest_pycollect_makemodule(module_path, parent):
    if not COMFYUI_PATH:
        return _HostModuleWithoutComfyUI.from_parent(parent, path=module_path)
    return None


def _bootstrap_comfy() -> None:
    if COMFYUI_PATH not in sys.path:
        sys.path.insert(0, COMFYUI_PATH)
    stub_absent()
    import comfy.options  # noqa: F401  (argument parsing stays off unless enabled)
    from comfy.cli_args import args

    args.cpu = True  # must precede the first import of comfy.model_management


if COMFYUI_PATH:
    _bootstrap_comfy()


@pytest.fixture(autouse=True)
def _comfy_inference_mode():
    """Host tests exercise nodes the way ComfyUI runs them: inside torch.inference_mode()."""
    import torch

    with torch.inference_mode():
        yield


@pytest.fixture
def pytorch_attention(monkeypatch):
    """ComfyUI's attention backend set to its PyTorch attention (``--use-pytorch-cross-attention``), the attention
    every gradient pass uses (``gradpath.GradAttention``): tests that compare a gradient pass's forward with a plain
    forward bit for bit run both on it (the CPU default, sub-quadratic attention, rounds differently)."""
    from standin_attention import install

    install(monkeypatch, "pytorch")
