"""POSE_KEYPOINT (comfyui_controlnet_aux) and OpenPose JSON reading and writing, with person tracking."""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile

import numpy as np

from .skeleton import KEYPOINT_NAMES, N_BODY, N_HAND

logger = logging.getLogger(__name__)

PART_KEYS = {"face": "face_keypoints_2d", "hand_left": "hand_left_keypoints_2d",
             "hand_right": "hand_right_keypoints_2d"}
DEFAULT_CANVAS = 512
# OpenPose's BODY_25 (the OpenPose binary's default output) -> COCO-18: drop mid-hip (8) and the feet (19-24).
BODY25_TO_COCO18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)


def _points(flat, name: str, where: str, expected: int | None = None) -> np.ndarray | None:
    """A flat [x, y, c, ...] list as (K, 3) float64, or None for a missing part."""
    if flat is None:
        return None
    arr = np.asarray(flat, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        return None
    if arr.size % 3:
        raise ValueError(f"{name}: {where} has {arr.size} numbers, not a multiple of 3 (x, y, confidence). "
                         "Fix: give each keypoint as x, y, confidence.")
    pts = arr.reshape(-1, 3)
    if expected == N_BODY and len(pts) == 25:
        pts = pts[list(BODY25_TO_COCO18)]
    if expected is not None and len(pts) != expected:
        raise ValueError(f"{name}: {where} has {len(pts)} keypoints, expected {expected} (OpenPose body). "
                         "Fix: use the 18-keypoint OpenPose/DWPose body format (COCO-18) or OpenPose BODY_25.")
    if not np.isfinite(pts).all():
        k = int(np.argwhere(~np.isfinite(pts))[0][0])
        label = f" ({KEYPOINT_NAMES[k]})" if expected == N_BODY else ""
        raise ValueError(f"{name}: NaN or infinite value in {where}, keypoint {k}{label}. "
                         "Fix: re-run pose detection, or mark the point missing as [0, 0, 0].")
    # comfyui_controlnet_aux's OpenPose Pose node writes a hand point it did not find as (-1, -1) with confidence 1
    pts[(pts[:, 2] <= 0) | ((pts[:, 0] == -1) & (pts[:, 1] == -1))] = 0.0
    return pts


def _frames(data, name: str) -> list[dict]:
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, (list, tuple)) or not data:
        raise ValueError(f"{name}: expected POSE_KEYPOINT data (a non-empty list of frames, each "
                         f"{{'people': [...], 'canvas_width': W, 'canvas_height': H}}), got {type(data).__name__}"
                         f"{' (empty)' if isinstance(data, (list, tuple)) else ''}. Fix: connect a DWPose/OpenPose "
                         "estimator's POSE_KEYPOINT output or load a pose JSON file.")
    for i, frame in enumerate(data):
        if not isinstance(frame, dict) or not isinstance(frame.get("people", []), (list, tuple)):
            raise ValueError(f"{name}: frame {i} is not a dict with a 'people' list. Fix: use the POSE_KEYPOINT "
                             "or OpenPose JSON format.")
    return list(data)


def _canvas(frame: dict, name: str, i: int) -> tuple[float, float] | None:
    w, h = frame.get("canvas_width"), frame.get("canvas_height")
    if w is None or h is None:
        return None
    try:
        w, h = float(w), float(h)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: frame {i} has a non-numeric canvas size. Fix: set canvas_width and "
                         "canvas_height to positive pixel counts.") from None
    if not (math.isfinite(w) and math.isfinite(h)) or w <= 0 or h <= 0:
        raise ValueError(f"{name}: frame {i} has canvas size {w:g}x{h:g}; it must be positive. Fix: set "
                         "canvas_width and canvas_height to the image size in pixels.")
    return w, h


def _person_box(body: np.ndarray, parts: dict | None = None) -> tuple[np.ndarray, float, float, float] | None:
    """Centre, box area, mean confidence and box diagonal of a person's body keypoints (of its hands/face
    when it has no body keypoints)."""
    pts = body[body[:, 2] > 0]
    if not len(pts) and parts:
        found = [a[a[:, 2] > 0] for a in parts.values() if a is not None]
        pts = np.concatenate(found) if found else pts
    if not len(pts):
        return None
    extent = pts[:, :2].max(0) - pts[:, :2].min(0)
    return pts[:, :2].mean(0), float(np.prod(extent)), float(pts[:, 2].mean()), float(np.hypot(*extent))


def from_pose_keypoint(data, name: str = "data", with_parts: bool = False):
    """Read POSE_KEYPOINT / OpenPose JSON data into ``(sequence, width, height)``.

    ``data`` is a list of frames (or one frame) ``{"people": [...], "canvas_width": W, "canvas_height": H}``.
    Coordinates may be pixels (DWPose) or normalised 0..1 (OpenPose Pose node): when every present
    coordinate lies in [-0.5, 1.5] they are taken as normalised. The sequence is returned in pixels of the
    first frame's canvas ``(F, 18, 3)``; frames with no person are all zeros. With several people the
    largest one in the first populated frame is picked and tracked by proximity. With ``with_parts=True``
    a fourth value is returned: ``{"hand_left", "hand_right", "face"}`` arrays ``(F, K, 3)`` or None.
    """
    frames = _frames(data, name)
    canvases = [_canvas(fr, name, i) for i, fr in enumerate(frames)]

    # Per frame: candidate people as (body, parts).
    people: list[list[tuple[np.ndarray, dict]]] = []
    all_xy = []
    for i, frame in enumerate(frames):
        cands = []
        for p, person in enumerate(frame.get("people") or []):
            if not isinstance(person, dict):
                continue
            body = _points(person.get("pose_keypoints_2d"), name, f"frame {i} person {p} pose_keypoints_2d", N_BODY)
            if body is None:  # no body keypoints: the person may still carry hands or a face
                body = np.zeros((N_BODY, 3))
            parts = {k: _points(person.get(v), name, f"frame {i} person {p} {v}",
                                N_HAND if k.startswith("hand") else None) for k, v in PART_KEYS.items()}
            cands.append((body, parts))
            for arr in [body, *parts.values()]:
                if arr is not None:
                    all_xy.append(arr[arr[:, 2] > 0, :2])
        people.append(cands)
    xy = np.concatenate(all_xy) if all_xy else np.zeros((0, 2))
    # pixel keypoints never all fit in 1.5 px, while normalised ones may stray a little off the canvas
    normalised = xy.size > 0 and float(xy.min()) >= -0.5 and float(xy.max()) <= 1.5

    known = [c for c in canvases if c is not None]
    if known:
        width, height = known[0]
    elif normalised or xy.size == 0:
        width = height = float(DEFAULT_CANVAS)
        logger.warning("%s: no canvas size in the pose data; assuming %dx%d", name, DEFAULT_CANVAS, DEFAULT_CANVAS)
    else:
        width, height = (float(64 * math.ceil((v + 1) / 64)) for v in xy.max(0))
        logger.warning("%s: no canvas size in the pose data; using %gx%g from the keypoint extent", name, width, height)
    width, height = int(round(width)), int(round(height))

    n = len(frames)
    seq = np.zeros((n, N_BODY, 3))
    parts_out: dict[str, np.ndarray | None] = {k: None for k in PART_KEYS}
    part_len = {}
    chosen_prev: np.ndarray | None = None
    chosen_idx = None
    reach = 0.0  # the tracked person's largest box diagonal so far
    boxes_per_frame = [[_person_box(b, parts) for b, parts in cands] for cands in people]
    # in multi-person data, a frame whose nearest person is further than the tracked person's size from
    # where it was is someone else: that frame becomes a gap rather than switching people
    multi = any(sum(b is not None for b in boxes) > 1 for boxes in boxes_per_frame)
    for i, cands in enumerate(people):
        boxes = boxes_per_frame[i]
        valid = [k for k, b in enumerate(boxes) if b is not None]
        if not valid:
            continue
        if chosen_prev is None:
            k = max(valid, key=lambda q: (boxes[q][1], boxes[q][2]))
            if len(cands) > 1:
                logger.info("%s: %d people in frame %d; picked person %d (largest), tracking it by proximity",
                            name, len(cands), i, k)
        else:
            k = min(valid, key=lambda q: float(np.hypot(*(boxes[q][0] - chosen_prev))))
            if multi and reach > 0 and float(np.hypot(*(boxes[k][0] - chosen_prev))) > reach:
                logger.info("%s: frame %d: the tracked person is not there (nearest person too far); left as a "
                            "gap", name, i)
                continue
            if len(cands) > 1 and k != chosen_idx:
                logger.info("%s: frame %d: tracked person is now entry %d of %d", name, i, k, len(cands))
        chosen_prev, chosen_idx = boxes[k][0], k
        reach = max(reach, boxes[k][3])
        body, parts = cands[k]
        fw, fh = canvases[i] if canvases[i] is not None else (width, height)
        sx, sy = (width, height) if normalised else (width / fw, height / fh)
        seq[i] = _to_pixels(body, sx, sy)
        for key, arr in parts.items():
            if arr is None:
                continue
            if parts_out[key] is None:
                part_len[key] = len(arr)
                parts_out[key] = np.zeros((n, len(arr), 3))
            if len(arr) == part_len[key]:
                parts_out[key][i] = _to_pixels(arr, sx, sy)
    if normalised:
        logger.info("%s: normalised 0-1 coordinates, scaled to %dx%d pixels", name, width, height)
    if with_parts:
        return seq, width, height, parts_out
    return seq, width, height


def _to_pixels(pts: np.ndarray, sx: float, sy: float) -> np.ndarray:
    out = pts.copy()
    ok = out[:, 2] > 0
    out[ok, 0] *= sx
    out[ok, 1] *= sy
    out[~ok] = 0.0
    return out


def _flat(pts: np.ndarray, sx: float, sy: float) -> list[float]:
    out = pts.astype(np.float64).copy()
    ok = out[:, 2] > 0
    out[ok, 0] *= sx
    out[ok, 1] *= sy
    out[~ok] = 0.0
    return [float(v) for v in out.reshape(-1)]


def to_pose_keypoint(sequence, width: int, height: int, parts: dict | None = None,
                     normalized: bool = False) -> list[dict]:
    """Write a pixel sequence ``(F, 18, 3)`` as POSE_KEYPOINT: one dict per frame with one person
    (``people`` is empty for a frame with no keypoints). ``normalized=True`` writes 0..1 coordinates
    (as the OpenPose Pose node does); the default writes pixels (as DWPose does)."""
    from .skeleton import as_sequence

    seq = as_sequence(sequence, "sequence")
    for label, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"{label}: the canvas {label} must be a whole number of pixels > 0, got {v!r}. "
                             f"Fix: give the canvas {label} of the image the poses belong to.")
    sx, sy = (1.0 / width, 1.0 / height) if normalized else (1.0, 1.0)
    parts = dict(parts or {})
    for key in PART_KEYS:
        if parts.get(key) is None:
            continue
        arr = np.asarray(parts[key], dtype=np.float64)
        if arr.ndim != 3 or arr.shape[0] != len(seq) or arr.shape[2] != 3:
            raise ValueError(f"parts: {key} must be keypoints of shape ({len(seq)}, K, 3) for the {len(seq)} "
                             f"frames, got shape {arr.shape}. Fix: pass the parts returned with the sequence.")
        if not np.isfinite(arr).all():
            raise ValueError(f"parts: {key} holds NaN or infinite values. Fix: mark such points missing as [0, 0, 0].")
        parts[key] = arr
    out = []
    for f, pose in enumerate(seq):
        person = {"pose_keypoints_2d": _flat(pose, sx, sy)}
        any_part = False
        for key, field in PART_KEYS.items():
            arr = parts.get(key)
            if arr is None:
                person[field] = None
            else:
                person[field] = _flat(np.asarray(arr[f], dtype=np.float64), sx, sy)
                any_part = any_part or bool((np.asarray(arr[f])[:, 2] > 0).any())
        has_body = bool((pose[:, 2] > 0).any())
        out.append({"people": [person] if (has_body or any_part) else [],
                    "canvas_width": int(width), "canvas_height": int(height)})
    return out


def load_pose_json(path, name: str = "pose_file") -> list[dict]:
    """Load POSE_KEYPOINT data from a JSON file (a list of frames or one frame) or a folder of OpenPose
    JSON files, one per frame (sorted by name)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.lower().endswith(".json"))
        if not files:
            raise ValueError(f"{name}: the folder {path!r} holds no .json files. Fix: put one OpenPose JSON "
                             "file per frame in it, or pick a single JSON file.")
        frames = []
        for f in files:
            frames.extend(_frames(_read_json(os.path.join(path, f), name), name))
        return frames
    return _frames(_read_json(path, name), name)


def _read_json(path: str, name: str):
    if not os.path.isfile(path):
        raise ValueError(f"{name}: file not found: {path!r}. Fix: put the JSON file in ComfyUI's input folder "
                         "or pick one of the listed files.")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name}: {os.path.basename(path)} is not valid JSON ({exc}). Fix: use a POSE_KEYPOINT "
                         "or OpenPose JSON file.") from None


def _json_value(value):
    """numpy scalars and arrays as plain JSON values (POSE_KEYPOINT built in Python may hold them)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")


def save_pose_json(data, path, name: str = "pose") -> str:
    """Write POSE_KEYPOINT data (a list of frames, or one frame) to ``path`` as JSON that
    :func:`load_pose_json` reads back to the same frames; returns the path. The data are checked first
    (:func:`from_pose_keypoint`), then written whole: to a temporary file beside ``path``, renamed over it."""
    frames = _frames(data, name)
    from_pose_keypoint(frames, name)
    try:
        text = json.dumps(frames, default=_json_value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: the pose data cannot be written as JSON ({exc}). Fix: pass POSE_KEYPOINT "
                         "frames of plain numbers, lists and dicts.") from None
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
