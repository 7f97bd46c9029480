"""Render a contact sheet PNG of a pose sequence before and after PATA.

    python scripts/pose_contact_sheet.py assets/poses/walk.json --source assets/poses/character.json \
        --transition 6 --mode retarget --out docs/pata_contact_sheet.png

Top row ("before"): the source pose, then target frames as loaded, each on its own canvas.
Bottom rows ("after"): the PATA output on the source canvas: frame 0 (the source, "S"), the transition
frames ("T") and the aligned targets ("A"), sampled evenly when there are more than --columns x 2.
Inputs are POSE_KEYPOINT / OpenPose JSON files (a list of frames, one frame, or a folder of per-frame files).
"""
from __future__ import annotations

import pathlib
import sys

import cv2
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import pata  # noqa: E402
from _cli import CliError, Parser, atomic_output, int_at_least, output_path, readable_file  # noqa: E402

LABEL_H = 18


def _thumb(image: np.ndarray, height: int, label: str, colour=(230, 230, 230)) -> np.ndarray:
    h, w = image.shape[:2]
    width = max(1, int(round(w * height / h)))
    thumb = cv2.resize((image * 255).astype(np.uint8), (width, height), interpolation=cv2.INTER_AREA)
    cv2.rectangle(thumb, (0, 0), (width - 1, height - 1), (70, 70, 70), 1)
    bar = np.full((LABEL_H, width, 3), 25, np.uint8)
    cv2.putText(bar, label, (4, LABEL_H - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.42, colour, 1, cv2.LINE_AA)
    return np.concatenate([bar, thumb], axis=0)


def _row(thumbs: list[np.ndarray], width: int, gap: int = 4) -> np.ndarray:
    h = max(t.shape[0] for t in thumbs)
    row = np.full((h, width, 3), 12, np.uint8)
    x = 0
    for t in thumbs:
        if x + t.shape[1] > width:
            break
        row[: t.shape[0], x: x + t.shape[1]] = t
        x += t.shape[1] + gap
    return row


def _title(text: str, width: int) -> np.ndarray:
    bar = np.full((26, width, 3), 12, np.uint8)
    cv2.putText(bar, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return bar


def _pick(n: int, k: int) -> list[int]:
    return sorted(set(np.linspace(0, n - 1, min(n, k)).round().astype(int).tolist()))


def contact_sheet(target_path, source_path, transition: int = 6, mode: str = "similarity", repair: bool = True,
                  columns: int = 8, thumb_height: int = 160) -> np.ndarray:
    """Build the contact sheet as an RGB uint8 image."""
    src_seq, sw, sh = pata.from_pose_keypoint(pata.load_pose_json(source_path, "source"), "source")
    tgt_seq, tw, th = pata.from_pose_keypoint(pata.load_pose_json(target_path, "target"), "target")
    out = pata.build_sequence(src_seq[0], tgt_seq, transition, mode=mode, repair=repair)

    before_idx = _pick(len(tgt_seq), columns - 1)
    before = [_thumb(pata.render_pose(src_seq[:1], sw, sh)[0], thumb_height, "source")]
    before += [_thumb(pata.render_pose(tgt_seq[i:i + 1], tw, th)[0], thumb_height, f"target {i}") for i in before_idx]

    after_idx = sorted(set([0, *range(1, 1 + transition), *_pick(len(out), 2 * columns)]))
    if len(after_idx) > 2 * columns:
        after_idx = _pick(len(out), 2 * columns)
    images = pata.render_pose(out[after_idx], sw, sh)
    after = []
    for img, i in zip(images, after_idx):
        kind = "S" if i == 0 else ("T" if i <= transition else "A")
        colour = {"S": (255, 255, 255), "T": (255, 200, 80), "A": (120, 220, 255)}[kind]
        after.append(_thumb(img, thumb_height, f"{kind} {i}", colour))

    width = max(sum(t.shape[1] + 4 for t in before), sum(t.shape[1] + 4 for t in after[:columns]))
    rows = [_title(f"before: source + target frames ({len(tgt_seq)} frames, {tw}x{th})", width), _row(before, width),
            _title(f"after PATA ({mode}, {transition} transition frames, repair {'on' if repair else 'off'}): "
                   f"{len(out)} frames on the source canvas {sw}x{sh}", width)]
    for start in range(0, len(after), columns):
        rows.append(_row(after[start:start + columns], width))
    return np.concatenate(rows, axis=0)


def check_pose_file(flag: str, path) -> list[dict]:
    """The frames of a pose file or folder, or CliError naming ``flag`` when it is missing or no pose file."""
    path = pathlib.Path(path)
    if not path.is_dir():
        readable_file(flag, path, "pose file")
    try:
        frames = pata.load_pose_json(path, flag)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not any("people" in frame for frame in frames):
        raise CliError(f"{flag}: {path} is not a pose file (no frame has a 'people' list). Fix: give a "
                       f"POSE_KEYPOINT or OpenPose JSON file, e.g. assets/poses/walk.json")
    return frames


def build_parser() -> Parser:
    ap = Parser(prog="pose_contact_sheet.py", description="Contact sheet of a pose sequence before and after PATA.")
    ap.add_argument("target", help="target pose sequence (POSE_KEYPOINT / OpenPose JSON file or folder)")
    ap.add_argument("--source", default=str(ROOT / "assets" / "poses" / "character.json"),
                    help="source pose file (its first frame is used); default: assets/poses/character.json")
    ap.add_argument("--transition", type=int_at_least(0), default=6, help="transition frames (default 6)")
    ap.add_argument("--mode", choices=("similarity", "retarget"), default="similarity")
    ap.add_argument("--no-repair", action="store_true", help="turn temporal repair off")
    ap.add_argument("--columns", type=int_at_least(1, 64), default=8, help="thumbnails per row (default 8)")
    ap.add_argument("--thumb-height", type=int_at_least(16, 2048), default=160,
                    help="thumbnail height in pixels (default 160)")
    ap.add_argument("--out", default="pata_contact_sheet.png", help="output PNG path")
    return ap


def main(argv=None) -> None:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        out = output_path("--out", args.out, (".png",))
        check_pose_file("TARGET", args.target)
        check_pose_file("--source", args.source)
        sheet = contact_sheet(args.target, args.source, args.transition, args.mode, not args.no_repair,
                              args.columns, args.thumb_height)
    except CliError as exc:
        ap.fail(exc)
    except ValueError as exc:  # PATA's own messages name the input ("target: ...", "source: ...") and the fix
        ap.fail(CliError(str(exc).replace("source: ", "--source: ", 1).replace("target: ", "TARGET: ", 1)))
    with atomic_output(out) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
            raise OSError(f"OpenCV could not write {out}")
    print(f"wrote {out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
