"""The frontend's own Nodes Manager, driven in headless Chromium against ``serve --enable-manager``.

The registry the dialog reads (``api.comfy.org``) is answered inside the
browser (:mod:`registry_browser`); the server installs from a package index on
127.0.0.1. Two things a person does: install a pack from the Extensions
dialog and apply the change (the server restarts and the pack's nodes
appear), and open a workflow that needs a missing pack and install it from
the missing-nodes panel. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from mgr_helpers import PackServer, build_wheels, pack_source, serve, simple_index, wait_restart
from registry_browser import FakeRegistry, RegistryBrowser, chromium_available, registry_pack
from test_packs import pip_show

from comfy_kernel_userdata.frontend import package_dir

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not chromium_available(), reason="needs Debian's chromium (apt-get install chromium)"),
    pytest.mark.skipif(package_dir("comfyui_frontend_package", "static") is None,
                       reason="needs comfy-kernel-userdata[frontend]"),
]

ARTIFACTS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "test-artifacts")
READY = "!!(window.app && window.app.graph && window.app.canvas)"
SEED_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Notification.ShowVersionUpdates": False,
                 "Comfy.Minimap.Visible": False}
DIALOG = "[data-dialog-key=global-manager]"
# A saved workflow using a node of a pack that is not installed (as ComfyUI saves it: with the pack's id).
MISSING_GRAPH = {"last_node_id": 1, "last_link_id": 0, "groups": [], "config": {}, "extra": {}, "version": 0.4,
                 "links": [], "nodes": [{"id": 1, "type": "CkMissingNode", "pos": [100, 100], "size": [200, 60],
                                         "flags": {}, "order": 0, "mode": 0, "inputs": [],
                                         "outputs": [{"name": "INT", "type": "INT", "links": None}],
                                         "properties": {"cnr_id": "ck-missing-pack", "ver": "1.0.0"},
                                         "widgets_values": []}]}


def artifact(name: str) -> str:
    return os.path.abspath(os.path.join(ARTIFACTS, name))


def button(text: str, scope: str = "") -> str:
    """JS: the visible button whose text is ``text`` (inside ``scope`` when given)."""
    return (f"Array.from(document.querySelectorAll({json.dumps((scope + ' button').strip())}))"
            f".find(b => b.innerText.trim() === {json.dumps(text)} && b.offsetParent !== null)")


def click(browser: RegistryBrowser, text: str, scope: str = "", timeout: float = 60) -> None:
    browser.wait_for(f"!!({button(text, scope)})", timeout)
    browser.eval(f"{button(text, scope)}.click(), true")


def node_known(name: str) -> str:
    return f"!!window.LiteGraph.registered_node_types[{json.dumps(name)}]"


def exceptions(browser: RegistryBrowser) -> list[str]:
    """Page errors and manager messages the page did not understand (a restart's refused
    connections and the blocked hosts are expected)."""
    return [p for p in browser.problems() if p.startswith("exception:") or "Unknown message type cm-" in p]


@pytest.fixture(scope="module")
def index_url(tmp_path_factory):
    house = tmp_path_factory.mktemp("ui-wheels")
    work = tmp_path_factory.mktemp("ui-src")
    build_wheels(house, [pack_source(work, "ck-demo-pack", "1.0.0", nodes=["CkDemoNode"]),
                         pack_source(work, "ck-missing-pack", "1.0.0", nodes=["CkMissingNode"])])
    with serve(simple_index(tmp_path_factory.mktemp("ui-index"), sorted(house.glob("*.whl")))) as url:
        yield url + "/simple/"


def test_nodes_manager_installs_and_restarts(tmp_path, pack_python, index_url):
    base = tmp_path / "base"
    (base / "user" / "default").mkdir(parents=True)
    (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps(SEED_SETTINGS))
    registry = FakeRegistry([
        registry_pack("ck-demo-pack", "1.0.0", "https://github.com/tests/ck-demo-pack", ["CkDemoNode"]),
        registry_pack("ck-missing-pack", "1.0.0", "https://github.com/tests/ck-missing-pack", ["CkMissingNode"])])
    env = {"PIP_INDEX_URL": index_url, "PIP_CONFIG_FILE": os.devnull}
    try:
        run_flows(base, registry, pack_python, env)
    finally:  # the test virtualenv is shared by the session: leave it as it was
        subprocess.run([pack_python, "-m", "pip", "uninstall", "-y", "-q", "ck-demo-pack", "ck-missing-pack"],
                       capture_output=True)


def run_flows(base: Path, registry: FakeRegistry, pack_python: str, env: dict[str, str]) -> None:
    with PackServer(base, "--enable-manager", python=pack_python, env=env) as srv, RegistryBrowser(registry) as browser:
        browser.navigate(srv.url + "/")
        browser.wait_for(READY, 60)
        time.sleep(2)
        pid = srv.proc.pid

        # The Extensions button is there because the server says --enable-manager and supports v4.
        browser.wait_for("!!document.querySelector('button[aria-label=\"Extensions\"]')", 30)
        browser.eval("document.querySelector('button[aria-label=\"Extensions\"]').click(), true")
        browser.wait_for(f"!!document.querySelector('{DIALOG}') && "
                         f"document.querySelector('{DIALOG}').innerText.includes('ck-demo-pack')", 60)
        browser.screenshot(artifact("manager-dialog.png"))
        assert any(r.startswith("GET /nodes?") for r in registry.requests)
        assert not browser.eval(node_known("CkDemoNode"))

        # Install from the pack's card; the toast asks for a restart; apply it.
        browser.eval(f"""(() => {{
            const card = Array.from(document.querySelectorAll('{DIALOG} button'))
                .filter(b => b.innerText.trim() === 'Install')
                .find(b => {{ let el = b; for (let i = 0; i < 10 && el; i++) {{ el = el.parentElement;
                    if (el && el.innerText.includes('ck-demo-pack')) return !el.innerText.includes('ck-missing-pack'); }}
                    return false; }});
            card.click();
            return true;
        }})()""")
        click(browser, "Apply Changes", timeout=180)
        assert pip_show(pack_python, "ck-demo-pack")
        browser.wait_for(node_known("CkDemoNode"), 120)
        wait_restart(srv, 2)
        assert srv.proc.pid == pid and srv.proc.poll() is None  # restarted in place
        assert "CkDemoNode" in srv.get("/api/object_info").json()
        assert srv.get("/api/v2/customnode/installed?mode=imported").json()["ck-demo-pack"]["ver"] == "1.0.0"
        browser.wait_for("document.body.innerText.includes('successfully installed')", 30)
        browser.screenshot(artifact("manager-installed.png"))
        assert exceptions(browser) == []

        # A workflow that needs a missing pack: the missing-nodes panel offers it and installs it.
        browser.press("Escape", key_code=27)
        browser.eval(f"void window.app.loadGraphData({json.dumps(MISSING_GRAPH)})")
        click(browser, "View details", timeout=60)
        browser.wait_for("document.body.innerText.includes('Missing Node Packs')", 30)
        browser.screenshot(artifact("manager-missing-nodes.png"))
        click(browser, "Install", timeout=60)
        click(browser, "Apply Changes", timeout=180)
        browser.wait_for(node_known("CkMissingNode"), 120)
        wait_restart(srv, 3)
        assert "CkMissingNode" in srv.get("/api/object_info").json()
        # the workflow was reloaded with the real node in place of the placeholder
        browser.wait_for("window.app.graph.nodes.length === 1 && "
                         "!!window.app.graph.nodes[0].constructor.nodeData", 60)
        assert browser.eval("window.app.graph.nodes[0].type") == "CkMissingNode"
        browser.screenshot(artifact("manager-missing-installed.png"))
        assert exceptions(browser) == []
