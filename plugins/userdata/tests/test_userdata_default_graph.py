"""The frontend's built-in default graph (Z-Image-Turbo) queued from the real UI in headless Chromium.

A fresh browser profile opens the default graph; its model files are
random-weight files in the real key layouts (written by the core_nodes test
helpers) under the names the graph asks for. The test shrinks the image to
64x64 and 2 steps in the UI's widgets, presses Queue and waits for the
SaveImage preview.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from cdp_browser import Browser, chromium_available
from test_userdata_browser import SEED_SETTINGS, artifact, boot, core_nodes_installed, unexpected

from comfy_kernel.testing import ServerProcess
from comfy_kernel_userdata.frontend import package_dir

CORE_TESTS = Path(__file__).resolve().parents[2] / "core_nodes" / "tests"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not chromium_available(), reason="needs Debian's chromium (apt-get install chromium)"),
    pytest.mark.skipif(package_dir("comfyui_frontend_package", "static") is None,
                       reason="needs comfy-kernel-userdata[frontend]"),
    pytest.mark.skipif(not core_nodes_installed() or not CORE_TESTS.is_dir(),
                       reason="needs the core_nodes plugin and its test helpers"),
]

#: node type -> the default graph's file names (checked against what the UI shows)
FILES = {"UNETLoader": "z_image_turbo_bf16.safetensors", "CLIPLoader": "qwen_3_4b.safetensors",
         "VAELoader": "ae.safetensors"}


def place_model_files(models: Path) -> None:
    sys.path.insert(0, str(CORE_TESTS))
    import torch
    from _files_qwen import place, qwen3_4b, z_image_bf16
    from _flux import vae16_state_dict
    from _random_weights import write

    place(z_image_bf16(), models / "diffusion_models", FILES["UNETLoader"])
    place(qwen3_4b(), models / "text_encoders", FILES["CLIPLoader"])
    write(models / "vae" / FILES["VAELoader"], vae16_state_dict(dtype=torch.float16))


def test_default_graph_queues_from_the_ui(tmp_path):
    base = tmp_path / "base"
    place_model_files(base / "models")
    root = base / "user" / "default"
    (root / "workflows").mkdir(parents=True)
    (root / "subgraphs").mkdir()
    (root / "comfy.settings.json").write_text(json.dumps(SEED_SETTINGS))

    with ServerProcess(base) as srv, Browser() as browser:
        browser.navigate(srv.url + "/")
        boot(browser, srv.url)
        browser.wait_for("window.app.graph.nodes.some(n => n.type === 'EmptySD3LatentImage')", 30)
        types = browser.eval("window.app.graph.nodes.map(n => n.type)")
        assert sorted(types) == sorted(["SaveImage", "CLIPLoader", "VAELoader", "VAEDecode", "UNETLoader",
                                        "CLIPTextEncode", "EmptySD3LatentImage", "ModelSamplingAuraFlow",
                                        "KSampler", "CLIPTextEncode"])
        missing = browser.eval("window.app.graph.nodes.map(n => n.type)"
                               ".filter(t => !(t in window.LiteGraph.registered_node_types))")
        assert missing == []
        for node_type, name in FILES.items():
            shown = browser.eval(f"window.app.graph.nodes.find(n => n.type === '{node_type}').widgets[0].value")
            assert shown == name
        assert browser.eval("window.app.graph.nodes.find(n => n.type === 'CLIPLoader').widgets[1].value") == "lumina2"
        browser.eval("""(() => {
            const set = (type, name, value) => {
                const node = window.app.graph.nodes.find(n => n.type === type);
                node.widgets.find(w => w.name === name).value = value;
            };
            set('EmptySD3LatentImage', 'width', 64);
            set('EmptySD3LatentImage', 'height', 64);
            set('KSampler', 'steps', 2);
            return true;
        })()""")
        browser.wait_for("!!document.querySelector('[data-testid=queue-button]')", 20)
        browser.eval("document.querySelector('[data-testid=queue-button]').click(), true")

        # Wait on the server, not the page: while the model runs, the busy CPU can keep the page from
        # answering the debugger.
        deadline = time.monotonic() + 900
        while not srv.get("/history").json() and time.monotonic() < deadline:
            time.sleep(1)
        browser.wait_for("Object.values(window.app.nodeOutputs).some(o => o?.images?.length)", 60, interval=1)
        browser.wait_for("window.app.graph.nodes.filter(n => n.type === 'SaveImage')"
                         ".some(n => n.imgs?.[0]?.complete && n.imgs[0].naturalWidth === 64)", 30)
        time.sleep(1)
        browser.screenshot(artifact("default-graph-run.png"))
        history = srv.get("/history").json()
        (entry,) = history.values()
        assert entry["status"]["status_str"] == "success", entry["status"]
        prompt = entry["prompt"][2]
        sizes = {n["class_type"]: n["inputs"] for n in prompt.values()}
        assert sizes["EmptySD3LatentImage"]["width"] == 64 and sizes["KSampler"]["steps"] == 2
        assert sizes["CLIPLoader"]["type"] == "lumina2"
        saved = os.listdir(os.path.join(srv.base_dir, "output"))
        assert any(name.startswith("ComfyUI") and name.endswith(".png") for name in saved)
        assert unexpected(browser.problems()) == []
