"""Pack-level checks: packaging metadata, import hygiene, node registration conventions."""
from __future__ import annotations

import ast
import os
import pathlib
import re
import shutil
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


def _requirement_lines(name: str) -> list[str]:
    lines = [_norm(x) for x in (ROOT / name).read_text().splitlines()]
    return [x for x in lines if x]


def test_requirements_txt_matches_pyproject():
    deps = {_norm(d) for d in _pyproject()["project"]["dependencies"]}
    assert set(_requirement_lines("requirements.txt")) == deps


def test_requirements_test_txt_is_the_requirements_plus_the_test_extra():
    extra = {_norm(d) for d in _pyproject()["project"]["optional-dependencies"]["test"]}
    lines = _requirement_lines("requirements-test.txt")
    assert lines[0] == "-rrequirements.txt"
    assert set(lines[1:]) == extra


def test_no_unused_dependency_is_declared():
    """Every declared dependency is imported somewhere in the pack (einops was declared and never used)."""
    import_names = {"opencv-python": "cv2", "pillow": "PIL"}
    sources = "\n".join(p.read_text() for p in ROOT.rglob("*.py") if ".git" not in p.parts)
    deps = _pyproject()["project"]["dependencies"] + _pyproject()["project"]["optional-dependencies"]["test"]
    for dep in deps:
        name = re.split(r"[<>=!~ ;\[]", dep, maxsplit=1)[0].lower()
        module = import_names.get(name, name.replace("-", "_"))
        if name in {"pytest", "ruff"}:
            continue  # tools, run rather than imported
        assert re.search(rf"^\s*(import|from) {module}\b", sources, re.M), f"{name} is declared but never imported"


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
    # the oldest tested host, no upper bound: ComfyUI-Manager and the frontend read this range, and an upper bound
    # at the newest tested host shut out every ComfyUI released after it (nodes/host/compat.py checks features)
    assert comfy["requires-comfyui"] == ">=0.3.64"
    extras = meta["project"]["optional-dependencies"]
    assert "test" in extras and any("controlnet-aux" in x for x in extras["pose"])
    readme = (ROOT / "README.md").read_text()
    assert "pip install controlnet-aux" in readme, "the README names the optional 'pose' package"


def _readme_tests_block() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Tests\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the README's Tests section starts with a bash block"
    return [x.strip() for x in block.group(1).splitlines() if x.strip()]


def test_ci_runs_exactly_the_readme_test_commands():
    """The Tests section's first block is one install command and one test command; .ci/run runs exactly them."""
    block = _readme_tests_block()
    assert len(block) == 2, block
    install, test = block
    assert install.startswith("python -m pip install ") and "-r requirements-test.txt" in install
    assert "pytest" in test and "ruff check" in test
    ci = [x.strip() for x in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [x for x in ci if x and not x.startswith("#") and not x.startswith(("set ", "cd "))]
    assert commands == block


def test_readme_demo_names_the_cpu_only_torch_wheel():
    readme = (ROOT / "README.md").read_text()
    demo = readme.split("## See it work on any machine", 1)[1].split("\n## ", 1)[0]
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in demo
    assert "pip install -r requirements.txt" in demo and "python scripts/stickworld_demo.py" in demo


def _copy_pack(dest: pathlib.Path) -> None:
    skip = shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache", ".ruff_cache", "assets", "docs", "*.gif")
    shutil.copytree(ROOT, dest, ignore=skip)


def test_suite_runs_in_a_checkout_named_like_the_readme_clone(tmp_path):
    """`git clone .../ComfyUI-PoseAnimate` gives a folder name that is no Python identifier; the tests still run."""
    dest = tmp_path / "ComfyUI-PoseAnimate"
    _copy_pack(dest)
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "tests/test_package.py::test_pyproject_metadata", "tests/host", "-rs"],
        cwd=dest, capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert re.search(r"\b1 passed\b", out.stdout), out.stdout[-2000:]
    # Host tests without COMFYUI_PATH: reported as skipped with the reason, not silently left out.
    assert "COMFYUI_PATH not set: host tests need a ComfyUI checkout" in out.stdout
    assert re.search(r"\b\d+ skipped\b", out.stdout), out.stdout[-2000:]


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
    """One convention: a ValueError's message reads ``"<argument>: <problem>. Fix: <fix>"`` (``"steps: must be
    >= 1, got 0. Fix: pass 1 or more"``); checked on every message written as a string or f-string."""
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
            if text is None:
                continue
            if not re.match(r"^(\{x\}|[A-Za-z_][A-Za-z0-9_./]*): ", text):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: no '<argument>: ' first: {text[:60]!r}")
            elif not re.search(r"\S\. Fix: \S", text):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: no '. Fix: <fix>': {text[:60]!r}")
    assert not bad, "messages must read '<argument>: <problem>. Fix: <fix>':\n" + "\n".join(bad)


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
