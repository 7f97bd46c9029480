"""Bundled workflows: parse, use known nodes only, type-consistent links, valid widget values, API twins match.

The checks here are written independently of ``scripts/make_workflows.py`` (only the node specs are shared):
node specs come from this pack's classes and from the checked list of ComfyUI core nodes in
``tests/data/comfy_core_nodes.json`` (compared with a real ComfyUI by ``tests/host/test_host_workflows.py``).
Nodes of another custom node pack are accepted only in a workflow that declares the pack (UI format:
``extra.poseanimate.custom_nodes``), with the pack's registry id on each such node, and only with a spec in
``tests/data/third_party_nodes.json`` (restated from the pack's source below).
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
THIRD = json.loads((ROOT / "tests" / "data" / "third_party_nodes.json").read_text())["packs"]
PACK = mw.pack_specs()
SPECS = {**CORE["nodes"], **PACK}
FRONTEND_ONLY = {"Note", "MarkdownNote"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload")
UI_FILES = sorted((ROOT / "workflows").glob("*.json"))
EXPECTED = {"full", "fast", "remix", "long", "retarget", "dwpose", "full_sdxl"}


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
        if any(opts.get(flag) for flag in UPLOAD_FLAGS):
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


def declared_packs(wf: dict) -> dict:
    """{pack id: repository} of the other custom node packs a UI workflow says it needs."""
    return ((wf.get("extra") or {}).get("poseanimate") or {}).get("custom_nodes") or {}


def third_party_owner(wf: dict) -> dict:
    """{node id: pack id} for the nodes of the checked packs this workflow declares."""
    return {node: pack for pack in declared_packs(wf) if pack in THIRD for node in THIRD[pack]["nodes"]}


def specs_for(wf: dict) -> dict:
    """Core + this pack's specs, plus the checked specs of the packs the workflow declares."""
    specs = dict(SPECS)
    for pack in declared_packs(wf):
        specs.update(THIRD.get(pack, {}).get("nodes", {}))
    return specs


def validate_ui(wf: dict) -> list[str]:
    """Every problem found in a UI-format workflow (an empty list when it is valid)."""
    errors = []
    for key in ("nodes", "links", "last_node_id", "last_link_id", "version"):
        if key not in wf:
            errors.append(f"missing top-level key {key!r}")
    if errors:
        return errors
    SPECS = specs_for(wf)  # noqa: N806  (the module's SPECS, widened by the packs this workflow declares)
    owner = third_party_owner(wf)
    for pack, repo in declared_packs(wf).items():
        if pack not in THIRD:
            errors.append(f"declares custom node pack {pack!r}, which has no checked specs")
        elif repo != THIRD[pack]["repository"]:
            errors.append(f"custom node pack {pack!r}: repository {repo!r}, checked list says "
                          f"{THIRD[pack]['repository']!r}")
        elif not any(n.get("type") in THIRD[pack]["nodes"] for n in wf["nodes"]):
            errors.append(f"declares custom node pack {pack!r} but uses none of its nodes")
        notes = " ".join(str(n.get("widgets_values", [""])[0]) for n in wf["nodes"] if n.get("type") in FRONTEND_ONLY)
        if pack not in notes:
            errors.append(f"no note tells the user that the workflow needs custom node pack {pack!r}")
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
        if ntype in owner:
            registry_id = THIRD[owner[ntype]]["registry_id"]
            if (node.get("properties") or {}).get("cnr_id") != registry_id:
                errors.append(f"node {node['id']} ({ntype}): properties.cnr_id should name its pack {registry_id!r} "
                              f"(ComfyUI-Manager installs missing nodes by it)")
        elif ntype not in PACK and ntype not in CORE["ids"]:
            undeclared = any(ntype in p["nodes"] for p in THIRD.values())
            errors.append(f"node {node['id']}: {ntype!r} is neither a PoseAnimate node nor a checked core node"
                          + (" (its custom node pack is not declared)" if undeclared else ""))
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
    SPECS = specs_for(wf)  # noqa: N806
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


def test_retarget_workflow_saves_the_retargeted_poses_as_video_and_json():
    """retarget: driving sequence + the character's pose -> PATA Align (retarget) -> OpenPose video and JSON."""
    graph = json.loads((ROOT / "workflows" / "api" / "retarget.json").read_text())
    kinds = sorted(n["class_type"] for n in graph.values())
    assert kinds == sorted(["PoseAnimateLoadPoseSequence"] * 2 + ["PoseAnimatePATAAlign", "PoseAnimateSavePoseSequence",
                                                                  "CreateVideo", "SaveVideo"])
    align_id, align = next((i, n) for i, n in graph.items() if n["class_type"] == "PoseAnimatePATAAlign")
    assert align["inputs"]["mode"] == "retarget"
    for role, title in (("source_pose", "Source pose"), ("target_pose", "Pose sequence")):
        assert graph[align["inputs"][role][0]]["_meta"]["title"] == title
    save = next(n for n in graph.values() if n["class_type"] == "PoseAnimateSavePoseSequence")
    assert save["inputs"]["pose"] == [align_id, 0]  # aligned_pose
    video = next(n for n in graph.values() if n["class_type"] == "CreateVideo")
    assert video["inputs"]["images"] == [align_id, 1]  # pose_images
    saver = next(n for n in graph.values() if n["class_type"] == "SaveVideo")
    assert graph[saver["inputs"]["video"][0]] is video


# ------------------------------------------------- other custom node packs: checked specs, declared per workflow


def test_dwpose_estimator_spec_restates_comfyui_controlnet_aux_source():
    """tests/data/third_party_nodes.json holds DWPose Estimator as comfyui_controlnet_aux defines it at commit
    e8b689a (https://github.com/Fannovel16/comfyui_controlnet_aux): node_wrappers/dwpose.py registers class
    DWPose_Preprocessor as "DWPreprocessor" with display name "DWPose Estimator", RETURN_TYPES
    ("IMAGE", "POSE_KEYPOINT") and no RETURN_NAMES; its INPUT_TYPES is utils.py's define_preprocessor_inputs
    (``image`` required, the rest optional in the order given), where INPUT.COMBO(values, default) defaults to
    the first value unless given and INPUT.RESOLUTION() is INT 512 in 64..MAX_RESOLUTION (16384) step 64."""
    pack = THIRD["comfyui_controlnet_aux"]
    assert pack["repository"] == "https://github.com/Fannovel16/comfyui_controlnet_aux"
    assert pack["commit"].startswith("e8b689a") and pack["registry_id"] == "comfyui_controlnet_aux"
    assert "node_wrappers/dwpose.py" in pack["sources"]["DWPreprocessor"]
    assert set(pack["nodes"]) == {"DWPreprocessor"}

    def combo(values, default=None):
        return [values, {"default": values[0] if default is None else default}]

    optional = {
        "detect_hand": combo(["enable", "disable"]),
        "detect_body": combo(["enable", "disable"]),
        "detect_face": combo(["enable", "disable"]),
        "resolution": ["INT", {"default": 512, "min": 64, "max": 16384, "step": 64}],
        "bbox_detector": combo(["None", "yolox_l.torchscript.pt", "yolox_l.onnx", "yolo_nas_l_fp16.onnx",
                                "yolo_nas_m_fp16.onnx", "yolo_nas_s_fp16.onnx"], "yolox_l.onnx"),
        "pose_estimator": combo(["dw-ll_ucoco_384_bs5.torchscript.pt", "dw-ll_ucoco_384.onnx", "dw-ll_ucoco.onnx"],
                                "dw-ll_ucoco_384_bs5.torchscript.pt"),
        "scale_stick_for_xinsr_cn": combo(["disable", "enable"]),
    }
    assert pack["nodes"]["DWPreprocessor"] == {
        "display_name": "DWPose Estimator",
        "input": {"required": {"image": ["IMAGE"]}, "optional": optional},
        "input_order": {"required": ["image"], "optional": list(optional)},
        "output": ["IMAGE", "POSE_KEYPOINT"], "output_name": ["IMAGE", "POSE_KEYPOINT"], "output_node": False,
    }
    for spec in pack["nodes"].values():  # the generator reads it like any spec
        assert [name for _, name, _ in mw.widgets(spec)] == list(optional)


def _sample_with_dwpose():
    g = mw.Graph("sample_dwpose", SPECS)
    g.requires("comfyui_controlnet_aux")
    image = g.node("LoadImage", title="Source image", image="example.png")
    dw = g.node("DWPreprocessor", image=image.out("IMAGE"), detect_face="disable")
    g.node("PreviewImage", images=dw.out("IMAGE"))
    g.note("Needs comfyui_controlnet_aux.")
    return g


def test_third_party_nodes_only_in_a_workflow_that_declares_their_pack():
    g = _sample_with_dwpose()
    wf = g.ui()
    assert validate_ui(wf) == [] and ui_to_api(wf) == g.api()
    dw = _node(wf, "DWPreprocessor")
    assert dw["properties"]["cnr_id"] == "comfyui_controlnet_aux"
    assert wf["extra"]["poseanimate"]["custom_nodes"] == {
        "comfyui_controlnet_aux": "https://github.com/Fannovel16/comfyui_controlnet_aux"}
    assert dw["widgets_values"][:3] == ["enable", "enable", "disable"]
    assert "poseanimate" not in _sample().ui()["extra"]  # nothing declared: nothing written

    undeclared = json.loads(json.dumps(wf))
    del undeclared["extra"]["poseanimate"]
    assert any("its custom node pack is not declared" in e for e in validate_ui(undeclared))
    no_id = json.loads(json.dumps(wf))
    del _node(no_id, "DWPreprocessor")["properties"]["cnr_id"]
    assert any("properties.cnr_id" in e for e in validate_ui(no_id))
    silent = json.loads(json.dumps(wf))
    _node(silent, "MarkdownNote")["widgets_values"] = ["A note."]
    assert any("no note tells the user" in e for e in validate_ui(silent))
    unknown = json.loads(json.dumps(wf))
    unknown["extra"]["poseanimate"]["custom_nodes"]["comfyui_mystery_pack"] = "https://example.invalid/x"
    assert any("'comfyui_mystery_pack', which has no checked specs" in e for e in validate_ui(unknown))
    unused = _sample().ui()
    unused["extra"]["poseanimate"] = {"custom_nodes": dict(wf["extra"]["poseanimate"]["custom_nodes"])}
    unused["nodes"][-1]["widgets_values"] = ["Needs comfyui_controlnet_aux."]
    assert any("uses none of its nodes" in e for e in validate_ui(unused))


def test_generator_refuses_a_third_party_node_without_its_pack():
    g = mw.Graph("undeclared", SPECS)
    image = g.node("LoadImage", image="example.png")
    with pytest.raises(KeyError, match=r"g.requires\('comfyui_controlnet_aux'\)"):
        g.node("DWPreprocessor", image=image.out("IMAGE"))
    with pytest.raises(KeyError, match="no checked specs"):
        g.requires("comfyui_mystery_pack")


def test_dwpose_workflow_finds_both_poses_with_dwpose_and_animates_like_full():
    """dwpose: DWPose Estimator on the resized picture gives PATA Align's source pose, on every Nth frame of a
    video (core Load Video + Get Video Components, Rebatch Images / Get Image From Batch) its target poses; the
    rest is workflow 'full' with the same settings."""
    wf = json.loads((ROOT / "workflows" / "dwpose.json").read_text())
    assert declared_packs(wf) == {"comfyui_controlnet_aux": THIRD["comfyui_controlnet_aux"]["repository"]}
    assert _node(wf, "LoadVideo")["widgets_values"] == ["driving_video.mp4", "image"]  # + the upload button
    graph = json.loads((ROOT / "workflows" / "api" / "dwpose.json").read_text())
    by_title = {n["_meta"]["title"]: n for n in graph.values()}

    def src(node, name):
        return graph[node["inputs"][name][0]]

    align = by_title["PATA Align"]
    full = json.loads((ROOT / "workflows" / "api" / "full.json").read_text())
    full_align = next(n for n in full.values() if n["class_type"] == "PoseAnimatePATAAlign")
    for key in ("transition_frames", "mode", "repair", "width", "height"):
        assert align["inputs"][key] == full_align["inputs"][key], key
    resize = by_title["Resize source"]
    assert (align["inputs"]["width"], align["inputs"]["height"]) == (resize["inputs"]["width"],
                                                                     resize["inputs"]["height"])
    source = src(align, "source_pose")
    assert source["class_type"] == "DWPreprocessor" and align["inputs"]["source_pose"][1] == 1  # POSE_KEYPOINT
    assert src(source, "image") is resize
    target = src(align, "target_pose")
    assert target["class_type"] == "DWPreprocessor" and align["inputs"]["target_pose"][1] == 1
    chain = [target]
    while chain[-1]["class_type"] != "LoadVideo":
        upstream = next(k for k in ("image", "images", "video") if k in chain[-1]["inputs"])
        chain.append(src(chain[-1], upstream))
    assert [n["class_type"] for n in chain] == ["DWPreprocessor", "ImageFromBatch", "RebatchImages", "ImageFromBatch",
                                                "RebatchImages", "GetVideoComponents", "LoadVideo"]
    _, frames, join, first, split, components, video = chain
    assert frames["_meta"]["title"] == "Driving frames" and video["_meta"]["title"] == "Driving video"
    assert frames["inputs"]["length"] == full[next(i for i, n in full.items() if n["_meta"]["title"] ==
                                                   "Pose sequence")]["inputs"]["frames"]  # the paper's 12 poses
    assert (first["inputs"]["batch_index"], first["inputs"]["length"]) == (0, 1)
    assert split["inputs"]["batch_size"] > 1 and join["inputs"]["batch_size"] == 4096
    assert split["inputs"]["images"][1] == 0  # Get Video Components' images, not its audio or fps
    # no pose files; the PACM part is full's, node for node
    assert not [n for n in graph.values() if n["class_type"] == "PoseAnimateLoadPoseSequence"]
    pose_kinds = {"LoadVideo", "GetVideoComponents", "RebatchImages", "ImageFromBatch", "DWPreprocessor"}
    previews = {"Source pose check", "Driving poses check"}
    rest = sorted(n["class_type"] for n in graph.values()
                  if n["class_type"] not in pose_kinds and n["_meta"]["title"] not in previews)
    assert rest == sorted(n["class_type"] for n in full.values() if n["class_type"] != "PoseAnimateLoadPoseSequence")
    for node in full.values():
        if node["class_type"].startswith("PoseAnimate") and node["class_type"] != "PoseAnimateLoadPoseSequence":
            mine = next(n for n in graph.values() if n["class_type"] == node["class_type"])
            widgets = {k: v for k, v in node["inputs"].items() if not isinstance(v, list)}
            assert {k: v for k, v in mine["inputs"].items() if not isinstance(v, list)} == widgets
    for title in previews:
        assert by_title[title]["class_type"] == "PreviewImage" and src(by_title[title], "images")["class_type"] == \
            "DWPreprocessor"
    saves = [n["inputs"]["filename_prefix"] for n in graph.values() if n["class_type"] in ("SaveImage", "SaveVideo")]
    assert saves and all(p.startswith("PoseAnimate/dwpose/") for p in saves)


def test_a_workflow_saved_before_the_new_inputs_keeps_its_widget_values():
    """A UI workflow saved with the pack before the PACM nodes took negative, keyframe_interval and the background
    hold (tests/data/workflows_0.1.0/remix.json): the frontend assigns saved widget values in order, so every node's
    saved values must still fit the first widgets of today's spec, and every widget after them must be an
    optional input with a default (filled in on load). New inputs are appended, never inserted."""
    old = json.loads((ROOT / "tests" / "data" / "workflows_0.1.0" / "remix.json").read_text())
    checked = 0
    for node in old["nodes"]:
        if node["type"] not in PACK:
            continue
        spec = SPECS[node["type"]]
        expected = expected_widgets(spec)
        values = node.get("widgets_values", [])
        assert len(values) <= len(expected), node["type"]
        for (name, entry, extra), value in zip(expected, values):
            assert extra is not None or check_value(name, entry, value) is None, (node["type"], name, value)
        optional = spec["input"].get("optional", {})
        for name, entry, _ in expected[len(values):]:
            assert name in optional and "default" in entry[1], (node["type"], name)
        checked += 1
    assert checked >= 6
