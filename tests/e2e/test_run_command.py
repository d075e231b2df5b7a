"""``comfy-kernel run``: a workflow in this process or on a server, outputs written, progress shown."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from .integration_helpers import install_packs, start_server

DATA = Path(__file__).parents[1] / "data" / "workflows"


def run(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "comfy_kernel.cli", "run", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=300)


def grey(path: Path) -> int:
    return Image.open(path).getpixel((0, 0))[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("run-server"))
    yield srv
    srv.stop()
    srv.client.close()


@pytest.fixture
def base(tmp_path):
    install_packs(tmp_path / "base")
    return tmp_path / "base"


@pytest.mark.slow
def test_in_process_with_set_and_out(base, tmp_path):
    done = run(tmp_path, str(DATA / "write_image_api.json"), "--base-directory", str(base), "--set", "1.value=200",
               "--set", "3.prefix=\"cli run\"", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    path = Path(line)
    assert path.parent == tmp_path / "out" / "tests" and path.name.startswith("cli run_200_")
    assert grey(path) == 200
    # Progress: a line per node, a bar for the steps.
    assert "[1/3] TestValue #1 (Grey level)" in done.stderr
    assert "[3/3] TestWriteImage #3" in done.stderr
    assert "TestPreviewSteps #2 ████████████████████████ 3/3" in done.stderr
    # It ran without a server: nothing was written to the base directory's database.
    assert not (base / "user" / "comfy-kernel.db").exists()


@pytest.mark.slow
def test_in_process_ui_format_and_titles(base, tmp_path):
    done = run(tmp_path, str(DATA / "write_image_ui.json"), "--base-directory", str(base), "--set",
               "Grey level.value=12", "--json", "--out", str(tmp_path / "out"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    result = json.loads(done.stdout)
    assert result["status"] == "completed" and len(result["written"]) == 1
    assert grey(Path(result["written"][0])) == 12


def test_on_a_server(server, tmp_path):
    done = run(tmp_path, str(DATA / "write_image_api.json"), "--server", server.url, "--out", str(tmp_path / "o"))
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert grey(path) == 5
    served = server.get("/view", params={"filename": path.name, "subfolder": "tests", "type": "output"})
    assert served.content == path.read_bytes()
    assert "[3/3] TestWriteImage #3" in done.stderr and "3/3" in done.stderr
    jobs = server.get("/api/jobs", params={"status": "completed"}).json()["jobs"]
    assert jobs, "the job is in the server's history"


def test_ui_format_on_a_server_from_stdin(server, tmp_path):
    done = run(tmp_path, "-", "--server", server.url, "--out", str(tmp_path / "o"),
               stdin=(DATA / "write_image_ui.json").read_text())
    assert done.returncode == 0, done.stderr
    assert grey(Path(done.stdout.strip())) == 77


def test_a_failing_workflow_exits_1(server, tmp_path):
    failing = {"1": {"class_type": "TestValue", "inputs": {"value": 1}},
               "2": {"class_type": "TestError", "inputs": {"value": ["1", 0]}},
               "3": {"class_type": "TestOutput", "inputs": {"value": ["2", 0]}}}
    (tmp_path / "bad.json").write_text(json.dumps(failing))
    done = run(tmp_path, "bad.json", "--server", server.url)
    assert done.returncode == 1
    assert "error in TestError #2" in done.stderr and "the workflow failed" in done.stderr


@pytest.mark.parametrize("args, message", [
    (["missing.json"], "cannot read missing.json"),
    (["notjson.json"], "is not JSON"),
    (["wf.json", "--set", "1value=3"], "expected NODE.INPUT=VALUE"),
    (["wf.json", "--set", "Nobody.value=3"], "no node titled 'Nobody'"),
    (["wf.json", "--set", "1.value=\"text\""], "the prompt was refused"),
    (["ui.json"], "nodes not installed: NotInstalledNode"),
])
def test_bad_input_exits_2(server, tmp_path, args, message):
    (tmp_path / "notjson.json").write_text("{")
    (tmp_path / "wf.json").write_text((DATA / "write_image_api.json").read_text())
    ui = json.loads((DATA / "write_image_ui.json").read_text())
    ui["nodes"][0]["type"] = "NotInstalledNode"
    (tmp_path / "ui.json").write_text(json.dumps(ui))
    done = run(tmp_path, *args, "--server", server.url)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr


def test_unreachable_server_exits_1(tmp_path):
    done = run(tmp_path, str(DATA / "write_image_api.json"), "--server", "http://127.0.0.1:9")
    assert done.returncode == 1 and "comfy-kernel run:" in done.stderr
