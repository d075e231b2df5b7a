"""The web app: choosing the web root, ``GET /`` and the static mounts.

The web root is ``--front-end-root DIR`` when given, else the ``static``
folder of the installed ``comfyui-frontend-package`` (the ``frontend`` extra
pins the version this plugin was tested with). ``--front-end-version
owner/repo@version`` selects a copy already unpacked under
``<base>/web_custom_versions/<owner>_<repo>/<version>``: this server never
downloads anything, so a missing copy is reported and the package is used.

Node help pages come from ``comfyui-embedded-docs`` at ``/docs`` when it is
installed; a missing page is a plain 404, never the app's HTML, because the
frontend treats an HTML answer as a found page.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import mimetypes
import os
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response

from comfy_kernel.routing import RouteTable

log = logging.getLogger(__name__)

FRONTEND_PACKAGE = "comfyui-frontend-package"
FRONTEND_MODULE = "comfyui_frontend_package"
DOCS_MODULE = "comfyui_embedded_docs"
TESTED_FRONTEND_VERSION = "1.58.1"
DEFAULT_VERSION = "comfyanonymous/ComfyUI@latest"
NO_CACHE = {"Cache-Control": "no-cache", "Pragma": "no-cache", "Expires": "0"}

mimetypes.add_type("text/markdown", ".md")
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")


def add_arguments(parser: Any) -> None:
    """``--front-end-root`` and ``--front-end-version`` (ComfyUI's names)."""
    if "--front-end-root" not in parser._option_string_actions:
        parser.add_argument("--front-end-root", default=None, metavar="DIR",
                            help="serve the web app from DIR instead of the installed frontend package")
    if "--front-end-version" not in parser._option_string_actions:
        parser.add_argument("--front-end-version", default=DEFAULT_VERSION, metavar="OWNER/REPO@VERSION",
                            help="a frontend copy under <base>/web_custom_versions/ (default: the "
                                 "installed comfyui-frontend-package)")


def package_dir(module: str, sub: str) -> str | None:
    """``<module's directory>/<sub>`` if the module is installed and has it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = os.path.join(location, sub)
        if os.path.isdir(candidate):
            return candidate
    return None


def distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _custom_version_dir(base: str, spec: str) -> str | None:
    repo, _, version = spec.partition("@")
    owner, _, name = repo.partition("/")
    if not owner or not name or not version:
        log.error("--front-end-version must look like owner/repo@version, got %r", spec)
        return None
    root = os.path.join(base, "web_custom_versions", f"{owner}_{name}")
    for candidate in (version, version.lstrip("v"), "v" + version.lstrip("v")):
        path = os.path.join(root, candidate)
        if os.path.isfile(os.path.join(path, "index.html")):
            return path
    log.error("frontend %s is not available locally (looked in %s); this server does not download it, "
              "so the installed %s is used", spec, root, FRONTEND_PACKAGE)
    return None


def resolve_web_root(config: Any, base: str) -> str | None:
    """The directory holding ``index.html``, or None when no frontend is available."""
    root = getattr(config, "front_end_root", None)
    if root:
        root = os.path.abspath(root)
        if os.path.isfile(os.path.join(root, "index.html")):
            return root
        log.error("--front-end-root %s has no index.html; falling back to the frontend package", root)
    version = getattr(config, "front_end_version", None) or DEFAULT_VERSION
    if version != DEFAULT_VERSION:
        custom = _custom_version_dir(base, version)
        if custom:
            return custom
    static = package_dir(FRONTEND_MODULE, "static")
    if static is None:
        log.warning("no web frontend: install it with pip install 'comfy-kernel-userdata[frontend]'")
        return None
    installed = distribution_version(FRONTEND_PACKAGE)
    if installed and installed != TESTED_FRONTEND_VERSION:
        log.warning("%s %s is installed; this server was tested with %s", FRONTEND_PACKAGE, installed,
                    TESTED_FRONTEND_VERSION)
    return static


def docs_dir() -> str | None:
    return package_dir(DOCS_MODULE, "docs")


def static_directories(web_root: str | None) -> list[tuple[str, str]]:
    """Mounts for the ``ck_static_directories`` hook: the web root last, at ``/``."""
    out: list[tuple[str, str]] = []
    docs = docs_dir()
    if docs:
        out.append(("/docs", docs))
    if web_root:
        out.append(("/", web_root))
    return out


def register(routes: RouteTable, web_root: str | None) -> None:
    """``GET /`` (and ``/api/``): the app's ``index.html``, never cached."""

    @routes.get("/")
    async def index(request: Request) -> Response:
        if web_root is None:
            return PlainTextResponse("The web frontend is not installed: "
                                     "pip install 'comfy-kernel-userdata[frontend]'\n", status_code=404)
        return FileResponse(os.path.join(web_root, "index.html"), media_type="text/html", headers=NO_CACHE)
