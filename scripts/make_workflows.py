#!/usr/bin/env python3
"""Generate the bundled workflows (UI format + API-format twin) from one compact Python description each.

    python scripts/make_workflows.py            # write workflows/<name>.json and workflows/api/<name>.json
    python scripts/make_workflows.py --check    # exit 1 when a bundled file differs from what would be written
    COMFYUI_PATH=/path/to/ComfyUI python scripts/make_workflows.py --extract-core
                                                # refresh tests/data/comfy_core_nodes.json from a real ComfyUI

Node inputs come from the node classes themselves: this pack's classes are imported (no ComfyUI needed) and
ComfyUI's core nodes are read from the checked list ``tests/data/comfy_core_nodes.json``, extracted from
ComfyUI's ``NODE_CLASS_MAPPINGS`` with the same ``node_info`` shape ComfyUI's ``/object_info`` serves. In that
file an empty combo list means the options are files found at run time (checkpoints, images, ...).
Nodes of other custom node packs come from ``tests/data/third_party_nodes.json`` (written from each pack's
source, same shape) and only into a workflow that declares the pack with ``Graph.requires(pack)``; the UI file
then names the pack in ``extra.poseanimate.custom_nodes`` and each of its nodes carries the pack's registry id
(``properties.cnr_id``, which ComfyUI-Manager reads to offer the install).

Widget values follow the ComfyUI frontend: one value per widget input in INPUT_TYPES order (required, then
optional); an INT input named ``seed``/``noise_seed`` or flagged ``control_after_generate`` is followed by the
control value ("fixed", ...); an upload combo (``image_upload``, ``video_upload``, ``animated_image_upload``: the
frontend gives all three the same upload button) is followed by the upload widget's value "image".
Inputs of other types are sockets. A widget fed by a link keeps its widget value and gains a socket with
``"widget": {"name": ...}``.
"""
from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import json
import os
import pathlib
import pkgutil
import sys
import tempfile
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))

from _cli import CliError, Parser, atomic_output, output_path  # noqa: E402
WORKFLOWS = ROOT / "workflows"
CORE_SPECS = ROOT / "tests" / "data" / "comfy_core_nodes.json"
THIRD_PARTY_SPECS = ROOT / "tests" / "data" / "third_party_nodes.json"
UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload")
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
FRONTEND_ONLY = {"Note", "MarkdownNote"}

# Core nodes whose full input specs are kept in the checked list (every core id is kept by name).
CORE_SPEC_NODES = [
    "CheckpointLoaderSimple", "VAELoader", "CLIPLoader", "UNETLoader", "ControlNetLoader", "LoraLoader",
    "LoraLoaderModelOnly", "LoadImage", "LoadImageMask", "ImageScale", "ImageScaleBy", "VAEEncode", "VAEDecode",
    "CLIPTextEncode", "ControlNetApplyAdvanced", "ControlNetApply", "KSampler", "EmptyLatentImage", "SaveImage",
    "PreviewImage", "SaveAnimatedWEBP", "SaveAnimatedPNG", "CreateVideo", "SaveVideo", "SaveWEBM",
    "PrimitiveString", "PrimitiveStringMultiline", "PrimitiveInt", "PrimitiveFloat", "PrimitiveBoolean", "Canny",
    "ImageInvert", "ImageToMask", "MaskToImage", "SolidMask", "InvertMask", "GrowMask", "ImageBatch",
    "RepeatImageBatch", "ImageFromBatch", "GetImageSize", "ImageCompositeMasked", "SetLatentNoiseMask",
    "LoadVideo", "GetVideoComponents", "RebatchImages",
]


# ------------------------------------------------------------------------------------------ node specs


def node_info(node_id: str, cls) -> dict:
    """The parts of ComfyUI's ``server.node_info`` the workflows need (V1 and V3 node classes)."""
    if hasattr(cls, "GET_NODE_INFO_V1"):
        info = cls.GET_NODE_INFO_V1()
        spec = {"input": info["input"], "input_order": info["input_order"], "output": list(info["output"]),
                "output_name": list(info["output_name"]), "output_node": bool(info.get("output_node")),
                "display_name": info.get("display_name") or node_id}
    else:
        inputs = cls.INPUT_TYPES()
        spec = {"input": inputs, "input_order": {k: list(v) for k, v in inputs.items()},
                "output": list(cls.RETURN_TYPES), "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
                "output_node": bool(getattr(cls, "OUTPUT_NODE", False)), "display_name": node_id}
    spec["input"] = {k: v for k, v in spec["input"].items() if k in ("required", "optional")}
    spec["input_order"] = {k: v for k, v in spec["input_order"].items() if k in ("required", "optional")}
    return json.loads(json.dumps(spec))  # tuples -> lists, exactly what a JSON round trip gives


def pack_classes() -> dict:
    """{node id: class} for every node class in nodes/ (registered id, else the class name)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if "poseanimate" not in sys.modules:
        spec = importlib.util.spec_from_file_location("poseanimate", ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["poseanimate"] = module
        spec.loader.exec_module(module)
    pack = sys.modules["poseanimate"]
    import poseanimate.nodes as nodes_pkg

    registered = {cls: key for key, cls in pack.NODE_CLASS_MAPPINGS.items()}
    display = dict(pack.NODE_DISPLAY_NAME_MAPPINGS)
    found = {}
    for info in pkgutil.iter_modules(nodes_pkg.__path__):
        module = importlib.import_module(f"{nodes_pkg.__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and hasattr(cls, "INPUT_TYPES") and hasattr(cls, "FUNCTION"):
                key = registered.get(cls, cls.__name__)
                cls._display_name = display.get(key, getattr(cls, "DISPLAY_NAME", key))
                found[key] = cls
    return found


def pack_specs() -> dict:
    out = {}
    for key, cls in pack_classes().items():
        spec = node_info(key, cls)
        spec["display_name"] = cls._display_name
        out[key] = spec
    return out


def core_specs() -> dict:
    return json.loads(CORE_SPECS.read_text())


def third_party_packs() -> dict:
    """{pack id: {"repository", "commit", "registry_id", "nodes": {node id: spec}, ...}} from the checked list."""
    return json.loads(THIRD_PARTY_SPECS.read_text())["packs"]


def all_specs() -> dict:
    specs = dict(core_specs()["nodes"])
    specs.update(pack_specs())
    return specs


def widgets(spec: dict) -> list[tuple[str, str, object]]:
    """[(kind, input name, input entry)] in widgets_values order; kind is 'value', 'control' or 'upload'."""
    out = []
    for section in ("required", "optional"):
        for name in spec["input_order"].get(section, []):
            entry = spec["input"][section][name]
            kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
            if not (isinstance(kind, list) or kind in WIDGET_TYPES) or opts.get("forceInput"):
                continue
            out.append(("value", name, entry))
            if kind == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed")):
                out.append(("control", name, entry))
            if any(opts.get(flag) for flag in UPLOAD_FLAGS):
                out.append(("upload", name, entry))
    return out


def sockets(spec: dict) -> list[tuple[str, str]]:
    """[(input name, type)] for inputs that are sockets (not widgets), required then optional."""
    names = {n for _, n, _ in widgets(spec)}
    out = []
    for section in ("required", "optional"):
        for name in spec["input_order"].get(section, []):
            if name not in names:
                kind = spec["input"][section][name][0]
                out.append((name, kind if isinstance(kind, str) else "COMBO"))
    return out


def input_entry(spec: dict, name: str):
    for section in ("required", "optional"):
        if name in spec["input"].get(section, {}):
            return section, spec["input"][section][name]
    return None, None


def default_value(entry):
    kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
    if "default" in opts:
        return opts["default"]
    if isinstance(kind, list):
        return kind[0] if kind else None
    if kind == "COMBO":
        return (opts.get("options") or [None])[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind)


# --------------------------------------------------------------------------------------- graph builder


class Out:
    def __init__(self, node: "Node", slot: int):
        self.node, self.slot = node, slot


class Node:
    def __init__(self, graph: "Graph", nid: int, class_type: str, title: str | None, inputs: dict, column=None):
        self.graph, self.id, self.class_type, self.title, self.inputs = graph, nid, class_type, title, inputs
        self.column = column

    def out(self, which: int | str = 0) -> Out:
        spec = self.graph.specs[self.class_type]
        if isinstance(which, str):
            names = spec["output_name"]
            if which in names:
                which = names.index(which)
            elif which in spec["output"]:
                which = spec["output"].index(which)
            else:
                raise KeyError(f"{self.class_type} has no output {which!r}; outputs: {names}")
        return Out(self, which)


class Graph:
    """A compact workflow description; ``ui()`` and ``api()`` render both formats."""

    def __init__(self, name: str, specs: dict):
        self.name, self.specs = name, specs
        self.nodes: list[Node] = []
        self.notes: list[dict] = []
        self.groups: list[tuple[str, list[Node], str]] = []
        self.packs: dict[str, dict] = {}  # custom node packs this workflow declares (other than this one)

    def requires(self, pack: str) -> None:
        """Declare that this workflow needs another custom node pack: its checked node specs become usable."""
        packs = third_party_packs()
        if pack not in packs:
            raise KeyError(f"{self.name}: no checked specs for custom node pack {pack!r} in "
                           f"{THIRD_PARTY_SPECS.relative_to(ROOT)}; known: {sorted(packs)}")
        self.packs[pack] = packs[pack]
        self.specs = {**self.specs, **packs[pack]["nodes"]}  # this graph's own view; the shared dict stays

    def _pack_of(self, class_type: str) -> str | None:
        return next((p for p, info in self.packs.items() if class_type in info["nodes"]), None)

    def node(self, class_type: str, title: str | None = None, column: int | None = None, **inputs) -> Node:
        if class_type not in self.specs:
            owner = next((p for p, info in third_party_packs().items() if class_type in info["nodes"]), None)
            hint = f" (a node of custom node pack {owner!r}: call g.requires({owner!r}) first)" if owner else ""
            raise KeyError(f"{self.name}: unknown node class {class_type!r}{hint}")
        spec = self.specs[class_type]
        for name in inputs:
            if input_entry(spec, name)[0] is None:
                raise KeyError(f"{self.name}: {class_type} has no input {name!r}")
        for name, kind in sockets(spec):
            if input_entry(spec, name)[0] == "required" and not isinstance(inputs.get(name), Out):
                raise ValueError(f"{self.name}: {class_type} input {name!r} ({kind}) must be connected")
        node = Node(self, len(self.nodes) + len(self.notes) + 1, class_type, title, inputs, column)
        self.nodes.append(node)
        return node

    def note(self, text: str, title: str = "Note", markdown: bool = True, column: int = 0, width: int = 420):
        self.notes.append({"id": len(self.nodes) + len(self.notes) + 1, "text": text.strip(), "title": title,
                           "type": "MarkdownNote" if markdown else "Note", "column": column, "width": width})

    def group(self, title: str, nodes: list[Node], color: str = "#3f789e"):
        self.groups.append((title, nodes, color))

    # ---- shared
    def _widget_values(self, node: Node) -> list:
        values = []
        for kind, name, entry in widgets(self.specs[node.class_type]):
            given = node.inputs.get(name)
            if kind == "value":
                value = default_value(entry) if given is None or isinstance(given, Out) else given
                if value is None:
                    raise ValueError(f"{self.name}: {node.class_type}.{name} needs a value")
                values.append(value)
            elif kind == "control":
                values.append("fixed")
            else:
                values.append("image")
        return values

    def _title(self, node: Node) -> str:
        return node.title or self.specs[node.class_type].get("display_name") or node.class_type

    def _links(self):
        links = []
        for node in self.nodes:
            spec = self.specs[node.class_type]
            slots = [n for n, _ in sockets(spec)] + [n for k, n, _ in widgets(spec) if k == "value"]
            for name in slots:
                value = node.inputs.get(name)
                if isinstance(value, Out):
                    links.append((value, node, name))
        return links

    def _layout(self):
        depth = {}

        def d(n: Node) -> int:
            if n.id not in depth:
                ups = [v.node for v in n.inputs.values() if isinstance(v, Out)]
                depth[n.id] = n.column if n.column is not None else 1 + max((d(u) for u in ups), default=0)
            return depth[n.id]

        for n in self.nodes:
            d(n)
        return depth

    def _size(self, node: Node) -> list[int]:
        spec = self.specs[node.class_type]
        rows = max(len(sockets(spec)), len(spec["output"])) + len(widgets(spec))
        multiline = any(len(e) > 1 and e[1].get("multiline") for _, _, e in widgets(spec))
        return [320, 46 + 24 * rows + (90 if multiline else 0)]

    # ---- UI format
    def ui(self) -> dict:
        depth = self._layout()
        columns: dict[int, int] = {}
        positions = {}
        x0 = 40 + (460 if self.notes else 0)
        for node in sorted(self.nodes, key=lambda n: (depth[n.id], n.id)):
            col = depth[node.id]
            y = columns.get(col, 60)
            positions[node.id] = [x0 + col * 360, y]
            columns[col] = y + self._size(node)[1] + 60
        links, ui_nodes = [], {}
        order = {n.id: i for i, n in enumerate(sorted(self.nodes, key=lambda n: (depth[n.id], n.id)))}
        for node in self.nodes:
            spec = self.specs[node.class_type]
            socket_inputs = [{"name": n, "type": t, "link": None} for n, t in sockets(spec)]
            ui_nodes[node.id] = {
                "id": node.id, "type": node.class_type, "pos": positions[node.id], "size": self._size(node),
                "flags": {}, "order": order[node.id], "mode": 0, "inputs": socket_inputs,
                "outputs": [{"name": name, "type": t, "links": [], "slot_index": i}
                            for i, (name, t) in enumerate(zip(spec["output_name"], spec["output"]))],
                "properties": {"Node name for S&R": node.class_type},
                "widgets_values": self._widget_values(node),
            }
            pack = self._pack_of(node.class_type)
            if pack:  # ComfyUI-Manager finds the pack to install for a missing node by this id
                ui_nodes[node.id]["properties"]["cnr_id"] = self.packs[pack]["registry_id"]
            if node.title:
                ui_nodes[node.id]["title"] = node.title
        for link_id, (src, dst, name) in enumerate(self._links(), start=1):
            target = ui_nodes[dst.id]
            slot = next((i for i, x in enumerate(target["inputs"]) if x["name"] == name), None)
            if slot is None:  # a widget fed by a link gains a socket
                _, entry = input_entry(self.specs[dst.class_type], name)
                kind = entry[0] if isinstance(entry[0], str) else "COMBO"
                target["inputs"].append({"name": name, "type": kind, "widget": {"name": name}, "link": None})
                slot = len(target["inputs"]) - 1
            target["inputs"][slot]["link"] = link_id
            out_type = self.specs[src.node.class_type]["output"][src.slot]
            ui_nodes[src.node.id]["outputs"][src.slot]["links"].append(link_id)
            links.append([link_id, src.node.id, src.slot, dst.id, slot, out_type])
        y = 60
        for note in self.notes:
            height = 60 + 18 * (note["text"].count("\n") + 2 + len(note["text"]) // 60)
            col = note["column"]
            pos = [40, y] if col == 0 else [x0 + col * 360, columns.get(col, 60)]
            ui_nodes[note["id"]] = {
                "id": note["id"], "type": note["type"], "pos": pos, "size": [note["width"], height], "flags": {},
                "order": len(self.nodes) + note["id"], "mode": 0, "inputs": [], "outputs": [],
                "title": note["title"], "properties": {}, "widgets_values": [note["text"]],
                "color": "#432", "bgcolor": "#653",
            }
            if col == 0:
                y += height + 40
            else:
                columns[col] = pos[1] + height + 40
        groups = []
        for title, members, color in self.groups:
            xs = [positions[n.id][0] for n in members]
            ys = [positions[n.id][1] for n in members]
            x2 = max(positions[n.id][0] + self._size(n)[0] for n in members)
            y2 = max(positions[n.id][1] + self._size(n)[1] for n in members)
            groups.append({"id": len(groups) + 1, "title": title, "bounding": [min(xs) - 20, min(ys) - 60,
                           x2 - min(xs) + 40, y2 - min(ys) + 80], "color": color, "font_size": 24, "flags": {}})
        all_ids = [n["id"] for n in ui_nodes.values()]
        extra = {"ds": {"scale": 0.8, "offset": [0, 0]}}
        if self.packs:
            extra["poseanimate"] = {"custom_nodes": {p: info["repository"] for p, info in self.packs.items()}}
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"poseanimate/{self.name}")), "revision": 0,
            "last_node_id": max(all_ids), "last_link_id": len(links),
            "nodes": [ui_nodes[i] for i in sorted(ui_nodes)], "links": links, "groups": groups, "config": {},
            "extra": extra, "version": 0.4,
        }

    # ---- API format
    def api(self) -> dict:
        out = {}
        for node in self.nodes:
            spec = self.specs[node.class_type]
            values = dict(zip([n for k, n, _ in widgets(spec) if k == "value"],
                              [v for (k, _, _), v in zip(widgets(spec), self._widget_values(node)) if k == "value"]))
            inputs = {}
            for section in ("required", "optional"):
                for name in spec["input_order"].get(section, []):
                    given = node.inputs.get(name)
                    if isinstance(given, Out):
                        inputs[name] = [str(given.node.id), given.slot]
                    elif name in values:
                        inputs[name] = values[name]
            out[str(node.id)] = {"inputs": inputs, "class_type": node.class_type,
                                 "_meta": {"title": self._title(node)}}
        return out


# -------------------------------------------------------------------------------------------- outputs


def build_all(specs: dict | None = None) -> dict:
    """{name: Graph} for every bundled workflow."""
    specs = specs or all_specs()
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    try:
        import workflow_defs
    finally:
        sys.path.pop(0)
    return {name: fn(Graph(name, specs)) for name, fn in workflow_defs.WORKFLOWS.items()}


def render(graphs: dict) -> dict[pathlib.Path, str]:
    files = {}
    for name, graph in graphs.items():
        files[WORKFLOWS / f"{name}.json"] = json.dumps(graph.ui(), indent=2) + "\n"
        files[WORKFLOWS / "api" / f"{name}.json"] = json.dumps(graph.api(), indent=2) + "\n"
    return files


# ------------------------------------------------------------------------------------------- picture

LINK_COLORS = {"MODEL": (178, 157, 255), "CLIP": (255, 214, 0), "VAE": (255, 99, 99), "CONDITIONING": (255, 169, 0),
               "LATENT": (255, 156, 249), "IMAGE": (100, 181, 246), "MASK": (129, 199, 132),
               "CONTROL_NET": (0, 214, 163), "STRING": (170, 170, 170), "VIDEO": (240, 240, 240)}


def render_picture(ui: dict, path: pathlib.Path, scale: float = 0.5) -> None:
    """A PNG of a UI workflow as ComfyUI lays it out: notes, nodes with their titles, inputs, widget values
    and outputs, and links coloured by type (needs Pillow, which ComfyUI installs)."""
    from PIL import Image, ImageDraw, ImageFont

    nodes = {n["id"]: n for n in ui["nodes"]}
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes.values()) + 40
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes.values()) + 40
    img = Image.new("RGB", (int(x1 * scale), int(y1 * scale)), (32, 32, 32))
    d = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=max(9, int(22 * scale)))
        small = ImageFont.load_default(size=max(8, int(17 * scale)))
    except TypeError:  # Pillow < 10.1
        font = small = ImageFont.load_default()

    def xy(x, y):
        return (x * scale, y * scale)

    def in_slot(node, i):
        return xy(node["pos"][0], node["pos"][1] + 46 + 24 * i)

    def out_slot(node, i):
        return xy(node["pos"][0] + node["size"][0], node["pos"][1] + 46 + 24 * i)

    for link in ui["links"]:
        _, a, sa, b, sb, kind = link
        (ax, ay), (bx, by) = out_slot(nodes[a], sa), in_slot(nodes[b], sb)
        pts = []
        for t in (i / 24 for i in range(25)):  # a cubic like LiteGraph's splines
            cx = (1 - t) ** 3 * ax + 3 * (1 - t) ** 2 * t * (ax + 60 * scale) + 3 * (1 - t) * t * t * (bx - 60 * scale)
            cx += t ** 3 * bx
            cy = (1 - t) ** 3 * ay + 3 * (1 - t) ** 2 * t * ay + 3 * (1 - t) * t * t * by + t ** 3 * by
            pts.append((cx, cy))
        d.line(pts, fill=LINK_COLORS.get(kind, (200, 200, 200)), width=max(1, int(4 * scale)))
    for n in nodes.values():
        x, y = n["pos"]
        w, h = n["size"]
        note = n["type"] in FRONTEND_ONLY
        d.rounded_rectangle([xy(x, y - 30), xy(x + w, y + h)], radius=8 * scale,
                            fill=(85, 68, 51) if note else (53, 53, 53), outline=(20, 20, 20))
        d.rectangle([xy(x, y - 30), xy(x + w, y)], fill=(68, 51, 34) if note else (34, 34, 34))
        d.text(xy(x + 10, y - 26), n.get("title") or n["type"], fill=(230, 230, 230), font=font)
        if note:
            text = n["widgets_values"][0].replace("**", "").replace("### ", "").replace("\u2192", "->")
            lines = []
            for para in text.splitlines():
                while len(para) > int(w / 9.5):
                    cut = para.rfind(" ", 0, int(w / 9.5)) or int(w / 9.5)
                    lines.append(para[:cut])
                    para = para[cut:].lstrip()
                lines.append(para)
            for i, line in enumerate(lines[: int(h / 20)]):
                d.text(xy(x + 10, y + 8 + 19 * i), line, fill=(220, 210, 190), font=small)
            continue
        for i, slot in enumerate(n["inputs"]):
            cx, cy = in_slot(n, i)
            d.ellipse([cx - 4 * scale, cy - 4 * scale, cx + 4 * scale, cy + 4 * scale],
                      fill=LINK_COLORS.get(slot["type"], (200, 200, 200)))
            d.text((cx + 10 * scale, cy - 9 * scale), slot["name"], fill=(190, 190, 190), font=small)
        for i, slot in enumerate(n["outputs"]):
            cx, cy = out_slot(n, i)
            d.ellipse([cx - 4 * scale, cy - 4 * scale, cx + 4 * scale, cy + 4 * scale],
                      fill=LINK_COLORS.get(slot["type"], (200, 200, 200)))
            d.text((cx - 10 * scale, cy - 9 * scale), slot["name"], fill=(190, 190, 190), font=small, anchor="ra")
        rows = max(len(n["inputs"]), len(n["outputs"]))
        for i, value in enumerate(n.get("widgets_values", [])):
            wy = y + 46 + 24 * (rows + i) - 10
            if wy + 20 > y + h:
                break
            d.rounded_rectangle([xy(x + 10, wy), xy(x + w - 10, wy + 20)], radius=6 * scale, fill=(34, 34, 34))
            label = str(value).replace("\n", " ")
            d.text(xy(x + 18, wy + 2), label[: int(w / 9)], fill=(200, 200, 200), font=small)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        with atomic_output(path) as tmp:
            img.save(tmp, quality=80, optimize=True)
    else:
        with atomic_output(path) as tmp:
            img.save(tmp, optimize=True)


# ------------------------------------------------------------------------------------ core extraction


def _load_file(name: str, path: pathlib.Path):
    """A module loaded from its file, without putting the repository root on sys.path (its ``nodes`` package
    would shadow ComfyUI's ``nodes.py``)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _bootstrap_comfy(path: str):
    sys.path.insert(0, path)
    _load_file("comfy_stubs", ROOT / "testing" / "comfy_stubs.py").stub_absent()  # docs/host.md
    utils = sys.modules.get("utils")
    if utils is None or not hasattr(utils, "__path__"):  # ComfyUI's utils package, not comfy/utils.py
        spec = importlib.util.spec_from_file_location("utils", os.path.join(path, "utils", "__init__.py"),
                                                      submodule_search_locations=[os.path.join(path, "utils")])
        module = importlib.util.module_from_spec(spec)
        sys.modules["utils"] = module
        spec.loader.exec_module(module)
    import utils.install_util  # noqa: F401  (server.py, hence comfy_extras/nodes_images.py, needs it)
    import comfy.options  # noqa: F401
    from comfy.cli_args import args

    args.cpu = True


def _is_custom(cls) -> bool:
    """A class from a custom node pack (this one included) rather than ComfyUI's nodes.py / comfy_extras."""
    module = getattr(cls, "RELATIVE_PYTHON_MODULE", None) or getattr(cls, "__module__", "")
    return module.startswith("custom_nodes") or module.split(".")[0] in ("poseanimate",)


def extract_core(path: str) -> dict:
    """Every core node id and the specs of CORE_SPEC_NODES from the ComfyUI at ``path`` (no models, no inputs)."""
    _bootstrap_comfy(path)
    import folder_paths
    import nodes

    if not any(k.startswith("comfy_extras.") for k in sys.modules) or "SaveVideo" not in nodes.NODE_CLASS_MAPPINGS:
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    core = {k: v for k, v in nodes.NODE_CLASS_MAPPINGS.items() if not _is_custom(v)}
    saved_input = folder_paths.get_input_directory()
    saved_paths = {k: (list(v[0]), v[1]) for k, v in folder_paths.folder_names_and_paths.items()}
    empty = tempfile.mkdtemp(prefix="poseanimate_empty_")
    try:  # file lists come out empty: those combos are marked as run-time file lists
        folder_paths.set_input_directory(empty)
        for key, (_, exts) in saved_paths.items():
            if key != "custom_nodes":
                folder_paths.folder_names_and_paths[key] = ([empty], exts)
        folder_paths.filename_list_cache.clear()
        ids = sorted(core)
        specs = {}
        for key in CORE_SPEC_NODES:
            if key in core:
                spec = node_info(key, core[key])
                spec["display_name"] = nodes.NODE_DISPLAY_NAME_MAPPINGS.get(key) or spec["display_name"] or key
                specs[key] = spec
    finally:
        folder_paths.set_input_directory(saved_input)
        folder_paths.folder_names_and_paths.update(saved_paths)
        folder_paths.filename_list_cache.clear()
        os.rmdir(empty)
    import comfyui_version

    return {"comfyui_version": comfyui_version.__version__,
            "note": "Generated by scripts/make_workflows.py --extract-core. An empty combo list means the "
                    "options are files found at run time.",
            "ids": ids, "nodes": specs}


def main(argv=None) -> int:
    p = Parser(prog="make_workflows.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 when a bundled workflow file is out of date")
    p.add_argument("--extract-core", action="store_true", help="refresh tests/data/comfy_core_nodes.json")
    p.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout (--extract-core)")
    p.add_argument("--picture", metavar="PNG", help="also draw workflow 'full' into this PNG and every workflow "
                   "as workflows/<name>.jpg (template browser thumbnails; needs Pillow)")
    args = p.parse_args(argv)
    if args.extract_core:
        if not args.comfyui:
            p.fail(CliError("--extract-core needs --comfyui or COMFYUI_PATH. Fix: pass --comfyui /path/to/ComfyUI"))
        if not (pathlib.Path(args.comfyui) / "comfy" / "model_management.py").is_file():
            p.fail(CliError(f"--comfyui: {args.comfyui} is not a ComfyUI checkout (no comfy/model_management.py). "
                            f"Fix: give the folder that holds ComfyUI's main.py"))
        data = extract_core(os.path.abspath(args.comfyui))
        CORE_SPECS.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(CORE_SPECS) as tmp:
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(f"wrote {CORE_SPECS} ({len(data['ids'])} ids, {len(data['nodes'])} specs)")
        return 0
    if args.picture:
        try:
            output_path("--picture", args.picture, (".png",))
        except CliError as exc:
            p.fail(exc)
        if importlib.util.find_spec("PIL") is None:
            p.fail(CliError("--picture needs Pillow, which is not installed. Fix: pip install pillow"))
    graphs = build_all()
    files = render(graphs)
    if args.picture:
        render_picture(graphs["full"].ui(), pathlib.Path(args.picture))
        for name, graph in graphs.items():  # thumbnails for ComfyUI's template browser
            render_picture(graph.ui(), WORKFLOWS / f"{name}.jpg", scale=0.25)
        print(f"drew {args.picture} and workflows/<name>.jpg thumbnails")
    stale = [path for path, text in files.items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"out of date: {path.relative_to(ROOT)}")
        return 1 if stale else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            tmp.write_text(text)
    print(f"wrote {len(files)} files ({len(stale)} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
