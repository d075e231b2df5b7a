"""The plugin host through a real server: discovery, failures, disabling, node packs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from comfy_kernel.testing import ServerProcess
from tests.conftest import KERNEL_ONLY
from tests.fixtures import plugins as src
from tests.fixtures.distributions import make_distribution


@pytest.fixture
def plugin_path(tmp_path):
    root = tmp_path / "site"
    make_distribution(root, "good-plugin", "good_plugin", src.GOOD, version="1.2.3")
    make_distribution(root, "broken-plugin", "broken_plugin", src.BROKEN_IMPORT)
    make_distribution(root, "unknown-hook", "unknown_hook", src.UNKNOWN_HOOK)
    make_distribution(root, "failing-startup", "failing_startup", src.FAILING_STARTUP)
    make_distribution(root, "pip-pack", "pip_pack", src.PIP_NODE_PACK, version="0.3.0")
    return root


def test_a_plugin_that_stops_the_start_ends_the_process(tmp_path):
    """SystemExit from ck_startup (a plugin's setup that must not run half-configured) ends the process
    with its message, instead of leaving it alive on the database's thread."""
    root = tmp_path / "site"
    make_distribution(root, "stopping-startup", "stopping_startup", src.STOPPING_STARTUP)
    server = ServerProcess(tmp_path / "base", *KERNEL_ONLY, env={"PYTHONPATH": str(root)}, startup_timeout=30)
    with pytest.raises(RuntimeError, match="this server must not start"):
        server.start()
    server.client.close()


def _legacy_packs(base):
    nodes = base / "custom_nodes"
    pack = nodes / "legacy_pack"
    (pack / "web").mkdir(parents=True)
    (pack / "__init__.py").write_text(src.LEGACY_PACK)
    (pack / "helper.py").write_text("SUFFIX = '_x'\n")
    (pack / "web" / "main.js").write_text("console.log('legacy');\n")
    (nodes / "broken_pack.py").write_text("import does_not_exist_anywhere\n")
    (nodes / "off_pack.py.disabled").write_text("raise SystemExit(1)\n")
    (nodes / "no_mappings.py").write_text("X = 1\n")
    return nodes


def _records(server):
    return {r["name"]: r for r in server.get("/api/plugins").json()}


def test_discovery_failures_and_node_packs(tmp_path, plugin_path):
    base = tmp_path / "base"
    _legacy_packs(base)
    (base / "models" / "checkpoints").mkdir(parents=True)
    (base / "models" / "checkpoints" / "a.safetensors").write_bytes(b"x")
    env = {"PYTHONPATH": str(plugin_path)}
    with ServerProcess(base, *KERNEL_ONLY, env=env) as server:
        records = _records(server)
        assert records["good-plugin"]["status"] == "loaded"
        assert records["good-plugin"]["version"] == "1.2.3"
        assert records["broken-plugin"]["status"] == "failed"
        assert "cannot be imported" in records["broken-plugin"]["traceback"]
        assert records["unknown-hook"]["status"] == "failed"
        assert "ck_this_hook_does_not_exist" in records["unknown-hook"]["error"]
        assert records["failing-startup"]["status"] == "failed"
        assert "start-up failed on purpose" in records["failing-startup"]["error"]
        assert records["pip-pack"]["status"] == "loaded" and records["pip-pack"]["nodes"] == ["PipNode"]
        assert records["legacy_pack"]["status"] == "loaded"
        assert records["broken_pack"]["status"] == "failed"
        assert "does_not_exist_anywhere" in records["broken_pack"]["traceback"]
        assert records["no_mappings"]["status"] == "failed"
        assert "off_pack" not in records and "off_pack.py" not in records
        # Discovery order is deterministic: entry points sorted by name, then packs.
        names = [r["name"] for r in server.get("/api/plugins").json()]
        assert names.index("broken-plugin") < names.index("good-plugin") < names.index("pip-pack")

        assert server.get("/good/hello").json() == {"hello": "default"}
        assert server.get("/api/good/hello").json() == {"hello": "default"}
        features = server.get("/features").json()
        assert features["good_flag"] is True
        assert features["max_upload_size"] == 104857600  # plugins cannot override kernel flags
        assert server.get("/system_stats").json()["system"]["good_plugin"] == "here"
        assert "good_models" in server.get("/models").json()

        info = server.get("/object_info").json()
        assert info["GoodEcho"]["python_module"] == "good_plugin"  # reserved: pip pack could not take it
        assert info["GoodEcho"]["input"]["required"]["ckpt"][0] == ["a.safetensors"]
        assert info["PipNode"]["display_name"] == "Pip Node"
        assert info["PipNode"]["python_module"] == "custom_nodes.pip-pack"
        legacy = info["LegacyNode"]
        assert legacy["python_module"] == "custom_nodes.legacy_pack"
        assert legacy["output_name"] == ["out_x"]  # relative import inside the pack worked
        assert legacy["deprecated"] is True and legacy["output_node"] is True
        assert legacy["input_order"] == {"required": ["x"], "hidden": ["prompt"]}
        assert server.get("/object_info/LegacyNode").json()["LegacyNode"] == legacy
        assert server.get("/object_info/NoSuchNode").json() == {}

        assert server.get("/extensions/legacy_pack/main.js").text.startswith("console.log")

        # New model files appear in /object_info without a restart.
        (base / "models" / "checkpoints" / "b.safetensors").write_bytes(b"y")
        info = server.get("/object_info").json()
        assert info["GoodEcho"]["input"]["required"]["ckpt"][0] == ["a.safetensors", "b.safetensors"]

        with server.ws(client_id="c1") as ws:
            json.loads(ws.recv(timeout=10))
            ws.send(json.dumps({"type": "feature_flags", "data": {}}))
            assert json.loads(ws.recv(timeout=10))["type"] == "feature_flags"
            ws.send(json.dumps({"type": "ping", "data": {"n": 1}}))
            assert json.loads(ws.recv(timeout=10)) == {"type": "pong", "data": {"echo": {"n": 1}}}


@pytest.mark.parametrize("how", ["cli", "env", "config"])
def test_disable_plugins(tmp_path, plugin_path, how):
    base = tmp_path / "base"
    base.mkdir()
    env = {"PYTHONPATH": str(plugin_path)}
    args: list[str] = []
    if how == "cli":
        args = ["--disable-plugins", "good-plugin,pip-pack"]
    elif how == "env":
        env["COMFY_KERNEL_DISABLE_PLUGINS"] = "good-plugin,pip-pack"
    else:
        (base / "comfy-kernel.toml").write_text('disable_plugins = ["good-plugin", "pip-pack"]\n')
    # The other first-party plugins stay on; the kernel-only flag would override the tested setting.
    with ServerProcess(base, *args, env=env) as server:
        records = _records(server)
        assert records["good-plugin"]["status"] == "disabled"
        assert records["pip-pack"]["status"] == "disabled"
        assert server.get("/good/hello").status_code == 404
        assert "PipNode" not in server.get("/object_info").json()


def test_identity_hook(tmp_path):
    root = make_distribution(tmp_path / "site", "id-plugin", "id_plugin", src.IDENTITY)
    root_good = make_distribution(tmp_path / "site", "good-plugin", "good_plugin", src.GOOD)
    assert root == root_good
    with ServerProcess(tmp_path / "base", *KERNEL_ONLY, env={"PYTHONPATH": str(root)}) as server:
        assert server.get("/good/hello", headers={"x-test-user": "alice"}).json() == {"hello": "alice"}
        assert server.get("/good/hello").json() == {"hello": "default"}
        refused = server.get("/good/hello", headers={"x-test-user": "reject"})
        assert refused.status_code == 401 and refused.json()["error"]["message"] == "no entry"


def test_multi_user_header_identity(tmp_path):
    root = make_distribution(tmp_path / "site", "good-plugin", "good_plugin", src.GOOD)
    with ServerProcess(tmp_path / "base", "--multi-user", *KERNEL_ONLY, env={"PYTHONPATH": str(root)}) as server:
        assert server.get("/good/hello", headers={"Comfy-User": "bob"}).json() == {"hello": "bob"}
    with ServerProcess(tmp_path / "base2", *KERNEL_ONLY, env={"PYTHONPATH": str(root)}) as server:
        assert server.get("/good/hello", headers={"Comfy-User": "bob"}).json() == {"hello": "default"}


def test_plugins_command(tmp_path, plugin_path):
    base = tmp_path / "base"
    _legacy_packs(base)
    env = {**os.environ, "PYTHONPATH": str(plugin_path)}
    cmd = [sys.executable, "-m", "comfy_kernel.cli", "plugins", "--base-directory", str(base)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=base)
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()[1:] if line and not line.startswith(" ")}
    assert "1.2.3" in lines["good-plugin"] and "loaded" in lines["good-plugin"]
    assert "failed" in lines["broken-plugin"]
    assert "failed" in lines["broken_pack"] and "loaded" in lines["legacy_pack"]
    js = subprocess.run(cmd + ["--json"], env=env, capture_output=True, text=True, timeout=120, cwd=base)
    data = {r["name"]: r for r in json.loads(js.stdout)}
    assert data["legacy_pack"]["nodes"] == ["LegacyNode"] and data["legacy_pack"]["kind"] == "node_pack"
    check = subprocess.run(cmd + ["--check"], env=env, capture_output=True, text=True, timeout=120, cwd=base)
    assert check.returncode == 1
