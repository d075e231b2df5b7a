"""The plugin host: discovery, validation, failure records, node packs.

Plugins come from the entry-point group ``comfy_kernel.plugins`` (and
``comfyui.custom_nodes``, the group other pip-installable ComfyUI node packs
use), sorted by group then name so start-up is deterministic. Legacy ComfyUI
node packs come from the ``custom_nodes`` folders, sorted by name. Whatever
goes wrong in one of them (import error, unknown hook, failing start-up hook)
is recorded in :attr:`PluginHost.records` with its traceback and never stops
the server.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib.util
import inspect
import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pluggy
from importlib_metadata import entry_points

from . import hookspecs

log = logging.getLogger(__name__)

ENTRY_POINT_GROUPS = ("comfy_kernel.plugins", "comfyui.custom_nodes")
PRELOAD_GROUP = "comfy_kernel.preload"
"""Modules imported before any plugin or node pack, sorted by name: import hooks
(such as the ComfyUI compatibility layer) that node packs rely on while they load.
An entry is skipped when its name is disabled; a failure is recorded as
``<name>:preload`` and nothing else is affected."""


@dataclass
class PluginRecord:
    """What the host knows about one plugin or node pack (served over the API)."""

    name: str
    kind: str  # "plugin" | "node_pack"
    status: str  # "loaded" | "failed" | "disabled"
    version: str | None = None
    source: str = ""
    error: str | None = None
    traceback: str | None = None
    import_time: float = 0.0
    nodes: list[str] = field(default_factory=list)
    path: str | None = None
    #: what the pack asked for while importing that this server does not provide (see :func:`note_missing`)
    missing: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "status": self.status, "version": self.version,
                "source": self.source, "error": self.error, "traceback": self.traceback,
                "import_time": round(self.import_time, 4), "nodes": list(self.nodes), "path": self.path,
                "missing": list(self.missing)}


_LOADING: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("loading_pack_missing", default=None)


def note_missing(what: str) -> None:
    """Record that the node pack being imported asked for ``what`` and this server lacks it.

    Packs often catch the ImportError and go on without some nodes; the note
    keeps the reason visible in the pack's record (``missing`` in
    ``/api/plugins``). Outside a pack import it does nothing.
    """
    notes = _LOADING.get()
    if notes is not None and what not in notes:
        notes.append(what)


class PluginValidationFailed(Exception):
    pass


class HookImpl(NamedTuple):
    """One implementation of a hook: the plugin that owns it, the function, the arguments it takes."""

    plugin: str
    function: Any
    argnames: tuple[str, ...]


class PluginHost:
    def __init__(self, disabled: list[str] | None = None):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.disabled = {d.strip() for d in (disabled or []) if d and d.strip()}
        self.records: dict[str, PluginRecord] = {}
        self.plugins: dict[str, Any] = {}
        self.pip_packs: dict[str, Any] = {}
        self.web_directories: dict[str, str] = {}
        self.loaded_module_dirs: dict[str, str] = {}
        self._discovered = False
        self._extra_hooks: list[tuple[str, Any]] = []
        self._callers: dict[str, tuple[HookImpl, ...]] = {}

    # --- entry-point plugins ---------------------------------------------

    def discover(self) -> None:
        """Load every entry-point plugin once, in deterministic order."""
        if self._discovered:
            return
        self._discovered = True
        self._preload()
        eps = []
        for group_rank, group in enumerate(ENTRY_POINT_GROUPS):
            for ep in entry_points(group=group):
                eps.append((group_rank, ep.name, ep))
        eps.sort(key=lambda t: (t[0], t[1]))
        loaded: list[tuple[str, Any]] = []
        for _, name, ep in eps:
            if name in self.records:
                continue
            version = ep.dist.version if getattr(ep, "dist", None) else None
            source = f"{ep.group}:{ep.value}"
            if name in self.disabled:
                self.records[name] = PluginRecord(name, "plugin", "disabled", version, source)
                continue
            start = time.perf_counter()
            try:
                obj = ep.load()
            except BaseException as exc:  # noqa: BLE001 - a plugin must never stop the server
                self._fail(name, "plugin", version, source, exc, time.perf_counter() - start)
                continue
            kind = "plugin" if ep.group == "comfy_kernel.plugins" and _has_hooks(obj) else "node_pack"
            record = PluginRecord(name, kind, "loaded", version, source,
                                  import_time=time.perf_counter() - start)
            self.records[name] = record
            loaded.append((name, obj))
        # pluggy calls later registrations first; register in reverse so that
        # hooks run in discovery order.
        for name, obj in reversed(loaded):
            self.register(name, obj)

    def _preload(self) -> None:
        for ep in sorted(entry_points(group=PRELOAD_GROUP), key=lambda e: e.name):
            if ep.name in self.disabled:
                continue
            start = time.perf_counter()
            try:
                ep.load()
            except BaseException as exc:  # noqa: BLE001 - a plugin must never stop the server
                version = ep.dist.version if getattr(ep, "dist", None) else None
                self._fail(f"{ep.name}:preload", "plugin", version, f"{ep.group}:{ep.value}", exc,
                           time.perf_counter() - start)

    def register(self, name: str, obj: Any) -> bool:
        """Register one plugin object, refusing hooks that have no spec."""
        record = self.records.setdefault(name, PluginRecord(name, "plugin", "loaded"))
        if _has_hooks(obj):
            unknown = _unknown_hooks(obj)
            if unknown:
                msg = f"plugin {name!r} implements hooks with no spec: {', '.join(sorted(unknown))}"
                log.error(msg)
                record.status, record.error = "failed", msg
                record.traceback = msg
                return False
            try:
                self.pm.register(obj, name=name)
            except Exception as exc:
                record.status, record.error = "failed", str(exc)
                record.traceback = traceback.format_exc()
                log.exception("plugin %s failed to register", name)
                return False
            finally:
                self._callers.clear()
        if hasattr(obj, "NODE_CLASS_MAPPINGS") or hasattr(obj, "comfy_entrypoint"):
            self.pip_packs[name] = obj
        self.plugins[name] = obj
        return True

    def _fail(self, name: str, kind: str, version: str | None, source: str, exc: BaseException,
              elapsed: float, path: str | None = None) -> PluginRecord:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        log.error("%s %s failed to load:\n%s", kind.replace("_", " "), name, tb)
        record = PluginRecord(name, kind, "failed", version, source, error=f"{type(exc).__name__}: {exc}",
                              traceback=tb, import_time=elapsed, path=path)
        self.records[name] = record
        return record

    def mark_failed(self, name: str, exc: BaseException) -> None:
        record = self.records.get(name)
        if record is None:
            return
        record.status = "failed"
        record.error = f"{type(exc).__name__}: {exc}"
        record.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        plugin = self.plugins.get(name)
        if plugin is not None and self.pm.is_registered(plugin):
            self.pm.unregister(plugin)
        self._extra_hooks = [(owner, obj) for owner, obj in self._extra_hooks if owner != name]
        self._callers.clear()

    # --- calling hooks ---------------------------------------------------

    def add_hooks(self, owner: str, obj: Any) -> None:
        """Register more hook implementations of the plugin ``owner``, from now on.

        For hooks that run per request or per prompt and matter only in some
        configurations (authentication turned on, a node pack that uses
        ComfyUI's ``PromptServer``): the plugin registers them when they become
        needed, and a server that never needs them never calls them. They are
        called right after ``owner``'s own implementations, and dropped with it
        if it fails. A hook name with no spec raises ``ValueError``.
        """
        unknown = _unknown_hooks(obj)
        if unknown:
            raise ValueError(f"no such hook: {', '.join(sorted(unknown))}")
        if not any(o is obj for _name, o in self._extra_hooks):
            self._extra_hooks.append((owner, obj))
            self._callers.clear()

    def remove_hooks(self, obj: Any) -> None:
        """Undo :meth:`add_hooks` for ``obj``."""
        self._extra_hooks = [(owner, o) for owner, o in self._extra_hooks if o is not obj]
        self._callers.clear()

    def impls(self, hook_name: str) -> tuple[HookImpl, ...]:
        """Who implements ``hook_name``, in call order; computed once per set of plugins.

        The order is plugin discovery order (pluggy's, see :mod:`.hookspecs`),
        each plugin's :meth:`add_hooks` objects right after its own functions.
        """
        impls = self._callers.get(hook_name)
        if impls is None:
            caller = getattr(self.pm.hook, hook_name)
            order = {name: i for i, (name, _plugin) in enumerate(reversed(self.pm.list_name_plugin()))}
            entries: list[tuple[int, int, int, HookImpl]] = []
            for seq, impl in enumerate(reversed(caller.get_hookimpls())):
                name = self.pm.get_name(impl.plugin) or "?"
                entries.append((order.get(name, len(order)), 0, seq, HookImpl(name, impl.function,
                                                                              tuple(impl.argnames))))
            for seq, (owner, obj) in enumerate(self._extra_hooks):
                fn = getattr(obj, hook_name, None)
                if callable(fn):
                    entries.append((order.get(owner, len(order)), 1, seq, HookImpl(owner, fn, _argnames(fn))))
            entries.sort(key=lambda e: e[:3])
            impls = self._callers[hook_name] = tuple(e[3] for e in entries)
        return impls

    def implemented(self, hook_name: str) -> bool:
        """Whether any plugin implements ``hook_name`` (so a caller can skip building its arguments)."""
        return bool(self.impls(hook_name))

    def call_each(self, hook_name: str, mark_failed: bool = True, **kwargs: Any) -> list[Any]:
        """Call a hook on each plugin separately so one failure spares the rest.

        A plugin that raises is logged and, unless ``mark_failed`` is False,
        marked failed and unregistered.
        """
        results = []
        dropped: set[str] = set()
        for impl in self.impls(hook_name):
            if impl.plugin in dropped:
                continue
            try:
                results.append(impl.function(**{k: kwargs[k] for k in impl.argnames if k in kwargs}))
            except Exception as exc:
                log.exception("plugin %s failed in %s", impl.plugin, hook_name)
                if mark_failed:
                    self.mark_failed(impl.plugin, exc)
                    dropped.add(impl.plugin)
        return results

    def register_nodes(self, registry: Any) -> None:
        """``ck_register_nodes`` on each plugin, recording which node names each one registered."""
        caller = self.pm.hook.ck_register_nodes
        for impl in reversed(caller.get_hookimpls()):
            name = self.pm.get_name(impl.plugin) or "?"
            before = {entry.name: entry for entry in registry.entries()}
            try:
                impl.function(**{k: v for k, v in {"registry": registry}.items() if k in impl.argnames})
            except Exception as exc:
                log.exception("plugin %s failed in ck_register_nodes", name)
                self.mark_failed(name, exc)
                continue
            record = self.records.get(name)
            if record is not None:
                record.nodes.extend(e.name for e in registry.entries() if before.get(e.name) is not e)

    async def call_each_async(self, hook_name: str, mark_failed: bool = False, **kwargs: Any) -> list[Any]:
        results = []
        dropped: set[str] = set()
        for impl in self.impls(hook_name):
            if impl.plugin in dropped:
                continue
            try:
                value = impl.function(**{k: kwargs[k] for k in impl.argnames if k in kwargs})
                if inspect.isawaitable(value):
                    value = await value
                results.append(value)
            except Exception as exc:
                log.exception("plugin %s failed in %s", impl.plugin, hook_name)
                if mark_failed:
                    self.mark_failed(impl.plugin, exc)
                    dropped.add(impl.plugin)
        return results

    def first_result(self, hook_name: str, **kwargs: Any) -> Any:
        """The first non-None answer in plugin order (for ``firstresult`` hooks such as ck_resolve_identity)."""
        for impl in self.impls(hook_name):
            value = impl.function(**{k: kwargs[k] for k in impl.argnames if k in kwargs})
            if value is not None:
                return value
        return None

    # --- node packs --------------------------------------------------------

    def register_pip_node_packs(self, registry: Any) -> None:
        """Register nodes of entry-point packs that export NODE_CLASS_MAPPINGS."""
        for name, module in self.pip_packs.items():
            record = self.records[name]
            try:
                record.nodes = self._register_pack_nodes(module, name, registry, f"custom_nodes.{name}")
                self._register_web_dir(name, module, _module_dir(module))
            except Exception as exc:
                self.mark_failed(name, exc)

    def load_custom_node_dirs(self, directories: list[str], registry: Any, kernel: Any = None,
                              whitelist: list[str] | None = None) -> None:
        """Load legacy ComfyUI node packs from ``custom_nodes`` folders, sorted by name."""
        entries: list[tuple[str, str]] = []
        for directory in directories:
            if not os.path.isdir(directory):
                continue
            for entry in sorted(os.listdir(directory)):
                path = os.path.join(directory, entry)
                if entry == "__pycache__" or entry.startswith(".") or entry.endswith(".disabled"):
                    continue
                if os.path.isfile(path) and not entry.endswith(".py"):
                    continue
                if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "__init__.py")):
                    continue
                entries.append((entry, path))
        for _entry, path in entries:
            script = os.path.join(path, "prestartup_script.py")
            if os.path.isdir(path) and os.path.isfile(script):
                try:
                    _exec_file(script)
                except Exception:
                    log.exception("prestartup script of %s failed", path)
        for entry, path in entries:
            name = entry[:-3] if entry.endswith(".py") else entry
            if whitelist and name not in whitelist and entry not in whitelist:
                self.records[name] = PluginRecord(name, "node_pack", "disabled", source=path, path=path)
                continue
            if name in self.disabled:
                self.records[name] = PluginRecord(name, "node_pack", "disabled", source=path, path=path)
                continue
            self.load_node_pack(name, path, registry)

    def load_node_pack(self, name: str, path: str, registry: Any) -> PluginRecord:
        start = time.perf_counter()
        module_name = _unique_module_name(path)
        missing: list[str] = []
        token = _LOADING.set(missing)
        try:
            module = _import_path(module_name, path)
            nodes = self._register_pack_nodes(module, name, registry, f"custom_nodes.{name}")
            if nodes is None:
                raise ImportError(f"Skip {path} module for custom nodes due to the lack of NODE_CLASS_MAPPINGS.")
        except BaseException as exc:  # noqa: BLE001
            sys.modules.pop(module_name, None)
            record = self._fail(name, "node_pack", _pack_version(path), path, exc,
                                time.perf_counter() - start, path=path)
            record.missing = missing
            return record
        finally:
            _LOADING.reset(token)
        for what in missing:
            log.warning("node pack %s loaded without: %s", name, what)
        self.loaded_module_dirs[name] = path
        self._register_web_dir(name, module, path if os.path.isdir(path) else os.path.dirname(path))
        record = PluginRecord(name, "node_pack", "loaded", _pack_version(path), path,
                              import_time=time.perf_counter() - start, nodes=nodes, path=path, missing=missing)
        self.records[name] = record
        return record

    def _register_pack_nodes(self, module: Any, name: str, registry: Any, python_module: str) -> list[str] | None:
        mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
        if mappings is not None:
            return registry.register_mappings(mappings, getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None),
                                              python_module=python_module, source=name)
        entry = getattr(module, "comfy_entrypoint", None)
        if entry is not None:
            return _load_v3_extension(entry, registry, python_module, name)
        return None

    def _register_web_dir(self, name: str, module: Any, module_dir: str | None) -> None:
        if module_dir is None:
            return
        web = getattr(module, "WEB_DIRECTORY", None)
        if web is not None:
            directory = os.path.abspath(os.path.join(module_dir, web))
            if os.path.isdir(directory):
                self.web_directories[name] = directory
        pyproject = os.path.join(module_dir, "pyproject.toml")
        if os.path.isfile(pyproject):
            try:
                import tomllib

                with open(pyproject, "rb") as f:
                    data = tomllib.load(f)
                web_dir = data.get("tool", {}).get("comfy", {}).get("web")
                project = data.get("project", {}).get("name")
                if web_dir and project:
                    directory = os.path.abspath(os.path.join(module_dir, web_dir))
                    if os.path.isdir(directory):
                        self.web_directories[project] = directory
            except Exception:
                log.warning("could not read %s", pyproject)

    # --- reporting -----------------------------------------------------------

    def failed(self) -> list[PluginRecord]:
        return [r for r in self.records.values() if r.status == "failed"]

    def as_list(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.records.values()]


def _has_hooks(obj: Any) -> bool:
    return any(name.startswith("ck_") for name in dir(obj))


def _unknown_hooks(obj: Any) -> set[str]:
    known = {n for n in dir(hookspecs) if n.startswith("ck_")}
    return {n for n in dir(obj) if n.startswith("ck_") and callable(getattr(obj, n, None))} - known


def _argnames(fn: Any) -> tuple[str, ...]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return ()
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _module_dir(module: Any) -> str | None:
    file = getattr(module, "__file__", None)
    return os.path.dirname(os.path.abspath(file)) if file else None


def _unique_module_name(path: str) -> str:
    base = os.path.abspath(path)
    if base.endswith(".py"):
        base = base[:-3]
    return "ck_nodepack_" + "".join(c if c.isalnum() else "_" for c in base)


def _import_path(module_name: str, path: str) -> Any:
    if os.path.isdir(path):
        spec = importlib.util.spec_from_file_location(module_name, os.path.join(path, "__init__.py"),
                                                      submodule_search_locations=[path])
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _exec_file(path: str) -> None:
    spec = importlib.util.spec_from_file_location(_unique_module_name(path), path)
    if spec and spec.loader:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


def _pack_version(path: str) -> str | None:
    pyproject = os.path.join(path, "pyproject.toml") if os.path.isdir(path) else None
    if pyproject and os.path.isfile(pyproject):
        try:
            import tomllib

            with open(pyproject, "rb") as f:
                return tomllib.load(f).get("project", {}).get("version")
        except Exception:
            return None
    return None


def _load_v3_extension(entrypoint: Any, registry: Any, python_module: str, source: str) -> list[str]:
    """Run a V3 ``comfy_entrypoint`` and register the node classes it lists."""

    async def collect() -> list[Any]:
        extension = entrypoint()
        if inspect.isawaitable(extension):
            extension = await extension
        on_load = getattr(extension, "on_load", None)
        if on_load is not None:
            res = on_load()
            if inspect.isawaitable(res):
                await res
        nodes = extension.get_node_list()
        if inspect.isawaitable(nodes):
            nodes = await nodes
        return list(nodes)

    try:
        asyncio.get_running_loop()
        running = True
    except RuntimeError:
        running = False
    if running:
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            # the pack's context (what it goes without is noted on its record) follows it into the thread
            classes = pool.submit(contextvars.copy_context().run, asyncio.run, collect()).result()
    else:
        classes = asyncio.run(collect())
    taken = []
    for cls in classes:
        schema = cls.GET_SCHEMA() if hasattr(cls, "GET_SCHEMA") else cls.define_schema()
        if registry.register(schema.node_id, cls, getattr(schema, "display_name", None),
                             python_module=python_module, source=source):
            taken.append(schema.node_id)
    return taken
