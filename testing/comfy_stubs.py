"""Stand-ins for the optional packages ComfyUI imports at load time but the pack's tests never use.

ComfyUI 0.3.64 imports ``torchvision`` (``comfy.model_base``); 0.33 also imports ``torchvision.ops`` and
``torchaudio`` at load time. Some machines have no CPU wheel of either that matches the installed torch. Where a
package is absent (and only then), :func:`stub_absent` puts a stand-in in its place: any submodule imports, any
attribute exists, and using one raises ``RuntimeError`` naming the missing package. Standard library only, so
the headless launcher, benchmarks and host tests can import it before ComfyUI. See docs/host.md.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

STUBBED = ("torchvision", "torchaudio")


class _MissingMeta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _missing(f"{cls.__qualname__}.{name}")


def _missing(qualname: str):
    def fail(*_args, **_kwargs):
        raise RuntimeError(f"{qualname} is a stand-in: its package is not installed (see docs/host.md)")

    return _MissingMeta(qualname.rsplit(".", 1)[-1], (), {"__init__": fail, "__call__": fail,
                                                          "__qualname__": qualname})


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _missing(f"{self.__name__}.{name}")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots):
        self.roots = tuple(roots)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        module.__poseanimate_stub__ = True
        return module

    def exec_module(self, module):
        parent, _, child = module.__name__.rpartition(".")
        if parent and parent in sys.modules:
            setattr(sys.modules[parent], child, module)


def stub_absent(names=STUBBED) -> list[str]:
    """Stand-ins for the packages in ``names`` that are not installed; returns the names stubbed.

    ``transformers`` is imported first where present: it probes ``find_spec('torchvision')`` at import and must
    see the truth."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        pass
    absent = [n for n in names if n not in sys.modules and importlib.util.find_spec(n) is None]
    if absent and not any(isinstance(f, _StubFinder) for f in sys.meta_path):
        sys.meta_path.append(_StubFinder(absent))
    return absent
