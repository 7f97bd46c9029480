"""Render a ComfyUI UI-format workflow JSON as a PNG schematic (nodes, slots, links, notes).

    python scripts/render_workflow.py workflows/poseanimate_full.json --out docs/workflow_full.png

A picture for documentation, drawn with OpenCV from the workflow's own node positions and sizes; it is not a
screenshot of ComfyUI's editor.
"""
from __future__ import annotations

import argparse
import json

import cv2
import numpy as np

BG, NODE, NOTE, TITLE, TEXT, PACK = (24, 24, 24), (53, 53, 53), (40, 60, 40), (34, 34, 34), (220, 220, 220), (110, 60, 140)
TYPE_COLOURS = {"MODEL": (180, 150, 100), "CLIP": (80, 200, 250), "VAE": (100, 100, 240), "LATENT": (230, 140, 240),
                "IMAGE": (170, 230, 100), "CONDITIONING": (120, 170, 250), "CONTROL_NET": (130, 200, 0),
                "MASK": (160, 255, 200), "POSE_KEYPOINT": (40, 180, 250)}
FONT = cv2.FONT_HERSHEY_SIMPLEX
SLOT_H, TITLE_H = 20, 26


def _size(node):
    size = node.get("size", [200, 100])
    return (size["0"], size["1"]) if isinstance(size, dict) else tuple(size)


def _slot_xy(node, slot, output, origin):
    x, y = node["pos"][0] - origin[0], node["pos"][1] - origin[1]
    w, _ = _size(node)
    return int(x + (w if output else 0)), int(y + TITLE_H + 10 + slot * SLOT_H)


def render(workflow: dict, scale: float = 1.0) -> np.ndarray:
    nodes = {n["id"]: n for n in workflow["nodes"]}
    xs = [n["pos"][0] for n in nodes.values()] + [n["pos"][0] + _size(n)[0] for n in nodes.values()]
    ys = [n["pos"][1] for n in nodes.values()] + [n["pos"][1] + _size(n)[1] for n in nodes.values()]
    origin = (min(xs) - 40, min(ys) - 40)
    canvas = np.full((int(max(ys) - origin[1] + 40), int(max(xs) - origin[0] + 40), 3), BG, np.uint8)
    for node in nodes.values():
        x, y = int(node["pos"][0] - origin[0]), int(node["pos"][1] - origin[1])
        w, h = (int(v) for v in _size(node))
        note = node["type"] in ("Note", "MarkdownNote")
        body = NOTE if note else NODE
        cv2.rectangle(canvas, (x, y), (x + w, y + h), body, -1)
        cv2.rectangle(canvas, (x, y), (x + w, y + TITLE_H), PACK if node["type"].startswith("PoseAnimate") else TITLE, -1)
        cv2.putText(canvas, node.get("title") or node["type"], (x + 8, y + 18), FONT, 0.5, TEXT, 1, cv2.LINE_AA)
        if note:
            text = " ".join(str(v) for v in node.get("widgets_values", []))
            for i, line in enumerate(_wrap(text, max(10, w // 8))[: max(0, (h - TITLE_H) // 16)]):
                cv2.putText(canvas, line, (x + 8, y + TITLE_H + 16 + 16 * i), FONT, 0.4, TEXT, 1, cv2.LINE_AA)
            continue
        for i, slot in enumerate(node.get("inputs", [])):
            sx, sy = _slot_xy(node, i, False, origin)
            cv2.circle(canvas, (sx, sy), 5, TYPE_COLOURS.get(slot.get("type"), (200, 200, 200)), -1, cv2.LINE_AA)
            cv2.putText(canvas, slot["name"], (sx + 10, sy + 4), FONT, 0.4, TEXT, 1, cv2.LINE_AA)
        for i, slot in enumerate(node.get("outputs", [])):
            sx, sy = _slot_xy(node, i, True, origin)
            cv2.circle(canvas, (sx, sy), 5, TYPE_COLOURS.get(slot.get("type"), (200, 200, 200)), -1, cv2.LINE_AA)
            (tw, _), _ = cv2.getTextSize(slot["name"], FONT, 0.4, 1)
            cv2.putText(canvas, slot["name"], (sx - 10 - tw, sy + 4), FONT, 0.4, TEXT, 1, cv2.LINE_AA)
    for link in workflow.get("links", []):
        _, src, src_slot, dst, dst_slot, kind = link[:6]
        if src not in nodes or dst not in nodes:
            continue
        p0 = np.array(_slot_xy(nodes[src], src_slot, True, origin), float)
        p3 = np.array(_slot_xy(nodes[dst], dst_slot, False, origin), float)
        bend = max(40.0, abs(p3[0] - p0[0]) / 2)
        p1, p2 = p0 + (bend, 0), p3 - (bend, 0)
        t = np.linspace(0, 1, 40)[:, None]
        curve = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3
        cv2.polylines(canvas, [curve.astype(np.int32)], False, TYPE_COLOURS.get(kind, (200, 200, 200)), 2, cv2.LINE_AA)
    if scale != 1.0:
        canvas = cv2.resize(canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return canvas


def _wrap(text: str, width: int) -> list[str]:
    lines = []
    for para in text.replace("#", "").splitlines():
        words, line = para.split(), ""
        for word in words:
            if len(line) + len(word) + 1 > width:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflow", help="UI-format workflow JSON")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--scale", type=float, default=1.0, help="resize factor for the picture")
    args = parser.parse_args(argv)
    with open(args.workflow, encoding="utf-8") as fh:
        image = render(json.load(fh), args.scale)
    cv2.imwrite(args.out, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out} ({image.shape[1]}x{image.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
