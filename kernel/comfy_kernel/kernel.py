"""The running kernel: the shared state every route and plugin talks to.

One :class:`Kernel` exists per server process. Its public attributes are the
kernel's API for plugins: ``config``, ``dirs``, ``folders``, ``nodes``,
``object_info``, ``ws``, ``host`` (the plugin host), ``logs``, and
``executor`` and ``webhooks`` once the execution engine is attached.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from .storage import Database, Migrations, SQLiteDatabase, connect, is_postgres_url, upgrade
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
        self.folders.access_check = self._file_access
        self.nodes = NodeRegistry()
        self.object_info = ObjectInfoCache(self.nodes, self.folders)
        self.ws = WsHub(self)
        self.logs = LogCapture.instance()
        self.host = host or PluginHost(disabled=config.disable_plugins)
        self.executor: Any = None
        self.webhooks: Any = None
        #: The database of the kernel's stores and the plugins' tables (opened by :meth:`startup`).
        self.database: Database = connect(self.database_url)
        self.extension_dirs: dict[str, str] = {}
        #: The directory served at ``/`` (the web frontend), once the app is built; None without one.
        self.web_root: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.state: dict[str, Any] = {}
        self.warmup: asyncio.Task | None = None
        #: "off" (--no-warmup, or not started yet), "running" or "done"; ``GET /api/health`` shows it.
        self.warmup_state = "off"
        global _current
        _current = self

    @property
    def hook(self):
        return self.host.pm.hook

    @property
    def database_url(self) -> str:
        """``--database``: a ``postgresql://`` URL, or the SQLite file (default ``<user>/comfy-kernel.db``)."""
        configured = self.config.database
        if configured and is_postgres_url(configured):
            return configured
        return self.database_path

    @property
    def database_path(self) -> str:
        """The embedded SQLite file, for plugins that keep their tables in SQLite themselves.

        With a PostgreSQL database there is none: such a plugin fails to start, by name, instead of
        keeping its state in a file only one machine sees.
        """
        configured = self.config.database
        if configured and is_postgres_url(configured):
            raise RuntimeError("this plugin keeps its tables in SQLite and cannot use the PostgreSQL database "
                               "given with --database; disable it or use SQLite")
        if configured and configured.startswith("sqlite:///"):
            configured = configured[len("sqlite:///"):]
        return os.path.abspath(configured or os.path.join(self.dirs.user, "comfy-kernel.db"))

    def migrations(self) -> list[Migrations]:
        """The kernel's schema migrations and every plugin's (``ck_migrations``)."""
        from .migrations import KERNEL

        found = [KERNEL]
        for extra in self.host.call_each("ck_migrations", kernel=self):
            found.extend(extra or [])
        return found

    @property
    def max_upload_size(self) -> int | float:
        mb = self.config.max_upload_size
        value = mb * 1024 * 1024
        return int(value) if float(value).is_integer() else value

    def prepare_directories(self) -> None:
        """Create the data folders a first start needs, and wipe and recreate temp.

        input, output, user, ``models/`` with ComfyUI's standard sub-folders
        (so a new user sees where checkpoints go) and ``custom_nodes/``. A
        folder that cannot be created or written raises :class:`StartupError`.
        """
        from .config import StartupError
        from .files.folders import DEFAULT_MODEL_FOLDERS

        subfolders = sorted({sub for _, subs, _ in DEFAULT_MODEL_FOLDERS for sub in subs})
        wanted = [self.dirs.input, self.dirs.output, self.dirs.user, self.dirs.custom_nodes,
                  *(os.path.join(self.dirs.models, sub) for sub in subfolders)]
        for directory in wanted:
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as exc:
                raise StartupError(f"cannot create {directory}: {exc.strerror or exc}") from None
        for directory in (self.dirs.input, self.dirs.output, self.dirs.user):
            if not os.access(directory, os.W_OK | os.X_OK):
                raise StartupError(f"cannot write to {directory}: permission denied")
        if os.path.isdir(self.dirs.temp):
            shutil.rmtree(self.dirs.temp, ignore_errors=True)
        try:
            os.makedirs(self.dirs.temp, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"cannot create {self.dirs.temp}: {exc.strerror or exc}") from None

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
        self.host.register_nodes(self.nodes)
        self.host.register_pip_node_packs(self.nodes)
        if not self.config.disable_all_custom_nodes:
            self.host.load_custom_node_dirs(self.folders.paths("custom_nodes"), self.nodes, self,
                                            whitelist=self.config.whitelist_custom_nodes)
        for result in self.host.call_each("ck_web_directories", kernel=self):
            if result:
                self.extension_dirs.update(result)
        self.extension_dirs.update(self.host.web_directories)

    def _file_access(self, owner: str, kind: str, path: str) -> bool:
        return self.host.first_result("ck_file_access", kernel=self, owner=owner, kind=kind, path=path) is not False

    def queue_remaining(self, identity: Any = None) -> int:
        """Prompts queued or running: the caller's own when an auth plugin vouched for
        ``identity`` (users must not learn each other's activity), else the server's."""
        if self.executor is None:
            return 0
        if identity is not None and getattr(identity, "authenticated", False):
            return self.executor.queue_remaining(identity.key)
        return self.executor.queue_remaining()

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
        try:
            if isinstance(self.database, SQLiteDatabase):
                os.makedirs(os.path.dirname(self.database.path), exist_ok=True)
            await self.database.open()
            await upgrade(self.database, self.migrations())
            if self.executor is not None:
                await self.executor.start()
            if self.webhooks is not None:
                await self.webhooks.start()
            await self.host.call_each_async("ck_startup", kernel=self, mark_failed=True)
        except BaseException:
            # A plugin that stops the start (SystemExit) or a database that fails must not leave the
            # database's or the executor's threads behind, keeping a failed process alive.
            with contextlib.suppress(Exception):
                await self.shutdown()
            raise

    def start_warmup(self) -> asyncio.Task | None:
        """Warm up in the background once the server answers (see :meth:`warm_up`); None with --no-warmup."""
        if getattr(self.config, "no_warmup", False) or self.loop is None or self.warmup is not None:
            return None
        self.warmup = self.loop.create_task(self.warm_up())
        return self.warmup

    async def warm_up(self) -> float:
        """Do now what the first prompt would otherwise wait for; returns the seconds it took.

        torch's shared libraries are loaded without holding the GIL, the
        executor's workers start (counting the devices imports torch), torch is
        imported and each plugin's ``ck_warmup`` runs, ``/object_info`` and the
        node classes' NodeDefs are built, all on background threads; then the
        start-up objects are frozen out of the garbage collector's way. The warm-up thread lets the interpreter switch threads
        more often meanwhile, so requests served during it stay quick.
        """
        started = time.perf_counter()
        self.warmup_state = "running"
        try:
            from .gpu.devices import load_torch_libraries

            await asyncio.to_thread(load_torch_libraries)
        except ImportError:
            pass
        if self.executor is not None:
            self.executor.start_workers()
        await asyncio.to_thread(self._warm_up_thread)
        if self.executor is not None:
            await self.executor.workers_ready()
        elapsed = time.perf_counter() - started
        self.warmup_state = "done"
        log.info("Warm-up done in %.2f seconds", elapsed)
        return elapsed

    def _warm_up_thread(self) -> None:
        import gc
        import importlib.util
        import sys

        interval = sys.getswitchinterval()
        sys.setswitchinterval(min(interval, 0.0005))
        try:
            if importlib.util.find_spec("torch") is not None:
                try:
                    import torch  # noqa: F401
                except Exception:
                    log.exception("warm-up: importing torch failed")
            self.host.call_each("ck_warmup", mark_failed=False, kernel=self)
            self._warm_node_info()
            gc.collect()
            gc.freeze()
        finally:
            sys.setswitchinterval(interval)

    def _warm_node_info(self) -> None:
        """Build ``/object_info`` (the frontend's first request) and every class's NodeDef (each prompt's)."""
        try:
            self.object_info.body()
        except Exception:
            log.exception("warm-up: building /object_info failed")
        try:
            from .execution.nodeclass import current_def
        except ImportError:
            return
        for entry in self.nodes.entries():
            try:
                current_def(entry.name, entry.cls)
            except Exception:  # validation reports a broken class when a prompt uses it
                pass

    async def shutdown(self) -> None:
        if self.warmup is not None and not self.warmup.done():
            self.warmup.cancel()
        await self.host.call_each_async("ck_shutdown", kernel=self)
        if self.webhooks is not None and self.webhooks.started:
            await self.webhooks.stop()
        if self.executor is not None:
            await self.executor.stop()
        await self.ws.stop()
        await self.database.close()
        self.logs.detach(self)
        shutil.rmtree(self.dirs.temp, ignore_errors=True)


def _merged(old: Any, new: Any) -> Any:
    """Two plugins' flags under one key: nested objects are merged, anything else is replaced."""
    if isinstance(old, dict) and isinstance(new, dict):
        return {**old, **{k: _merged(old.get(k), v) for k, v in new.items()}}
    return new
