"""Snapshots: save, change the setup, restore it for real, remove."""

from __future__ import annotations

import pytest
from mgr_helpers import PackServer, git, make_git_pack
from test_packs import pip_show, wait_queue


@pytest.fixture(scope="module")
def snap_server(tmp_path_factory, pack_python, wheels):
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    base = tmp_path_factory.mktemp("snapsrv") / "base"
    with PackServer(base, "--manager-security-level", "normal-", python=pack_python, env=env) as srv:
        yield srv


@pytest.mark.slow
def test_save_change_restore_remove(snap_server, pack_python, tmp_path):
    srv = snap_server
    repo = make_git_pack(tmp_path / "repos" / "SnapGit", ["SnapGitNode"])
    commit_a = git(repo, "rev-parse", "HEAD")
    assert srv.post("/customnode/install/git_url", content=str(repo)).status_code == 200
    assert srv.post("/customnode/install/pip", content="snap-pack==1.0").status_code == 200
    assert "SnapNode" in srv.get("/object_info").json()

    r = srv.post("/snapshot/save")
    assert r.status_code == 200
    name = r.json()["name"]
    assert srv.get("/snapshot/getlist").json()["items"] == [name]
    current = srv.get("/snapshot/get_current").json()
    (url, info), = current["git_custom_nodes"].items()
    assert info == {"hash": commit_a, "disabled": False, "name": "SnapGit"}
    assert current["pip_packs"]["snap_pack"]["version"] == "1.0"
    assert current["pips"]["snap-pack"] == "1.0"

    # change everything: new commit, disabled pack, upgraded pip pack, an extra pack
    (repo / "more.py").write_text("Y = 2\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "later")
    srv.post("/manager/queue/update", json={"files": [str(repo)]})
    srv.post("/manager/queue/disable", json={"files": [str(repo)]})
    srv.post("/manager/queue/update", json={"id": "snap_pack", "pip": ["snap-pack==2.0"]})
    extra = make_git_pack(tmp_path / "repos" / "ExtraGit", ["ExtraNode"])
    srv.post("/manager/queue/install", json={"id": "extra", "install_type": "git-clone", "files": [str(extra)]})
    assert all(t["status"] == "done" for t in wait_queue(srv)), srv.get("/manager/queue/tasks").text
    changed = srv.get("/snapshot/get_current").json()
    assert changed["pip_packs"]["snap_pack"]["version"] == "2.0"
    assert changed["git_custom_nodes"][url]["disabled"] is True
    assert changed["git_custom_nodes"][url]["hash"] != commit_a

    r = srv.post("/snapshot/restore", json={"target": name})
    body = r.json()
    assert r.status_code == 200 and body["ok"] is True, body
    actions = {(s["target"], s["action"]) for s in body["steps"]}
    assert (url, f"checkout {commit_a[:7]}") in actions and (url, "enable") in actions
    assert ("ExtraGit", "disable (not in snapshot)") in actions
    assert ("snap_pack", "pip install snap-pack==1.0") in actions
    restored = srv.get("/snapshot/get_current").json()
    assert restored["git_custom_nodes"][url] == info
    assert restored["pip_packs"]["snap_pack"]["version"] == "1.0"
    assert restored["pips"]["snap-pack"] == "1.0"
    extra_state = [v for v in restored["git_custom_nodes"].values() if v["name"] == "ExtraGit"]
    assert extra_state and extra_state[0]["disabled"] is True
    assert "SnapGitNode" in srv.get("/object_info").json()
    assert pip_show(pack_python, "snap-pack")

    # the legacy GET forms and hostile targets
    assert srv.get("/snapshot/restore?target=no-such").status_code == 400
    assert srv.get("/snapshot/remove?target=../../user/comfy-kernel").status_code == 400
    assert srv.get(f"/snapshot/remove?target={name}").status_code == 200
    assert srv.get("/snapshot/getlist").json()["items"] == []
    assert srv.post("/snapshot/remove", json={"target": name}).status_code == 400
