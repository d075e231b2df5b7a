"""Helpers for the manager tests: servers on another interpreter, wheels, git packs, HTTP.

Packs are never installed into the shared environment: ``pack_python`` is a
throw-away virtualenv whose site-packages comes first and which sees the
shared environment's packages (the kernel, pip) through a ``.pth`` line. The
server for pip tests runs on that interpreter, so ``sys.executable -m pip``
inside the server installs there. Wheels come from a local wheelhouse
(``PIP_NO_INDEX``/``PIP_FIND_LINKS``), git packs from local repositories and
downloads from an HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from comfy_kernel.testing import ServerProcess


class PackServer(ServerProcess):
    """A ServerProcess started with another interpreter (the isolated venv's)."""

    def __init__(self, base_dir: Any, *args: str, python: str | None = None, **kw: Any):
        super().__init__(base_dir, *args, **kw)
        self.python = python or sys.executable

    def start(self) -> ServerProcess:
        # ServerProcess launches sys.executable; point it at the venv's python for this start only.
        with mock.patch.object(sys, "executable", self.python):
            return super().start()



def build_wheels(wheelhouse: Path, sources: list[Path]) -> None:
    """Build wheels of several ``pack_source`` folders with one pip run (pip start-up is the slow part)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheelhouse), *map(str, sources)], check=True, capture_output=True)


def pack_source(workdir: Path, dist: str, version: str, *, nodes: list[str] | None = None,
                deps: list[str] | None = None, module: str | None = None, body: str | None = None) -> Path:
    """Write a tiny node-pack project: one module, an entry point, NODE_CLASS_MAPPINGS."""
    module = module or dist.replace("-", "_")
    src = workdir / f"{dist}-{version}-src"
    (src / module).mkdir(parents=True, exist_ok=True)
    nodes = nodes if nodes is not None else []
    code = body if body is not None else textwrap.dedent("""
        class _Node:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {}}
            RETURN_TYPES = ("INT",)
            FUNCTION = "run"
            CATEGORY = "test"
            def run(self):
                return (1,)

        NODE_CLASS_MAPPINGS = {name: type(name, (_Node,), {}) for name in NAMES}
        """).replace("NAMES", repr(nodes))
    (src / module / "__init__.py").write_text(code)
    dep_list = ", ".join(repr(d) for d in deps or [])
    entry = f'[project.entry-points."comfy_kernel.plugins"]\n{module} = "{module}"\n' if nodes else ""
    (src / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "{version}"
        dependencies = [{dep_list}]

        [tool.setuptools]
        packages = ["{module}"]
        """) + entry)
    return src


def make_git_pack(path: Path, nodes: list[str], files: dict[str, str] | None = None) -> Path:
    """A local git repository holding a custom_nodes-style pack (``__init__.py``)."""
    path.mkdir(parents=True, exist_ok=True)
    init = textwrap.dedent("""
        class _Node:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {}}
            RETURN_TYPES = ("INT",)
            FUNCTION = "run"
            CATEGORY = "test"
            def run(self):
                return (1,)

        NODE_CLASS_MAPPINGS = {name: type(name, (_Node,), {}) for name in NAMES}
        """).replace("NAMES", repr(nodes))
    (path / "__init__.py").write_text(init)
    for name, content in (files or {}).items():
        (path / name).write_text(content)
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    return path


def git(path: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single-range support (for resumed downloads)."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        rng = self.headers.get("Range")
        path = self.translate_path(self.path)
        if not rng or not os.path.isfile(path):
            return super().do_GET()
        start = int(rng.split("=", 1)[1].split("-", 1)[0])
        data = Path(path).read_bytes()[start:]
        self.send_response(206)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Range", f"bytes {start}-{start + len(data) - 1}/{start + len(data)}")
        self.end_headers()
        self.wfile.write(data)


@contextlib.contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1 (with Range support); yields the base URL."""
    handler = functools.partial(RangeHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def simple_index(root: Path, wheels: list[Path]) -> Path:
    """Lay out a PEP 503 "simple" package index of ``wheels`` under ``root`` (serve it, then
    point ``PIP_INDEX_URL`` at ``<url>/simple/``)."""
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    projects: dict[str, list[str]] = {}
    for wheel in wheels:
        shutil.copy(wheel, files / wheel.name)
        project = re.sub(r"[-_.]+", "-", wheel.name.split("-", 1)[0]).lower()
        projects.setdefault(project, []).append(wheel.name)
    for project, names in projects.items():
        page = root / "simple" / project
        page.mkdir(parents=True, exist_ok=True)
        links = "".join(f'<a href="../../files/{n}">{n}</a>\n' for n in sorted(names))
        (page / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
    listing = "".join(f'<a href="{p}/">{p}</a>\n' for p in sorted(projects))
    (root / "simple" / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{listing}</body></html>\n")
    return root


def bare_repo(source: Path, target: Path) -> Path:
    """A bare clone of ``source`` that git's "dumb" HTTP transport can serve as static files."""
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(target)], check=True, capture_output=True)
    git(target, "update-server-info")
    return target


def wait_idle(srv: Any, timeout: float = 30) -> None:
    """Wait until the manager's worker has finished (and recorded) its batch."""
    deadline = time.monotonic() + timeout
    while srv.get("/api/v2/manager/queue/status").json()["is_processing"]:
        assert time.monotonic() < deadline, "the queue did not go idle"
        time.sleep(0.1)


def wait_restart(srv: Any, starts: int, timeout: float = 90) -> None:
    """Wait for the ``starts``-th start-up of the same process, then for it to answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if srv.log().count("To see the GUI") >= starts and \
                    srv.get("/api/v2/manager/queue/status", timeout=2).status_code == 200:
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise TimeoutError(srv.log()[-3000:])
