"""What a new user meets on a first start: folders to put things in, plain errors, honest messages."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from comfy_kernel.files.folders import DEFAULT_MODEL_FOLDERS
from tests.conftest import KERNEL_ONLY


def cli(*args: str, cwd=None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "comfy_kernel.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)


def one_clear_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_first_start_creates_the_folders_a_user_fills(server):
    base = server.base_dir
    for _, subs, _ in DEFAULT_MODEL_FOLDERS:
        for sub in subs:
            assert os.path.isdir(os.path.join(base, "models", sub)), sub
    for name in ("custom_nodes", "input", "output", "temp", "user"):
        assert os.path.isdir(os.path.join(base, name)), name
    assert "checkpoints" in server.get("/models").json()


@pytest.mark.parametrize("port", ["99999", "0", "-5", "http"])
def test_bad_port_is_one_line_and_exit_2(tmp_path, port):
    line = one_clear_line(cli("serve", "--port", port, "--base-directory", str(tmp_path), *KERNEL_ONLY))
    assert "--port" in line


def test_port_in_use_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_clear_line(cli("serve", "--port", str(port), "--base-directory", str(tmp_path), *KERNEL_ONLY))
    assert f"port {port}" in line and "in use" in line


def test_unusable_base_directory_is_one_line_and_exit_2(tmp_path):
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("x")
    line = one_clear_line(cli("serve", "--base-directory", str(not_a_dir), *KERNEL_ONLY))
    assert "a-file" in line and "Not a directory" in line


def test_without_a_frontend_the_console_and_root_say_how_to_add_it(server):
    root = server.get("/")
    assert root.status_code == 404
    assert "No web frontend is installed" in root.text
    assert "pip install" in root.text and "comfy-kernel-userdata[frontend]" in root.text
    log = server.log()
    assert "To see the GUI" not in log
    assert "No web frontend is installed" in log and f"The API is at: {server.url}" in log


def test_help_says_a_bare_command_serves():
    done = cli("--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "Without a command it starts the server" in text and "`comfy-kernel serve`" in text


def test_options_without_a_command_serve(tmp_path):
    """``comfy-kernel --port N`` is ``comfy-kernel serve --port N`` (ComfyUI users type main.py's flags)."""
    done = cli("--port", "99999", "--base-directory", str(tmp_path), *KERNEL_ONLY)
    assert "comfy-kernel serve: error: argument --port" in done.stderr


def _core_nodes_installed() -> bool:
    return any(ep.name == "core_nodes" for ep in entry_points(group="comfy_kernel.plugins"))


@pytest.mark.skipif(not _core_nodes_installed(), reason="needs the core_nodes plugin")
def test_plugins_report_the_nodes_core_nodes_registers(tmp_path, make_server):
    listed = cli("plugins", "--json", "--base-directory", str(tmp_path), cwd=tmp_path, timeout=120)
    assert listed.returncode == 0, listed.stderr
    core = next(r for r in json.loads(listed.stdout) if r["name"] == "core_nodes")
    assert len(core["nodes"]) >= 40 and "KSampler" in core["nodes"] and "LoadImage" in core["nodes"]
    table = cli("plugins", "--base-directory", str(tmp_path), cwd=tmp_path, timeout=120).stdout
    row = next(line for line in table.splitlines() if line.startswith("core_nodes "))
    assert int(row.split()[-1]) == len(core["nodes"])
    server = make_server("--disable-plugins", "userdata,manager,assets,hub,multiuser,compat")
    served = next(r for r in server.get("/api/plugins").json() if r["name"] == "core_nodes")
    assert sorted(served["nodes"]) == sorted(core["nodes"])
