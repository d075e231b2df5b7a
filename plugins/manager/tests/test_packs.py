"""Installing node packs for real: pip wheels, git clones, single files; hostile inputs."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from mgr_helpers import PackServer, git, make_git_pack


def wait_queue(srv, timeout: float = 120) -> list[dict]:
    """Start the queue and wait until it drains; returns the task rows."""
    srv.get("/manager/queue/start")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = srv.get("/manager/queue/status").json()
        if not st["is_processing"] and st["done_count"] == st["total_count"]:
            return srv.get("/manager/queue/tasks").json()
        time.sleep(0.2)
    raise TimeoutError(srv.get("/manager/queue/tasks").text)


def pip_show(python: str, dist: str) -> bool:
    return subprocess.run([python, "-m", "pip", "show", "-q", dist], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def pip_server(tmp_path_factory, pack_python, wheels):
    """One server on the isolated venv for the module (each test uses packs of its own)."""
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    base = tmp_path_factory.mktemp("pipsrv") / "base"
    with PackServer(base, "--manager-security-level", "normal-", python=pack_python, env=env) as srv:
        yield srv


@pytest.mark.slow
def test_pip_pack_lifecycle(pip_server, pack_python):
    srv = pip_server
    item = {"id": "tiny-pip-pack", "install_type": "pip", "files": ["tiny-pip-pack==1.0"], "ui_id": "u1"}
    assert srv.post("/manager/queue/install", json=item).status_code == 200
    tasks = wait_queue(srv)
    assert tasks[-1]["status"] == "done", tasks
    assert tasks[-1]["result"]["loaded"] is True and tasks[-1]["result"]["restart_needed"] is False
    assert "TinyPipNode" in srv.get("/object_info").json()  # no restart needed
    assert pip_show(pack_python, "tiny-pip-pack")
    installed = srv.get("/customnode/installed").json()
    assert installed["tiny_pip_pack"]["enabled"] is True

    srv.post("/manager/queue/disable", json={"id": "tiny-pip-pack"})
    assert wait_queue(srv)[-1]["status"] == "done"
    assert "TinyPipNode" not in srv.get("/object_info").json()
    assert srv.get("/customnode/installed").json()["tiny_pip_pack"]["enabled"] is False
    assert srv.get("/customnode/disabled_versions/tiny_pip_pack").json() == [{"version": "1.0"}]

    srv.post("/manager/queue/install", json=item)  # installing a disabled pack enables it
    assert wait_queue(srv)[-1]["status"] == "done"
    assert "TinyPipNode" in srv.get("/object_info").json()

    srv.post("/manager/queue/update", json={"id": "tiny-pip-pack", "ui_id": "u2"})
    task = wait_queue(srv)[-1]
    assert task["status"] == "done" and task["result"]["restart_needed"] is True
    assert srv.get("/customnode/installed").json()["tiny_pip_pack"]["ver"] == "1.1"

    srv.post("/manager/queue/uninstall", json={"id": "tiny-pip-pack"})
    assert wait_queue(srv)[-1]["status"] == "done"
    assert not pip_show(pack_python, "tiny-pip-pack")
    assert "TinyPipNode" not in srv.get("/object_info").json()


def test_protected_package_refused(pip_server, pack_python):
    srv = pip_server
    srv.post("/manager/queue/install", json={"id": "greedy", "install_type": "pip", "files": ["greedy-pack"]})
    task = wait_queue(srv)[-1]
    assert task["status"] == "failed"
    msg = task["result"]["msg"]
    assert "greedy" in msg and "numpy" in msg and "protected" in msg
    assert not pip_show(pack_python, "greedy-pack")
    import numpy  # the shared numpy is untouched
    out = subprocess.run([pack_python, "-c", "import numpy; print(numpy.__version__)"],
                         capture_output=True, text=True).stdout.strip()
    assert out == numpy.__version__
    r = srv.post("/customnode/install/pip", content="greedy-pack")
    assert r.status_code == 400 and "protected" in r.text
    assert srv.post("/customnode/install/pip", content="--index-url=http://evil tiny").status_code == 400


@pytest.mark.slow
def test_git_pack_install_update_and_halfway_failure(pip_server, pack_python, tmp_path):
    srv = pip_server
    repo = make_git_pack(tmp_path / "repos" / "GitPackOne", ["GitNodeA"],
                         files={"requirements.txt": "tiny-helper-lib\n"})
    r = srv.post("/customnode/install/git_url", content=str(repo))
    assert r.status_code == 200, r.text
    assert "GitNodeA" in srv.get("/object_info").json()
    assert pip_show(pack_python, "tiny-helper-lib")
    cn = srv.base_dir + "/custom_nodes"
    assert os.path.isdir(os.path.join(cn, "GitPackOne", ".git"))
    assert srv.post("/customnode/install/git_url", content=str(repo)).text.endswith("already installed")

    (repo / "extra.py").write_text("X = 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "second")
    assert srv.get("/customnode/fetch_updates").status_code == 201
    srv.post("/manager/queue/update", json={"files": [str(repo)]})
    task = wait_queue(srv)[-1]
    assert task["status"] == "done" and "->" in task["result"]["msg"]
    assert git(tmp_path / "repos" / "GitPackOne", "rev-parse", "HEAD") == \
        git(srv_path(srv, "GitPackOne"), "rev-parse", "HEAD")

    # a pack whose install fails half-way (clone done, dependencies impossible) leaves nothing behind
    bad = make_git_pack(tmp_path / "repos" / "HalfWay", ["HalfNode"],
                        files={"requirements.txt": "tiny-helper-lib\nno-such-package-anywhere==9\n"})
    before = sorted(os.listdir(cn))
    r = srv.post("/customnode/install/git_url", content=str(bad))
    assert r.status_code == 400 and "rolled back" in r.text
    assert sorted(os.listdir(cn)) == before
    assert "HalfNode" not in srv.get("/object_info").json()


def srv_path(srv, name: str):
    from pathlib import Path
    return Path(srv.base_dir) / "custom_nodes" / name


@pytest.mark.slow
def test_failed_dependency_install_is_rolled_back(pip_server, pack_python, tmp_path):
    srv = pip_server
    # the pack's requirements install, then its install.py fails: both must go away again
    repo = make_git_pack(tmp_path / "repos" / "BadInstall", ["BadNode"],
                         files={"requirements.txt": "tiny-helper-two\n",
                                "install.py": "import sys; sys.exit('install step failed')\n"})
    assert not pip_show(pack_python, "tiny-helper-two")
    r = srv.post("/customnode/install/git_url", content=str(repo))
    assert r.status_code == 400 and "install step failed" in r.text
    assert not pip_show(pack_python, "tiny-helper-two")
    assert not srv_path(srv, "BadInstall").exists()


def test_hostile_inputs_change_nothing(start_server, tmp_path):
    srv = start_server("--manager-security-level", "weak")
    cn = tmp_path / "base0" / "custom_nodes"
    cn.mkdir(exist_ok=True)
    marker = tmp_path / "pwned"
    for url in ("--upload-pack=touch " + str(marker), "ext::sh -c touch% " + str(marker),
                "https://example.invalid/a/..", "https://example.invalid/a/.hidden", "file:///",
                "https://example.invalid/x;touch " + str(marker)):
        r = srv.post("/customnode/install/git_url", content=url)
        assert r.status_code == 400, (url, r.text)
    for item in ({"id": "x", "install_type": "copy", "files": ["https://example.invalid/../../evil.py"]},
                 {"id": "y", "install_type": "copy", "files": ["file:///etc/passwd"]},
                 {"id": "z", "install_type": "unzip", "files": ["https://example.invalid/../up.zip"]}):
        srv.post("/manager/queue/install", json=item)
    tasks = wait_queue(srv)
    assert [t["status"] for t in tasks] == ["failed"] * 3
    assert not marker.exists()
    assert sorted(os.listdir(cn)) == []
    assert not (tmp_path / "evil.py").exists()


def test_copy_pack_from_http(start_server, http_dir):
    root, url = http_dir
    (root / "single_node.py").write_text(
        "class N:\n    @classmethod\n    def INPUT_TYPES(cls):\n        return {'required': {}}\n"
        "    RETURN_TYPES = ()\n    FUNCTION = 'f'\n    CATEGORY = 't'\n"
        "NODE_CLASS_MAPPINGS = {'SingleFileNode': N}\n")
    srv = start_server("--manager-security-level", "weak")
    srv.post("/manager/queue/install", json={"id": "single", "install_type": "copy",
                                             "files": [f"{url}/single_node.py"]})
    assert wait_queue(srv)[-1]["status"] == "done"
    assert "SingleFileNode" in srv.get("/object_info").json()
    srv.post("/manager/queue/disable", json={"id": "single_node"})
    assert wait_queue(srv)[-1]["status"] == "done"
    assert os.path.isfile(os.path.join(srv.base_dir, "custom_nodes", ".disabled", "single_node.py"))
    assert "SingleFileNode" not in srv.get("/object_info").json()
    srv.post("/manager/queue/uninstall", json={"id": "single_node"})
    assert wait_queue(srv)[-1]["status"] == "done"
    assert srv.get("/customnode/installed").json() == {}
