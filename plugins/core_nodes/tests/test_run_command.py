"""``comfy-kernel run`` on the SD1.5 reference txt2img workflow writes the PNG the server writes.

One server and two in-process runs on the tiny random-weight checkpoint: the
PNG the server saves (fetched from the wait answer's URL), the one ``run
--server`` downloads, and the one ``run`` writes without a server are the
same bytes; the UI-format version of the workflow gives the same pixels.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from comfy_kernel.testing import ServerProcess

sys.path.insert(0, str(Path(__file__).parent))  # shared helpers, whatever pytest's import mode
from _server import prepare_base  # noqa: E402

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data" / "workflows"
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "comfy_kernel.cli", "run", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, **ONE_THREAD})


def test_run_writes_the_same_png_as_the_server(tmp_path, sd15_tiny_checkpoint, reference_outputs):
    reference = reference_outputs.parent
    workflow = DATA / "txt2img.json"
    prompt = json.loads(workflow.read_text())

    with ServerProcess(prepare_base(tmp_path / "server", sd15_tiny_checkpoint, reference), env=ONE_THREAD) as server:
        answer = server.post("/api/prompt", params={"wait": 600}, json={"prompt": prompt}, timeout=660).json()
        assert answer["status"] == "completed", answer
        [item] = answer["outputs"]["7"]["images"]
        served = httpx.get(item["url"]).content
        assert Image.open(io.BytesIO(served)).text["prompt"] == json.dumps(prompt)

        remote = run(tmp_path, str(workflow), "--server", server.url, "--out", str(tmp_path / "remote"))
        assert remote.returncode == 0, remote.stderr
        assert Path(remote.stdout.strip()).read_bytes() == served

    base = prepare_base(tmp_path / "local", sd15_tiny_checkpoint, reference)
    local = run(tmp_path, str(workflow), "--base-directory", str(base), "--out", str(tmp_path / "local-out"))
    assert local.returncode == 0, local.stderr
    written = Path(local.stdout.strip())
    assert written.name == item["filename"] and written.read_bytes() == served
    assert "[5/7] KSampler #5" in local.stderr and "4/4" in local.stderr  # a line per node, a bar per step

    ui = run(tmp_path, str(DATA / "txt2img_ui.json"), "--base-directory", str(base), "--out", str(tmp_path / "ui"))
    assert ui.returncode == 0, ui.stderr
    from_ui = Image.open(Path(ui.stdout.strip()))
    assert np.array_equal(np.asarray(from_ui), np.asarray(Image.open(io.BytesIO(served))))
    assert json.loads(from_ui.text["workflow"])["nodes"][4]["type"] == "KSampler"  # the UI workflow is kept


def test_set_changes_the_image(tmp_path, sd15_tiny_checkpoint, reference_outputs):
    base = prepare_base(tmp_path / "local", sd15_tiny_checkpoint, reference_outputs.parent)
    first = run(tmp_path, str(DATA / "txt2img.json"), "--base-directory", str(base), "--quiet")
    other = run(tmp_path, str(DATA / "txt2img.json"), "--base-directory", str(base), "--set", "5.seed=43", "--quiet")
    assert first.returncode == 0 and other.returncode == 0, first.stderr + other.stderr
    a, b = Image.open(tmp_path / first.stdout.strip()), Image.open(tmp_path / other.stdout.strip())
    assert json.loads(b.text["prompt"])["5"]["inputs"]["seed"] == 43
    assert not np.array_equal(np.asarray(a), np.asarray(b))
