"""Run API-format graphs with ComfyUI's own executor (execution.PromptExecutor) in the test process.

``ComfyRunner`` loads ComfyUI's built-in extra nodes, registers this pack's node classes under their ids in
ComfyUI's ``nodes.NODE_CLASS_MAPPINGS`` (the registered ids when the pack registers them, else the class
names), points ``checkpoints`` / ``controlnet`` / ``loras`` and the input/output folders at a temp folder, and
runs graphs after ComfyUI's own ``validate_prompt``. A stand-in for the web server records every message.
"""
from __future__ import annotations

import asyncio
import importlib.util
import os
import pathlib
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _make_workflows():
    spec = importlib.util.spec_from_file_location("make_workflows", ROOT / "scripts" / "make_workflows.py")
    mw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mw)
    return mw


class FakeServer:
    """The attributes and methods of server.PromptServer that the executor uses."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata = {}
        self.messages = []
        self.on_message = None  # callable(event, data) run for every message (e.g. to press Cancel)

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))
        if self.on_message is not None:
            self.on_message(event, data)

    def queue_updated(self):
        pass


class ComfyRunner:
    def __init__(self, base: pathlib.Path):
        mw = _make_workflows()
        mw._bootstrap_comfy(os.environ["COMFYUI_PATH"])
        import folder_paths
        import nodes

        if "SaveVideo" not in nodes.NODE_CLASS_MAPPINGS:
            asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        self.pack_ids = {}
        for key, cls in mw.pack_classes().items():
            nodes.NODE_CLASS_MAPPINGS.setdefault(key, cls)
            nodes.NODE_DISPLAY_NAME_MAPPINGS.setdefault(key, cls._display_name)
            self.pack_ids[key] = cls
        self.base = base
        for sub in ("checkpoints", "controlnet", "loras", "input", "output", "temp"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        for kind in ("checkpoints", "controlnet", "loras"):
            folder_paths.add_model_folder_path(kind, str(base / kind), is_default=True)
        self._saved_dirs = (folder_paths.get_input_directory(), folder_paths.get_output_directory(),
                            folder_paths.get_temp_directory())
        folder_paths.set_input_directory(str(base / "input"))
        folder_paths.set_output_directory(str(base / "output"))
        folder_paths.set_temp_directory(str(base / "temp"))
        folder_paths.filename_list_cache.clear()
        self.server = FakeServer()

    def close(self):
        import folder_paths

        folder_paths.set_input_directory(self._saved_dirs[0])
        folder_paths.set_output_directory(self._saved_dirs[1])
        folder_paths.set_temp_directory(self._saved_dirs[2])
        folder_paths.filename_list_cache.clear()

    def validate(self, graph: dict):
        import execution

        prompt_id = str(uuid.uuid4())
        return asyncio.run(execution.validate_prompt(prompt_id, graph, None))

    def run(self, graph: dict):
        """Validate and execute; returns (ok, history_result, status messages, validation result)."""
        import execution

        valid = self.validate(graph)
        if not valid[0]:
            return False, None, [], valid
        from testing import comfy_host as compat

        executor = compat.prompt_executor(execution, self.server, cache_type=execution.CacheType.CLASSIC)
        prompt_id = str(uuid.uuid4())
        executor.execute(graph, prompt_id, {"client_id": "host-test"}, valid[2])
        return executor.success, executor.history_result, executor.status_messages, valid


