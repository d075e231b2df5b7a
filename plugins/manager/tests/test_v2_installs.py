"""Installing by registry id and version through the Manager 4 API, for real.

Packs come from sources served on 127.0.0.1 only: a PEP 503 package index of
wheels (``PIP_INDEX_URL``) and bare git repositories over git's HTTP
transport. Servers run on the isolated virtualenv, so pip never touches the
shared one. A WebSocket client plays the frontend tab that queued the tasks.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mgr_helpers import (
    bare_repo,
    build_wheels,
    git,
    make_git_pack,
    pack_source,
    serve,
    simple_index,
    wait_idle,
    wait_restart,
)
from test_packs import pip_show

pytestmark = pytest.mark.slow


class Tab:
    """A frontend tab: a ws client that says it runs the Manager 4 UI, and the messages it got."""

    def __init__(self, srv: Any, client_id: str):
        self.srv = srv
        self.client_id = client_id
        self.seen: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def open(self) -> Iterator[Tab]:
        with self.srv.ws(client_id=self.client_id) as ws:
            ws.recv(timeout=10)
            ws.send(json.dumps({"type": "feature_flags", "data": {"supports_manager_v4_ui": True}}))
            self.ws = ws
            yield self

    def queue(self, kind: str, params: dict[str, Any], ui_id: str, start: bool = True) -> None:
        r = self.srv.post("/api/v2/manager/queue/task",
                          json={"kind": kind, "params": params, "ui_id": ui_id, "client_id": self.client_id})
        assert r.status_code == 200, r.text
        if start:
            assert self.srv.post("/api/v2/manager/queue/start").status_code in (200, 201)

    def wait(self, event: str, ui_id: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            self.seen.append(msg)
            if msg["type"] == event and msg["data"].get("ui_id") == ui_id:
                return msg["data"]
        raise TimeoutError(f"no {event} for {ui_id}")

    def done(self, kind: str, params: dict[str, Any], ui_id: str) -> dict[str, Any]:
        """Queue, start, and return the ``cm-task-completed`` payload."""
        self.queue(kind, params, ui_id)
        return self.wait("cm-task-completed", ui_id)


def srv_base(srv: Any) -> Path:
    return Path(srv.base_dir)


def installed(srv: Any, mode: str = "default") -> dict[str, Any]:
    return srv.get(f"/api/v2/customnode/installed?mode={mode}").json()


@pytest.fixture(scope="module")
def index_url(tmp_path_factory) -> Iterator[str]:
    """A package index on loopback: reg-pip-pack 1.0.0 and 1.1.0, and a wheel that is not a node pack."""
    house = tmp_path_factory.mktemp("reg-wheels")
    work = tmp_path_factory.mktemp("reg-src")
    build_wheels(house, [pack_source(work, "reg-pip-pack", "1.0.0", nodes=["RegPipNode"]),
                         pack_source(work, "not-a-pack", "1.0")])
    build_wheels(house, [pack_source(work, "reg-pip-pack", "1.1.0", nodes=["RegPipNode", "RegPipNode2"])])
    root = simple_index(tmp_path_factory.mktemp("index"), sorted(house.glob("*.whl")))
    with serve(root) as url:
        yield url + "/simple/"


@pytest.fixture(scope="module")
def git_url(tmp_path_factory) -> Iterator[str]:
    """Bare repositories over HTTP on loopback: GitRegPack (tags v1.0.0, v1.1.0, then one more
    commit) and GitUrlPack."""
    work = tmp_path_factory.mktemp("repos")
    served = tmp_path_factory.mktemp("git-http")
    repo = make_git_pack(work / "GitRegPack", ["GitRegNodeA"])
    git(repo, "tag", "v1.0.0")
    init = (repo / "__init__.py").read_text().replace("['GitRegNodeA']", "['GitRegNodeA', 'GitRegNodeB']")
    (repo / "__init__.py").write_text(init)
    git(repo, "commit", "-qam", "node B")
    git(repo, "tag", "v1.1.0")
    (repo / "NOTES.txt").write_text("after the last release\n")
    git(repo, "add", "NOTES.txt")
    git(repo, "commit", "-qm", "unreleased")
    bare_repo(repo, served / "GitRegPack.git")
    bare_repo(make_git_pack(work / "GitUrlPack", ["GitUrlNode"]), served / "GitUrlPack.git")
    with serve(served) as url:
        yield url


def pip_env(index: str) -> dict[str, str]:
    return {"PIP_INDEX_URL": index, "PIP_CONFIG_FILE": os.devnull}


def with_channel(base: Path, git_base: str) -> Path:
    """A catalog channel that lists ``git-cat-pack`` at the served GitRegPack repository."""
    channel = base.parent / (base.name + "-channel")
    channel.mkdir(parents=True)
    (channel / "custom-node-list.json").write_text(json.dumps({"custom_nodes": [
        {"author": "tests", "title": "Git catalog pack", "id": "git-cat-pack", "reference": f"{git_base}/GitRegPack.git",
         "files": [f"{git_base}/GitRegPack.git"], "install_type": "git-clone", "description": "served on loopback"}]}))
    (base / "user" / "__manager").mkdir(parents=True)
    (base / "user" / "__manager" / "channels.list").write_text(f"tests::{channel}\n")
    (base / "user" / "__manager" / "config.ini").write_text("[default]\nchannel_url = tests\n")
    return base


def test_pip_pack_by_registry_id(start_server, pack_python, index_url, tmp_path):
    srv = start_server("--enable-manager", python=pack_python, env=pip_env(index_url))  # level: normal
    with Tab(srv, "tab1").open() as tab:
        params = {"id": "reg-pip-pack", "version": "1.0.0", "selected_version": "1.0.0",
                  "repository": "https://example.invalid/tests/reg-pip-pack", "channel": "dev", "mode": "cache"}
        tab.queue("install", params, "p1")
        started = tab.wait("cm-task-started", "p1")
        assert started["kind"] == "install" and [t["ui_id"] for t in started["state"]["running_queue"]] == ["p1"]
        assert started["state"]["running_queue"][0]["params"] == params
        done = tab.wait("cm-task-completed", "p1")
        assert done["status"] == {"status_str": "success", "completed": True, "messages": [done["status"]["messages"][0]]}
        assert done["result"] == "success" and "reg-pip-pack 1.0.0" in done["status"]["messages"][0]
        assert done["state"]["running_queue"] == [] and done["state"]["pending_queue"] == []
        assert done["state"]["history"]["p1"]["client_id"] == "tab1"
        entry = {"ver": "1.0.0", "cnr_id": "reg-pip-pack", "aux_id": None, "enabled": True}
        assert done["state"]["installed_packs"]["reg-pip-pack"] == entry
        assert not any(m["type"] == "cm-queue-status" for m in tab.seen)  # the 3.x message is not for this tab
        assert installed(srv)["reg-pip-pack"] == entry
        assert "RegPipNode" in srv.get("/api/object_info").json()
        assert pip_show(pack_python, "reg-pip-pack")

        # another version of the same registry id: pip switches it; the new code needs a restart
        done = tab.done("install", {**params, "version": "1.1.0", "selected_version": "1.1.0"}, "p2")
        assert done["status"]["status_str"] == "success" and "1.1.0" in done["status"]["messages"][0]
        assert installed(srv)["reg-pip-pack"]["ver"] == "1.1.0"
        # disable, enable, update (already the newest), uninstall: by the registry id
        assert tab.done("disable", {"node_name": "reg-pip-pack", "is_unknown": False}, "p3")["result"] == "success"
        assert installed(srv)["reg-pip-pack"]["enabled"] is False
        assert "RegPipNode" not in srv.get("/api/object_info").json()
        assert tab.done("enable", {"cnr_id": "reg-pip-pack"}, "p4")["result"] == "success"
        assert installed(srv)["reg-pip-pack"]["enabled"] is True
        assert "RegPipNode" in srv.get("/api/object_info").json()
        assert srv.post("/api/v2/manager/queue/update_all?client_id=tab1&ui_id=all").status_code == 200
        srv.post("/api/v2/manager/queue/start")
        assert tab.wait("cm-task-completed", "all_reg-pip-pack")["result"] == "success"
        assert tab.done("uninstall", {"node_name": "reg-pip-pack", "is_unknown": False}, "p5")["result"] == "success"
        assert "reg-pip-pack" not in installed(srv) and not pip_show(pack_python, "reg-pip-pack")
        assert "RegPipNode" not in srv.get("/api/object_info").json()

        # a wheel on the index that is not a node pack is never installed under a registry id
        done = tab.done("install", {"id": "not-a-pack", "selected_version": "1.0"}, "p6")
        assert done["status"]["status_str"] == "error" and "no source" in done["result"]
        assert not pip_show(pack_python, "not-a-pack")
        # a task for a pack that is not there fails with a reason, and the queue goes on
        done = tab.done("disable", {"node_name": "never-installed"}, "p7")
        assert done["status"]["status_str"] == "error" and "not installed" in done["result"]

    wait_idle(srv)  # the last batch is recorded after its last task's event
    history = srv.get("/api/v2/manager/queue/history?client_id=tab1").json()["history"]
    # (update_all also updated packs other tests left in the shared test virtualenv)
    assert [k for k in history if not k.startswith("all_")] == ["p1", "p2", "p3", "p4", "p5", "p6", "p7"]
    assert "all_reg-pip-pack" in history
    assert list(srv.get("/api/v2/manager/queue/history?max_items=2").json()["history"]) == ["p6", "p7"]
    assert list(srv.get("/api/v2/manager/queue/history?max_items=2&offset=1").json()["history"]) == ["p2", "p3"]
    ids = srv.get("/api/v2/manager/queue/history_list").json()["ids"]
    records = [srv.get(f"/api/v2/manager/queue/history?id={i}").json() for i in ids]
    assert sum(r["total_operations"] for r in records) == len(history)
    first = next(r for r in records if any(op["operation_id"] == "p1" for op in r["operations"]))
    assert "reg-pip-pack" not in first["state_before"]["installed_nodes"]
    assert first["state_after"]["installed_nodes"]["reg-pip-pack"]["ver"] == "1.0.0"


def test_git_pack_by_registry_id_and_restart(start_server, pack_python, index_url, git_url, tmp_path):
    base = with_channel(tmp_path / "gitbase", git_url)
    srv = start_server("--enable-manager", base=base, python=pack_python, env=pip_env(index_url))  # normal
    with Tab(srv, "tab2").open() as tab:
        # not on the package index, but in the catalog: cloned from the catalog's URL at the version's tag
        done = tab.done("install", {"id": "git-cat-pack", "selected_version": "1.0.0", "mode": "cache",
                                    "repository": "https://example.invalid/not/used"}, "g1")
        assert done["status"]["status_str"] == "success", done
        pack = installed(srv)["git-cat-pack"]
        assert pack == {"ver": "1.0.0", "cnr_id": "git-cat-pack", "aux_id": "GitRegPack", "enabled": True}
        nodes = srv.get("/api/object_info").json()
        assert "GitRegNodeA" in nodes and "GitRegNodeB" not in nodes
        assert (base / "custom_nodes" / "GitRegPack" / ".git").is_dir()

        done = tab.done("install", {"id": "git-cat-pack", "selected_version": "1.1.0"}, "g2")
        assert done["status"]["status_str"] == "success" and "1.1.0" in done["status"]["messages"][0]
        assert installed(srv)["git-cat-pack"]["ver"] == "1.1.0"
        done = tab.done("install", {"id": "git-cat-pack", "selected_version": "9.9.9"}, "g3")
        assert done["status"]["status_str"] == "error" and "no tag" in done["result"]
        # "update" leaves the release for the branch's newest commit (what the UI calls nightly)
        done = tab.done("update", {"node_name": "git-cat-pack", "node_ver": "1.1.0"}, "g3b")
        assert done["status"]["status_str"] == "success" and "->" in done["status"]["messages"][0]
        head = git(base / "custom_nodes" / "GitRegPack", "rev-parse", "HEAD")
        assert installed(srv)["git-cat-pack"]["ver"] == head
        assert (base / "custom_nodes" / "GitRegPack" / "NOTES.txt").is_file()

        # a repository nobody vouches for is a high-risk install: refused at the default level
        foreign = {"id": "git-url-pack", "repository": f"{git_url}/GitUrlPack.git"}
        r = srv.post("/api/v2/manager/queue/task", json={"kind": "install", "ui_id": "g4", "client_id": "tab2",
                                                          "params": {**foreign, "selected_version": "nightly"}})
        assert r.status_code == 403
        done = tab.done("install", {**foreign, "selected_version": "2.0.0"}, "g5")
        assert done["status"]["status_str"] == "error" and "security_level" in done["result"]
        assert not (base / "custom_nodes" / "GitUrlPack").exists()

    # the restart the UI asks for: same process, re-executed; the new version's code is loaded
    wait_idle(srv)
    pid = srv.proc.pid
    assert srv.post("/api/v2/manager/reboot").status_code == 200
    wait_restart(srv, 2)
    assert srv.proc.pid == pid and srv.proc.poll() is None
    assert "GitRegNodeB" in srv.get("/api/object_info").json()
    assert installed(srv, "imported")["git-cat-pack"]["ver"] == head
    assert srv.get("/api/v2/manager/queue/history").json() == {"history": {}}  # history is per server run
    assert len(srv.get("/api/v2/manager/queue/history_list").json()["ids"]) == 5  # batches are kept


def test_git_pack_from_a_repository_url(start_server, pack_python, index_url, git_url):
    srv = start_server("--manager-security-level", "normal-", python=pack_python, env=pip_env(index_url))
    with Tab(srv, "tab3").open() as tab:
        done = tab.done("install", {"id": "git-url-pack", "selected_version": "nightly",
                                    "repository": f"{git_url}/GitUrlPack.git"}, "u1")
        assert done["status"]["status_str"] == "success", done
        pack = installed(srv)["git-url-pack"]
        assert pack["cnr_id"] == "git-url-pack" and pack["aux_id"] == "GitUrlPack" and len(pack["ver"]) == 40
        assert "GitUrlNode" in srv.get("/api/object_info").json()
        done = tab.done("update", {"node_name": "git-url-pack", "node_ver": pack["ver"]}, "u2")
        assert done["status"]["status_str"] == "success" and "up to date" in done["status"]["messages"][0]
        assert tab.done("uninstall", {"node_name": "git-url-pack"}, "u3")["result"] == "success"
        assert "git-url-pack" not in installed(srv)
        assert not (srv_base(srv) / "custom_nodes" / "GitUrlPack").exists()
        assert "GitUrlNode" not in srv.get("/api/object_info").json()
