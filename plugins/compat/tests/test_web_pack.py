"""A pack's web directory, pyproject web entry, locales, example workflows and prestartup script."""

from __future__ import annotations

import os

import pytest
from compat_helpers import start


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("web")


@pytest.fixture(scope="module")
def server(base):
    srv = start(base, "web_pack", keep={"compat", "userdata"})
    yield srv
    srv.stop()
    srv.client.close()


def test_prestartup_script_ran_with_comfyui_modules(server, base):
    marker = base / "custom_nodes" / "web_pack" / "prestartup_ran.txt"
    assert marker.read_text() == os.path.join(str(base), "output")


def test_extensions_lists_pack_scripts(server):
    listed = server.get("/extensions").json()
    assert "/extensions/web_pack/js/main.js" in listed
    assert "/extensions/comfyui-web-pack/alt.js" in listed  # [tool.comfy] web, under the project name
    assert "/extensions/web_pack_extra/alt.js" in listed  # written into nodes.EXTENSION_WEB_DIRS
    assert server.get("/api/extensions").json() == listed


def test_web_files_are_served(server):
    r = server.get("/extensions/web_pack/style.css")
    assert r.status_code == 200 and "teal" in r.text
    r = server.get("/extensions/web_pack/js/main.js")
    assert r.status_code == 200 and "registerExtension" in r.text


def test_locales_are_merged(server):
    i18n = server.get("/i18n").json()
    assert i18n["en"]["title"] == "Web Pack"
    assert i18n["en"]["nodeDefs"] == {"WebEcho": {"display_name": "Web Echo"}}
    assert i18n["fr"]["title"] == "Paquet Web"


def test_example_workflows(server):
    assert server.get("/workflow_templates").json() == {"web_pack": ["demo"]}
    r = server.get("/api/workflow_templates/web_pack/demo.json")
    assert r.status_code == 200 and r.json()["1"]["class_type"] == "WebEcho"


def test_record_has_pack_version(server):
    records = {p["name"]: p for p in server.get("/api/plugins").json()}
    assert records["web_pack"]["status"] == "loaded" and records["web_pack"]["version"] == "1.2.3"
    assert server.get("/object_info/WebEcho").json()["WebEcho"]["display_name"] == "Web Echo"
