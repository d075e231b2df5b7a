"""Snapshots of the node-pack setup: save, list, compare, restore, remove.

A snapshot (ComfyUI-Manager's JSON layout, plus ``pip_packs`` for the native
form) records the git packs with their commits, the single-file packs, the
pip node packs with their versions, which of them are disabled, and the full
list of pip distributions for reference. Restore walks it pack by pack —
clone or check out the recorded commit, install the recorded pip version,
set the enabled/disabled state, disable packs the snapshot did not have — and
returns one line per step saying what really happened.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

from comfy_kernel import __version__ as kernel_version

from .catalog import normalize_url
from .packs import InstalledPack, PackError, Packs, _git

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SnapshotError(Exception):
    pass


class Snapshots:
    def __init__(self, packs: Packs, directory: str):
        self.packs = packs
        self.directory = directory

    def current(self) -> dict[str, Any]:
        git: dict[str, Any] = {}
        files: list[dict[str, Any]] = []
        pip_packs: dict[str, Any] = {}
        for pack in self.packs.installed():
            if pack.kind == "git" and pack.url:
                git[pack.url] = {"hash": pack.commit, "disabled": not pack.enabled, "name": pack.name}
            elif pack.kind in ("file", "dir"):
                files.append({"filename": os.path.basename(pack.path or pack.name), "disabled": not pack.enabled})
            elif pack.kind == "pip":
                pip_packs[pack.name] = {"dist": pack.dist, "version": pack.version, "disabled": not pack.enabled}
        pips = {name: version for name, version in sorted(self.packs._dists().items())}
        return {"comfyui": f"comfy-kernel {kernel_version}", "git_custom_nodes": git, "cnr_custom_nodes": {},
                "file_custom_nodes": files, "pip_packs": pip_packs, "pips": pips}

    def _path(self, name: str) -> str:
        name = name.removesuffix(".json")
        if not NAME.match(name) or ".." in name:
            raise SnapshotError(f"invalid snapshot name {name!r}")
        return os.path.join(self.directory, name + ".json")

    def list(self) -> list[str]:
        if not os.path.isdir(self.directory):
            return []
        names = [f[:-5] for f in os.listdir(self.directory) if f.endswith(".json")]
        return sorted(names, reverse=True)

    def save(self, name: str | None = None) -> str:
        name = name or time.strftime("%Y-%m-%d_%H-%M-%S") + "_snapshot"
        path = self._path(name)
        os.makedirs(self.directory, exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(self.current(), f, indent=2)
        os.replace(path + ".tmp", path)
        return os.path.basename(path)[:-5]

    def load(self, name: str) -> dict[str, Any]:
        path = self._path(name)
        if not os.path.isfile(path):
            raise SnapshotError(f"no snapshot named {name!r}")
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def remove(self, name: str) -> None:
        path = self._path(name)
        if not os.path.isfile(path):
            raise SnapshotError(f"no snapshot named {name!r}")
        os.remove(path)

    def restore(self, name: str) -> list[dict[str, Any]]:
        """Bring the setup back to ``name``; one result per step, failures included."""
        snap = self.load(name)
        steps: list[dict[str, Any]] = []

        def step(target: str, action: str, fn: Any) -> None:
            try:
                detail = fn()
                steps.append({"target": target, "action": action, "ok": True, "detail": detail or ""})
            except Exception as exc:
                steps.append({"target": target, "action": action, "ok": False, "detail": str(exc)})

        with self.packs.lock:
            installed = self.packs.installed()
            by_url = {normalize_url(p.url): p for p in installed if p.kind == "git" and p.url}
            wanted_git = set()
            for url, info in (snap.get("git_custom_nodes") or {}).items():
                wanted_git.add(normalize_url(url))
                pack = by_url.get(normalize_url(url))
                commit, disabled = info.get("hash"), bool(info.get("disabled"))
                if pack is None:
                    step(url, "clone", lambda u=url, c=commit: self.packs.install_git(u, c)["msg"])
                    pack = next((p for p in self.packs.installed()
                                 if p.url and normalize_url(p.url) == normalize_url(url)), None)
                elif commit and pack.commit != commit:
                    step(url, f"checkout {commit[:7]}", lambda p=pack, c=commit: self._checkout(p, c))
                if pack is not None:
                    self._set_state(pack, disabled, url, step)
            for pack in installed:
                if pack.kind == "git" and pack.url and normalize_url(pack.url) not in wanted_git and pack.enabled:
                    step(pack.name, "disable (not in snapshot)", lambda p=pack: self.packs.disable(p)["msg"])

            files = {f.get("filename"): bool(f.get("disabled")) for f in snap.get("file_custom_nodes") or []}
            for pack in self.packs.installed():
                if pack.kind not in ("file", "dir"):
                    continue
                fname = os.path.basename(pack.path or pack.name)
                if fname in files:
                    self._set_state(pack, files.pop(fname), fname, step)
                elif pack.enabled:
                    step(fname, "disable (not in snapshot)", lambda p=pack: self.packs.disable(p)["msg"])
            for fname in files:
                steps.append({"target": fname, "action": "restore file", "ok": False,
                              "detail": "the snapshot names this file but has no copy of it"})

            wanted_pip = snap.get("pip_packs") or {}
            for ep_name, info in wanted_pip.items():
                pack = next((p for p in self.packs.installed() if p.kind == "pip" and p.name == ep_name), None)
                dist, version = info.get("dist") or ep_name, info.get("version")
                if pack is None or (version and pack.version != version):
                    spec = f"{dist}=={version}" if version else dist
                    step(ep_name, f"pip install {spec}", lambda s=spec, n=ep_name: self._pip_pin(s, n))
                    pack = next((p for p in self.packs.installed() if p.kind == "pip" and p.name == ep_name), None)
                if pack is not None:
                    self._set_state(pack, bool(info.get("disabled")), ep_name, step)
            for pack in self.packs.installed():
                if pack.kind == "pip" and pack.name not in wanted_pip and pack.enabled:
                    step(pack.name, "disable (not in snapshot)", lambda p=pack: self.packs.disable(p)["msg"])
        return steps

    def _pip_pin(self, spec: str, name: str) -> str:
        changed = self.packs.pip_install([spec], name)
        self.packs._load_pip_dists(changed)
        return f"changed: {', '.join(changed) or 'nothing'}"

    def _checkout(self, pack: InstalledPack, commit: str) -> str:
        assert pack.path
        try:
            _git(["checkout", "--quiet", commit], cwd=pack.path)
        except PackError:
            _git(["fetch", "--quiet"], cwd=pack.path)
            _git(["checkout", "--quiet", commit], cwd=pack.path)
        return f"{pack.name} at {commit[:7]} (restart to reload its code)"

    def _set_state(self, pack: InstalledPack, disabled: bool, target: str, step: Any) -> None:
        current = next((p for p in self.packs.installed() if p.name == pack.name and p.kind == pack.kind), pack)
        if disabled and current.enabled:
            step(target, "disable", lambda: self.packs.disable(current)["msg"])
        elif not disabled and not current.enabled:
            step(target, "enable", lambda: self.packs.enable(current)["msg"])


# --- routes ------------------------------------------------------------------


def add_routes(routes: Any, mgr: Any) -> None:
    """Snapshot routes: legacy GET (``?target=``) and current POST (``{"target"}``) forms."""
    import asyncio

    from .web import ok_json, param, text

    snaps: Snapshots = mgr.snapshots

    @routes.get("/snapshot/getlist")
    async def getlist(request):
        return ok_json({"items": snaps.list()})

    @routes.get("/snapshot/get_current")
    async def get_current(request):
        try:
            return ok_json(await asyncio.to_thread(snaps.current))
        except Exception as exc:
            return text(str(exc), 400)

    @routes.route(["GET", "POST"], "/snapshot/save")
    async def save(request):
        refused = mgr.guard.check(request, "save snapshot", "low")
        if refused is not None:
            return refused
        try:
            name = await asyncio.to_thread(snaps.save)
        except Exception as exc:
            return text(str(exc), 400)
        return ok_json({"name": name})

    @routes.route(["GET", "POST"], "/snapshot/remove")
    async def remove(request):
        refused = mgr.guard.check(request, "remove snapshot", "middle")
        if refused is not None:
            return refused
        try:
            snaps.remove(await param(request, "target") or "")
        except SnapshotError as exc:
            return text(str(exc), 400)
        return text("")

    @routes.route(["GET", "POST"], "/snapshot/restore")
    async def restore(request):
        refused = mgr.guard.check(request, "restore snapshot", "middle")
        if refused is not None:
            return refused
        target = await param(request, "target") or ""
        try:
            snaps.load(target)
        except SnapshotError as exc:
            return text(str(exc), 400)
        steps = await asyncio.to_thread(snaps.restore, target)
        ok = all(s["ok"] for s in steps)
        return ok_json({"target": target, "ok": ok, "steps": steps}, 200 if ok else 400)
