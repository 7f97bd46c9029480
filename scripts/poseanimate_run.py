#!/usr/bin/env python3
"""Run a bundled PoseAnimate workflow headlessly against a running ComfyUI server.

    python scripts/poseanimate_run.py --workflow full --image me.png --pose examples/walk.json \
        --source-pose me_pose.json --prompt "a knight in silver armour" --seed 7 --out out/knight

Pose files (--pose, --source-pose): a local JSON file is checked and uploaded; ``examples/<name>.json`` names a
pose file bundled with the pack (walk, wave, turn, dance, character) and ``input:<name>`` a file already in the
server's input folder; both are passed to the server as names. A local path that does not exist is an error.
Workflow ``dwpose`` finds the poses itself (DWPose Estimator, from comfyui_controlnet_aux): give it the picture
(--image) and the driving video (--video, a local video file or ``input:<name>``) instead of pose files.

    python scripts/poseanimate_run.py --workflow dwpose --image me.png --video dance.mp4 --prompt "a knight"

What it does, with the standard library only:

1. loads the API-format workflow (``workflows/api/<name>.json`` or any API-format JSON file);
2. uploads the character image (and the pose files and the driving video, when they are local files) with
   ``POST /upload/image``;
3. sets the image, pose files or video, prompt, subject word, seed and sizes in the graph, finding nodes by
   ``class_type`` and title rather than by node id, plus any ``--set NODE.INPUT=VALUE`` overrides;
4. queues it with ``POST /prompt`` (with a ``client_id``) and prints progress lines while it polls
   ``GET /queue`` and ``GET /history/{prompt_id}``;
5. downloads every saved output (frames, and the video when the graph makes one) with ``GET /view``
   into the output folder and writes ``poseanimate_run.json`` there listing them.

Every argument and local file is checked before the server is contacted; bad input gets one line naming the
flag and the fix. Downloaded files are written whole (temporary name, renamed when complete).

Exit status: 0 done; 1 bad arguments or local files; 2 the server rejected the graph (validation errors,
printed per node); 3 the graph failed while running (the node's own message is printed); 4 interrupted;
5 timed out; 6 the server could not be reached.
"""
from __future__ import annotations

import base64
import copy
import json
import mimetypes
import os
import pathlib
import socket
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKFLOW_DIR = ROOT / "workflows" / "api"
EXAMPLES_DIR = ROOT / "assets" / "poses"
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))

from _cli import CliError, Parser, atomic_output, image_file, int_at_least, float_between  # noqa: E402
from _cli import readable_file  # noqa: E402

EXIT_OK, EXIT_USAGE, EXIT_REJECTED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TIMEOUT, EXIT_UNREACHABLE = range(7)

POSE_NODE = "PoseAnimateLoadPoseSequence"
POSE_INPUTS = ("pose_file", "pose_path", "path", "file", "poses")
EXAMPLE_PREFIX, SERVER_PREFIX = "examples/", "input:"
MASK_NODE = "PoseAnimateCrossAttentionMaskExtract"
VIDEO_NODE = "LoadVideo"
VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".mov", ".gif", ".webp", ".apng"}


class RunError(Exception):
    """A failure with a message for the user and an exit status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------- HTTP


class Client:
    """The few ComfyUI routes the command needs (server.py, ComfyUI 0.3.64)."""

    def __init__(self, server: str, timeout: float = 30.0):
        if "://" not in server:
            server = "http://" + server
        self.base = server.rstrip("/")
        self.timeout = timeout

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (user-given server)
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RunError(f"cannot reach ComfyUI at {self.base}: {reason}. Is the server running? "
                           f"Start it with `python main.py --listen 127.0.0.1 --port 8188` or pass --server.",
                           EXIT_UNREACHABLE) from None

    def get_json(self, path: str):
        status, data = self._request("GET", path)
        if status != 200:
            raise RunError(f"GET {path} answered HTTP {status}: {data[:300]!r}", EXIT_FAILED)
        return json.loads(data)

    def upload(self, path: pathlib.Path, subfolder: str = "", overwrite: bool = False) -> str:
        """POST /upload/image (multipart); returns the name to put in the graph (``subfolder/name``)."""
        boundary = "----poseanimate" + uuid.uuid4().hex
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        parts = []
        for name, value in (("type", "input"), ("subfolder", subfolder), ("overwrite", "true" if overwrite else "false")):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n".encode() + path.read_bytes() + b"\r\n"
        )
        parts.append(f"--{boundary}--\r\n".encode())
        status, data = self._request("POST", "/upload/image", b"".join(parts),
                                     {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        if status != 200:
            raise RunError(f"uploading {path} failed: HTTP {status} {data[:300]!r}", EXIT_FAILED)
        info = json.loads(data)
        return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else info["name"]

    def queue_prompt(self, graph: dict, client_id: str) -> str:
        body = json.dumps({"prompt": graph, "client_id": client_id}).encode()
        status, data = self._request("POST", "/prompt", body, {"Content-Type": "application/json"})
        try:
            answer = json.loads(data)
        except ValueError:
            answer = None
        if status != 200 or not isinstance(answer, dict) or "prompt_id" not in answer:
            raise RunError(format_rejection(answer, status, data, graph), EXIT_REJECTED)
        return answer["prompt_id"]

    def view(self, item: dict) -> bytes:
        query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                        "type": item.get("type", "output")})
        status, data = self._request("GET", "/view?" + query)
        if status != 200:
            raise RunError(f"downloading {item['filename']} failed: HTTP {status}", EXIT_FAILED)
        return data


def _node_label(graph: dict, node_id: str, class_type: str | None = None) -> str:
    node = graph.get(str(node_id), {})
    title = node.get("_meta", {}).get("title")
    class_type = class_type or node.get("class_type", "?")
    return f"node {node_id} ({title or class_type})" if title and title != class_type else f"node {node_id} ({class_type})"


def format_rejection(answer, status: int, raw: bytes, graph: dict) -> str:
    """The server's own words for a 400 from /prompt: the error and every node error."""
    if not isinstance(answer, dict):
        return f"ComfyUI rejected the workflow: HTTP {status}: {raw[:500].decode(errors='replace')}"
    lines = ["ComfyUI rejected the workflow:"]
    err = answer.get("error") or {}
    if isinstance(err, dict):
        head = err.get("message", "")
        details = err.get("details", "")
        lines.append(f"  {head}" + (f": {details}" if details and details not in head else ""))
    elif err:
        lines.append(f"  {err}")
    for node_id, info in (answer.get("node_errors") or {}).items():
        for e in info.get("errors", []):
            msg = e.get("message", "")
            det = e.get("details", "")
            lines.append(f"  {_node_label(graph, node_id, info.get('class_type'))}: {msg}" + (f": {det}" if det else ""))
    return "\n".join(lines)


class Progress:
    """Optional live progress from ComfyUI's ``/ws?clientId=...`` websocket (standard library only).

    Reads the JSON text messages ComfyUI sends to this client (``executing``, ``progress``); binary preview
    frames are skipped. Any failure just turns it off: polling /history still finishes the run.
    """

    def __init__(self, base: str, client_id: str, timeout: float = 5.0):
        url = urllib.parse.urlsplit(base)
        if url.scheme != "http":
            raise OSError("live progress needs plain http")
        self.sock = socket.create_connection((url.hostname, url.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = (url.path.rstrip("/") or "") + f"/ws?clientId={urllib.parse.quote(client_id)}"
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise OSError("websocket handshake closed")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise OSError("no websocket upgrade")

    def _frame(self):
        """One complete frame (opcode, payload) from the buffer, or None."""
        if len(self.buf) < 2:
            return None
        b0, b1 = self.buf[0], self.buf[1]
        n, pos = b1 & 0x7F, 2
        if n == 126:
            if len(self.buf) < 4:
                return None
            n, pos = struct.unpack(">H", self.buf[2:4])[0], 4
        elif n == 127:
            if len(self.buf) < 10:
                return None
            n, pos = struct.unpack(">Q", self.buf[2:10])[0], 10
        if b1 & 0x80:
            pos += 4  # servers never mask, but skip a mask key if one is there
        if len(self.buf) < pos + n:
            return None
        payload, self.buf = self.buf[pos:pos + n], self.buf[pos + n:]
        return b0 & 0x0F, payload

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def events(self, wait: float) -> list[dict]:
        """Messages that arrive within ``wait`` seconds."""
        out, end = [], time.monotonic() + wait
        while True:
            frame = self._frame()
            while frame is not None:
                opcode, payload = frame
                if opcode == 1:
                    try:
                        out.append(json.loads(payload))
                    except ValueError:
                        pass
                elif opcode == 9:
                    self._send(10, payload[:125])
                elif opcode == 8:
                    raise OSError("websocket closed")
                frame = self._frame()
            left = end - time.monotonic()
            if left <= 0:
                return out
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return out
            if not chunk:
                raise OSError("websocket closed")
            self.buf += chunk

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ------------------------------------------------------------------------------------- graph editing


def load_workflow(name_or_path: str) -> dict:
    path = pathlib.Path(name_or_path)
    if not path.is_file():
        candidate = WORKFLOW_DIR / f"{name_or_path}.json"
        if not candidate.is_file():
            names = sorted(p.stem for p in WORKFLOW_DIR.glob("*.json"))
            raise RunError(f"--workflow: no file {name_or_path!r} and no bundled workflow of that name; "
                           f"bundled: {', '.join(names) or 'none'}", EXIT_USAGE)
        path = candidate
    try:
        graph = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RunError(f"--workflow: cannot read {path} ({exc.strerror or exc}). Fix: check the file's permissions",
                       EXIT_USAGE) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunError(f"--workflow: {path} is not valid JSON ({exc}). Fix: pass an API-format workflow JSON "
                       f"(ComfyUI's 'Export (API)') or a bundled name: full, fast, remix, long", EXIT_USAGE) from None
    if not isinstance(graph, dict):
        raise RunError(f"--workflow: {path} is not an API-format ComfyUI workflow (a JSON object of nodes). "
                       f"Fix: export one with ComfyUI's 'Export (API)'", EXIT_USAGE)
    if "nodes" in graph and "links" in graph:
        raise RunError(f"--workflow: {path} is a UI-format workflow; pass its API-format twin "
                       f"(workflows/api/) or export one with ComfyUI's 'Export (API)'", EXIT_USAGE)
    if not graph or not all(isinstance(n, dict) and "class_type" in n for n in graph.values()):
        raise RunError(f"--workflow: {path} is not an API-format ComfyUI workflow (nodes with a class_type). "
                       f"Fix: export one with ComfyUI's 'Export (API)'", EXIT_USAGE)
    return graph


def _usage(exc: CliError) -> RunError:
    return RunError(str(exc), EXIT_USAGE)


def check_pose_file(flag: str, path: pathlib.Path) -> None:
    """A local pose file: readable JSON in the POSE_KEYPOINT / OpenPose shape (frames with a 'people' list)."""
    try:
        readable_file(flag, path, "pose file")
    except CliError as exc:
        raise RunError(f"{exc}; or name a bundled pose as {EXAMPLE_PREFIX}<name>.json or a file in the server's "
                       f"input folder as {SERVER_PREFIX}<name>", EXIT_USAGE) from None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunError(f"{flag}: {path} is not valid JSON ({exc}). Fix: give a POSE_KEYPOINT or OpenPose JSON "
                       f"file", EXIT_USAGE) from None
    frames = [data] if isinstance(data, dict) else data
    if not (isinstance(frames, list) and frames and all(isinstance(f, dict) for f in frames)
            and any(isinstance(f.get("people"), list) for f in frames)):
        raise RunError(f"{flag}: {path} is not a pose file (expected a POSE_KEYPOINT / OpenPose JSON: frames with "
                       f"a 'people' list). Fix: give a pose JSON such as assets/poses/walk.json", EXIT_USAGE)


def pose_argument(flag: str, value: str) -> tuple[str, object]:
    """('local', Path) for a local file, ('name', str) for a bundled example or a server input file."""
    if value.startswith(SERVER_PREFIX):
        name = value[len(SERVER_PREFIX):]
        if not name:
            raise RunError(f"{flag}: {value!r} names no file. Fix: {flag} {SERVER_PREFIX}my_poses.json", EXIT_USAGE)
        return "name", name
    if value.startswith(EXAMPLE_PREFIX):
        name = value[len(EXAMPLE_PREFIX):]
        if EXAMPLES_DIR.is_dir():
            names = sorted(p.name for p in EXAMPLES_DIR.glob("*.json"))
            if name not in names:
                raise RunError(f"{flag}: {value!r} is not a bundled pose file. Fix: use one of "
                               f"{', '.join(EXAMPLE_PREFIX + n for n in names)}", EXIT_USAGE)
        return "name", value
    path = pathlib.Path(value)
    check_pose_file(flag, path)
    return "local", path


def video_argument(flag: str, value: str) -> tuple[str, object]:
    """('local', Path) for a local video file, ('name', str) for a file in the server's input folder."""
    if value.startswith(SERVER_PREFIX):
        name = value[len(SERVER_PREFIX):]
        if not name:
            raise RunError(f"{flag}: {value!r} names no file. Fix: {flag} {SERVER_PREFIX}my_video.mp4", EXIT_USAGE)
        return "name", name
    try:
        path = readable_file(flag, value, "video file")
    except CliError as exc:
        raise RunError(f"{exc}; or name a file in the server's input folder as {SERVER_PREFIX}<name>",
                       EXIT_USAGE) from None
    kind = mimetypes.guess_type(path.name)[0] or ""
    if not kind.startswith("video/"):
        raise RunError(f"{flag}: {path} is not a video file by its name (ComfyUI's Load Video lists video files "
                       f"only). Fix: give an .mp4, .webm, .mov or .mkv file", EXIT_USAGE)
    return "local", path


def check_arguments(args) -> None:
    """Every check on the command line and the local files, before the workflow is loaded or a server is
    contacted. Stores the parsed pose and video arguments on ``args`` (``pose_spec``, ``source_pose_spec``,
    ``video_spec``)."""
    try:
        if args.image:
            image_file("--image", args.image)
    except CliError as exc:
        raise _usage(exc) from None
    args.pose_spec = pose_argument("--pose", args.pose) if args.pose else None
    args.source_pose_spec = pose_argument("--source-pose", args.source_pose) if args.source_pose else None
    args.video_spec = video_argument("--video", args.video) if args.video else None
    specs = [x for x in (args.pose_spec, args.source_pose_spec) if x and x[0] == "local"]
    if len(specs) == 2 and specs[0][1].name == specs[1][1].name and \
            specs[0][1].read_bytes() != specs[1][1].read_bytes():
        raise RunError(f"--source-pose: {specs[1][1]} has the same file name as --pose {specs[0][1]} (both are "
                       f"uploaded to input/poseanimate/). Fix: rename one of them", EXIT_USAGE)
    for axis in ("width", "height"):
        value = getattr(args, axis)
        if value is not None and value % 8:
            raise RunError(f"--{axis}: {value} is not a multiple of 8 (SD1.5 latents are 1/8 of the image). "
                           f"Fix: e.g. --{axis} {max(8, value // 8 * 8)}", EXIT_USAGE)
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise RunError(f"--out: {out} is a file. Fix: name a folder for the outputs (it is created if missing)",
                       EXIT_USAGE)


def find_nodes(graph: dict, class_type: str | None = None, title: str | None = None) -> list[str]:
    """Node ids whose class_type equals ``class_type`` and whose title contains ``title`` (case-insensitive)."""
    out = []
    for node_id, node in graph.items():
        if class_type and node.get("class_type") != class_type:
            continue
        if title and title.lower() not in node.get("_meta", {}).get("title", "").lower():
            continue
        out.append(node_id)
    return sorted(out, key=lambda i: (len(i), i))


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def set_input(graph: dict, node_id: str, name: str, value) -> None:
    inputs = graph[node_id].setdefault("inputs", {})
    if is_link(inputs.get(name)):
        raise RunError(f"{_node_label(graph, node_id)} input {name!r} is connected to another node; "
                       f"set the value on that node instead", EXIT_USAGE)
    inputs[name] = value


def resolve_node(graph: dict, ref: str) -> str:
    """A node by id, exact title or class_type (must be unique)."""
    if ref in graph:
        return ref
    for key in ("title", "class"):
        hits = [i for i, n in graph.items()
                if (n.get("_meta", {}).get("title", "") if key == "title" else n.get("class_type")) == ref]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise RunError(f"--set: {ref!r} matches nodes {hits}; use a node id", EXIT_USAGE)
    raise RunError(f"--set: no node with id, title or class_type {ref!r}", EXIT_USAGE)


def _widget_targets(graph: dict, names: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(i, name) for i, n in graph.items() for name in names
            if name in n.get("inputs", {}) and not is_link(n["inputs"][name])]


def apply_settings(graph: dict, args, client: Client | None) -> tuple[dict, list[str]]:
    """Return a copy of ``graph`` with the command-line settings applied, and notes on what was set."""
    graph = copy.deepcopy(graph)
    notes = []
    if not hasattr(args, "pose_spec"):
        check_arguments(args)

    if args.image:
        image = pathlib.Path(args.image)
        ids = find_nodes(graph, "LoadImage", "source") or find_nodes(graph, "LoadImage")
        if not ids:
            raise RunError("--image: the workflow has no LoadImage node", EXIT_USAGE)
        name = client.upload(image) if client else image.name
        set_input(graph, ids[0], "image", name)
        notes.append(f"image -> {name} ({_node_label(graph, ids[0])})")
        has_source_loader = any("source" in graph[i].get("_meta", {}).get("title", "").lower()
                                for i in find_nodes(graph, POSE_NODE))
        if args.source_pose_spec is None and has_source_loader:
            notes.append("warning: no --source-pose: the workflow's sample source pose (examples/character.json) "
                         "stands for your character's pose; give your picture's pose with --source-pose")

    for flag, spec, role in (("--pose", args.pose_spec, "sequence"), ("--source-pose", args.source_pose_spec, "source")):
        if spec is None:
            continue
        loaders = find_nodes(graph, POSE_NODE)
        source_ids = [i for i in loaders if "source" in graph[i].get("_meta", {}).get("title", "").lower()]
        ids = source_ids if role == "source" else [i for i in loaders if i not in source_ids]
        if not ids:
            where = "titled 'Source pose'" if role == "source" else "for the target poses"
            raise RunError(f"{flag}: the workflow has no {POSE_NODE} node {where}. Fix: leave {flag} out or use a "
                           f"bundled workflow (full, fast, remix, long)", EXIT_USAGE)
        inputs = graph[ids[0]]["inputs"]
        field = next((f for f in POSE_INPUTS if f in inputs and not is_link(inputs[f])), None)
        if field is None:
            raise RunError(f"{flag}: {_node_label(graph, ids[0])} has none of the inputs {POSE_INPUTS}", EXIT_USAGE)
        kind, value = spec
        if kind == "local":
            value = client.upload(value, subfolder="poseanimate", overwrite=True) if client else \
                f"poseanimate/{value.name}"
        set_input(graph, ids[0], field, value)
        notes.append(f"{flag[2:]} -> {value} ({_node_label(graph, ids[0])}.{field})")

    if args.video_spec is not None:
        ids = find_nodes(graph, VIDEO_NODE, "driving") or find_nodes(graph, VIDEO_NODE)
        if not ids:
            raise RunError(f"--video: the workflow has no {VIDEO_NODE} node. Fix: leave --video out or use the "
                           f"bundled workflow dwpose", EXIT_USAGE)
        kind, value = args.video_spec
        if kind == "local":
            value = client.upload(value) if client else value.name
        set_input(graph, ids[0], "file", value)
        notes.append(f"video -> {value} ({_node_label(graph, ids[0])})")

    if args.prompt is not None:
        ids = find_nodes(graph, title="prompt")
        targets = [(i, f) for i in ids for f in ("value", "text")
                   if f in graph[i].get("inputs", {}) and not is_link(graph[i]["inputs"][f])
                   and "negative" not in graph[i].get("_meta", {}).get("title", "").lower()]
        if not targets:
            targets = [(i, "text") for i in find_nodes(graph, "CLIPTextEncode", "positive")
                       if not is_link(graph[i]["inputs"].get("text"))]
        targets += [(i, "prompt") for i in find_nodes(graph, MASK_NODE)
                    if "prompt" in graph[i]["inputs"] and not is_link(graph[i]["inputs"]["prompt"])]
        if not targets:
            raise RunError("--prompt: found no node titled '... prompt' with a text value and no "
                           "CLIPTextEncode titled 'Positive ...'", EXIT_USAGE)
        for i, field in targets:
            set_input(graph, i, field, args.prompt)
            notes.append(f"prompt -> {_node_label(graph, i)}.{field}")

    if args.negative is not None:
        ids = [i for i in find_nodes(graph, title="negative")
               if any(f in graph[i].get("inputs", {}) for f in ("text", "value"))]
        if not ids:
            raise RunError("--negative: no node titled 'Negative ...' with a text value", EXIT_USAGE)
        for i in ids:
            field = "text" if "text" in graph[i]["inputs"] else "value"
            set_input(graph, i, field, args.negative)
            notes.append(f"negative -> {_node_label(graph, i)}.{field}")

    if args.subject is not None:
        targets = [(i, f) for i in find_nodes(graph, MASK_NODE) for f in ("subject", "subject_words")
                   if f in graph[i]["inputs"]]
        if not targets:  # the bundled workflows run without MGDM by default (docs/workflows.md)
            notes.append(f"subject ignored: the workflow has no {MASK_NODE} node (MGDM is off)")
        for i, field in targets:
            set_input(graph, i, field, args.subject)
            notes.append(f"subject -> {_node_label(graph, i)}.{field}")

    if args.seed is not None:
        targets = _widget_targets(graph, ("seed", "noise_seed"))
        targets += [(i, "value") for i in find_nodes(graph, title="seed")
                    if (i, "value") not in targets and "value" in graph[i].get("inputs", {})]
        if not targets:
            notes.append("seed: the workflow has no seed input (it is deterministic); ignored")
        for i, field in targets:
            set_input(graph, i, field, args.seed)
            notes.append(f"seed -> {_node_label(graph, i)}.{field}")

    for axis in ("width", "height"):
        value = getattr(args, axis)
        if value is None:
            continue
        if value % 8:
            raise RunError(f"--{axis}: {value} is not a multiple of 8 (SD1.5 latents are 1/8 of the image)",
                           EXIT_USAGE)
        targets = [(i, f) for i, f in _widget_targets(graph, (axis,))
                   if {"width", "height"} <= set(graph[i]["inputs"])]
        if not targets:
            raise RunError(f"--{axis}: the workflow has no node with width and height inputs", EXIT_USAGE)
        for i, field in targets:
            set_input(graph, i, field, value)
            notes.append(f"{axis} -> {_node_label(graph, i)}.{field}")

    for item in args.set or []:
        ref, sep, value = item.partition("=")
        node_ref, dot, field = ref.rpartition(".")
        if not sep or not dot or not node_ref or not field:
            raise RunError(f"--set {item!r}: expected NODE.INPUT=VALUE (NODE = id, title or class_type)", EXIT_USAGE)
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        node_id = resolve_node(graph, node_ref)
        if field not in graph[node_id].get("inputs", {}):
            raise RunError(f"--set {item!r}: {_node_label(graph, node_id)} has no input {field!r}; it has "
                           f"{sorted(graph[node_id].get('inputs', {}))}", EXIT_USAGE)
        set_input(graph, node_id, field, parsed)
        notes.append(f"{field} -> {_node_label(graph, node_id)} = {parsed!r}")

    if args.prefix:
        for i, field in _widget_targets(graph, ("filename_prefix",)):
            set_input(graph, i, field, f"{args.prefix}/{graph[i]['inputs'][field].rsplit('/', 1)[-1]}")
    return graph, notes


# --------------------------------------------------------------------------------------- run, outputs


def _execution_messages(entry: dict) -> list:
    status = entry.get("status") or {}
    return [m for m in status.get("messages", []) if isinstance(m, (list, tuple)) and len(m) == 2]


def wait_for(client: Client, prompt_id: str, graph: dict, timeout: float, poll: float, log,
             live: Progress | None = None) -> dict:
    """Poll /queue and /history/{prompt_id} until the prompt is done; print progress lines (per node and step
    when ``live`` websocket progress is available); return the history entry."""
    start = time.monotonic()
    last_state, last_print = None, 0.0
    shown = {}
    while True:
        history = client.get_json(f"/history/{urllib.parse.quote(prompt_id)}")
        entry = history.get(prompt_id)
        if entry is not None:  # ComfyUI writes the history entry once the prompt has finished
            return entry
        elapsed = time.monotonic() - start
        queue = client.get_json("/queue")
        running = [item for item in queue.get("queue_running", []) if len(item) > 1 and item[1] == prompt_id]
        pending = [item[1] for item in sorted(queue.get("queue_pending", []), key=lambda it: it[0])]
        if running:
            state = "running"
        elif prompt_id in pending:
            state = f"queued, {pending.index(prompt_id)} ahead"
        else:
            state = "waiting for the server"
        if state != last_state or elapsed - last_print >= 10.0:
            log(f"[{elapsed:6.1f}s] {state}")
            last_state, last_print = state, elapsed
        if elapsed > timeout:
            raise RunError(f"timed out after {timeout:.0f}s waiting for prompt {prompt_id} ({state}); it may still "
                           f"run on the server", EXIT_TIMEOUT)
        if live is None:
            time.sleep(poll)
            continue
        try:
            events = live.events(poll)
        except OSError:
            live = None
            continue
        for ev in events:
            data = ev.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            now = time.monotonic() - start
            if ev.get("type") == "executing" and data.get("node") is not None:
                log(f"[{now:6.1f}s] {_node_label(graph, str(data['node']))}")
                last_print = now
            elif ev.get("type") == "progress" and data.get("max"):
                key = str(data.get("node"))
                value, top = int(data.get("value", 0)), int(data["max"])
                step = max(1, top // 10)
                if value != shown.get(key) and (value == top or value - shown.get(key, -step) >= step):
                    shown[key] = value
                    log(f"[{now:6.1f}s]   {_node_label(graph, key)}: {value}/{top}")
                    last_print = now


def check_status(entry: dict, graph: dict) -> None:
    status = entry.get("status") or {}
    if status.get("status_str", "success") == "success":
        return
    for event, data in _execution_messages(entry):
        if event == "execution_interrupted":
            raise RunError(f"interrupted at {_node_label(graph, data.get('node_id'), data.get('node_type'))}",
                           EXIT_INTERRUPTED)
        if event == "execution_error":
            where = _node_label(graph, data.get("node_id"), data.get("node_type"))
            raise RunError(f"the workflow failed at {where}: {data.get('exception_type', 'error')}: "
                           f"{data.get('exception_message', '').strip()}", EXIT_FAILED)
    raise RunError(f"the workflow failed (status {status.get('status_str')!r}, no error message from the server)",
                   EXIT_FAILED)


def saved_items(entry: dict, include_temp: bool) -> list[tuple[str, dict, bool]]:
    """(node_id, file item, animated) for every file the outputs name, in node order."""
    out = []
    for node_id, outputs in sorted((entry.get("outputs") or {}).items(), key=lambda kv: (len(kv[0]), kv[0])):
        animated = bool((outputs.get("animated") or [False])[0])
        for key, value in outputs.items():
            if not isinstance(value, list):
                continue
            for item in value:
                if isinstance(item, dict) and "filename" in item:
                    if item.get("type", "output") == "output" or include_temp:
                        out.append((node_id, item, animated or key in ("gifs", "video", "videos")))
    return out


def download(client: Client, entry: dict, out_dir: pathlib.Path, include_temp: bool, log) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    frames, videos = [], []
    for node_id, item, animated in saved_items(entry, include_temp):
        name = os.path.basename(item["filename"])
        sub = item.get("subfolder", "")
        rel = pathlib.Path(*[p for p in sub.replace("\\", "/").split("/") if p not in ("", ".", "..")]) / name
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        data = client.view(item)
        with atomic_output(target) as tmp:
            tmp.write_bytes(data)
        is_video = animated or pathlib.Path(name).suffix.lower() in VIDEO_SUFFIXES - {".webp"}
        (videos if is_video else frames).append(str(rel))
    log(f"saved {len(frames)} frame(s) and {len(videos)} video(s) to {out_dir}")
    return {"frames": frames, "videos": videos}


# ---------------------------------------------------------------------------------------------- main


class _Parser(Parser):
    usage_status = EXIT_USAGE


def build_parser() -> Parser:
    p = _Parser(
        prog="poseanimate_run",
        description="Run a bundled PoseAnimate workflow on a running ComfyUI server and download the frames.",
        epilog="Exit status: 0 done, 1 bad arguments, 2 graph rejected, 3 graph failed, 4 interrupted, "
               "5 timed out, 6 server unreachable.")
    p.add_argument("--server", default=os.environ.get("COMFYUI_SERVER", "http://127.0.0.1:8188"),
                   help="ComfyUI address (default: $COMFYUI_SERVER or http://127.0.0.1:8188)")
    p.add_argument("--workflow", default="full",
                   help="bundled workflow name in workflows/api/ (full, fast, remix, long, retarget, dwpose) or an "
                        "API-format JSON")
    p.add_argument("--image", help="character image to animate (uploaded to the server's input folder)")
    p.add_argument("--pose", help="target pose sequence: a local JSON file (uploaded), examples/<name>.json (bundled "
                                  "with the pack) or input:<name> (already in the server's input folder)")
    p.add_argument("--source-pose", help="pose of the character in --image, for the workflow's 'Source pose' "
                                         "loader; same forms as --pose")
    p.add_argument("--video", help="driving video for a workflow that finds the poses in one (dwpose): a local "
                                   "video file (uploaded) or input:<name> (already in the server's input folder)")
    p.add_argument("--prompt", help="positive prompt describing the character")
    p.add_argument("--negative", help="negative prompt")
    p.add_argument("--subject", help="subject word(s) in the prompt for the cross-attention character mask")
    p.add_argument("--seed", type=int_at_least(0), help="seed for every seed input in the graph")
    p.add_argument("--width", type=int_at_least(8, 16384), help="frame width in pixels (multiple of 8)")
    p.add_argument("--height", type=int_at_least(8, 16384), help="frame height in pixels (multiple of 8)")
    p.add_argument("--set", action="append", metavar="NODE.INPUT=VALUE",
                   help="set any widget input; NODE is an id, a title or a class_type; VALUE is JSON or text. "
                        "Repeatable")
    p.add_argument("--prefix", help="subfolder in ComfyUI's output folder for the saved files")
    p.add_argument("--out", default="poseanimate_out", help="folder for the downloaded outputs")
    p.add_argument("--include-previews", action="store_true", help="also download temporary preview images")
    p.add_argument("--timeout", type=float_between(0, 1e7), default=3600.0, help="seconds to wait for the result")
    p.add_argument("--poll", type=float_between(0, 3600), default=1.0, help="seconds between progress polls")
    p.add_argument("--no-live", action="store_true",
                   help="do not open ComfyUI's websocket for per-node progress; only poll /queue and /history")
    p.add_argument("--dry-run", action="store_true", help="print the edited API graph and exit; contacts no server")
    return p


def run(argv: list[str] | None = None, log=print) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_arguments(args)
        graph = load_workflow(args.workflow)
        if args.dry_run:
            graph, notes = apply_settings(graph, args, None)
            for note in notes:
                print(f"set {note}", file=sys.stderr)
            print(json.dumps(graph, indent=2))
            return EXIT_OK
        client = Client(args.server)
        client.get_json("/queue")  # fail early and clearly when the server is not there
        graph, notes = apply_settings(graph, args, client)
        for note in notes:
            log(f"set {note}")
        client_id = uuid.uuid4().hex
        live = None
        if not args.no_live:
            try:
                live = Progress(client.base, client_id)
            except OSError:
                live = None  # polling alone still works
        try:
            prompt_id = client.queue_prompt(graph, client_id)
            log(f"queued prompt {prompt_id} on {client.base}")
            entry = wait_for(client, prompt_id, graph, args.timeout, args.poll, log, live)
        finally:
            if live is not None:
                live.close()
        check_status(entry, graph)
        out_dir = pathlib.Path(args.out)
        files = download(client, entry, out_dir, args.include_previews, log)
        manifest = {"prompt_id": prompt_id, "server": client.base, "workflow": args.workflow, **files}
        with atomic_output(out_dir / "poseanimate_run.json") as tmp:
            tmp.write_text(json.dumps(manifest, indent=2))
        if not files["frames"] and not files["videos"]:
            log("warning: the workflow finished but saved no files")
        return EXIT_OK
    except RunError as exc:
        print(f"poseanimate_run: error: {exc}", file=sys.stderr)
        return exc.status


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
