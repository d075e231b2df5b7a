"""Per-user files: ``/userdata``, ``/v2/userdata`` and ``/userdata/{file}`` (+ move).

The frontend sends a user path as one URL segment encoded with
``encodeURIComponent`` (``workflows%2Fa.json``). The ASGI server decodes
``%2F`` before routing, so these routes read ``scope["raw_path"]`` and decode
each segment exactly once: names containing ``%`` round-trip, and
``%252F`` stays a literal ``%2F`` instead of becoming a slash.

Every path is confined to the user's root after resolving symlinks.
Directories are created only by writes. Listings hide dotfiles (which also
hides the temporary files of atomic writes); names are still reachable
directly.
"""

from __future__ import annotations

import mimetypes
import os
import re
from typing import Any
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from comfy_kernel.files.paths import NameTooLong, UnsafePath, is_within, safe_join
from comfy_kernel.http import HTTPError, json_response
from comfy_kernel.routing import RouteTable

from .atomic import link_no_clobber, write_atomic
from .users import Users

INVALID_FILENAME = 'Invalid filename. Please avoid special characters like :\\/*?"<>|'
_RAW_USERDATA = re.compile(r"^(?:/api)?/userdata/(?P<rest>.*)$")
# Types a browser may render inline from a user-writable directory; anything
# else (HTML, SVG, JavaScript...) is sent as a download so it cannot run
# script on this origin.
_INLINE_TYPES = ("application/json", "text/plain", "text/css", "text/csv", "text/markdown",
                 "image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "audio/", "video/")


def decode_segment(segment: str) -> str:
    """Percent-decode one raw URL segment exactly once (400 on invalid UTF-8)."""
    try:
        return unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise HTTPError(400, "Path is not valid UTF-8", type="invalid_path") from None


def raw_tail(request: Request, pattern: re.Pattern[str]) -> str | None:
    """The still-encoded part of the request path after a route prefix."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if raw else request.url.path
    path = path.split("?", 1)[0]
    match = pattern.match(path)
    return match.group("rest") if match else None


def user_path(root: str, relative: str, *, forbidden: int = 403) -> str:
    """Resolve a user-supplied path under ``root``; NUL is 400, any escape ``forbidden``."""
    if "\x00" in relative:
        raise HTTPError(400, "NUL byte in path", type="invalid_path")
    try:
        return safe_join(root, relative)
    except NameTooLong as exc:
        raise HTTPError(400, f"Invalid filename: {exc}", type="invalid_path") from None
    except UnsafePath:
        raise HTTPError(forbidden, "Path is outside the user directory", type="forbidden_path") from None


def relative_to(root: str, path: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def file_info(root: str, path: str) -> dict[str, Any]:
    """``full_info`` entries: times are integer epoch milliseconds, as both seed specs type them and
    the frontend reads them (a JavaScript ``Date`` value); ComfyUI 0.3.64 sends float seconds."""
    st = os.stat(path)
    return {"path": relative_to(root, path), "size": st.st_size, "modified": st.st_mtime_ns // 1_000_000,
            "created": st.st_ctime_ns // 1_000_000}


def _hidden(name: str) -> bool:
    return name.startswith(".")


def list_files(root: str, directory: str, recurse: bool) -> list[str]:
    """Regular files (no dotfiles) under ``directory``, relative to it, sorted."""
    found: list[str] = []
    if recurse:
        for current, dirnames, filenames in os.walk(directory):
            dirnames[:] = [d for d in dirnames if not _hidden(d)]
            for name in filenames:
                full = os.path.join(current, name)
                if not _hidden(name) and os.path.isfile(full) and is_within(full, root):
                    found.append(relative_to(directory, full))
    else:
        with os.scandir(directory) as entries:
            for entry in entries:
                if not _hidden(entry.name) and entry.is_file() and is_within(entry.path, root):
                    found.append(entry.name)
    return sorted(found)


def list_tree(root: str, directory: str) -> list[dict[str, Any]]:
    """The ``/v2/userdata`` listing: directories and files below ``directory``."""
    items: list[dict[str, Any]] = []
    for current, dirnames, filenames in os.walk(directory):
        dirnames[:] = [d for d in dirnames if not _hidden(d)]
        for name in dirnames:
            items.append({"name": name, "path": relative_to(root, os.path.join(current, name)),
                          "type": "directory"})
        for name in filenames:
            full = os.path.join(current, name)
            if _hidden(name) or not is_within(full, root):
                continue
            item: dict[str, Any] = {"name": name, "path": relative_to(root, full), "type": "file"}
            try:
                st = os.stat(full)
                item["size"], item["modified"] = st.st_size, st.st_mtime
            except OSError:
                pass
            items.append(item)
    items.sort(key=lambda i: (i["type"] != "directory", i["name"].casefold()))
    return items


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() == "true"


def saved_answer(request: Request, root: str, path: str) -> Response:
    """What a successful save or move answers: the path, or ``full_info``."""
    if _flag(request, "full_info"):
        return json_response(file_info(root, path))
    return json_response(relative_to(root, path))


def file_response(path: str) -> Response:
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    headers = {"X-Content-Type-Options": "nosniff"}
    if not media_type.startswith(_INLINE_TYPES):
        headers["Content-Disposition"] = "attachment"
        media_type = "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers=headers)


def _make_parents(path: str) -> None:
    """Create the parent directories of a file about to be written (400 if impossible)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError:
        raise HTTPError(400, INVALID_FILENAME, type="invalid_filename") from None


def _save(path: str, body: bytes, overwrite: bool) -> None:
    if os.path.isdir(path):
        raise HTTPError(400, INVALID_FILENAME, type="invalid_filename")
    _make_parents(path)
    try:
        write_atomic(path, body, overwrite=overwrite)
    except FileExistsError:
        if os.path.isdir(path):
            raise HTTPError(400, INVALID_FILENAME, type="invalid_filename") from None
        raise HTTPError(409, "File already exists", type="conflict") from None
    except OSError:
        raise HTTPError(400, INVALID_FILENAME, type="invalid_filename") from None


def _move(source: str, dest: str, overwrite: bool) -> None:
    if os.path.isdir(dest):
        raise HTTPError(409, "Destination is a directory", type="conflict")
    _make_parents(dest)
    try:
        if overwrite:
            os.replace(source, dest)
        elif os.path.isdir(source):
            if os.path.lexists(dest):
                raise FileExistsError(dest)
            os.rename(source, dest)
        else:
            link_no_clobber(source, dest)
            if os.path.lexists(source):
                os.unlink(source)
    except FileExistsError:
        raise HTTPError(409, "File already exists", type="conflict") from None
    except OSError:
        raise HTTPError(400, INVALID_FILENAME, type="invalid_filename") from None


def register(routes: RouteTable, users: Users) -> None:
    """The userdata file routes."""

    @routes.get("/userdata")
    async def list_userdata(request: Request) -> Response:
        root = users.root(users.require(request))
        directory = request.query_params.get("dir", "")
        if not directory:
            raise HTTPError(400, "Directory not provided", type="invalid_directory")
        path = user_path(root, directory)
        if not os.path.exists(path):
            raise HTTPError(404, "Directory not found", type="not_found")
        if not os.path.isdir(path):
            return json_response([])
        files = await run_in_threadpool(list_files, root, path, _flag(request, "recurse"))
        if _flag(request, "full_info"):
            out: list[Any] = []
            for rel in files:
                try:
                    info = file_info(path, os.path.join(path, rel))
                except OSError:
                    continue
                out.append(info)
            return json_response(out)
        if _flag(request, "split"):
            return json_response([[rel, *rel.split("/")] for rel in files])
        return json_response(files)

    @routes.get("/v2/userdata")
    async def list_userdata_v2(request: Request) -> Response:
        root = users.root(users.require(request))
        requested = request.query_params.get("path", "")
        path = user_path(root, requested, forbidden=400) if requested else root
        if not os.path.exists(path):
            if path == root:
                return json_response([])
            raise HTTPError(404, "Requested path not found", type="not_found")
        if not os.path.isdir(path):
            raise HTTPError(400, "Requested path is not a directory", type="not_a_directory")
        return json_response(await run_in_threadpool(list_tree, root, path))

    @routes.route(["GET", "POST", "DELETE"], "/userdata/{rest:path}")
    async def userdata_file(request: Request) -> Response:
        root = users.root(users.require(request))
        tail = raw_tail(request, _RAW_USERDATA)
        segments = tail.split("/") if tail else []
        if len(segments) == 1 and segments[0]:
            path = user_path(root, decode_segment(segments[0]))
            if request.method in ("GET", "HEAD"):
                return _get(path)
            if request.method == "DELETE":
                return _delete(path)
            body = await request.body()
            await run_in_threadpool(_save, path, body, request.query_params.get("overwrite") != "false")
            return saved_answer(request, root, path)
        if len(segments) == 3 and segments[1] == "move" and segments[0] and segments[2]:
            if request.method != "POST":
                return Response("405: Method Not Allowed", status_code=405, headers={"Allow": "POST"},
                                media_type="text/plain")
            source = user_path(root, decode_segment(segments[0]))
            dest = user_path(root, decode_segment(segments[2]))
            if not os.path.lexists(source):
                raise HTTPError(404, "Source file not found", type="not_found")
            if source == root or dest == root:
                raise HTTPError(403, "Cannot move the user directory", type="forbidden_path")
            await run_in_threadpool(_move, source, dest, request.query_params.get("overwrite") != "false")
            return saved_answer(request, root, dest)
        raise HTTPError(404, "Not found", type="not_found")


def _get(path: str) -> Response:
    if os.path.isdir(path):
        raise HTTPError(403, "Path is a directory", type="is_directory")
    if not os.path.isfile(path):
        raise HTTPError(404, "File not found", type="not_found")
    return file_response(path)


def _delete(path: str) -> Response:
    if os.path.isdir(path) and not os.path.islink(path):
        raise HTTPError(403, "Path is a directory", type="is_directory")
    if not os.path.lexists(path):
        raise HTTPError(404, "File not found", type="not_found")
    try:
        os.unlink(path)
    except FileNotFoundError:
        raise HTTPError(404, "File not found", type="not_found") from None
    return Response(b"", status_code=204)

