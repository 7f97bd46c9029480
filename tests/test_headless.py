"""The headless command against a small local server that speaks ComfyUI 0.3.64's HTTP routes.

``FakeComfy`` implements ``POST /upload/image`` (multipart, ComfyUI's renaming of duplicates), ``POST /prompt``
(validation with ComfyUI's 400 body: ``error`` + ``node_errors``), ``GET /queue``, ``GET /history/{id}`` (the
history entry ComfyUI's ``PromptQueue.task_done`` writes: ``prompt``, ``outputs``, ``status`` with ``status_str``,
``completed`` and ``messages``) and ``GET /view``, with the JSON shapes of server.py and execution.py. It runs on
127.0.0.1 on an ephemeral port in a thread; every run is bounded by the command's own ``--timeout``.
"""
from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import queue
import json
import pathlib
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from scripts_loader import load_script

ROOT = pathlib.Path(__file__).resolve().parents[1]
cli = load_script("poseanimate_run")

OUTPUT_NODES = {"SaveImage", "SaveAnimatedWEBP", "SaveVideo", "PreviewImage"}


def _core_and_pack_classes() -> set[str]:
    """Ids a ComfyUI with this pack (and the other packs a bundled workflow declares, e.g. comfyui_controlnet_aux
    for dwpose) knows: the checked core ids, this pack's node ids and the checked third-party ids."""
    names = set(json.loads((ROOT / "tests" / "data" / "comfy_core_nodes.json").read_text())["ids"])
    mw = load_script("make_workflows")
    third = {node for pack in mw.third_party_packs().values() for node in pack["nodes"]}
    return names | set(mw.pack_classes()) | third


class FakeComfy:
    """State and behaviour of the fake server; the handler below only routes to it."""

    def __init__(self, frames: int = 3, known_classes: set[str] | None = None, run_polls: int = 2):
        self.frames = frames
        self.known = known_classes
        self.run_polls = run_polls  # history polls a prompt stays pending/running before it finishes
        self.inputs: dict[str, bytes] = {}
        self.files: dict[tuple[str, str, str], bytes] = {}
        self.history: dict[str, dict] = {}
        self.pending: list[list] = []
        self.running: list[list] = []
        self.prompts: list[dict] = []
        self.polls: dict[str, int] = {}
        self.fail_with: tuple[str, str] | None = None  # (class_type, message): execution_error there
        self.interrupt_at: str | None = None  # class_type where the run is interrupted
        self.never_finish = False
        self.number = 0
        self.lock = threading.Lock()
        self.sockets: dict[str, queue.Queue] = {}  # clientId -> messages for its /ws connection
        self.websocket = True

    # POST /upload/image -- server.py image_upload()
    def upload(self, fields: dict) -> tuple[int, dict | None]:
        image = fields.get("image")
        if image is None or not image[0]:
            return 400, None
        filename, data = image
        kind = fields.get("type", (None, b"input"))[1].decode() or "input"
        sub = fields.get("subfolder", (None, b""))[1].decode()
        overwrite = fields.get("overwrite", (None, b""))[1].decode() in ("true", "1")
        if kind != "input" or ".." in sub or ".." in filename:
            return 400, None
        key = f"{sub}/{filename}" if sub else filename
        if not overwrite:
            stem, dot, ext = filename.rpartition(".")
            i = 1
            while key in self.inputs and self.inputs[key] != data:
                filename = f"{stem} ({i}).{ext}" if dot else f"{filename} ({i})"
                key = f"{sub}/{filename}" if sub else filename
                i += 1
        self.inputs[key] = data
        return 200, {"name": filename, "subfolder": sub, "type": kind}

    # POST /prompt -- server.py post_prompt() + execution.validate_prompt()
    def queue(self, body: dict) -> tuple[int, dict]:
        if "prompt" not in body:
            err = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                   "extra_info": {}}
            return 400, {"error": err, "node_errors": {}}
        prompt = body["prompt"]
        for node_id, node in prompt.items():
            if "class_type" not in node:
                err = {"type": "invalid_prompt", "message": "Cannot execute because a node is missing the "
                       "class_type property.", "details": f"Node ID '#{node_id}'", "extra_info": {}}
                return 400, {"error": err, "node_errors": {}}
            if self.known is not None and node["class_type"] not in self.known:
                err = {"type": "invalid_prompt", "message": f"Cannot execute because node {node['class_type']} "
                       "does not exist.", "details": f"Node ID '#{node_id}'", "extra_info": {}}
                return 400, {"error": err, "node_errors": {}}
        outputs = [i for i, n in prompt.items() if n["class_type"] in OUTPUT_NODES]
        if not outputs:
            err = {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}
            return 400, {"error": err, "node_errors": {}}
        node_errors = {}
        for node_id, node in prompt.items():
            reasons = []
            for name, value in node.get("inputs", {}).items():
                if isinstance(value, list) and len(value) == 2 and str(value[0]) not in prompt:
                    reasons.append({"type": "exception_during_inner_validation", "message": "Exception when "
                                    "validating inner node", "details": f"'{value[0]}'", "extra_info": {}})
            if node["class_type"] == "LoadImage" and node["inputs"].get("image") not in self.inputs:
                reasons.append({"type": "custom_validation_failed", "message": "Custom validation failed for node",
                                "details": f"image - Invalid image file: {node['inputs'].get('image')}",
                                "extra_info": {"input_name": "image"}})
            if node["class_type"] == "LoadVideo" and node["inputs"].get("file") not in self.inputs:
                reasons.append({"type": "custom_validation_failed", "message": "Custom validation failed for node",
                                "details": f"file - Invalid video file: {node['inputs'].get('file')}",
                                "extra_info": {"input_name": "file"}})
            if reasons:
                node_errors[node_id] = {"errors": reasons, "dependent_outputs": outputs,
                                        "class_type": node["class_type"]}
        if node_errors:
            details = "\n".join(f"{r['message']}: {r['details']}" for e in node_errors.values() for r in e["errors"])
            err = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                   "details": details, "extra_info": {}}
            return 400, {"error": err, "node_errors": node_errors}
        with self.lock:
            prompt_id = str(body.get("prompt_id") or f"{len(self.prompts):08d}-fake-prompt")
            extra = dict(body.get("extra_data", {}))
            if "client_id" in body:
                extra["client_id"] = body["client_id"]
            self.pending.append([self.number, prompt_id, prompt, extra, outputs])
            self.number += 1
            self.prompts.append(body)
        return 200, {"prompt_id": prompt_id, "number": self.number - 1, "node_errors": {}}

    def queue_state(self) -> dict:
        with self.lock:
            return {"queue_running": list(self.running), "queue_pending": list(self.pending)}

    # GET /history/{prompt_id} -- PromptQueue.get_history(prompt_id=...)
    def history_of(self, prompt_id: str) -> dict:
        with self.lock:
            if prompt_id in self.history:
                return {prompt_id: self.history[prompt_id]}
            item = next((p for p in self.pending + self.running if p[1] == prompt_id), None)
            if item is None:
                return {}
            n = self.polls[prompt_id] = self.polls.get(prompt_id, 0) + 1
            if item in self.pending and n >= 1:
                self.pending.remove(item)
                self.running.append(item)
                self._announce(item)
            elif n > self.run_polls and not self.never_finish:
                self.running.remove(item)
                self.history[prompt_id] = self._execute(item)
            return {}

    def _announce(self, item) -> None:
        """What server.py sends to the prompt's client over /ws while it runs: executing + progress."""
        _, prompt_id, prompt, extra, _ = item
        box = self.sockets.get(extra.get("client_id"))
        if box is None:
            return
        box.put({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}}})
        for node_id, node in prompt.items():
            box.put({"type": "executing", "data": {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}})
            if node["class_type"] in ("KSampler", "ImageScale"):
                for v in range(1, 5):
                    box.put({"type": "progress", "data": {"value": v, "max": 4, "prompt_id": prompt_id,
                                                          "node": node_id}})
            box.put(b"\x89PNG binary preview")

    def _execute(self, item) -> dict:
        _, prompt_id, prompt, extra, outputs = item
        ts = int(time.time() * 1000)
        messages = [["execution_start", {"prompt_id": prompt_id, "timestamp": ts}],
                    ["execution_cached", {"nodes": [], "prompt_id": prompt_id, "timestamp": ts}]]
        ui = {}
        ok = True
        for node_id, node in sorted(prompt.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0):
            ct = node["class_type"]
            if self.interrupt_at == ct:
                messages.append(["execution_interrupted", {"prompt_id": prompt_id, "node_id": node_id,
                                 "node_type": ct, "executed": [], "timestamp": ts}])
                ok = False
                break
            if self.fail_with and self.fail_with[0] == ct:
                messages.append(["execution_error", {
                    "prompt_id": prompt_id, "node_id": node_id, "node_type": ct, "executed": [],
                    "exception_message": self.fail_with[1], "exception_type": "poseanimate.nodes._common."
                    "PoseAnimateError", "traceback": ["Traceback ..."], "current_inputs": {},
                    "current_outputs": [], "timestamp": ts}])
                ok = False
                break
            prefix = node.get("inputs", {}).get("filename_prefix", "ComfyUI")
            sub, _, base = prefix.rpartition("/")
            if ct == "SaveImage":
                results = []
                for f in range(self.frames):
                    name = f"{base}_{f + 1:05}_.png"
                    self.files[("output", sub, name)] = b"\x89PNG fake frame %d" % f
                    results.append({"filename": name, "subfolder": sub, "type": "output"})
                ui[node_id] = {"images": results}
            elif ct in ("SaveAnimatedWEBP", "SaveVideo"):
                name = f"{base}_00001_.{'webp' if ct == 'SaveAnimatedWEBP' else 'mp4'}"
                self.files[("output", sub, name)] = b"fake video"
                ui[node_id] = {"images": [{"filename": name, "subfolder": sub, "type": "output"}], "animated": [True]}
            elif ct == "PreviewImage":
                name = f"ComfyUI_temp_abcde_{1:05}_.png"
                self.files[("temp", "", name)] = b"\x89PNG preview"
                ui[node_id] = {"images": [{"filename": name, "subfolder": "", "type": "temp"}]}
        if ok:
            messages.append(["execution_success", {"prompt_id": prompt_id, "timestamp": ts}])
        return {"prompt": item, "outputs": ui if ok else {}, "meta": {k: {"node_id": k} for k in ui},
                "status": {"status_str": "success" if ok else "error", "completed": ok, "messages": messages}}

    # GET /view -- server.py view_image()
    def view(self, query: dict) -> tuple[int, bytes]:
        filename = query.get("filename", "")
        if not filename or filename[0] == "/" or ".." in filename:
            return 400, b""
        key = (query.get("type", "output"), query.get("subfolder", ""), filename)
        if key not in self.files:
            return 404, b""
        return 200, self.files[key]


def _parse_multipart(content_type: str, body: bytes) -> dict:
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[name] = (part.get_filename(), part.get_payload(decode=True))
    return fields


def _handler(fake: FakeComfy):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def _send(self, status: int, payload=None, raw: bytes | None = None, ctype="application/json"):
            data = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else b"")
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _websocket(self, client_id: str):
            """RFC 6455 server side, as aiohttp speaks it for ComfyUI's /ws: unmasked text/binary frames."""
            key = self.headers.get("Sec-WebSocket-Key", "")
            accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode())
                                      .digest()).decode()
            self.send_response(101, "Switching Protocols")
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.end_headers()
            self.wfile.flush()
            box = fake.sockets.setdefault(client_id, queue.Queue())
            self.connection.settimeout(0.05)
            idle = 0
            while idle < 200:  # closes 10 s after the last message
                try:
                    msg = box.get(timeout=0.05)
                except queue.Empty:
                    idle += 1
                    try:
                        if self.connection.recv(1, socket.MSG_PEEK) == b"":
                            return  # the client closed
                    except (socket.timeout, BlockingIOError):
                        pass
                    except OSError:
                        return
                    continue
                idle = 0
                data, opcode = (msg, 2) if isinstance(msg, bytes) else (json.dumps(msg).encode(), 1)
                head = bytes([0x80 | opcode]) + (bytes([len(data)]) if len(data) < 126 else
                                                  bytes([126]) + len(data).to_bytes(2, "big"))
                try:
                    self.wfile.write(head + data)
                    self.wfile.flush()
                except OSError:
                    return

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/ws" and fake.websocket and self.headers.get("Upgrade", "").lower() == "websocket":
                return self._websocket(dict(urllib.parse.parse_qsl(url.query)).get("clientId", ""))
            if url.path == "/queue":
                return self._send(200, fake.queue_state())
            if url.path.startswith("/history/"):
                return self._send(200, fake.history_of(urllib.parse.unquote(url.path[len("/history/"):])))
            if url.path == "/view":
                status, data = fake.view(dict(urllib.parse.parse_qsl(url.query)))
                return self._send(status, raw=data, ctype="application/octet-stream")
            return self._send(404)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/upload/image":
                status, payload = fake.upload(_parse_multipart(self.headers["Content-Type"], body))
                return self._send(status, payload)
            if self.path == "/prompt":
                status, payload = fake.queue(json.loads(body))
                return self._send(status, payload)
            return self._send(404)

    return Handler


@pytest.fixture
def server():
    fake = FakeComfy()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _graph() -> dict:
    """A small API-format graph with the nodes the command edits (titles as the bundled workflows use)."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "Source image"}},
        "2": {"class_type": "PoseAnimateLoadPoseSequence", "inputs": {"pose_file": "walk.json"},
              "_meta": {"title": "Pose sequence"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a person", "clip": ["9", 1]},
              "_meta": {"title": "Positive prompt"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["9", 1]},
              "_meta": {"title": "Negative prompt"}},
        "5": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "lanczos", "width": 512,
              "height": 512, "crop": "center"}, "_meta": {"title": "Resize source"}},
        "6": {"class_type": "KSampler", "inputs": {"seed": 0, "steps": 20}, "_meta": {"title": "KSampler"}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "PoseAnimate/frame"},
              "_meta": {"title": "Save frames"}},
        "8": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["5", 0], "filename_prefix": "PoseAnimate/anim",
              "fps": 8.0, "lossless": False, "quality": 90, "method": "default"}, "_meta": {"title": "Save video"}},
        "9": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5.safetensors"},
              "_meta": {"title": "Load Checkpoint"}},
    }


@pytest.fixture
def files(tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(_graph()))
    image = tmp_path / "hero.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n hero image bytes")
    pose = tmp_path / "dance.json"
    pose.write_text(json.dumps([{"people": [], "canvas_width": 512, "canvas_height": 512}]))
    return wf, image, pose, tmp_path / "out"


def _run(server, argv, lines=None):
    lines = [] if lines is None else lines
    code = cli.run(["--server", server.url, "--poll", "0.01", "--timeout", "20", *argv], log=lines.append)
    return code, lines


def test_success_uploads_sets_queues_and_downloads(server, files):
    wf, image, pose, out = files
    code, lines = _run(server, ["--workflow", str(wf), "--image", str(image), "--pose", str(pose),
                                "--prompt", "a knight", "--negative", "ugly", "--seed", "42",
                                "--width", "384", "--height", "448", "--set", "KSampler.steps=7",
                                "--out", str(out)])
    assert code == 0, lines
    assert server.inputs["hero.png"] == image.read_bytes()
    assert server.inputs["poseanimate/dance.json"] == pose.read_bytes()
    body = server.prompts[-1]
    assert body["client_id"]
    g = body["prompt"]
    assert g["1"]["inputs"]["image"] == "hero.png"
    assert g["2"]["inputs"]["pose_file"] == "poseanimate/dance.json"
    assert g["3"]["inputs"]["text"] == "a knight" and g["4"]["inputs"]["text"] == "ugly"
    assert g["3"]["inputs"]["clip"] == ["9", 1]
    assert (g["5"]["inputs"]["width"], g["5"]["inputs"]["height"]) == (384, 448)
    assert g["6"]["inputs"] == {"seed": 42, "steps": 7}
    assert any("queued prompt" in x for x in lines) and any("running" in x for x in lines)
    frames = sorted((out / "PoseAnimate").glob("frame_*.png"))
    assert len(frames) == server.frames
    assert frames[0].read_bytes() == b"\x89PNG fake frame 0"
    assert (out / "PoseAnimate" / "anim_00001_.webp").read_bytes() == b"fake video"
    manifest = json.loads((out / "poseanimate_run.json").read_text())
    assert len(manifest["frames"]) == server.frames and manifest["videos"] == ["PoseAnimate/anim_00001_.webp"]


def test_live_progress_from_the_websocket(server, files):
    wf, image, _, out = files
    code, lines = _run(server, ["--workflow", str(wf), "--image", str(image), "--out", str(out)])
    assert code == 0, lines
    assert any(x.endswith("node 5 (Resize source)") for x in lines), lines
    assert any(x.endswith("node 6 (KSampler): 4/4") for x in lines), lines
    server.websocket = False  # without /ws the command falls back to polling alone
    code, lines = _run(server, ["--workflow", str(wf), "--image", str(image), "--out", str(out)])
    assert code == 0 and not any("KSampler): " in x for x in lines)


def test_duplicate_upload_name_is_renamed_and_used(server, files):
    wf, image, _, out = files
    server.inputs["hero.png"] = b"someone else's picture"
    code, lines = _run(server, ["--workflow", str(wf), "--image", str(image), "--out", str(out)])
    assert code == 0, lines
    assert server.prompts[-1]["prompt"]["1"]["inputs"]["image"] == "hero (1).png"
    assert server.inputs["hero (1).png"] == image.read_bytes()


def test_rejected_graph_exits_2_with_the_servers_node_errors(server, files, capsys):
    wf, _, _, out = files
    code, _ = _run(server, ["--workflow", str(wf), "--set", "Source image.image=missing.png", "--out", str(out)])
    assert code == cli.EXIT_REJECTED
    err = capsys.readouterr().err
    assert "Prompt outputs failed validation" in err
    assert "node 1 (Source image): Custom validation failed for node: image - Invalid image file: missing.png" in err
    assert not server.history and not out.exists()


def test_unknown_node_class_rejected(server, files, capsys):
    server.known = {"LoadImage", "SaveImage"}
    wf, image, _, out = files
    code, _ = _run(server, ["--workflow", str(wf), "--image", str(image), "--out", str(out)])
    assert code == cli.EXIT_REJECTED
    assert "does not exist" in capsys.readouterr().err


def test_execution_error_exits_3_with_the_nodes_message(server, files, capsys):
    message = "PATA Align: input 'poses': no person found in the source pose. Fix: use an image with a person."
    server.fail_with = ("ImageScale", message)
    wf, image, _, out = files
    code, _ = _run(server, ["--workflow", str(wf), "--image", str(image), "--out", str(out)])
    assert code == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert message in err and "node 5 (Resize source)" in err


def test_interrupt_exits_4(server, files, capsys):
    server.interrupt_at = "ImageScale"
    wf, image, _, out = files
    code, _ = _run(server, ["--workflow", str(wf), "--image", str(image), "--out", str(out)])
    assert code == cli.EXIT_INTERRUPTED
    assert "interrupted" in capsys.readouterr().err


def test_timeout_exits_5(server, files, capsys):
    server.never_finish = True
    wf, image, _, out = files
    code = cli.run(["--server", server.url, "--workflow", str(wf), "--image", str(image), "--poll", "0.02",
                    "--timeout", "0.3", "--out", str(out)], log=lambda s: None)
    assert code == cli.EXIT_TIMEOUT
    assert "timed out" in capsys.readouterr().err


def test_unreachable_server_exits_6(files, capsys):
    wf, image, _, out = files
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = cli.run(["--server", f"127.0.0.1:{port}", "--workflow", str(wf), "--image", str(image),
                    "--out", str(out)], log=lambda s: None)
    assert code == cli.EXIT_UNREACHABLE
    assert "cannot reach ComfyUI" in capsys.readouterr().err


def test_usage_errors_exit_1(server, files, capsys):
    wf, image, _, out = files
    assert _run(server, ["--workflow", "no-such-workflow"])[0] == cli.EXIT_USAGE
    assert _run(server, ["--workflow", str(wf), "--image", str(out / "nope.png")])[0] == cli.EXIT_USAGE
    assert _run(server, ["--workflow", str(wf), "--width", "500"])[0] == cli.EXIT_USAGE
    assert _run(server, ["--workflow", str(wf), "--set", "KSampler.nope=1"])[0] == cli.EXIT_USAGE
    assert _run(server, ["--workflow", str(wf), "--set", "Resize source.image=x"])[0] == cli.EXIT_USAGE  # a link
    assert "is connected to another node" in capsys.readouterr().err
    assert not server.prompts


def test_ui_format_workflow_is_refused(server, tmp_path, capsys):
    wf = tmp_path / "ui.json"
    wf.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    assert _run(server, ["--workflow", str(wf)])[0] == cli.EXIT_USAGE
    assert "API-format twin" in capsys.readouterr().err


BUNDLED = sorted((ROOT / "workflows" / "api").glob("*.json"))
# the workflows that animate a picture (retarget makes poses only: no image, prompt or seed to set)
ANIMATE = [p for p in BUNDLED if any(n["class_type"] == "LoadImage" for n in json.loads(p.read_text()).values())]


def test_bundled_api_workflows_exist():
    assert {p.stem for p in BUNDLED} >= {"full", "fast", "remix", "long", "retarget", "dwpose"}
    assert {p.stem for p in ANIMATE} >= {"full", "fast", "remix", "long", "dwpose"}


def _finds_poses_in_a_video(path) -> bool:
    return any(n["class_type"] == "LoadVideo" for n in json.loads(path.read_text()).values())


@pytest.mark.parametrize("path", ANIMATE, ids=[p.stem for p in ANIMATE])
def test_bundled_workflow_runs_headless(server, files, path):
    """Every bundled API workflow takes the standard settings and runs through the fake server (dwpose takes a
    driving video where the others take a pose file)."""
    server.known = _core_and_pack_classes()
    _, image, pose, out = files
    video = pose.with_name("drive.mp4")
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42 fake video")
    motion = ["--video", str(video)] if _finds_poses_in_a_video(path) else ["--pose", str(pose)]
    code, lines = _run(server, ["--workflow", path.stem, "--image", str(image), *motion,
                                "--prompt", "a knight", "--subject", "knight", "--seed", "3",
                                "--width", "384", "--height", "512", "--out", str(out)])
    assert code == 0, lines
    g = server.prompts[-1]["prompt"]
    sent = json.dumps(g)
    assert "hero.png" in sent and "a knight" in sent
    if motion[0] == "--video":
        assert server.inputs["drive.mp4"] == video.read_bytes()
        assert [n["inputs"]["file"] for n in g.values() if n["class_type"] == "LoadVideo"] == ["drive.mp4"]
        assert not any("no --source-pose" in x for x in lines)  # the workflow finds the pose in the picture
    else:
        assert "poseanimate/dance.json" in sent
        assert any(n["class_type"] == "PoseAnimateLoadPoseSequence" for n in g.values())
    assert len(list(out.rglob("*.png"))) == server.frames
    assert any("width ->" in x for x in lines) and any("height ->" in x for x in lines)


def test_dwpose_workflow_takes_a_video_not_pose_files(files, tmp_path, capsys):
    """dwpose finds both poses with DWPose Estimator: --video sets its Load Video ('Driving video'); the pose
    file flags and --video on a workflow without Load Video are refused before any server contact."""
    _, image, pose, _ = files
    assert cli.run(["--workflow", "dwpose", "--image", str(image), "--video", "input:clips/walk.mp4",
                    "--width", "384", "--height", "512", "--dry-run"]) == 0
    captured = capsys.readouterr()
    graph = json.loads(captured.out)
    video = next(n for n in graph.values() if n["class_type"] == "LoadVideo")
    assert video["_meta"]["title"] == "Driving video" and video["inputs"]["file"] == "clips/walk.mp4"
    align = next(n for n in graph.values() if n["class_type"] == "PoseAnimatePATAAlign")
    assert (align["inputs"]["width"], align["inputs"]["height"]) == (384, 512)
    assert "set video -> clips/walk.mp4 (node" in captured.err and "no --source-pose" not in captured.err
    for flag in ("--pose", "--source-pose"):
        line = _bad(capsys, ["--workflow", "dwpose", "--image", str(image), flag, str(pose), "--dry-run"])
        assert f"{flag}: the workflow has no PoseAnimateLoadPoseSequence node" in line, line
    line = _bad(capsys, ["--workflow", "full", "--video", "input:walk.mp4", "--dry-run"])
    assert "--video: the workflow has no LoadVideo node. Fix: leave --video out or use the bundled workflow dwpose" \
        in line, line


@pytest.mark.parametrize("name, content, expected", [
    ("walk.mp4", None, "--video: no such video file"),
    ("walk.txt", b"not a video", "is not a video file by its name"),
    ("", None, "names no file"),
])
def test_bad_video(files, tmp_path, capsys, name, content, expected):
    wf, image, _, _ = files
    value = str(tmp_path / name) if name else "input:"
    if content is not None:
        (tmp_path / name).write_bytes(content)
    line = _bad(capsys, ["--workflow", "dwpose", "--image", str(image), "--video", value])
    assert expected in line and "Fix:" in line, line


def test_dry_run_prints_the_edited_graph_without_a_server(files, capsys):
    wf, image, pose, _ = files
    code = cli.run(["--server", "127.0.0.1:9", "--workflow", str(wf), "--image", str(image),
                    "--pose", "input:run.json", "--prompt", "a cat", "--seed", "9", "--dry-run"])
    assert code == 0
    captured = capsys.readouterr()
    graph = json.loads(captured.out)
    assert graph["1"]["inputs"]["image"] == "hero.png" and graph["2"]["inputs"]["pose_file"] == "run.json"
    assert graph["3"]["inputs"]["text"] == "a cat" and graph["6"]["inputs"]["seed"] == 9
    assert "set prompt -> node 3 (Positive prompt).text" in captured.err


# ------------------------------------------------------------------ bad input: one line, exit 1, no server contact


def _bad(capsys, argv) -> str:
    """Run with ``argv`` against an address nobody listens on: the checks must fail before any connection.
    Returns the one line on stderr."""
    code = cli.run(["--server", "127.0.0.1:9", *argv], log=lambda s: None)
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("poseanimate_run: error: ") and "cannot reach" not in err, err
    return lines[0]


@pytest.mark.parametrize("flag, value, expected", [
    ("--width", "-512", "argument --width: must be between 8 and 16384, got -512"),
    ("--height", "0", "argument --height: must be between 8 and 16384, got 0"),
    ("--width", "wide", "argument --width: 'wide' is not a whole number"),
    ("--seed", "-1", "argument --seed: must be at least 0, got -1"),
    ("--timeout", "0", "argument --timeout: must be above 0"),
    ("--poll", "-1", "argument --poll: must be above 0"),
])
def test_bad_numbers_are_one_line_and_exit_1(files, capsys, flag, value, expected):
    wf = files[0]
    with pytest.raises(SystemExit) as exc:
        cli.run(["--server", "127.0.0.1:9", "--workflow", str(wf), flag, value])
    assert exc.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("poseanimate_run: error: ") and expected in err, err


def test_width_not_a_multiple_of_8(files, capsys):
    line = _bad(capsys, ["--workflow", str(files[0]), "--width", "500"])
    assert line.startswith("poseanimate_run: error: --width: 500 is not a multiple of 8") and "Fix: e.g. --width 496" in line


def test_missing_local_pose_file_is_an_error_not_a_server_name(files, capsys):
    wf, image, _, _ = files
    line = _bad(capsys, ["--workflow", str(wf), "--image", str(image), "--pose", "my_walk.json", "--dry-run"])
    assert "--pose: no such pose file: my_walk.json" in line, line
    assert "examples/<name>.json" in line and "input:<name>" in line, line


def test_missing_source_pose_file(files, capsys):
    wf, image, _, _ = files
    line = _bad(capsys, ["--workflow", str(wf), "--image", str(image), "--source-pose", "nope.json"])
    assert "--source-pose: no such pose file: nope.json" in line, line


@pytest.mark.parametrize("content, expected", [
    ("not json at all", "is not valid JSON"),
    (json.dumps({"frames": []}), "is not a pose file"),
    (json.dumps([1, 2, 3]), "is not a pose file"),
])
def test_pose_file_that_is_not_a_pose_file(files, tmp_path, capsys, content, expected):
    wf, image, _, _ = files
    bad = tmp_path / "bad_pose.json"
    bad.write_text(content)
    line = _bad(capsys, ["--workflow", str(wf), "--image", str(image), "--pose", str(bad)])
    assert f"--pose: {bad} {expected}" in line and "Fix:" in line, line


def test_unknown_bundled_pose_name(files, capsys):
    wf, image, _, _ = files
    line = _bad(capsys, ["--workflow", str(wf), "--image", str(image), "--pose", "examples/moonwalk.json"])
    assert "--pose: 'examples/moonwalk.json' is not a bundled pose file" in line and "examples/walk.json" in line


def test_bundled_and_server_pose_names_are_sent_as_names(files, capsys):
    wf, image, _, _ = files
    for value, sent in (("examples/walk.json", "examples/walk.json"), ("input:mine/run.json", "mine/run.json")):
        assert cli.run(["--workflow", str(wf), "--image", str(image), "--pose", value, "--dry-run"]) == 0
        graph = json.loads(capsys.readouterr().out)
        assert graph["2"]["inputs"]["pose_file"] == sent


def test_source_pose_goes_to_the_source_pose_loader(capsys):
    """In the bundled workflows --pose sets 'Pose sequence' and --source-pose sets 'Source pose'."""
    poses = ROOT / "assets" / "poses"
    assert cli.run(["--workflow", "full", "--pose", "examples/turn.json", "--source-pose",
                    str(poses / "character.json"), "--dry-run"]) == 0
    graph = json.loads(capsys.readouterr().out)
    loaders = {n["_meta"]["title"]: n["inputs"]["pose_file"] for n in graph.values()
               if n["class_type"] == "PoseAnimateLoadPoseSequence"}
    assert loaders == {"Pose sequence": "examples/turn.json", "Source pose": "poseanimate/character.json"}


def test_source_pose_without_a_source_pose_loader(files, capsys):
    wf, image, pose, _ = files
    line = _bad(capsys, ["--workflow", str(wf), "--image", str(image), "--source-pose", str(pose), "--dry-run"])
    assert "--source-pose: the workflow has no PoseAnimateLoadPoseSequence node titled 'Source pose'" in line


@pytest.mark.parametrize("content, expected", [
    (None, "--image: no such image file"),
    (b"just some text", "is not an image"),
])
def test_bad_image(files, tmp_path, capsys, content, expected):
    wf = files[0]
    image = tmp_path / "me.png"
    if content is not None:
        image.write_bytes(content)
    line = _bad(capsys, ["--workflow", str(wf), "--image", str(image)])
    assert expected in line and "Fix:" in line, line


def test_image_that_is_a_folder(files, tmp_path, capsys):
    line = _bad(capsys, ["--workflow", str(files[0]), "--image", str(tmp_path)])
    assert f"--image: {tmp_path} is a folder" in line, line


def test_malformed_workflow_json_names_the_file(tmp_path, capsys):
    wf = tmp_path / "broken.json"
    wf.write_text('{"1": {"class_type": "LoadImage",')
    line = _bad(capsys, ["--workflow", str(wf)])
    assert f"--workflow: {wf} is not valid JSON" in line and "Fix:" in line, line


def test_workflow_json_that_is_not_a_graph(tmp_path, capsys):
    wf = tmp_path / "list.json"
    wf.write_text("[1, 2]")
    line = _bad(capsys, ["--workflow", str(wf)])
    assert f"--workflow: {wf} is not an API-format ComfyUI workflow" in line, line


def test_out_that_is_a_file(files, capsys):
    wf, image, pose, _ = files
    line = _bad(capsys, ["--workflow", str(wf), "--image", str(image), "--out", str(pose)])
    assert f"--out: {pose} is a file" in line, line


def test_retarget_workflow_takes_the_pose_settings(capsys):
    """The pose-only workflow: --pose, --source-pose and the canvas size are its settings."""
    code = cli.run(["--server", "127.0.0.1:9", "--workflow", "retarget", "--pose", "input:drive.json",
                    "--source-pose", "input:me.json", "--width", "384", "--height", "512", "--dry-run"])
    assert code == 0
    graph = json.loads(capsys.readouterr().out)
    loads = {n["_meta"]["title"]: n["inputs"]["pose_file"] for n in graph.values()
             if n["class_type"] == "PoseAnimateLoadPoseSequence"}
    assert loads == {"Pose sequence": "drive.json", "Source pose": "me.json"}
    align = next(n for n in graph.values() if n["class_type"] == "PoseAnimatePATAAlign")
    assert (align["inputs"]["width"], align["inputs"]["height"], align["inputs"]["mode"]) == (384, 512, "retarget")
