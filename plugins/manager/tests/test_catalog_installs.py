"""Catalog packs installed through the queue at the default (normal) level, and
the remaining queue operations: fix, reinstall, update_all; workflow node types."""

from __future__ import annotations

import json

from mgr_helpers import git, make_git_pack
from test_packs import wait_queue


def test_catalog_pack_through_queue(start_server, tmp_path):
    repo = make_git_pack(tmp_path / "repos" / "LocalPack", ["LocalNode"])
    channel = tmp_path / "chan"
    channel.mkdir()
    (channel / "custom-node-list.json").write_text(json.dumps({"custom_nodes": [
        {"author": "me", "title": "Local pack", "id": "local-pack", "reference": str(repo),
         "files": [str(repo)], "install_type": "git-clone", "description": "a local test pack"}]}))
    base = tmp_path / "base"
    (base / "user" / "__manager").mkdir(parents=True)
    (base / "user" / "__manager" / "channels.list").write_text(f"testchan::{channel}\n")
    (base / "user" / "__manager" / "config.ini").write_text("[default]\nchannel_url = testchan\n")
    wf_dir = base / "user" / "default" / "workflows"
    wf_dir.mkdir(parents=True)
    (wf_dir / "a.json").write_text(json.dumps({"nodes": [{"type": "LocalNode"}, {"type": "KSampler"}]}))
    srv = start_server(base=base)  # security level: normal

    assert srv.get("/customnode/get_node_types_in_workflows").json() == [
        {"workflow_file_name": "a.json", "node_types": ["KSampler", "LocalNode"]}]
    assert srv.get("/customnode/getlist").json()["node_packs"]["local-pack"]["state"] == "not-installed"
    # a catalog pack is "middle" risk: allowed at normal; the catalog's files win over the request's
    r = srv.post("/manager/queue/install", json={"id": "local-pack", "files": ["https://example.invalid/evil"],
                                                 "ui_id": "lp"})
    assert r.status_code == 200
    assert wait_queue(srv)[-1]["status"] == "done"
    pack = srv.get("/customnode/getlist").json()["node_packs"]["local-pack"]
    assert pack["state"] == "enabled"
    assert "LocalNode" in srv.get("/object_info").json()
    assert srv.get("/customnode/versions/local-pack").json() == [{"version": "nightly"}]

    srv.post("/manager/queue/fix", json={"id": "local-pack"})
    srv.post("/manager/queue/reinstall", json={"id": "local-pack"})
    tasks = wait_queue(srv)
    assert [t["status"] for t in tasks[-2:]] == ["done", "done"], tasks
    assert "LocalNode" in srv.get("/object_info").json()

    (repo / "new.py").write_text("Z = 3\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "update")
    assert srv.get("/customnode/fetch_updates").status_code == 201
    assert srv.get("/customnode/getlist").json()["node_packs"]["local-pack"]["updatable"] is True
    assert srv.get("/manager/queue/update_all").json() == {"queued": 1}
    task = wait_queue(srv)[-1]
    assert task["status"] == "done" and "->" in task["result"]["msg"]
    assert srv.get("/customnode/getlist").json()["node_packs"]["local-pack"]["updatable"] is False

    srv.post("/manager/queue/disable", json={"id": "local-pack"})
    wait_queue(srv)
    assert srv.get("/customnode/getlist").json()["node_packs"]["local-pack"]["state"] == "disabled"
    assert srv.get("/customnode/disabled_versions/LocalPack").json() == [{"version": "nightly"}]
    srv.post("/manager/queue/uninstall", json={"id": "local-pack"})
    wait_queue(srv)
    assert srv.get("/customnode/getlist").json()["node_packs"]["local-pack"]["state"] == "not-installed"
    assert "LocalNode" not in srv.get("/object_info").json()
