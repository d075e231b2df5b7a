"""A classic node pack (folder_paths, nodes, comfy.utils, comfy.model_management) on a real server."""

from __future__ import annotations

import os

import pytest
from compat_helpers import Client, events, start


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("classic")
    srv = start(base, "classic_pack", "broken_pack", "plain_pack.py")
    yield srv
    srv.stop()
    srv.client.close()


def test_object_info_matches_comfyui_shape(server):
    info = server.get("/object_info/ClassicConcat").json()["ClassicConcat"]
    assert info["display_name"] == "Classic Concat"
    assert info["python_module"] == "custom_nodes.classic_pack"
    assert info["category"] == "classic_pack"
    assert info["description"] == "Repeat and join"
    assert info["output"] == ["STRING", "INT"]
    assert info["output_name"] == ["joined", "length"]
    required = info["input"]["required"]
    assert required["text"] == ["STRING", {"default": "hello", "multiline": False}]
    assert required["count"][1]["max"] == 16384
    # A folder the pack added through folder_paths, filtered by the default (empty = all) extension set.
    assert required["model"][0] == ["readme.txt", "tiny.safetensors"]
    assert info["input"]["optional"]["suffix"] == ["STRING", {"forceInput": True}]
    assert info["input_order"] == {"required": ["text", "count", "model"], "optional": ["suffix"],
                                   "hidden": ["unique_id"]}


def test_pack_folder_is_listed_by_models_route(server):
    assert server.get("/models/classic_models").json() == ["readme.txt", "tiny.safetensors"]


def test_prompt_runs_and_produces_comfyui_events(server):
    prompt = {
        "1": {"class_type": "ClassicConcat", "inputs": {"text": "ab", "count": 3, "model": "tiny.safetensors"}},
        "2": {"class_type": "ClassicShow", "inputs": {"value": ["1", 0]}},
    }
    with Client(server) as client:
        prompt_id, messages = client.run(prompt)
    kinds = [t for t, _ in messages]
    assert kinds[0] == "execution_start"
    assert "execution_success" in kinds
    executed = events(messages, "executed")
    assert len(executed) == 1
    out = executed[0]
    assert out["node"] == "2" and out["display_node"] == "2" and out["prompt_id"] == prompt_id
    assert out["output"]["text"] == ["ab-ab-ab"]
    assert out["output"]["registered"] == [True]
    saved = out["output"]["files"][0]
    assert saved["filename"] == "show_00001_.txt" and saved["subfolder"] == "classic"
    view = server.get("/view", params={"filename": saved["filename"], "subfolder": "classic", "type": "output"})
    assert view.status_code == 200 and view.text == "ab-ab-ab"
    history = server.get(f"/history/{prompt_id}").json()[prompt_id]
    assert history["outputs"]["2"]["text"] == ["ab-ab-ab"]
    assert history["status"]["status_str"] == "success"


def test_second_save_takes_the_next_counter(server):
    prompt = {
        "1": {"class_type": "ClassicConcat", "inputs": {"text": "x", "count": 1, "model": "tiny.safetensors"}},
        "2": {"class_type": "ClassicShow", "inputs": {"value": ["1", 0]}},
    }
    with Client(server) as client:
        _, messages = client.run(prompt)
    out = events(messages, "executed")[0]["output"]
    assert out["text"] == ["x"]
    assert out["files"][0]["filename"] == "show_00002_.txt"


def test_broken_pack_is_recorded_and_does_not_stop_the_server(server):
    plugins = server.get("/api/plugins").json()
    records = {p["name"]: p for p in (plugins if isinstance(plugins, list) else plugins.get("plugins", []))}
    assert records["broken_pack"]["status"] == "failed"
    assert "broken on purpose" in records["broken_pack"]["error"]
    assert records["classic_pack"]["status"] == "loaded"
    assert sorted(records["classic_pack"]["nodes"]) == ["ClassicConcat", "ClassicShow"]
    assert records["plain_pack"]["status"] == "loaded"


def test_plain_pack_needs_no_compat(tmp_path):
    """Without the compat plugin the kernel still loads packs that import nothing from ComfyUI."""
    srv = start(tmp_path / "base", "plain_pack.py", "classic_pack", keep=set())
    try:
        assert "PlainUpper" in srv.get("/object_info").json()
        plugins = srv.get("/api/plugins").json()
        records = {p["name"]: p for p in (plugins if isinstance(plugins, list) else plugins.get("plugins", []))}
        assert records["classic_pack"]["status"] == "failed"
        assert "folder_paths" in records["classic_pack"]["error"]
        assert os.path.isdir(tmp_path / "base" / "custom_nodes")
    finally:
        srv.stop()
        srv.client.close()


def test_plugins_command_lists_pack_failures(tmp_path):
    import json
    import subprocess
    import sys

    from compat_helpers import install_packs, other_plugins

    base = tmp_path / "cli"
    install_packs(base, "classic_pack", "broken_pack")
    out = subprocess.run([sys.executable, "-m", "comfy_kernel.cli", "plugins", "--json", "--base-directory",
                          str(base), *other_plugins({"compat"})], capture_output=True, text=True, timeout=120,
                         cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    records = {r["name"]: r for r in json.loads(out.stdout)}
    assert records["classic_pack"]["status"] == "loaded"
    assert records["classic_pack"]["nodes"] == ["ClassicConcat", "ClassicShow"]
    assert records["broken_pack"]["status"] == "failed"
    assert "broken on purpose" in records["broken_pack"]["traceback"]
