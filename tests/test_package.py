"""Pack-level checks: packaging metadata, import hygiene, node registration conventions."""
from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PURE = ("pata", "attention", "pacm")
HOST_MODULES = {"comfy", "comfy_extras", "folder_paths", "server", "execution", "nodes", "comfy_api"}


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req.split("#")[0]).lower()


def test_requirements_txt_matches_pyproject():
    deps = {_norm(d) for d in _pyproject()["project"]["dependencies"]}
    lines = [_norm(x) for x in (ROOT / "requirements.txt").read_text().splitlines()]
    assert {x for x in lines if x} == deps


def test_pyproject_metadata():
    meta = _pyproject()
    assert meta["project"]["name"] == "poseanimate"
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["project"]["version"])
    assert meta["project"]["license"] == {"file": "LICENSE"}
    assert "GNU GENERAL PUBLIC LICENSE" in (ROOT / "LICENSE").read_text()[:200]
    comfy = meta["tool"]["comfy"]
    assert comfy["DisplayName"] == "PoseAnimate"
    for key in ("PublisherId", "Icon", "requires-comfyui"):
        assert comfy[key]
    extras = meta["project"]["optional-dependencies"]
    assert "test" in extras and any("controlnet-aux" in x for x in extras["pose"])


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = [x for x in (ROOT / ".ci" / "run").read_text().splitlines() if x.strip()]
    command = ci_lines[-1].strip()
    readme = (ROOT / "README.md").read_text()
    assert f"\n{command}\n" in readme, f"README must show the CI test command verbatim: {command}"
    assert "pip install -q torch==2.13.0" in (ROOT / ".ci" / "run").read_text()


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name
        elif isinstance(node, ast.ImportFrom):
            yield node.level, node.module or ""


ABOVE = ("pipeline", "nodes", "testing", "stickworld")  # what the pure layers must never reach


@pytest.mark.parametrize("package", PURE)
def test_pure_layers_never_import_the_host_or_each_other(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    for path in files:
        depth = len(path.relative_to(ROOT / package).parts) - 1  # levels inside the package
        for level, name in _imports(path):
            top = name.split(".")[0]
            if level == 0:
                assert top not in HOST_MODULES, f"{path} imports the host module {name}"
                assert top not in set(PURE) - {package}, f"{path} imports sibling layer {name}"
                assert top not in ABOVE, f"{path} imports {name}, a layer above the engine"
            else:
                assert level <= depth + 1, f"{path} reaches outside {package}/ with a relative import"


def _import_nodes(path: pathlib.Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            yield node.level, node.module or "", tuple(a.name for a in node.names)


def test_pipeline_sits_above_the_engine_layers_only():
    files = sorted((ROOT / "pipeline").rglob("*.py"))
    assert files
    for path in files:
        for level, name, names in _import_nodes(path):
            top = name.split(".")[0]
            if level == 0:
                assert top not in HOST_MODULES | set(ABOVE), f"{path} imports {name}"
            elif level >= 2:  # reaching out of pipeline/: only the engine layers
                reached = [name.split(".")[0]] if name else list(names)
                assert set(reached) <= set(PURE), f"{path} reaches {reached} outside pipeline/"


def test_node_files_never_import_each_other_and_never_the_testing_package():
    node_files = {p.stem for p in (ROOT / "nodes").glob("*.py")} - {"__init__", "_common"}
    for path in sorted((ROOT / "nodes").rglob("*.py")):
        inside = path.relative_to(ROOT / "nodes").parts[:-1]
        for level, name, names in _import_nodes(path):
            top = name.split(".")[0]
            if level == 0:
                assert top not in {"testing", "stickworld", "pipeline"} | set(PURE), \
                    f"{path} imports {name} top-level (use the package-relative import)"
                continue
            reached = name.split(".")[0] if name else ""
            up = level - 1 - len(inside)  # > 0: above nodes/ (the pack root)
            if up > 0:
                assert (reached or set(names)) and not ({reached} | set(names)) & {"testing", "stickworld"}, \
                    f"{path} imports the testing / stickworld package"
            elif up == 0 and path.name != "__init__.py":
                assert reached not in node_files and not set(names) & node_files, \
                    f"{path} imports another node file ({reached or names}); share code through nodes/host"


def test_testing_package_is_never_imported_by_shipped_code():
    for package in ("nodes", "pipeline") + PURE:
        for path in sorted((ROOT / package).rglob("*.py")):
            for level, name, names in _import_nodes(path):
                assert "testing" not in name.split(".") and "testing" not in names, f"{path} imports testing"


@pytest.mark.parametrize("package", PURE + ("pipeline",))
def test_error_messages_name_the_argument_first(package):
    """One convention: a ValueError's message starts with the argument (``"steps: ..."``), then the fix."""
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
                    and getattr(node.exc.func, "id", None) == "ValueError" and node.exc.args):
                continue
            first = node.exc.args[0]
            text = first.value if isinstance(first, ast.Constant) else (
                "".join(v.value if isinstance(v, ast.Constant) else "{x}" for v in first.values)
                if isinstance(first, ast.JoinedStr) else None)
            if text is not None and not re.match(r"^(\{x\}|[A-Za-z_][A-Za-z0-9_./]*): ", text):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text[:60]!r}")
    assert not bad, "messages must start with '<argument>: ':\n" + "\n".join(bad)


def test_import_without_comfyui_under_any_folder_name(tmp_path):
    """Import the pack the way ComfyUI does (a package named after its folder) in a clean interpreter."""
    code = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location(
    "Some_Folder-Name", {str(ROOT / '__init__.py')!r}, submodule_search_locations=[{str(ROOT)!r}])
mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod)
assert isinstance(mod.NODE_CLASS_MAPPINGS, dict) and isinstance(mod.NODE_DISPLAY_NAME_MAPPINGS, dict)
bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HOST_MODULES)!r})
assert not bad, bad
print(len(mod.NODE_CLASS_MAPPINGS))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def _literal_dict(tree: ast.Module, name: str) -> ast.Dict:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            assert isinstance(node.value, ast.Dict), f"{name} must be a literal dict"
            return node.value
    raise AssertionError(f"{name} not found in nodes/__init__.py")


def test_node_mappings_are_literal_and_prefixed():
    tree = ast.parse((ROOT / "nodes" / "__init__.py").read_text())
    classes = _literal_dict(tree, "NODE_CLASS_MAPPINGS")
    names = _literal_dict(tree, "NODE_DISPLAY_NAME_MAPPINGS")
    keys = [ast.literal_eval(k) for k in classes.keys]
    assert keys == [ast.literal_eval(k) for k in names.keys]
    assert all(k.startswith("PoseAnimate") for k in keys)


def test_only_workflows_is_a_template_folder():
    """ComfyUI serves each of these folders at the same /api/workflow_templates/<pack> prefix, in this order;
    any one of them before workflows/ would shadow the bundled workflows."""
    names = ["example_workflows", "example", "examples", "workflow", "workflows"]
    present = [n for n in names if (ROOT / n).is_dir()]
    assert present == ["workflows"], present
