"""Bundled workflows: parse, use known nodes only, type-consistent links, valid widget values, API twins match.

The checks here are written independently of ``scripts/make_workflows.py`` (only the node specs are shared):
node specs come from this pack's classes and from the checked list of ComfyUI core nodes in
``tests/data/comfy_core_nodes.json`` (compared with a real ComfyUI by ``tests/host/test_host_workflows.py``).
"""
from __future__ import annotations

import json
import math
import pathlib

import pytest
from scripts_loader import load_script

ROOT = pathlib.Path(__file__).resolve().parents[1]
mw = load_script("make_workflows")

CORE = json.loads((ROOT / "tests" / "data" / "comfy_core_nodes.json").read_text())
PACK = mw.pack_specs()
SPECS = {**CORE["nodes"], **PACK}
FRONTEND_ONLY = {"Note", "MarkdownNote"}
UI_FILES = sorted((ROOT / "workflows").glob("*.json"))
EXPECTED = {"full", "fast", "remix", "long", "full_sdxl"}


# ------------------------------------------------------------------ an independent reading of the rules


def _entries(spec):
    for section in ("required", "optional"):
        for name in spec["input_order"].get(section, []):
            yield section, name, spec["input"][section][name]


def _is_widget(entry) -> bool:
    kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
    return (isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")) and not opts.get(
        "forceInput")


def expected_widgets(spec):
    """[(input name or None for an extra frontend widget, entry, extra kind)]"""
    out = []
    for _, name, entry in _entries(spec):
        if not _is_widget(entry):
            continue
        opts = entry[1] if len(entry) > 1 else {}
        out.append((name, entry, None))
        if entry[0] == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed")):
            out.append((None, entry, "control"))
        if opts.get("image_upload"):
            out.append((None, entry, "upload"))
    return out


def check_value(name, entry, value) -> str | None:
    kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
    if kind == "COMBO":
        kind = opts.get("options", [])
    if isinstance(kind, list):
        if not isinstance(value, str):
            return f"{name}: combo value {value!r} is not a string"
        if kind and value not in kind:
            return f"{name}: {value!r} not in {kind}"
        return None
    if kind == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{name}: {value!r} is not an INT"
    elif kind == "FLOAT":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return f"{name}: {value!r} is not a FLOAT"
    elif kind == "STRING":
        return None if isinstance(value, str) else f"{name}: {value!r} is not a STRING"
    elif kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{name}: {value!r} is not a BOOLEAN"
    if "min" in opts and value < opts["min"]:
        return f"{name}: {value} < min {opts['min']}"
    if "max" in opts and value > opts["max"]:
        return f"{name}: {value} > max {opts['max']}"
    return None


def validate_ui(wf: dict) -> list[str]:
    """Every problem found in a UI-format workflow (an empty list when it is valid)."""
    errors = []
    for key in ("nodes", "links", "last_node_id", "last_link_id", "version"):
        if key not in wf:
            errors.append(f"missing top-level key {key!r}")
    if errors:
        return errors
    nodes = {}
    for node in wf["nodes"]:
        if node["id"] in nodes:
            errors.append(f"duplicate node id {node['id']}")
        nodes[node["id"]] = node
        ntype = node["type"]
        if ntype in FRONTEND_ONLY:
            if not (node.get("widgets_values") and str(node["widgets_values"][0]).strip()):
                errors.append(f"node {node['id']}: empty note")
            continue
        if ntype not in PACK and ntype not in CORE["ids"]:
            errors.append(f"node {node['id']}: {ntype!r} is neither a PoseAnimate node nor a checked core node")
            continue
        if ntype not in SPECS:
            errors.append(f"node {node['id']}: core node {ntype!r} has no checked spec")
            continue
        spec = SPECS[ntype]
        expected = expected_widgets(spec)
        values = node.get("widgets_values", [])
        if len(values) != len(expected):
            errors.append(f"node {node['id']} ({ntype}): {len(values)} widget values, expected {len(expected)}")
        else:
            for (name, entry, extra), value in zip(expected, values):
                if extra == "control" and value not in ("fixed", "increment", "decrement", "randomize"):
                    errors.append(f"node {node['id']} ({ntype}): control_after_generate value {value!r}")
                elif extra == "upload" and value != "image":
                    errors.append(f"node {node['id']} ({ntype}): upload widget value {value!r}")
                elif extra is None:
                    problem = check_value(name, entry, value)
                    if problem:
                        errors.append(f"node {node['id']} ({ntype}): {problem}")
        spec_inputs = {name: (section, entry) for section, name, entry in _entries(spec)}
        for slot in node.get("inputs", []):
            if slot["name"] not in spec_inputs:
                errors.append(f"node {node['id']} ({ntype}): unknown input {slot['name']!r}")
                continue
            section, entry = spec_inputs[slot["name"]]
            if _is_widget(entry) and "widget" not in slot:
                errors.append(f"node {node['id']} ({ntype}): widget input {slot['name']!r} lacks 'widget'")
            if not _is_widget(entry) and section == "required" and slot.get("link") is None:
                errors.append(f"node {node['id']} ({ntype}): required input {slot['name']!r} is not connected")
        for section, name, entry in _entries(spec):
            if not _is_widget(entry) and section == "required" and name not in {s["name"] for s in node["inputs"]}:
                errors.append(f"node {node['id']} ({ntype}): required input {name!r} missing")
        if len(node.get("outputs", [])) != len(spec["output"]):
            errors.append(f"node {node['id']} ({ntype}): {len(node.get('outputs', []))} outputs, spec has "
                          f"{len(spec['output'])}")
    link_ids = set()
    for link in wf["links"]:
        if not (isinstance(link, list) and len(link) == 6):
            errors.append(f"link {link!r} is not [id, from_node, from_slot, to_node, to_slot, type]")
            continue
        lid, src, sslot, dst, dslot, ltype = link
        if lid in link_ids:
            errors.append(f"duplicate link id {lid}")
        link_ids.add(lid)
        if src not in nodes or dst not in nodes:
            errors.append(f"link {lid}: unknown node")
            continue
        s, d = nodes[src], nodes[dst]
        if s["type"] not in SPECS or d["type"] not in SPECS:
            continue
        s_spec, d_spec = SPECS[s["type"]], SPECS[d["type"]]
        if not 0 <= sslot < len(s_spec["output"]):
            errors.append(f"link {lid}: {s['type']} has no output slot {sslot}")
            continue
        if not 0 <= dslot < len(d["inputs"]):
            errors.append(f"link {lid}: {d['type']} has no input slot {dslot}")
            continue
        out_type = s_spec["output"][sslot]
        name = d["inputs"][dslot]["name"]
        entry = next((e for _, n, e in _entries(d_spec) if n == name), None)
        if entry is None:
            continue
        in_type = entry[0] if isinstance(entry[0], str) else "COMBO"
        if ltype != out_type:
            errors.append(f"link {lid}: type {ltype!r} but {s['type']} output {sslot} is {out_type!r}")
        if "*" not in (out_type, in_type) and set(out_type.split(",")).isdisjoint(in_type.split(",")):
            errors.append(f"link {lid}: {s['type']} {out_type} -> {d['type']}.{name} {in_type}")
        if d["inputs"][dslot].get("link") != lid:
            errors.append(f"link {lid}: target input {d['type']}.{name} does not point back")
        if lid not in (s["outputs"][sslot].get("links") or []):
            errors.append(f"link {lid}: source output {s['type']}[{sslot}] does not list it")
    for node in nodes.values():
        for slot in node.get("inputs", []):
            if slot.get("link") is not None and slot["link"] not in link_ids:
                errors.append(f"node {node['id']}: input {slot['name']!r} names missing link {slot['link']}")
    if wf["last_node_id"] < max(nodes, default=0) or wf["last_link_id"] < max(link_ids, default=0):
        errors.append("last_node_id / last_link_id lower than the ids used")
    if not any(n["type"] in FRONTEND_ONLY for n in nodes.values()):
        errors.append("no note inside the graph")
    if not any(SPECS.get(n["type"], {}).get("output_node") for n in nodes.values()):
        errors.append("no output node")
    return errors


def ui_to_api(wf: dict) -> dict:
    """What ComfyUI's 'Export (API)' gives for a UI workflow: linked inputs as [id, slot], widgets by name."""
    nodes = {n["id"]: n for n in wf["nodes"]}
    links = {link[0]: link for link in wf["links"]}
    out = {}
    for node in wf["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) in (2, 4):
            continue
        spec = SPECS[node["type"]]
        values = {}
        for (name, _, extra), value in zip(expected_widgets(spec), node["widgets_values"]):
            if extra is None:
                values[name] = value
        linked = {}
        for slot in node["inputs"]:
            if slot.get("link") is not None:
                link = links[slot["link"]]
                linked[slot["name"]] = [str(link[1]), link[2]]
        inputs = {}
        for _, name, _ in _entries(spec):
            if name in linked:
                inputs[name] = linked[name]
            elif name in values:
                inputs[name] = values[name]
        title = node.get("title") or spec.get("display_name") or node["type"]
        out[str(node["id"])] = {"inputs": inputs, "class_type": node["type"], "_meta": {"title": title}}
    assert all(str(k) in out or nodes[k]["type"] in FRONTEND_ONLY for k in nodes)
    return out


# ------------------------------------------------------------------------------------------------ tests


def test_core_list_is_well_formed():
    assert CORE["comfyui_version"] and len(CORE["ids"]) > 300
    assert set(CORE["nodes"]) <= set(CORE["ids"])
    for key in ("LoadImage", "CheckpointLoaderSimple", "ControlNetApplyAdvanced", "SaveImage", "CreateVideo",
                "SaveVideo", "VAEDecode", "CLIPTextEncode", "LoraLoader"):
        assert key in CORE["nodes"], key


def test_bundled_workflows_exist_with_api_twins():
    names = {p.stem for p in UI_FILES}
    assert names >= EXPECTED, f"missing workflows: {sorted(EXPECTED - names)}"
    for name in names:
        assert (ROOT / "workflows" / "api" / f"{name}.json").is_file(), f"{name} has no API twin"


@pytest.mark.parametrize("path", UI_FILES, ids=[p.stem for p in UI_FILES])
def test_workflow_is_valid(path):
    wf = json.loads(path.read_text())
    assert validate_ui(wf) == []


@pytest.mark.parametrize("path", UI_FILES, ids=[p.stem for p in UI_FILES])
def test_api_twin_matches_ui(path):
    twin = json.loads((ROOT / "workflows" / "api" / path.name).read_text())
    assert twin == ui_to_api(json.loads(path.read_text()))


def test_bundled_files_are_up_to_date():
    """The JSON files are exactly what scripts/make_workflows.py generates from the node classes."""
    files = mw.render(mw.build_all(SPECS))
    stale = [str(p.relative_to(ROOT)) for p, text in files.items() if not p.is_file() or p.read_text() != text]
    assert not stale, f"run python scripts/make_workflows.py: {stale}"


# -------------------------------------------------- the validator catches what it should (it can fail)


def _sample():
    """A small valid UI workflow built with the generator from core nodes only."""
    g = mw.Graph("sample", SPECS)
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name="sd15.safetensors")
    image = g.node("LoadImage", title="Source image", image="example.png")
    text = g.node("PrimitiveStringMultiline", title="Prompt", value="a knight")
    pos = g.node("CLIPTextEncode", title="Positive prompt", text=text.out(), clip=ckpt.out("CLIP"))
    neg = g.node("CLIPTextEncode", title="Negative prompt", text="blurry", clip=ckpt.out("CLIP"))
    latent = g.node("VAEEncode", pixels=image.out("IMAGE"), vae=ckpt.out("VAE"))
    ks = g.node("KSampler", model=ckpt.out("MODEL"), positive=pos.out(), negative=neg.out(),
                latent_image=latent.out(), seed=5, steps=4)
    dec = g.node("VAEDecode", samples=ks.out(), vae=ckpt.out("VAE"))
    g.node("SaveImage", images=dec.out(), filename_prefix="x")
    g.note("A note.")
    return g


def test_sample_is_valid_and_its_api_matches():
    g = _sample()
    wf = g.ui()
    assert validate_ui(wf) == []
    assert ui_to_api(wf) == g.api()
    ks = next(n for n in wf["nodes"] if n["type"] == "KSampler")
    assert ks["widgets_values"][:2] == [5, "fixed"]  # control_after_generate follows the seed
    load = next(n for n in wf["nodes"] if n["type"] == "LoadImage")
    assert load["widgets_values"] == ["example.png", "image"]
    enc = next(n for n in wf["nodes"] if n.get("title") == "Positive prompt")
    assert {"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": enc["inputs"][-1]["link"]} in \
        enc["inputs"]
    assert g.api()[str(enc["id"])]["inputs"]["text"] == [str(next(n["id"] for n in wf["nodes"]
                                                                   if n.get("title") == "Prompt")), 0]


def _mutated(fn):
    wf = _sample().ui()
    fn(wf)
    return validate_ui(wf)


def _node(wf, ntype):
    return next(n for n in wf["nodes"] if n["type"] == ntype)


@pytest.mark.parametrize("mutation, expected", [
    (lambda wf: _node(wf, "KSampler")["widgets_values"].pop(), "widget values"),
    (lambda wf: _node(wf, "KSampler")["widgets_values"].__setitem__(1, "sometimes"), "control_after_generate"),
    (lambda wf: _node(wf, "KSampler")["widgets_values"].__setitem__(2, 0), "min"),  # steps >= 1
    (lambda wf: _node(wf, "KSampler")["widgets_values"].__setitem__(2, 2.5), "is not an INT"),
    (lambda wf: _node(wf, "KSampler")["widgets_values"].__setitem__(4, "euler_magic"), "not in"),
    (lambda wf: _node(wf, "LoadImage")["widgets_values"].__setitem__(1, "upload"), "upload"),
    (lambda wf: _node(wf, "KSampler").__setitem__("type", "KSamplerTurbo"), "neither"),
    (lambda wf: wf["links"][0].__setitem__(5, "LATENT"), "type"),
    (lambda wf: wf["links"].__setitem__(0, wf["links"][0][:5]), "is not [id"),
    (lambda wf: _node(wf, "VAEDecode")["inputs"][0].__setitem__("link", None), "not connected"),
    (lambda wf: wf["nodes"].remove(_node(wf, "MarkdownNote")), "no note"),
    (lambda wf: wf["nodes"].remove(_node(wf, "SaveImage")), "no output node"),
])
def test_validator_catches(mutation, expected):
    errors = _mutated(mutation)
    assert any(expected in e for e in errors), errors


def test_validator_catches_mismatched_link_types():
    wf = _sample().ui()
    # feed the VAE output into KSampler's model input: VAE != MODEL
    ks = _node(wf, "KSampler")
    link_id = ks["inputs"][0]["link"]
    link = next(x for x in wf["links"] if x[0] == link_id)
    ckpt = _node(wf, "CheckpointLoaderSimple")
    ckpt["outputs"][0]["links"].remove(link_id)
    ckpt["outputs"][2]["links"].append(link_id)
    link[2], link[5] = 2, "VAE"
    assert any("VAE -> KSampler.model MODEL" in e for e in validate_ui(wf))


def test_api_comparison_catches_a_changed_twin():
    g = _sample()
    api = g.api()
    ks = next(k for k, v in api.items() if v["class_type"] == "KSampler")
    api[ks]["inputs"]["steps"] = 99
    assert api != ui_to_api(g.ui())


@pytest.mark.parametrize("name", ["full", "fast", "remix", "long", "full_sdxl"])
def test_bundled_workflow_needs_no_optional_package(name):
    """The bundled workflows run after the README's install: the source pose comes from a bundled pose file
    through Load Pose Sequence ('Source pose'), not from Pose Extract (which needs controlnet-aux)."""
    graph = json.loads((ROOT / "workflows" / "api" / f"{name}.json").read_text())
    assert not [n for n in graph.values() if n["class_type"] == "PoseAnimatePoseExtract"]
    align = next(n for n in graph.values() if n["class_type"] == "PoseAnimatePATAAlign")
    source = graph[align["inputs"]["source_pose"][0]]
    assert source["class_type"] == "PoseAnimateLoadPoseSequence" and source["_meta"]["title"] == "Source pose"
    pose_file = source["inputs"]["pose_file"]
    assert pose_file.startswith("examples/") and (ROOT / "assets" / "poses" / pose_file[9:]).is_file()
    resize = next(n for n in graph.values() if n["_meta"]["title"] == "Resize source")
    assert (align["inputs"]["width"], align["inputs"]["height"]) == (resize["inputs"]["width"],
                                                                     resize["inputs"]["height"])
