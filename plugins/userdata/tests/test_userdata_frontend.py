"""The web app, templates, docs, and the files node packs ship (i18n, extensions,
example workflows, subgraph blueprints), against a server with two packs."""

from __future__ import annotations

import glob
import json
import os

import pytest

from comfy_kernel.testing import ServerProcess
from comfy_kernel_userdata.frontend import package_dir


def write(path, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def make_packs(base) -> None:
    nodes = os.path.join(base, "custom_nodes")
    a = os.path.join(nodes, "pack_a")
    write(os.path.join(a, "__init__.py"), 'NODE_CLASS_MAPPINGS = {}\nWEB_DIRECTORY = "./web"\n')
    write(os.path.join(a, "web", "a.js"), "export const a = 1;\n")
    write(os.path.join(a, "web", "sub", "b.js"), "export const b = 1;\n")
    write(os.path.join(a, "web", "style.css"), "body{}\n")
    write(os.path.join(a, "locales", "en", "main.json"), json.dumps({"title": "A", "list": [1], "o": {"x": 1}}))
    write(os.path.join(a, "locales", "en", "nodeDefs.json"), json.dumps({"n1": "Node 1"}))
    write(os.path.join(a, "locales", "fr", "main.json"), json.dumps({"title": "Un"}))
    write(os.path.join(a, "subgraphs", "sg.json"), json.dumps({"nodes": [], "definitions": {}}))
    write(os.path.join(a, "example_workflows", "wf2.json"), "{}")
    write(os.path.join(a, "example_workflows", "wf1.json"), '{"wf": 1}')
    b = os.path.join(nodes, "pack_b")
    write(os.path.join(b, "__init__.py"), "NODE_CLASS_MAPPINGS = {}\n")
    write(os.path.join(b, "locales", "en", "main.json"), json.dumps({"title": "B", "list": [2], "o": {"y": 2}}))
    write(os.path.join(b, "locales", "en", "commands.json"), "{broken")
    write(os.path.join(b, "examples", "e.json"), "{}")
    write(os.path.join(nodes, "not_loaded", "workflows", "x.json"), "{}")


def make_blueprints_package(root) -> str:
    pkg = os.path.join(root, "comfyui_subgraph_blueprints")
    write(os.path.join(pkg, "__init__.py"), "")
    write(os.path.join(pkg, "blueprints", "bp.json"), '{"bp": true}')
    write(os.path.join(pkg, "blueprints", "index.json"), "[]")
    return root


@pytest.fixture(scope="module")
def packs_server(tmp_path_factory, isolated_args):
    base = tmp_path_factory.mktemp("packs")
    make_packs(base)
    pythonpath = make_blueprints_package(str(tmp_path_factory.mktemp("pp")))
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [pythonpath, os.environ.get("PYTHONPATH")]))}
    with ServerProcess(base, *isolated_args, env=env) as srv:
        yield srv


WEB_ROOT = package_dir("comfyui_frontend_package", "static")
needs_frontend = pytest.mark.skipif(WEB_ROOT is None, reason="comfyui-frontend-package is not installed")


@needs_frontend
def test_index_is_served_uncached(packs_server):
    for path in ("/", "/api/"):
        r = packs_server.get(path)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["pragma"] == "no-cache" and r.headers["expires"] == "0"
        assert r.text.lower().startswith("<!doctype html")
    assert packs_server.get("/index.html").status_code == 200
    assert packs_server.get("/api/index.html").status_code == 404


@needs_frontend
def test_static_web_root(packs_server):
    script = sorted(glob.glob(os.path.join(WEB_ROOT, "assets", "*.js")))[0]
    r = packs_server.get("/assets/" + os.path.basename(script))
    assert r.status_code == 200
    assert "javascript" in r.headers["content-type"]
    assert r.headers["cache-control"] == "no-cache"
    assert packs_server.get("/scripts/app.js").status_code == 200
    assert packs_server.get("/assets").status_code == 403
    assert packs_server.get("/no/such/file.js").status_code == 404
    assert packs_server.get("/assets/..%2F..%2F__init__.py").status_code == 404


def test_templates_package(packs_server):
    if package_dir("comfyui_workflow_templates_json", "templates") is None:
        pytest.skip("comfyui-workflow-templates-json is not installed")
    r = packs_server.get("/templates/index.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.headers["cache-control"] == "no-cache"
    index = r.json()
    name = index[0]["templates"][0]["name"]
    assert packs_server.get(f"/templates/{name}.json").status_code == 200
    # Thumbnails live in the optional media bundles: a missing one is a plain 404.
    missing = packs_server.get("/templates/surely-missing-1.webp")
    assert missing.status_code == 404 and missing.content == b""
    assert packs_server.get("/templates/..%2F__init__.py").status_code == 404
    assert packs_server.get("/api/templates/index.json").status_code == 404


def test_embedded_docs(packs_server):
    docs = package_dir("comfyui_embedded_docs", "docs")
    if docs is None:
        pytest.skip("comfyui-embedded-docs is not installed")
    page = sorted(glob.glob(os.path.join(docs, "*", "en.md")))[0]
    rel = os.path.relpath(page, docs).replace(os.sep, "/")
    r = packs_server.get("/docs/" + rel)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
    missing = packs_server.get("/docs/NoSuchNode/en.md")
    assert missing.status_code == 404
    assert "html" not in missing.headers.get("content-type", "")


def test_extensions(packs_server):
    urls = packs_server.get("/api/extensions").json()
    assert "/extensions/pack_a/a.js" in urls and "/extensions/pack_a/sub/b.js" in urls
    assert not any(u.endswith(".css") for u in urls)
    assert packs_server.get("/extensions").json() == urls
    if WEB_ROOT:
        assert any(u.startswith("/extensions/core/") for u in urls)
    r = packs_server.get("/extensions/pack_a/sub/b.js")
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]


def test_i18n_merges_packs(packs_server):
    data = packs_server.get("/api/i18n").json()
    assert data["en"] == {"title": "B", "list": [1, 2], "o": {"x": 1, "y": 2}, "nodeDefs": {"n1": "Node 1"}}
    assert data["fr"] == {"title": "Un"}
    assert packs_server.get("/i18n").json() == data


def test_workflow_templates(packs_server):
    assert packs_server.get("/api/workflow_templates").json() == {
        "not_loaded": ["x"], "pack_a": ["wf1", "wf2"], "pack_b": ["e"]}
    r = packs_server.get("/api/workflow_templates/pack_a/wf1.json")
    assert r.status_code == 200 and r.json() == {"wf": 1}
    assert packs_server.get("/api/workflow_templates/pack_b/e.json").status_code == 200
    assert packs_server.get("/api/workflow_templates/not_loaded/x.json").status_code == 404
    assert packs_server.get("/api/workflow_templates/pack_a/..%2F__init__.py").status_code == 404
    assert packs_server.get("/api/workflow_templates/pack_a/nope.json").status_code == 404


def test_global_subgraphs(packs_server):
    listing = packs_server.get("/api/global_subgraphs").json()
    by_name = {v["name"]: (k, v) for k, v in listing.items()}
    assert set(by_name) == {"sg", "bp"}
    sg_id, sg = by_name["sg"]
    assert sg == {"source": "custom_node", "name": "sg", "info": {"node_pack": "custom_nodes.pack_a"}}
    assert by_name["bp"][1]["info"] == {"node_pack": "comfyui"}
    full = packs_server.get(f"/api/global_subgraphs/{sg_id}").json()
    assert json.loads(full["data"]) == {"nodes": [], "definitions": {}}
    assert packs_server.get(f"/global_subgraphs/{by_name['bp'][0]}").json()["data"] == '{"bp": true}'
    assert packs_server.get("/api/global_subgraphs/0123").status_code == 404
    assert packs_server.get("/api/global_subgraphs").json() == listing  # ids are stable


def test_node_replacements(packs_server):
    assert packs_server.get("/api/node_replacements").json() == {}
    assert packs_server.get("/api/features").json()["node_replacements"] is True


def test_front_end_root_and_version(make_server, tmp_path):
    custom = tmp_path / "web"
    write(custom / "index.html", "<!doctype html><p>custom root</p>")
    write(custom / "extensions" / "mine" / "m.js", "")
    srv = make_server("--front-end-root", str(custom))
    assert "custom root" in srv.get("/").text
    assert "/extensions/mine/m.js" in srv.get("/api/extensions").json()
    assert srv.get("/extensions/mine/m.js").status_code == 200

    base = tmp_path / "versioned"
    write(base / "web_custom_versions" / "someone_frontend" / "1.2.3" / "index.html", "<p>pinned copy</p>")
    srv = make_server("--front-end-version", "someone/frontend@v1.2.3", base=base)
    assert "pinned copy" in srv.get("/").text

    env_root = tmp_path / "env-web"
    write(env_root / "index.html", "<p>from the environment</p>")
    srv = make_server(env={"COMFY_KERNEL_FRONT_END_ROOT": str(env_root)})
    assert "from the environment" in srv.get("/").text


@needs_frontend
def test_missing_front_end_version_falls_back_to_the_package(make_server):
    srv = make_server("--front-end-version", "someone/frontend@9.9.9")
    r = srv.get("/")
    assert r.status_code == 200 and r.text.lower().startswith("<!doctype html")
    assert "not available locally" in srv.log()
