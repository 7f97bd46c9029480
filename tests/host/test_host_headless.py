"""The headless command against a real ComfyUI server on 127.0.0.1 (CPU) with this pack installed.

The server is ComfyUI's own ``main.py`` in a subprocess with ``--cpu --listen 127.0.0.1 --port <free>
--base-directory <tmp>``; the pack is symlinked into ``<tmp>/custom_nodes``. Where torchvision is missing, the
launcher puts the same stand-ins in place as tests/host/conftest.py does (testing/comfy_stubs.py), then runs
main.py.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMFY = pathlib.Path(os.environ.get("COMFYUI_PATH", ".")).resolve()
_spec = importlib.util.spec_from_file_location("poseanimate_run", ROOT / "scripts" / "poseanimate_run.py")
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)

LAUNCHER = r"""
import importlib.util, os, runpy, sys
comfy, stubs_path = sys.argv[1], sys.argv[2]
sys.argv = [os.path.join(comfy, "main.py")] + sys.argv[3:]
sys.path.insert(0, comfy)
os.chdir(comfy)
spec = importlib.util.spec_from_file_location("comfy_stubs", stubs_path)
stubs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stubs)
stubs.stub_absent()
runpy.run_path(sys.argv[0], run_name="__main__")
"""


SHIM = """# Registers this pack's node classes that the pack itself does not register yet (only on a branch
# before the lead's registration; after it, this adds nothing).
import pathlib, sys
sys.path.insert(0, {scripts!r})
import make_workflows as _mw
_classes = _mw.pack_classes()
from poseanimate import NODE_CLASS_MAPPINGS as _registered
NODE_CLASS_MAPPINGS = {{k: v for k, v in _classes.items() if k not in _registered}}
NODE_DISPLAY_NAME_MAPPINGS = {{k: v._display_name for k, v in NODE_CLASS_MAPPINGS.items()}}
"""


def _register_unregistered_pack_nodes(base: pathlib.Path) -> None:
    shim = base / "custom_nodes" / "zz_poseanimate_test_registration"
    shim.mkdir()
    (shim / "__init__.py").write_text(SHIM.format(scripts=str(ROOT / "scripts")))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def comfy_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "ComfyUI-PoseAnimate").symlink_to(ROOT, target_is_directory=True)
    for sub in ("input", "output", "temp", "user", "models"):
        (base / sub).mkdir(exist_ok=True)
    _register_unregistered_pack_nodes(base)
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from tiny_checkpoint import write_tiny_checkpoint, write_tiny_controlnet

    (base / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)
    (base / "models" / "controlnet").mkdir(parents=True, exist_ok=True)
    write_tiny_checkpoint(base / "models" / "checkpoints" / "tiny-sd15.safetensors")
    write_tiny_controlnet(base / "models" / "controlnet" / "tiny-openpose.safetensors")
    port = _free_port()
    log = open(base / "server.log", "w")
    env = dict(os.environ)  # Pose Extract's detector: the stand-in package (no weights can be downloaded here)
    env["PYTHONPATH"] = os.pathsep.join([str(pathlib.Path(__file__).resolve().parent / "fake_controlnet_aux")]
                                        + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(COMFY), str(ROOT / "testing" / "comfy_stubs.py"),
         "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base), "--disable-auto-launch", "--disable-metadata"],
        stdout=log, stderr=subprocess.STDOUT, cwd=str(COMFY), env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(url + "/queue", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"ComfyUI did not start:\n{(base / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _png(path: pathlib.Path, h=40, w=56):
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def _core_graph() -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "Source image"}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear", "width": 64,
              "height": 64, "crop": "disabled"}, "_meta": {"title": "Resize source"}},
        "3": {"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 0], "amount": 3}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "PoseAnimate/frame"},
              "_meta": {"title": "Save frames"}},
        "5": {"class_type": "CreateVideo", "inputs": {"images": ["3", 0], "fps": 8.0}},
        "6": {"class_type": "SaveVideo", "inputs": {"video": ["5", 0], "filename_prefix": "PoseAnimate/video",
              "format": "mp4", "codec": "h264"}, "_meta": {"title": "Save video"}},
    }


def test_headless_against_real_comfyui(comfy_server, tmp_path, capsys):
    url, base = comfy_server
    wf = tmp_path / "core.json"
    wf.write_text(json.dumps(_core_graph()))
    image = tmp_path / "hero.png"
    _png(image)
    out = tmp_path / "out"
    lines = []
    code = cli.run(["--server", url, "--workflow", str(wf), "--image", str(image), "--width", "96", "--height", "80",
                    "--set", "RepeatImageBatch.amount=4", "--out", str(out), "--timeout", "240", "--poll", "0.2"],
                   log=lines.append)
    assert code == 0, (lines, capsys.readouterr().err, (base / "server.log").read_text()[-3000:])
    assert (base / "input" / "hero.png").read_bytes() == image.read_bytes()
    assert any(x.endswith("node 4 (Save frames)") for x in lines), lines  # live progress over the real /ws
    from PIL import Image

    frames = sorted((out / "PoseAnimate").glob("frame_*.png"))
    assert len(frames) == 4 and Image.open(frames[0]).size == (96, 80)
    videos = list((out / "PoseAnimate").glob("video_*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 0
    manifest = json.loads((out / "poseanimate_run.json").read_text())
    assert len(manifest["frames"]) == 4 and len(manifest["videos"]) == 1


def test_headless_reports_real_validation_error(comfy_server, tmp_path, capsys):
    url, _ = comfy_server
    wf = tmp_path / "core.json"
    wf.write_text(json.dumps(_core_graph()))
    code = cli.run(["--server", url, "--workflow", str(wf), "--set", "Source image.image=not-there.png",
                    "--out", str(tmp_path / "out"), "--timeout", "60"], log=lambda s: None)
    assert code == cli.EXIT_REJECTED
    err = capsys.readouterr().err
    assert "node 1 (Source image)" in err and "not-there.png" in err


def test_headless_reports_real_execution_error(comfy_server, tmp_path, capsys):
    url, _ = comfy_server
    wf = tmp_path / "core.json"
    wf.write_text(json.dumps(_core_graph()))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a picture")  # passes the local signature check only
    code = cli.run(["--server", url, "--workflow", str(wf), "--image", str(broken), "--out", str(tmp_path / "out"),
                    "--timeout", "120", "--poll", "0.2"], log=lambda s: None)
    assert code == cli.EXIT_FAILED
    err = capsys.readouterr().err
    # the server's own exception for the unreadable picture (Pillow: "OSError: Truncated File Read" here)
    assert "the workflow failed at node 1 (Source image): OSError: " in err, err


def test_headless_runs_bundled_full_workflow(comfy_server, tmp_path, capsys):
    """The bundled workflow 'full' through the headless command, with tiny model files and small sizes."""
    url, base = comfy_server
    image = tmp_path / "hero.png"
    _png(image, 96, 128)
    pose = _bundled_pose_file()
    out = tmp_path / "out"
    lines = []
    code = cli.run([
        "--server", url, "--workflow", "full", "--image", str(image), "--pose", str(pose),
        "--prompt", "a knight in armour", "--subject", "knight", "--width", "64", "--height", "64",
        "--set", "Load Checkpoint.ckpt_name=tiny-sd15.safetensors",
        "--set", "Load OpenPose ControlNet.control_net_name=tiny-openpose.safetensors",
        "--set", "Pose-Aware Inversion.steps=2", "--set", "Pose-Aware Inversion.inner_steps=1",
        "--set", "Pose Embedding Optimize.inner_steps=1", "--set", "PATA Align.transition_frames=2",
        "--out", str(out), "--timeout", "500", "--poll", "0.5"], log=lines.append)
    assert code == 0, (lines, capsys.readouterr().err, (base / "server.log").read_text()[-4000:])
    manifest = json.loads((out / "poseanimate_run.json").read_text())
    from poseanimate.pipeline import FULL

    poses = len(json.loads(pose.read_text()))
    frames = 1 + 2 + min(FULL.pose_frames, poses)  # source + transition + the targets the workflow takes
    assert len(manifest["frames"]) == frames and len(manifest["videos"]) == 1
    assert (base / "input" / "poseanimate" / pose.name).read_bytes() == pose.read_bytes()
    assert any(x.endswith("(Pose-Aware Inversion): 2/2") for x in lines), lines  # live step progress
    assert all((out / f).is_file() for f in manifest["frames"] + manifest["videos"])


def _bundled_pose_file() -> pathlib.Path:
    return ROOT / "assets" / "poses" / "turn.json"
