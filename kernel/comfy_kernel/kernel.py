"""The running kernel: the shared state every route and plugin talks to.

One :class:`Kernel` exists per server process. Its public attributes are the
kernel's API for plugins: ``config``, ``dirs``, ``folders``, ``nodes``,
``object_info``, ``ws``, ``host`` (the plugin host), ``logs``, and
``executor`` once the execution engine is attached.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from argparse import Namespace
from typing import Any

from .files.folders import DataDirs, FolderRegistry
from .logs import LogCapture
from .nodes.info import ObjectInfoCache
from .nodes.registry import NodeRegistry
from .plugins import PluginHost
from .ws import WsHub

log = logging.getLogger(__name__)

_current: Kernel | None = None


def current_kernel() -> Kernel | None:
    """The kernel most recently created in this process (None before any).

    For code that runs where no hook hands the kernel over, such as modules a
    node pack imports while plugins are still being discovered.
    """
    return _current


class Kernel:
    def __init__(self, config: Namespace, *, host: PluginHost | None = None):
        self.config = config
        self.started_at = time.time()
        base = config.base_directory or os.getcwd()
        self.dirs = DataDirs.from_base(base, input=config.input_directory, output=config.output_directory,
                                       temp=config.temp_directory, user=config.user_directory)
        self.folders = FolderRegistry(self.dirs)
        self.nodes = NodeRegistry()
        self.object_info = ObjectInfoCache(self.nodes, self.folders)
        self.ws = WsHub(self)
        self.logs = LogCapture.instance()
        self.host = host or PluginHost(disabled=config.disable_plugins)
        self.executor: Any = None
        self.extension_dirs: dict[str, str] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.state: dict[str, Any] = {}
        global _current
        _current = self

    @property
    def hook(self):
        return self.host.pm.hook

    @property
    def database_path(self) -> str:
        """The embedded SQLite file shared by the kernel's stores and plugins' tables."""
        return os.path.abspath(self.config.database or os.path.join(self.dirs.user, "comfy-kernel.db"))

    @property
    def max_upload_size(self) -> int | float:
        mb = self.config.max_upload_size
        value = mb * 1024 * 1024
        return int(value) if float(value).is_integer() else value

    def prepare_directories(self) -> None:
        """Create input/user, wipe and recreate temp, as ComfyUI does at start-up."""
        os.makedirs(self.dirs.input, exist_ok=True)
        os.makedirs(self.dirs.output, exist_ok=True)
        os.makedirs(self.dirs.user, exist_ok=True)
        if os.path.isdir(self.dirs.temp):
            shutil.rmtree(self.dirs.temp, ignore_errors=True)
        os.makedirs(self.dirs.temp, exist_ok=True)

    def load(self) -> None:
        """Discover plugins and run every registration hook (no event loop needed)."""
        self.prepare_directories()
        self.host.discover()
        self.host.call_each("ck_register_model_folders", folders=self.folders)
        for path in self.config.extra_model_paths_config or []:
            try:
                self.folders.load_extra_config(path)
            except Exception:
                log.exception("could not load extra model paths from %s", path)
        self.folders.add_output_folders()
        self.host.call_each("ck_register_nodes", registry=self.nodes)
        self.host.register_pip_node_packs(self.nodes)
        if not self.config.disable_all_custom_nodes:
            self.host.load_custom_node_dirs(self.folders.paths("custom_nodes"), self.nodes, self,
                                            whitelist=self.config.whitelist_custom_nodes)
        for result in self.host.call_each("ck_web_directories", kernel=self):
            if result:
                self.extension_dirs.update(result)
        self.extension_dirs.update(self.host.web_directories)

    def queue_remaining(self) -> int:
        return self.executor.queue_remaining() if self.executor is not None else 0

    def feature_flags(self) -> dict[str, Any]:
        flags: dict[str, Any] = {"supports_preview_metadata": True, "max_upload_size": self.max_upload_size}
        for extra in self.host.call_each("ck_feature_flags", kernel=self):
            for key, value in (extra or {}).items():
                if key not in ("supports_preview_metadata", "max_upload_size"):
                    flags[key] = _merged(flags.get(key), value)
        return flags

    async def startup(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.ws.start()
        self.logs.attach(self)
        if self.executor is not None:
            await self.executor.start()
        await self.host.call_each_async("ck_startup", kernel=self, mark_failed=True)

    async def shutdown(self) -> None:
        await self.host.call_each_async("ck_shutdown", kernel=self)
        if self.executor is not None:
            await self.executor.stop()
        await self.ws.stop()
        self.logs.detach(self)
        shutil.rmtree(self.dirs.temp, ignore_errors=True)


def _merged(old: Any, new: Any) -> Any:
    """Two plugins' flags under one key: nested objects are merged, anything else is replaced."""
    if isinstance(old, dict) and isinstance(new, dict):
        return {**old, **{k: _merged(old.get(k), v) for k, v in new.items()}}
    return new
