"""Fixtures for the manager tests: an isolated pip target, local sources, servers.

See ``mgr_helpers`` for why packs go into a throw-away virtualenv.
"""

from __future__ import annotations

import functools
import http.server
import os
import site
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from mgr_helpers import PackServer, RangeHandler, build_wheels, pack_source  # noqa: E402


@pytest.fixture(scope="session")
def pack_python(tmp_path_factory) -> str:
    """An isolated venv that installs into its own site-packages and sees the shared one."""
    root = tmp_path_factory.mktemp("session-packvenv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(root)],
                   check=True)
    python = root / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    shared = [p for p in site.getsitepackages() if os.path.isdir(p)]
    with open(os.path.join(purelib, "_ck_shared_env.pth"), "w") as f:
        for path in shared:
            f.write(f"import site; site.addsitedir({path!r})\n")
    return str(python)


@pytest.fixture(scope="session")
def wheels(tmp_path_factory) -> Path:
    """A wheelhouse of tiny packs (built once per session with one pip run)."""
    house = tmp_path_factory.mktemp("session-wheelhouse")
    work = tmp_path_factory.mktemp("session-wheelsrc")
    # pip resolves one batch together, so a second version of a dist goes in a second batch
    build_wheels(house, [
        pack_source(work, "tiny-pip-pack", "1.1", nodes=["TinyPipNode", "TinyPipNode2"]),
        pack_source(work, "snap-pack", "2.0", nodes=["SnapNode"]),
    ])
    build_wheels(house, [
        pack_source(work, "tiny-pip-pack", "1.0", nodes=["TinyPipNode"]),
        pack_source(work, "tiny-helper-lib", "1.0"),
        pack_source(work, "tiny-helper-two", "1.0"),
        pack_source(work, "numpy", "0.0.1"),
        pack_source(work, "greedy-pack", "1.0", nodes=["GreedyNode"], deps=["numpy==0.0.1"]),
        pack_source(work, "snap-pack", "1.0", nodes=["SnapNode"]),
    ])
    return house


@pytest.fixture
def http_dir(tmp_path):
    """(directory, base URL) of a local HTTP server on 127.0.0.1."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(RangeHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def start_server(tmp_path):
    """Start servers (stopped at the end): ``start_server(*args, base=..., python=..., env=...)``."""
    started: list[PackServer] = []

    def start(*args: str, base: Path | None = None, python: str | None = None,
              env: dict[str, str] | None = None) -> PackServer:
        srv = PackServer(base or (tmp_path / f"base{len(started)}"), *args, python=python, env=env).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
        srv.client.close()
