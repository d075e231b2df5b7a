"""The real ComfyUI frontend in headless Chromium against ``comfy-kernel serve``.

Boots the app with every installed plugin, and checks what a person does
with userdata: the console stays clean, a setting changed in the UI
survives a reload, and a workflow saved from the UI is listed by
``/userdata`` and reopens from the Workflows sidebar after a reload.
Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from importlib.metadata import entry_points
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from cdp_browser import Browser, chromium_available

from comfy_kernel.testing import ServerProcess
from comfy_kernel_userdata.frontend import package_dir

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="needs Debian's chromium (apt-get install chromium)"),
    pytest.mark.skipif(package_dir("comfyui_frontend_package", "static") is None,
                       reason="needs comfy-kernel-userdata[frontend]"),
]

ARTIFACTS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "test-artifacts")
READY = "!!(window.app && window.app.graph && window.app.canvas)"
# Settings of spec/frontend.md §7.3: no first-run dialog, no call to an outside host.
SEED_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Notification.ShowVersionUpdates": False,
                 "Comfy.Minimap.Visible": False}
# Optional files the page asks for (user styles, legacy node templates, workflow
# bookmarks); a 404 is their normal answer.
EXPECTED_404 = ("/user.css", "/api/userdata/user.css", "/api/userdata/comfy.templates.json",
                "/api/userdata/workflows%2F.index.json")
WORKFLOW = "ck saved"


def artifact(name: str) -> str:
    return os.path.abspath(os.path.join(ARTIFACTS, name))


def unexpected(problems: list[str]) -> list[str]:
    return [p for p in problems
            if not (p.startswith("log: Failed to load resource") and p.endswith(EXPECTED_404))]


def boot(browser: Browser, url: str) -> None:
    browser.wait_for(READY, 60)
    time.sleep(2)  # let the start-up restore settle (spec/frontend.md §7.2)


def wait_until(probe, timeout: float = 20):
    """Poll ``probe`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def fill_prompt(browser: Browser, text: str) -> None:
    """Type ``text`` into the frontend's prompt dialog and confirm it."""
    dialog = "[data-dialog-key=global-prompt]"
    browser.wait_for(f"!!document.querySelector('{dialog} input')", 20)
    browser.eval(f"""(() => {{
        const input = document.querySelector('{dialog} input');
        const setValue = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
        setValue.call(input, {json.dumps(text)});
        input.dispatchEvent(new Event('input', {{bubbles: true}}));
        const confirm = Array.from(document.querySelectorAll('{dialog} button'))
            .find(b => b.textContent.trim() === 'Confirm');
        confirm.click();
        return true;
    }})()""")


@pytest.fixture
def app_server(tmp_path):
    base = tmp_path / "base"
    root = base / "user" / "default"
    (root / "workflows").mkdir(parents=True)
    (root / "subgraphs").mkdir()
    (root / "comfy.settings.json").write_text(json.dumps(SEED_SETTINGS))
    # The assets plugin serves its API at the bare path /assets/... too, which
    # shadows the web app's own /assets/ folder; leave it out until it is
    # served under /api only.
    with ServerProcess(base) as srv:
        yield srv


def test_frontend_boots_and_keeps_userdata(app_server):
    srv = app_server
    with Browser() as browser:
        browser.navigate(srv.url + "/")
        boot(browser, srv.url)
        browser.screenshot(artifact("userdata-boot.png"))
        assert unexpected(browser.problems()) == []
        assert browser.eval("window.app.extensionManager.setting.get('Comfy.TutorialCompleted')") is True

        # A setting changed in the UI reaches the server and survives a reload.
        browser.eval("window.app.extensionManager.setting.set('Comfy.Sidebar.Location', 'right')")
        assert srv.get("/api/settings/Comfy.Sidebar.Location").json() == "right"

        # Save the current graph from the UI, through the real Save dialog.
        saved_types = sorted(browser.eval("window.app.graph.nodes.map(n => n.type)"))
        browser.eval("void window.app.extensionManager.command.execute('Comfy.SaveWorkflow')")
        fill_prompt(browser, WORKFLOW)
        browser.wait_for(f"window.app.extensionManager.workflow.activeWorkflow.path === "
                         f"'workflows/{WORKFLOW}.json' && !window.app.extensionManager.workflow"
                         f".activeWorkflow.isModified", 20)
        listed = wait_until(lambda: srv.get("/api/userdata?dir=workflows&recurse=true&split=false"
                                            "&full_info=true").json())
        assert [entry["path"] for entry in listed] == [f"{WORKFLOW}.json"]
        stored = srv.get(f"/api/userdata/{quote(f'workflows/{WORKFLOW}.json', safe='')}").json()
        assert sorted(n["type"] for n in stored["nodes"]) == saved_types

        # Close it, so that reopening must read it back from the server.
        browser.eval("window.app.extensionManager.command.execute('Workspace.CloseWorkflow')")
        browser.wait_for(f"!window.app.extensionManager.workflow.openWorkflows"
                         f".some(w => w.path === 'workflows/{WORKFLOW}.json')", 20)

        browser.clear_events()
        browser.reload()
        boot(browser, srv.url)
        assert unexpected(browser.problems()) == []
        assert browser.eval("window.app.extensionManager.setting.get('Comfy.Sidebar.Location')") == "right"

        browser.eval("window.app.extensionManager.sidebarTab.toggleSidebarTab('workflows')")
        browser.wait_for(f"Array.from(document.querySelectorAll('span'))"
                         f".some(s => s.textContent.trim() === {json.dumps(WORKFLOW)})", 20)
        browser.eval(f"""(() => {{
            const label = Array.from(document.querySelectorAll('span'))
                .find(s => s.textContent.trim() === {json.dumps(WORKFLOW)} && !s.closest('[data-slot=tabs-trigger]'));
            label.click();
            return true;
        }})()""")
        browser.wait_for(f"window.app.extensionManager.workflow.activeWorkflow.path === "
                         f"'workflows/{WORKFLOW}.json' && window.app.graph.nodes.length > 0", 20)
        time.sleep(1)
        assert sorted(browser.eval("window.app.graph.nodes.map(n => n.type)")) == saved_types
        assert any(u.endswith("/api/userdata/" + quote(f"workflows/{WORKFLOW}.json", safe=""))
                   for u in browser.requests())
        browser.screenshot(artifact("userdata-reopened.png"))
        assert unexpected(browser.problems()) == []



def test_fresh_user_gets_the_templates_dialog(tmp_path):
    """With no settings the app opens the Templates dialog, fed by the templates package."""
    with ServerProcess(tmp_path / "fresh") as srv, Browser() as browser:
        browser.navigate(srv.url + "/")
        boot(browser, srv.url)
        dialog = "document.querySelector('[data-dialog-key=global-workflow-template-selector]')"
        browser.wait_for(f"!!{dialog}", 30)
        if package_dir("comfyui_workflow_templates_json", "templates") is not None:
            browser.wait_for(f"{dialog}.textContent.includes('Text to Image')", 30)
        browser.screenshot(artifact("userdata-fresh-user.png"))
        assert srv.get("/api/settings/Comfy.TutorialCompleted").json() is True
        browser.press("Escape", key_code=27)
        browser.wait_for(f"!{dialog}", 10)
        # A fresh user has no workflows/ or subgraphs/ folder yet (404 means empty to
        # the app), and thumbnails are in the optional media bundles.
        allowed = ("/api/userdata?dir=workflows&recurse=true&split=false&full_info=true",
                   "/api/userdata?dir=subgraphs&recurse=true&split=false&full_info=true")
        problems = [p for p in unexpected(browser.problems())
                    if not p.endswith(allowed) and not p.endswith(".webp")
                    and p != "console.error: Failed to fetch: 404"]
        assert problems == []


def test_multi_user_sign_up_and_per_user_settings(tmp_path):
    """--multi-user: the user-select page creates a user whose settings live in its own folder."""
    base = tmp_path / "multi"
    with ServerProcess(base, "--multi-user") as srv, Browser() as browser:
        browser.navigate(srv.url + "/")
        browser.wait_for("!!document.querySelector('#new-user-input')", 60)
        browser.eval("""(() => {
            const input = document.querySelector('#new-user-input');
            const setValue = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
            setValue.call(input, 'Ada Lovelace');
            input.dispatchEvent(new Event('input', {bubbles: true}));
            Array.from(document.querySelectorAll('#comfy-user-selection button'))
                .find(b => b.textContent.trim() === 'Next').click();
            return true;
        })()""")
        boot(browser, srv.url)
        users = srv.get("/api/users").json()["users"]
        assert list(users.values()) == ["Ada Lovelace"]
        user_id = next(iter(users))
        assert browser.eval("localStorage['Comfy.userId']") == user_id
        browser.eval("window.app.extensionManager.setting.set('Comfy.Sidebar.Location', 'right')")
        with open(base / "user" / user_id / "comfy.settings.json") as f:
            assert json.load(f)["Comfy.Sidebar.Location"] == "right"
        assert not (base / "user" / "default").exists()

        browser.reload()
        boot(browser, srv.url)
        assert browser.eval("window.app.extensionManager.setting.get('Comfy.Sidebar.Location')") == "right"
        browser.screenshot(artifact("userdata-multi-user.png"))

# --- queue from the UI and see the image (needs core_nodes and the tiny checkpoint) ---

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
DATA = os.path.join(os.path.dirname(__file__), "data")
# The checkpoint generator belongs to the core_nodes tests, which this test needs anyway.
sys.path.append(os.path.join(REPO_ROOT, "plugins", "core_nodes", "tests"))
from _sd_checkpoints import TINY_CHECKPOINT_NAME as CHECKPOINT  # noqa: E402
from _sd_checkpoints import tiny_checkpoint  # noqa: E402


def core_nodes_installed() -> bool:
    return any(ep.name == "core_nodes" for ep in entry_points(group="comfy_kernel.plugins"))


@pytest.mark.slow
@pytest.mark.skipif(not core_nodes_installed(), reason="needs the core_nodes plugin")
def test_queue_from_the_ui_shows_the_image(tmp_path):
    checkpoint = tiny_checkpoint()
    base = tmp_path / "base"
    models = base / "models" / "checkpoints"
    models.mkdir(parents=True)
    try:
        os.link(checkpoint, models / CHECKPOINT)
    except OSError:
        shutil.copyfile(checkpoint, models / CHECKPOINT)
    root = base / "user" / "default"
    (root / "workflows").mkdir(parents=True)
    (root / "subgraphs").mkdir()
    (root / "comfy.settings.json").write_text(json.dumps(SEED_SETTINGS))
    with open(os.path.join(DATA, "txt2img.json")) as f:
        workflow = json.load(f)

    with ServerProcess(base) as srv, Browser() as browser:
        browser.navigate(srv.url + "/")
        boot(browser, srv.url)
        browser.eval(f"window.app.loadApiJson({json.dumps(workflow)}, 'txt2img.json')")
        browser.wait_for("window.app.graph.nodes.length === 7", 20)
        missing = browser.eval("window.app.graph.nodes.map(n => n.type)"
                               ".filter(t => !(t in window.LiteGraph.registered_node_types))")
        assert missing == []
        browser.eval("window.app.extensionManager.command.execute('Comfy.Canvas.FitView')")
        browser.wait_for("!!document.querySelector('[data-testid=queue-button]')", 20)
        browser.eval("document.querySelector('[data-testid=queue-button]').click(), true")

        browser.wait_for("Object.values(window.app.nodeOutputs).some(o => o?.images?.length)", 240, interval=1)
        browser.wait_for("window.app.graph.nodes.filter(n => n.type === 'SaveImage')"
                         ".some(n => n.imgs?.[0]?.complete && n.imgs[0].naturalWidth > 0)", 30)
        time.sleep(1)
        browser.screenshot(artifact("userdata-run.png"))
        src = browser.eval("window.app.graph.nodes.find(n => n.type === 'SaveImage').imgs[0].src")
        query = parse_qs(urlsplit(src).query)
        assert urlsplit(src).path == "/api/view" and query["type"] == ["output"]
        assert os.path.isfile(os.path.join(srv.base_dir, "output", query.get("subfolder", [""])[0],
                                           query["filename"][0]))
        assert unexpected(browser.problems()) == []
