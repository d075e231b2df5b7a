"""Catalog routes against a real server: bundled catalog, custom channel, settings."""

from __future__ import annotations

import json
import time

import pytest
from mgr_helpers import PackServer


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    base = tmp_path_factory.mktemp("catalog") / "base"
    channel = base.parent / "mychannel"
    channel.mkdir()
    (channel / "custom-node-list.json").write_text(json.dumps({"custom_nodes": [
        {"author": "me", "title": "Tiny", "id": "tiny-pack", "reference": "https://example.invalid/me/tiny",
         "files": ["https://example.invalid/me/tiny"], "install_type": "git-clone", "description": "tiny"}]}))
    (channel / "model-list.json").write_text(json.dumps({"models": []}))
    manager_dir = base / "user" / "__manager"
    manager_dir.mkdir(parents=True)
    (manager_dir / "channels.list").write_text(f"mine::{channel}\n")
    broken = base / "custom_nodes" / "broken_pack"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise RuntimeError('this pack is broken on purpose')\n")
    with PackServer(base) as server:
        yield server


def test_getlist_full_catalog_fast(srv):
    r = srv.get("/customnode/getlist?mode=local&skip_update=true")
    assert r.status_code == 200
    body = r.json()
    assert body["channel"] == "default"
    packs = body["node_packs"]
    assert len(packs) > 5000
    clip = packs["clipseg"]
    assert clip["install_type"] == "copy" and clip["state"] == "not-installed"
    # the index is built once; later listings are cheap
    t = time.perf_counter()
    for _ in range(3):
        assert srv.get("/api/customnode/getlist?mode=local").status_code == 200
    assert (time.perf_counter() - t) / 3 < 0.5


def test_mappings_alternatives_models(srv):
    maps = srv.get("/customnode/getmappings?mode=local").json()
    url, (nodes, meta) = next(iter(maps.items()))
    assert isinstance(nodes, list) and "title_aux" in meta
    alt = srv.get("/customnode/alternatives?mode=local").json()
    assert alt and all("description" in v for v in alt.values())
    models = srv.get("/externalmodel/getlist?mode=local").json()["models"]
    assert len(models) > 100 and models[0]["installed"] == "False" and "save_path" in models[0]


def test_versions_and_installed(srv):
    assert srv.get("/customnode/versions/clipseg").json() == [{"version": "nightly"}]
    assert srv.get("/customnode/versions/no-such-pack-xyz").status_code == 400
    assert srv.get("/customnode/disabled_versions/clipseg").status_code == 400
    installed = srv.get("/customnode/installed").json()
    assert installed["broken_pack"]["enabled"] is True
    assert "broken_pack" in srv.get("/customnode/installed?mode=imported").json()
    assert srv.get("/customnode/fetch_updates").status_code == 200
    assert srv.post("/customnode/fetch_updates", json={"mode": "local"}).status_code == 200


def test_channel_selection(srv):
    channels = srv.get("/manager/channel_url_list").json()
    assert channels["selected"] == "default"
    assert any(c.startswith("mine::") for c in channels["list"])
    assert srv.get("/manager/channel_url_list?value=nope").status_code == 400
    assert srv.post("/manager/channel_url_list", json={"value": "mine"}).status_code == 200
    try:
        assert srv.get("/manager/channel_url_list").json()["selected"] == "mine"
        body = srv.get("/customnode/getlist").json()
        assert body["channel"] == "mine" and list(body["node_packs"]) == ["tiny-pack"]
        # local mode still reads the bundled catalog
        assert len(srv.get("/customnode/getlist?mode=local").json()["node_packs"]) > 5000
    finally:
        srv.get("/manager/channel_url_list?value=default")


def test_settings_get_and_post_forms(srv):
    assert srv.get("/manager/db_mode").text == "cache"
    assert srv.get("/manager/db_mode?value=local").status_code == 200
    assert srv.get("/manager/db_mode").text == "local"
    assert srv.post("/manager/db_mode", json={"value": "bogus"}).status_code == 400
    assert srv.post("/manager/db_mode", json={"value": "cache"}).status_code == 200
    assert srv.post("/manager/preview_method", json={"value": "taesd"}).status_code == 200
    assert srv.get("/manager/preview_method").text == "taesd"
    assert srv.get("/manager/preview_method?value=nonsense").status_code == 400
    assert srv.get("/manager/policy/update?value=nightly").status_code == 200
    assert srv.get("/manager/policy/update").text == "nightly"
    assert srv.post("/manager/policy/component", json={"value": "higher"}).status_code == 200
    assert srv.get("/manager/policy/component").text == "higher"


def test_versions_notice_and_switch(srv):
    assert srv.get("/manager/version").text.startswith("V3")
    notice = srv.get("/manager/notice")
    assert notice.status_code == 200 and "comfy-kernel" in notice.text
    versions = srv.get("/comfyui_manager/comfyui_versions").json()
    assert versions["current"].startswith("comfy-kernel") and versions["current"] in versions["versions"]
    r = srv.get("/comfyui_manager/comfyui_switch_version?ver=v0.3.0")
    assert r.status_code == 400 and "pip" in r.text
    assert srv.post("/comfyui_manager/comfyui_switch_version", json={"ver": versions["current"]}).status_code == 200


def test_components(srv):
    wf = {"nodes": [], "links": []}
    r = srv.post("/manager/component/save", json={"name": "my comp", "workflow": wf})
    assert r.status_code == 200 and r.text == "my comp"
    assert srv.post("/manager/component/loads").json()["my comp"] == wf
    for bad in ("../escape", "a/b", ".hidden", ""):
        assert srv.post("/manager/component/save", json={"name": bad, "workflow": wf}).status_code == 400
    assert srv.post("/manager/component/save", json={"name": "x"}).status_code == 400


def test_import_fail_info(srv):
    r = srv.post("/customnode/import_fail_info", json={"cnr_id": "broken_pack"})
    assert r.status_code == 200 and "broken on purpose" in r.json()["msg"]
    r = srv.post("/customnode/import_fail_info", json={"url": "https://example.invalid/x/broken_pack"})
    assert r.status_code == 200
    assert srv.post("/customnode/import_fail_info", json={"cnr_id": "fine"}).status_code == 400
    assert srv.post("/customnode/import_fail_info", json={}).status_code == 400
    bulk = srv.post("/v2/customnode/import_fail_info_bulk",
                    json={"cnr_ids": ["broken_pack", "fine"], "urls": ["https://example.invalid/y/broken_pack"]})
    body = bulk.json()
    assert "broken on purpose" in body["broken_pack"]["traceback"] and body["fine"] is None
    assert body["https://example.invalid/y/broken_pack"]["error"]
    assert srv.post("/v2/customnode/import_fail_info_bulk", json={"cnr_ids": "x"}).status_code == 400
    state = srv.get("/customnode/installed").json()["broken_pack"]
    assert state["enabled"] is True
