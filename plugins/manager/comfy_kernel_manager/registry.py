"""Installing a pack the way the frontend names it: a Comfy registry id and a version.

The frontend reads the registry (search, versions) in the browser and asks the
server for ``{id, selected_version, repository}``; the server never asks the
registry itself. It finds a source it can trust, in this order:

1. **the catalog**: the channel lists the id (or the request's repository);
   the catalog's own git URL, pip requirement or files are used, never the
   request's. Git packs are checked out at the tag of the version
   (``v1.2.0`` or ``1.2.0``) when the repository has one.
2. **pip-native**: the configured package index (pip's own configuration,
   ``PIP_INDEX_URL`` and friends) has a *wheel* of a distribution named like
   the id at that version, and the wheel publishes a node-pack entry point
   (``comfy_kernel.plugins`` or ``comfyui.custom_nodes``). A wheel that is not
   a node pack is never installed, so an id cannot pull in an arbitrary
   library; the catalog comes first so that a curated pack is never replaced
   by a same-named upload to the index.
3. **git**: the ``repository`` the request names, cloned and checked out at
   the version's tag. A URL nobody vouches for is a ``high`` risk operation,
   allowed only at the security levels that allow installing from arbitrary
   URLs.

``nightly`` skips the index (it means a repository's default branch). What a
pack was installed as is remembered (``pack_ids.json``) so the Manager 4
listings report it under the registry id the frontend knows.
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any

from .packs import (
    VERSION,
    InstalledPack,
    PackError,
    Packs,
    _git,
    canonical,
    check_git_url,
    head_commit,
    wheel_plugin_groups,
)

log = logging.getLogger(__name__)

GIT_TYPES = ("git-clone", "git")


def requested_version(params: dict[str, Any]) -> str:
    """``selected_version`` wins over ``version``; missing means ``latest``."""
    value = params.get("selected_version") or params.get("version") or "latest"
    return str(value).strip() or "latest"


def catalog_git_url(entry: dict[str, Any] | None) -> str | None:
    if not entry or str(entry.get("install_type", "git-clone")).lower() not in GIT_TYPES:
        return None
    files = entry.get("files") or []
    return (files[0] if files else None) or entry.get("reference") or entry.get("repository")


def install(mgr: Any, params: dict[str, Any], allow_untrusted_git: bool) -> dict[str, Any]:
    """Install (or switch to) ``params["id"]`` at the requested version; returns the task result."""
    pack_id = str(params.get("id") or "").strip()
    if not pack_id:
        raise PackError("a registry id is required")
    version = requested_version(params)
    if version not in ("latest", "nightly") and not VERSION.match(version):
        raise PackError(f"invalid version {version!r}")
    repository = str(params.get("repository") or "").strip()
    packs: Packs = mgr.packs
    channel = mgr.channel(params.get("mode"))
    entry = channel.find(pack_id) or (channel.find(repository) if repository else None)

    with packs.lock:
        existing = packs.find({"id": pack_id, **({"reference": repository} if repository else {})})
        if existing is not None:
            return _installed_already(packs, existing, pack_id, version)
        if entry is not None and catalog_git_url(entry) is None:
            result = packs.install({**entry, "id": pack_id})
            _remember_new(packs, pack_id, version)
            return result
        if entry is None and version != "nightly":
            result = _install_wheel(packs, pack_id, None if version == "latest" else version)
            if result is not None:
                return result
        url = catalog_git_url(entry)
        if url is None and repository:
            if not allow_untrusted_git:
                raise PackError(f"refused: {pack_id} is neither on the package index nor in the catalog, and "
                                f"installing from the repository URL {repository} needs a security_level "
                                "that allows installing from arbitrary URLs (normal- on loopback, or weak)")
            url = repository
        if url is None:
            raise PackError(f"no source for {pack_id}@{version}: no wheel on the package index, not in the "
                            "catalog, and no repository given")
        tag, note = None, ""
        if version not in ("latest", "nightly"):
            tag = _remote_tag(url, version)
            note = "" if tag else f"the repository has no tag for {version}; installed its default branch"
        before = {p.name for p in packs.installed(commits=False)}
        packs.version += 1
        result = packs.install_git(url, f"refs/tags/{tag}" if tag else None)
        new = next((p for p in packs.installed(commits=False) if p.name not in before and p.kind == "git"), None)
        if new is not None and new.path:
            packs.remember_id(new.name, pack_id, version if tag else None, head_commit(new.path))
        if note:
            result = {**result, "msg": f"{result['msg']}; {note}"}
        return result


def _install_wheel(packs: Packs, pack_id: str, version: str | None) -> dict[str, Any] | None:
    """Install the index's wheel of ``pack_id`` when it is a node pack; None to try other sources."""
    with tempfile.TemporaryDirectory() as tmp:
        wheel = packs.fetch_wheel(pack_id, version, tmp)
        if wheel is None:
            return None
        if not wheel_plugin_groups(wheel):
            log.info("manager: the index's %s is not a node pack (no node-pack entry point)", pack_id)
            return None
        changed = packs.pip_install([wheel], pack_id)
    dist = canonical(pack_id)
    load = packs._load_pip_dists(changed or [dist])
    pack = next((p for p in packs.installed(commits=False) if p.kind == "pip" and p.dist
                 and canonical(p.dist) == dist), None)
    if pack is not None:
        packs.remember_id(pack.name, pack_id, pack.version)
    shown = pack.version if pack is not None else (version or "latest")
    return {"ok": True, "msg": f"installed {pack_id} {shown} with pip", "changed": changed, **load}


def _installed_already(packs: Packs, pack: InstalledPack, pack_id: str, version: str) -> dict[str, Any]:
    notes = []
    if not pack.enabled:
        notes.append(packs.enable(pack)["msg"])
        pack = next((p for p in packs.installed(commits=False) if p.name == pack.name), pack)
    wanted = None if version in ("latest", "nightly") else version
    if wanted is None or wanted == pack.version:
        notes.append(f"{pack_id} {pack.version or 'nightly'} is installed")
        return {"ok": True, "msg": "; ".join(notes), "restart_needed": bool(notes[:-1])}
    if pack.kind == "pip":
        spec = f"{pack.dist or pack_id}=={wanted}"
        changed = packs.pip_install([spec], pack_id)
        packs.remember_id(pack.name, pack_id, wanted)
        return {"ok": True, "msg": f"switched {pack_id} from {pack.version} to {wanted}", "changed": changed,
                "restart_needed": True}
    if pack.kind == "git" and pack.path:
        _git(["fetch", "--tags", "--quiet"], cwd=pack.path)
        tags = set(_git(["tag", "--list"], cwd=pack.path).split())
        tag = next((t for t in (f"v{wanted}", wanted) if t in tags), None)
        if tag is None:
            raise PackError(f"cannot switch {pack_id} to {wanted}: the repository has no tag for it")
        _git(["checkout", "--quiet", f"refs/tags/{tag}"], cwd=pack.path)
        packs.remember_id(pack.name, pack_id, wanted, head_commit(pack.path))
        return {"ok": True, "msg": f"switched {pack_id} to {wanted}", "restart_needed": True}
    raise PackError(f"{pack_id} is installed as a {pack.kind} pack; its version cannot be switched")


def _remote_tag(url: str, version: str) -> str | None:
    """The repository's tag for ``version`` (``v1.2.0`` or ``1.2.0``), asked with ``git ls-remote``."""
    listing = _git(["ls-remote", "--tags", check_git_url(url)], timeout=120)
    tags = {line.split("refs/tags/", 1)[1].removesuffix("^{}") for line in listing.splitlines()
            if "refs/tags/" in line}
    return next((t for t in (f"v{version}", version) if t in tags), None)


def _remember_new(packs: Packs, pack_id: str, version: str) -> None:
    pack = packs.find({"id": pack_id})
    if pack is not None:
        packs.remember_id(pack.name, pack_id, None if version in ("latest", "nightly") else version)

