"""Node packs on disk and in the environment: find, install, disable, remove, update.

Three forms of pack exist side by side:

* **pip packs** (the native form): a distribution that publishes an entry
  point in ``comfy_kernel.plugins`` (or ``comfyui.custom_nodes``). Installed
  with ``sys.executable -m pip`` into the running environment; disabled by
  keeping the distribution but dropping its nodes (the manager remembers it).
* **git packs**: a repository cloned into ``custom_nodes/<name>``.
* **file packs**: a single ``.py`` copied into ``custom_nodes/``.

Disabled folder/file packs move to ``custom_nodes/.disabled/``, which the
kernel skips. Every install first asks pip for a dry-run report and refuses
to change a protected package (torch, numpy, the kernel, …) naming the pack
that asked; a failed install puts back both the files and the pip packages
it touched. New packs are loaded into ``kernel.nodes`` at once when possible;
otherwise the result says a restart is needed.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import tomllib
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from typing import Any

from comfy_kernel.plugins import PluginRecord

from .catalog import normalize_url, repo_name

log = logging.getLogger(__name__)

PLUGIN_GROUPS = ("comfy_kernel.plugins", "comfyui.custom_nodes")
PROTECTED = {"torch", "torchvision", "torchaudio", "numpy", "comfy-kernel", "comfy-kernel-manager",
             "comfy-kernel-core-nodes", "pip", "setuptools", "starlette", "uvicorn", "pluggy", "orjson",
             "aiosqlite", "httpx", "safetensors", "pillow"}
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
PIP_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.!+_-]{0,63}$")


class PackError(Exception):
    """An operation failed; the message is shown to the user as is."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def safe_name(name: str) -> str:
    """A folder/file name for custom_nodes: no separators, no ``..``, no hidden files."""
    if not name or not SAFE_NAME.match(name) or ".." in name or name.lower() in ("con", "nul"):
        raise PackError(f"refused: unsafe pack name {name!r}")
    return name


def check_git_url(url: str) -> str:
    """Accept http(s)/git/ssh URLs and local repositories, refuse git's option/transport tricks."""
    url = (url or "").strip()
    if not url or url.startswith("-") or "::" in url or any(c in url for c in "\n\r\t ;|&`$"):
        raise PackError(f"refused: invalid git URL {url!r}")
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme and scheme not in ("http", "https", "git", "ssh", "file") and len(scheme) > 1:
        raise PackError(f"refused: unsupported URL scheme {scheme!r}")
    return url


@dataclass
class InstalledPack:
    """One installed pack as the manager reports it."""

    name: str
    kind: str  # "git" | "file" | "dir" | "pip"
    enabled: bool
    path: str | None = None
    url: str | None = None
    commit: str | None = None
    version: str | None = None
    dist: str | None = None
    nodes: list[str] = field(default_factory=list)
    cnr_id: str | None = None  # the registry id it was installed as (or declares), when known

    @property
    def aux_id(self) -> str | None:
        """ComfyUI-Manager's id for a git pack: ``author/repo`` on GitHub, else the repository's name."""
        if not self.url:
            return None
        if "github.com/" in self.url:
            return normalize_url(self.url).split("github.com/", 1)[1]
        return repo_name(self.url) or None

    @property
    def pack_id(self) -> str:
        """The key the Manager 4 API lists this pack under."""
        return self.cnr_id or self.aux_id or self.name

    def info(self) -> dict[str, Any]:
        """The ``/customnode/installed`` shape (ver, cnr_id, aux_id, enabled)."""
        ver = self.version or (self.commit[:7] if self.commit else "unknown")
        aux = self.aux_id if self.url and "github.com/" in self.url else None
        return {"ver": ver, "cnr_id": self.cnr_id or self.dist or "", "aux_id": aux, "enabled": self.enabled,
                "kind": self.kind, "url": self.url, "commit": self.commit}

    def info_v2(self) -> dict[str, Any]:
        """Manager 4's ``ManagerPackInstalled``: a version or a commit hash, the ids, the state."""
        return {"ver": self.version or self.commit or "unknown", "cnr_id": self.cnr_id or "",
                "aux_id": self.aux_id, "enabled": self.enabled}


def _git(args: list[str], cwd: str | None = None, timeout: float = 300) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise PackError(f"git {args[0]} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


class Packs:
    """All pack operations; synchronous (the queue runs them in a worker thread)."""

    def __init__(self, kernel: Any, state_dir: str):
        self.kernel = kernel
        self.state_dir = state_dir
        self.disabled_file = os.path.join(state_dir, "disabled_pip.json")
        self.ids_file = os.path.join(state_dir, "pack_ids.json")
        self.lock = threading.RLock()
        self.extra_protected = set()
        self.imported_at_start: dict[str, dict[str, Any]] = {}
        self.version = 0  # bumps on every change so cached listings refresh
        self.behind: dict[str, bool] = {}  # the last fetch_updates answer, shown by getlist

    # --- where things are ------------------------------------------------------

    @property
    def custom_nodes(self) -> str:
        paths = self.kernel.folders.paths("custom_nodes")
        return paths[0] if paths else self.kernel.dirs.custom_nodes

    @property
    def disabled_dir(self) -> str:
        return os.path.join(self.custom_nodes, ".disabled")

    def protected(self) -> set[str]:
        return {canonical(p) for p in PROTECTED | self.extra_protected}

    def disabled_pip(self) -> dict[str, str]:
        try:
            with open(self.disabled_file, encoding="utf-8") as f:
                return dict(json.load(f))
        except (OSError, ValueError):
            return {}

    def _save_disabled_pip(self, data: dict[str, str]) -> None:
        os.makedirs(self.state_dir, exist_ok=True)
        with open(self.disabled_file + ".tmp", "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(self.disabled_file + ".tmp", self.disabled_file)

    def pack_ids(self) -> dict[str, dict[str, Any]]:
        """``{pack name: {"cnr_id", "version", "commit"}}``: what each pack was installed as."""
        try:
            with open(self.ids_file, encoding="utf-8") as f:
                data = json.load(f)
            return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict)}
        except (OSError, ValueError, AttributeError):
            return {}

    def remember_id(self, name: str, cnr_id: str | None, version: str | None = None,
                    commit: str | None = None) -> None:
        with self.lock:
            data = self.pack_ids()
            if cnr_id is None:
                data.pop(name, None)
            else:
                data[name] = {"cnr_id": cnr_id, "version": version, "commit": commit}
            os.makedirs(self.state_dir, exist_ok=True)
            with open(self.ids_file + ".tmp", "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
            os.replace(self.ids_file + ".tmp", self.ids_file)

    # --- listing -----------------------------------------------------------------

    def installed(self, commits: bool = True) -> list[InstalledPack]:
        """Every pack, enabled or not; ``commits=False`` skips git calls (for fast listings)."""
        out: list[InstalledPack] = []
        for base, enabled in ((self.custom_nodes, True), (self.disabled_dir, False)):
            if not os.path.isdir(base):
                continue
            for entry in sorted(os.listdir(base)):
                path = os.path.join(base, entry)
                if entry.startswith((".", "__")):
                    continue
                if os.path.isfile(path) and entry.endswith(".py"):
                    out.append(InstalledPack(entry[:-3], "file", enabled, path))
                elif os.path.isdir(path):
                    pack = InstalledPack(entry, "dir", enabled, path)
                    if os.path.isdir(os.path.join(path, ".git")):
                        pack.kind = "git"
                        pack.url = _origin_url(path)
                        pack.commit = head_commit(path)
                        if commits and pack.commit is None:
                            try:
                                pack.commit = _git(["rev-parse", "HEAD"], cwd=path, timeout=10)
                            except Exception:
                                pack.commit = None
                    pack.cnr_id = _declared_cnr_id(path)
                    out.append(pack)
        records = self.kernel.host.records
        for pack in out:
            record = records.get(pack.name)
            if record is not None:
                pack.nodes = list(record.nodes)
                pack.version = pack.version or record.version
        disabled = self.disabled_pip()
        seen: set[str] = set()
        for ep in self._entry_points():
            record = records.get(ep.name)
            if record is not None and record.kind == "plugin":
                continue
            dist = ep.dist.name if ep.dist else ep.name
            if canonical(dist).startswith("comfy-kernel") or ep.name in seen:
                continue
            seen.add(ep.name)
            out.append(InstalledPack(ep.name, "pip", ep.name not in disabled, version=ep.dist.version if ep.dist else None,
                                     dist=dist, nodes=list(record.nodes) if record else [], cnr_id=canonical(dist)))
        ids = self.pack_ids()
        for pack in out:
            known = ids.get(pack.name)
            if known and known.get("cnr_id"):
                pack.cnr_id = known["cnr_id"]
                # a git pack checked out at a registry version reports that version while it stays there
                if pack.kind == "git" and known.get("version") and known.get("commit") == pack.commit:
                    pack.version = known["version"]
        return out

    @staticmethod
    def _entry_points() -> list[md.EntryPoint]:
        importlib.invalidate_caches()
        eps = []
        for group in PLUGIN_GROUPS:
            eps.extend(md.entry_points(group=group))
        return eps

    def find(self, item: dict[str, Any]) -> InstalledPack | None:
        """The installed pack a request item (id / files / reference / dist) points at."""
        keys = set()
        for key in ("id", "name", "cnr_id", "title"):
            if item.get(key):
                keys.add(str(item[key]))
        urls = [u for u in [item.get("reference"), *(item.get("files") or [])] if u]
        for url in urls:
            keys.add(repo_name(url).removesuffix(".py"))
        norm_urls = {normalize_url(u) for u in urls}
        for pip_spec in item.get("pip") or []:
            keys.add(re.split(r"[<>=!~\[; ]", pip_spec, maxsplit=1)[0])
        ckeys = {canonical(k) for k in keys}
        for pack in self.installed():
            if pack.url and normalize_url(pack.url) in norm_urls:
                return pack
            if pack.name in keys or canonical(pack.name) in ckeys or (pack.dist and canonical(pack.dist) in ckeys):
                return pack
            if (pack.cnr_id and canonical(pack.cnr_id) in ckeys) or (pack.aux_id and pack.kind == "git"
                                                                      and pack.aux_id in keys):
                return pack
        return None

    # --- pip -------------------------------------------------------------------

    def _pip(self, args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--no-input"]
        log.info("manager: %s", " ".join(cmd))
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    @staticmethod
    def _dists() -> dict[str, str]:
        importlib.invalidate_caches()
        out: dict[str, str] = {}
        for dist in md.distributions():
            name = dist.metadata.get("Name") if dist.metadata else None
            if name:
                out.setdefault(canonical(name), dist.version)
        return out

    def plan(self, requirements: list[str], pack: str, extra: list[str] | None = None) -> list[tuple[str, str]]:
        """Ask pip what it would install; refuse changes to protected packages."""
        with tempfile.TemporaryDirectory() as tmp:
            report = os.path.join(tmp, "report.json")
            proc = self._pip(["install", "--dry-run", "--quiet", "--report", report, *(extra or []), *requirements])
            if proc.returncode != 0:
                raise PackError(f"pip could not resolve the dependencies of {pack}: "
                                f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
            with open(report, encoding="utf-8") as f:
                data = json.load(f)
        installed = self._dists()
        changes = []
        for entry in data.get("install", []):
            meta = entry.get("metadata", {})
            name, version = canonical(meta.get("name", "")), meta.get("version", "")
            current = installed.get(name)
            if name in self.protected() and current is not None and current != version:
                raise PackError(f"refused: pack {pack!r} asks for {name} {version}, but {name} {current} is "
                                "installed and protected (it would be downgraded or replaced)")
            changes.append((name, version))
        return changes

    def pip_install(self, requirements: list[str], pack: str, extra: list[str] | None = None) -> list[str]:
        """Install with pip after the protection check; on failure restore what pip changed."""
        self.plan(requirements, pack, extra)
        before = self._dists()
        proc = self._pip(["install", *(extra or []), *requirements])
        if proc.returncode != 0:
            notes = self._restore_dists(before)
            raise PackError(f"pip install for {pack} failed: {(proc.stderr or proc.stdout).strip()[-2000:]}"
                            + (f" (rollback: {notes})" if notes else ""))
        after = self._dists()
        return [n for n, v in after.items() if before.get(n) != v]

    def _restore_dists(self, before: dict[str, str]) -> str:
        after = self._dists()
        added = [n for n in after if n not in before]
        changed = [f"{n}=={before[n]}" for n, v in after.items() if n in before and before[n] != v]
        notes = []
        if added:
            proc = self._pip(["uninstall", "-y", *added])
            notes.append(f"removed {', '.join(added)}" + ("" if proc.returncode == 0 else " (failed)"))
        if changed:
            proc = self._pip(["install", "--no-deps", *changed])
            notes.append(f"restored {', '.join(changed)}" + ("" if proc.returncode == 0 else " (failed)"))
        return "; ".join(notes)

    def fetch_wheel(self, dist: str, version: str | None, dest: str) -> str | None:
        """Download the wheel of ``dist`` (at ``version``, else the newest) from the configured
        package index into ``dest``; None when the index has no wheel for it."""
        if not PIP_NAME.match(dist) or (version is not None and not VERSION.match(version)):
            return None
        spec = f"{dist}=={version}" if version else dist
        proc = self._pip(["download", "--no-deps", "--only-binary=:all:", "--quiet", "-d", dest, spec], timeout=300)
        if proc.returncode != 0:
            log.info("manager: no wheel for %s on the package index: %s", spec,
                     (proc.stderr or proc.stdout).strip()[-300:])
            return None
        wheels = sorted(f for f in os.listdir(dest) if f.endswith(".whl"))
        return os.path.join(dest, wheels[0]) if wheels else None

    # --- loading nodes ------------------------------------------------------------

    def _load_folder_pack(self, name: str, path: str) -> dict[str, Any]:
        record = self.kernel.host.load_node_pack(name, path, self.kernel.nodes)
        if record.status != "loaded":
            return {"loaded": False, "restart_needed": False, "error": record.error}
        return {"loaded": True, "restart_needed": False, "nodes": record.nodes}

    def _load_pip_dists(self, dists: list[str]) -> dict[str, Any]:
        """Register nodes of new entry points from ``dists`` without a restart where possible."""
        wanted = {canonical(d) for d in dists}
        restart, nodes = False, []
        host = self.kernel.host
        for ep in self._entry_points():
            if not ep.dist or canonical(ep.dist.name) not in wanted:
                continue
            record = host.records.get(ep.name)
            if record is not None and record.status == "loaded":
                restart = True  # an older version is already imported
                continue
            try:
                obj = ep.load()
            except Exception as exc:
                host.records[ep.name] = PluginRecord(ep.name, "node_pack", "failed", ep.dist.version,
                                                     f"{ep.group}:{ep.value}", error=f"{type(exc).__name__}: {exc}")
                continue
            if any(n.startswith("ck_") for n in dir(obj)):
                restart = True  # a full plugin: its hooks need a fresh start
                continue
            mappings = getattr(obj, "NODE_CLASS_MAPPINGS", None)
            if mappings is None:
                restart = True
                continue
            taken = self.kernel.nodes.register_mappings(
                mappings, getattr(obj, "NODE_DISPLAY_NAME_MAPPINGS", None),
                python_module=f"custom_nodes.{ep.name}", source=ep.name)
            host.records[ep.name] = PluginRecord(ep.name, "node_pack", "loaded", ep.dist.version,
                                                 f"{ep.group}:{ep.value}", nodes=taken)
            nodes.extend(taken)
        return {"loaded": bool(nodes), "restart_needed": restart, "nodes": nodes}

    def _drop_nodes(self, name: str, status: str | None) -> None:
        for node in self.kernel.nodes.by_source(name):
            self.kernel.nodes.unregister(node)
        record = self.kernel.host.records.get(name)
        if record is not None:
            if status is None:
                self.kernel.host.records.pop(name, None)
            else:
                record.status = status

    def apply_disabled_pip(self) -> None:
        """At start-up: drop nodes of pip packs the user disabled."""
        for name in self.disabled_pip():
            self._drop_nodes(name, "disabled")

    # --- operations ----------------------------------------------------------------

    def install(self, item: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            existing = self.find(item)
            if existing is not None:
                if not existing.enabled:
                    return self.enable(existing)
                return {"ok": True, "msg": f"{existing.name} is already installed", "restart_needed": False}
            itype = str(item.get("install_type", "git-clone")).lower()
            files = list(item.get("files") or [])
            try:
                if itype in ("git-clone", "git"):
                    result = self.install_git(files[0] if files else item.get("reference", ""))
                elif itype == "copy":
                    result = self.install_files(files)
                elif itype == "unzip":
                    result = self.install_zip(files[0] if files else "")
                elif itype == "pip":
                    reqs = list(item.get("pip") or files)
                    result = self.install_pip(reqs, item.get("id") or (reqs[0] if reqs else "?"))
                else:
                    raise PackError(f"unsupported install_type {itype!r}")
            finally:
                self.version += 1
            return result

    def install_pip(self, requirements: list[str], pack: str) -> dict[str, Any]:
        if not requirements:
            raise PackError("no pip requirement given")
        for req in requirements:
            if req.strip().startswith("-"):
                raise PackError(f"refused: pip options are not accepted ({req!r})")
        changed = self.pip_install(requirements, pack)
        load = self._load_pip_dists(changed or [re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0] for r in requirements])
        return {"ok": True, "msg": f"installed {pack} with pip", "changed": changed, **load}

    def install_git(self, url: str, commit: str | None = None) -> dict[str, Any]:
        url = check_git_url(url)
        name = safe_name(repo_name(url))
        target = os.path.join(self.custom_nodes, name)
        if os.path.exists(target) or os.path.exists(os.path.join(self.disabled_dir, name)):
            raise PackError(f"{name} already exists in custom_nodes")
        os.makedirs(self.custom_nodes, exist_ok=True)
        before = self._dists()
        try:
            _git(["clone", "--recursive", "--", url, target])
            if commit:
                _git(["checkout", "--quiet", commit], cwd=target)
            self._install_requirements(name, target)
        except BaseException as exc:
            shutil.rmtree(target, ignore_errors=True)
            notes = self._restore_dists(before)
            if isinstance(exc, PackError):
                raise PackError(str(exc) + (f" (rolled back: {notes})" if notes else " (rolled back)")) from None
            raise
        return {"ok": True, "msg": f"cloned {url} into custom_nodes/{name}", **self._load_folder_pack(name, target)}

    def _install_requirements(self, name: str, path: str) -> None:
        req = os.path.join(path, "requirements.txt")
        if os.path.isfile(req):
            with open(req, encoding="utf-8") as f:
                lines = [ln.strip() for ln in f if ln.strip() and not ln.strip().startswith("#")]
            if any(ln.startswith("-") and not ln.startswith(("--find-links", "--extra-index-url")) for ln in lines):
                raise PackError(f"refused: {name}/requirements.txt carries pip options")
            if lines:
                self.pip_install(lines, name)
        script = os.path.join(path, "install.py")
        if os.path.isfile(script):
            proc = subprocess.run([sys.executable, script], cwd=path, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                raise PackError(f"{name}/install.py failed: {(proc.stderr or proc.stdout).strip()[-2000:]}")

    def install_files(self, urls: list[str]) -> dict[str, Any]:
        if not urls:
            raise PackError("no file URL given")
        written: list[str] = []
        try:
            for url in urls:
                fname = safe_name(urllib.parse.unquote(repo_name(url)))
                if not fname.endswith(".py"):
                    raise PackError(f"refused: {fname!r} is not a .py file")
                target = os.path.join(self.custom_nodes, fname)
                if os.path.exists(target):
                    raise PackError(f"{fname} already exists in custom_nodes")
                os.makedirs(self.custom_nodes, exist_ok=True)
                _download(url, target)
                written.append(target)
        except BaseException:
            for path in written:
                os.remove(path)
            raise
        loads = [self._load_folder_pack(os.path.basename(p)[:-3], p) for p in written]
        return {"ok": True, "msg": f"copied {', '.join(os.path.basename(p) for p in written)}",
                "loaded": all(x["loaded"] for x in loads), "restart_needed": False}

    def install_zip(self, url: str) -> dict[str, Any]:
        name = safe_name(repo_name(url).removesuffix(".zip"))
        target = os.path.join(self.custom_nodes, name)
        if os.path.exists(target):
            raise PackError(f"{name} already exists in custom_nodes")
        with tempfile.TemporaryDirectory() as tmp:
            archive = os.path.join(tmp, "pack.zip")
            _download(url, archive)
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    dest = os.path.realpath(os.path.join(target, member))
                    if not dest.startswith(os.path.realpath(target) + os.sep):
                        raise PackError(f"refused: archive member {member!r} escapes the pack folder")
                try:
                    zf.extractall(target)
                except BaseException:
                    shutil.rmtree(target, ignore_errors=True)
                    raise
        return {"ok": True, "msg": f"unpacked {name}", **self._load_folder_pack(name, target)}

    def uninstall(self, pack: InstalledPack) -> dict[str, Any]:
        with self.lock:
            self.version += 1
            if pack.kind == "pip":
                proc = self._pip(["uninstall", "-y", pack.dist or pack.name])
                if proc.returncode != 0:
                    raise PackError(f"pip uninstall {pack.dist} failed: {proc.stderr.strip()}")
                disabled = self.disabled_pip()
                if disabled.pop(pack.name, None) is not None:
                    self._save_disabled_pip(disabled)
            elif pack.path and os.path.isdir(pack.path):
                shutil.rmtree(pack.path)
            elif pack.path:
                os.remove(pack.path)
            self._drop_nodes(pack.name, None)
            if pack.name in self.pack_ids():
                self.remember_id(pack.name, None)
            return {"ok": True, "msg": f"uninstalled {pack.name}", "restart_needed": False}

    def disable(self, pack: InstalledPack) -> dict[str, Any]:
        with self.lock:
            self.version += 1
            if not pack.enabled:
                return {"ok": True, "msg": f"{pack.name} is already disabled"}
            if pack.kind == "pip":
                disabled = self.disabled_pip()
                disabled[pack.name] = pack.dist or pack.name
                self._save_disabled_pip(disabled)
            else:
                assert pack.path is not None
                os.makedirs(self.disabled_dir, exist_ok=True)
                dest = os.path.join(self.disabled_dir, os.path.basename(pack.path))
                if os.path.exists(dest):
                    shutil.rmtree(dest) if os.path.isdir(dest) else os.remove(dest)
                shutil.move(pack.path, dest)
            self._drop_nodes(pack.name, "disabled")
            return {"ok": True, "msg": f"disabled {pack.name}", "restart_needed": False}

    def enable(self, pack: InstalledPack) -> dict[str, Any]:
        with self.lock:
            self.version += 1
            if pack.enabled:
                return {"ok": True, "msg": f"{pack.name} is already enabled"}
            if pack.kind == "pip":
                disabled = self.disabled_pip()
                disabled.pop(pack.name, None)
                self._save_disabled_pip(disabled)
                self.kernel.host.records.pop(pack.name, None)
                load = self._load_pip_dists([pack.dist or pack.name])
            else:
                assert pack.path is not None
                dest = os.path.join(self.custom_nodes, os.path.basename(pack.path))
                if os.path.exists(dest):
                    raise PackError(f"cannot enable {pack.name}: {os.path.basename(dest)} exists")
                shutil.move(pack.path, dest)
                load = self._load_folder_pack(pack.name, dest)
            return {"ok": True, "msg": f"enabled {pack.name}", **load}

    def update(self, pack: InstalledPack, item: dict[str, Any] | None = None) -> dict[str, Any]:
        with self.lock:
            self.version += 1
            self.behind.pop(pack.name, None)
            if pack.kind == "git" and pack.path:
                old = pack.commit
                if _detached(pack.path):  # checked out at a version's tag: updating means its branch again
                    remote_head = _git(["symbolic-ref", "--short", "refs/remotes/origin/HEAD"], cwd=pack.path)
                    _git(["checkout", "--quiet", remote_head.split("/", 1)[1]], cwd=pack.path)
                _git(["pull", "--ff-only", "--quiet"], cwd=pack.path)
                new = _git(["rev-parse", "HEAD"], cwd=pack.path)
                known = self.pack_ids().get(pack.name)
                if known and known.get("cnr_id") and new != known.get("commit"):
                    self.remember_id(pack.name, known["cnr_id"], None, new)
                if new == old:
                    return {"ok": True, "msg": f"{pack.name} is up to date", "restart_needed": False}
                changed = _git(["diff", "--name-only", old or "HEAD@{1}", new], cwd=pack.path).split()
                try:
                    if "requirements.txt" in changed or "install.py" in changed:
                        self._install_requirements(pack.name, pack.path)
                except PackError:
                    _git(["reset", "--hard", "--quiet", old or "HEAD@{1}"], cwd=pack.path)
                    raise
                return {"ok": True, "msg": f"updated {pack.name} {old[:7] if old else '?'} -> {new[:7]}",
                        "restart_needed": True}
            if pack.kind == "pip":
                spec = (item or {}).get("pip") or [pack.dist or pack.name]
                changed = self.pip_install(list(spec), pack.name, extra=["--upgrade"])
                return {"ok": True, "msg": f"updated {pack.name}" if changed else f"{pack.name} is up to date",
                        "restart_needed": bool(changed)}
            return {"ok": True, "msg": f"{pack.name} has no update source ({pack.kind})", "restart_needed": False}

    def fix(self, pack: InstalledPack) -> dict[str, Any]:
        with self.lock:
            if pack.kind == "pip":
                self.pip_install([pack.dist or pack.name], pack.name)
            elif pack.path and os.path.isdir(pack.path):
                self._install_requirements(pack.name, pack.path)
            return {"ok": True, "msg": f"dependencies of {pack.name} reinstalled", "restart_needed": True}

    def updatable(self) -> dict[str, bool]:
        """``git fetch`` each git pack and say which are behind their upstream."""
        out = {}
        for pack in self.installed():
            if pack.kind != "git" or not pack.path:
                continue
            try:
                _git(["fetch", "--quiet"], cwd=pack.path, timeout=60)
                behind = _git(["rev-list", "--count", "HEAD..@{u}"], cwd=pack.path, timeout=10)
                out[pack.name] = int(behind or 0) > 0
            except Exception:
                out[pack.name] = False
        self.behind = out
        self.version += 1
        return out


def wheel_plugin_groups(path: str) -> set[str]:
    """The node-pack entry-point groups a wheel publishes (empty: it is not a node pack)."""
    groups: set[str] = set()
    try:
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                parts = member.split("/")
                if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "entry_points.txt":
                    text = zf.read(member).decode("utf-8", "replace")
                    for line in text.splitlines():
                        line = line.strip()
                        if line.startswith("[") and line.endswith("]") and line[1:-1].strip() in PLUGIN_GROUPS:
                            groups.add(line[1:-1].strip())
    except (OSError, zipfile.BadZipFile):
        return set()
    return groups


def _detached(path: str) -> bool:
    try:
        with open(os.path.join(path, ".git", "HEAD"), encoding="utf-8") as f:
            return not f.read().startswith("ref:")
    except OSError:
        return False


def head_commit(path: str) -> str | None:
    """The commit a clone is at, read from ``.git`` without starting git (listings stay fast)."""
    git_dir = os.path.join(path, ".git")
    try:
        with open(os.path.join(git_dir, "HEAD"), encoding="utf-8") as f:
            head = f.read().strip()
        if not head.startswith("ref:"):
            return head or None
        ref = head[4:].strip()
        ref_file = os.path.join(git_dir, *ref.split("/"))
        if os.path.isfile(ref_file):
            with open(ref_file, encoding="utf-8") as f:
                return f.read().strip() or None
        with open(os.path.join(git_dir, "packed-refs"), encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref:
                    return parts[0]
    except OSError:
        return None
    return None


def _declared_cnr_id(path: str) -> str | None:
    """A registry pack names itself in ``pyproject.toml`` (``[project] name`` beside ``[tool.comfy]``)."""
    try:
        with open(os.path.join(path, "pyproject.toml"), "rb") as f:
            data = tomllib.load(f)
    except (OSError, ValueError):
        return None
    name = (data.get("project") or {}).get("name")
    return str(name) if name and "comfy" in (data.get("tool") or {}) else None


def _origin_url(path: str) -> str | None:
    """Read ``remote.origin.url`` from ``.git/config`` without starting git (listings stay fast)."""
    try:
        with open(os.path.join(path, ".git", "config"), encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    match = re.search(r'\[remote "origin"\][^\[]*?^\s*url\s*=\s*(\S+)', text, re.M | re.S)
    return match.group(1) if match else None


def _download(url: str, target: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise PackError(f"refused: only http(s) downloads are allowed ({url!r})")
    tmp = target + ".part"
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as f:
            shutil.copyfileobj(resp, f)
        os.replace(tmp, target)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, PackError):
            raise
        raise PackError(f"download of {url} failed: {exc}") from None


# --- routes ------------------------------------------------------------------


def add_routes(routes: Any, mgr: Any) -> None:
    """Direct installs (not queued): a git URL or pip requirements in a text body."""
    import asyncio

    from .web import text

    @routes.post("/customnode/install/git_url")
    async def install_git_url(request):
        refused = mgr.guard.check(request, "install via git url", "high")
        if refused is not None:
            return refused
        url = (await request.body()).decode("utf-8", "replace").strip()
        try:
            existing = mgr.packs.find({"files": [url]})
            if existing is not None:
                return text(f"{existing.name} is already installed")
            result = await asyncio.to_thread(lambda: _locked(mgr.packs, mgr.packs.install_git, url))
        except PackError as exc:
            return text(str(exc), 400)
        return text(result["msg"] + (" (restart needed)" if result.get("restart_needed") else ""))

    @routes.post("/customnode/install/pip")
    async def install_pip(request):
        refused = mgr.guard.check(request, "install via pip", "high")
        if refused is not None:
            return refused
        body = (await request.body()).decode("utf-8", "replace")
        reqs = [r for r in body.replace(",", " ").split() if r]
        try:
            result = await asyncio.to_thread(lambda: _locked(mgr.packs, mgr.packs.install_pip, reqs, " ".join(reqs)))
        except PackError as exc:
            return text(str(exc), 400)
        return text(result["msg"])


def _locked(packs: Packs, fn: Any, *args: Any) -> Any:
    with packs.lock:
        packs.version += 1
        return fn(*args)
