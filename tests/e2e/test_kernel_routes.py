"""Every kernel route over real HTTP, including hostile paths and encodings."""

from __future__ import annotations

import io
import json
import os
import struct
import threading

import pytest
from PIL import Image, PngImagePlugin

from comfy_kernel.testing import ServerProcess
from tests.conftest import KERNEL_ONLY


def png_bytes(color=(255, 0, 0, 255), size=(4, 4), text: dict | None = None) -> bytes:
    img = Image.new("RGBA", size, color)
    out = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    img.save(out, "PNG", pnginfo=info)
    return out.getvalue()


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    base = tmp_path_factory.mktemp("routes") / "base"
    (base / "models" / "checkpoints" / "sub").mkdir(parents=True)
    (base / "models" / "checkpoints" / "m.safetensors").write_bytes(_safetensors({"title": "hello"}))
    (base / "models" / "checkpoints" / "sub" / "n.ckpt").write_bytes(b"x")
    (base / "models" / "checkpoints" / "m.png").write_bytes(png_bytes())
    (base / "models" / "checkpoints" / "notes.txt").write_text("no")
    (base / "models" / "embeddings").mkdir(parents=True)
    (base / "models" / "embeddings" / "easyneg.pt").write_bytes(b"x")
    (base / "models" / "loras").mkdir(parents=True)
    (base / "models" / "loras" / "bad.safetensors").write_bytes(b"\xff" * 8 + b"{")
    outside = base.parent / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png_bytes((0, 255, 0, 255)))
    (base / "input").mkdir(parents=True)
    os.symlink(outside, base / "input" / "escape")
    os.symlink(outside / "secret.png", base / "input" / "link.png")
    with ServerProcess(base, "--max-upload-size", "1", *KERNEL_ONLY) as server:
        server.base = base
        yield server


def _safetensors(meta: dict) -> bytes:
    header = json.dumps({"__metadata__": meta}).encode()
    return struct.pack("<Q", len(header)) + header


def test_system_stats_and_features(srv):
    stats = srv.get("/system_stats").json()
    assert stats["system"]["os"] == os.name and stats["system"]["comfyui_version"]
    dev = stats["devices"][0]
    assert {"name", "type", "index", "vram_total", "vram_free", "torch_vram_total", "torch_vram_free"} <= set(dev)
    assert srv.get("/api/system_stats").status_code == 200
    assert srv.get("/features").json() == {"supports_preview_metadata": True, "max_upload_size": 1048576}
    assert srv.get("/health").json()["status"] == "ok"


def test_models_routes(srv):
    assert srv.get("/models").json()[:3] == ["checkpoints", "configs", "loras"]
    assert srv.get("/models/checkpoints").json() == ["m.safetensors", "sub/n.ckpt"]
    assert srv.get("/api/models/checkpoints").json() == ["m.safetensors", "sub/n.ckpt"]
    assert srv.get("/models/unet").status_code == 404  # legacy names are not mapped here
    assert srv.get("/models/custom_nodes").json() == []
    assert srv.get("/embeddings").json() == ["easyneg"]
    exp = srv.get("/experiment/models").json()
    assert {"checkpoints", "loras"} <= {e["name"] for e in exp} and "configs" not in {e["name"] for e in exp}
    files = srv.get("/experiment/models/checkpoints").json()
    assert {f["name"] for f in files} == {"m.safetensors", "sub/n.ckpt"}
    assert all(f["pathIndex"] == 0 and f["size"] >= 1 for f in files)
    prev = srv.get("/experiment/models/preview/checkpoints/0/m.safetensors")
    assert prev.status_code == 200 and prev.headers["content-type"] == "image/webp"
    assert srv.get("/experiment/models/preview/checkpoints/0/..%2F..%2Foutside%2Fsecret.png").status_code in (403, 404)
    assert srv.get("/experiment/models/preview/checkpoints/9/m.safetensors").status_code == 404
    assert srv.get("/experiment/models/preview/checkpoints/x/m.safetensors").status_code == 400


def test_view_metadata(srv):
    assert srv.get("/view_metadata/checkpoints", params={"filename": "m.safetensors"}).json() == {"title": "hello"}
    assert srv.get("/view_metadata/checkpoints", params={"filename": "../../x.safetensors"}).status_code == 404
    assert srv.get("/view_metadata/checkpoints", params={"filename": "sub/n.ckpt"}).status_code == 404
    assert srv.get("/view_metadata/checkpoints").status_code == 404
    assert srv.get("/view_metadata/loras", params={"filename": "bad.safetensors"}).status_code == 404


def test_upload_and_view(srv):
    a, b = png_bytes((1, 2, 3, 255)), png_bytes((9, 9, 9, 128))
    up = lambda data, **form: srv.post("/upload/image", files={"image": ("a.png", data, "image/png")}, data=form)  # noqa: E731
    assert up(a).json() == {"name": "a.png", "subfolder": "", "type": "input"}
    assert up(a).json()["name"] == "a.png"  # duplicate: nothing written
    assert up(b).json()["name"] == "a (1).png"
    assert up(png_bytes((5, 5, 5, 255))).json()["name"] == "a (2).png"
    assert up(b, overwrite="true").json()["name"] == "a.png"
    r = up(a, subfolder="clip/space", type="temp")
    assert r.json() == {"name": "a.png", "subfolder": "clip/space", "type": "temp"}

    view = srv.get("/view", params={"filename": "a.png", "type": "input"})
    assert view.status_code == 200 and view.content == b
    assert view.headers["content-type"] == "image/png"
    assert view.headers["x-content-type-options"] == "nosniff"
    assert "filename*=UTF-8''a.png" in view.headers["content-disposition"]
    assert srv.get("/view", params={"filename": "a.png", "type": "temp", "subfolder": "clip/space"}).content == a
    ranged = srv.get("/view", params={"filename": "a.png", "type": "input"}, headers={"Range": "bytes=0-3"})
    assert ranged.status_code == 206 and ranged.content == b[:4]
    assert srv.get("/view", params={"filename": "a.png [temp]", "subfolder": "clip/space"}).content == a

    rgb = srv.get("/view", params={"filename": "a.png", "type": "input", "channel": "rgb"})
    assert Image.open(io.BytesIO(rgb.content)).mode == "RGB"
    alpha = Image.open(io.BytesIO(srv.get("/view", params={"filename": "a.png", "type": "input",
                                                           "channel": "a"}).content))
    assert alpha.mode == "RGBA" and alpha.getpixel((0, 0)) == (0, 0, 0, 128)
    jpeg = srv.get("/view", params={"filename": "a.png", "type": "input", "preview": "jpeg;50"})
    assert jpeg.headers["content-type"] == "image/jpeg"
    webp = srv.get("/view", params={"filename": "a.png", "type": "input", "preview": "jpeg;50", "channel": "rgba"})
    assert webp.headers["content-type"] == "image/webp"


@pytest.mark.parametrize("params,status", [
    ({}, 404),
    ({"filename": ""}, 400),
    ({"filename": "../secret.png", "type": "input"}, 400),
    ({"filename": "/etc/passwd"}, 400),
    ({"filename": "a.png", "type": "models"}, 400),
    ({"filename": "a.png", "type": "input", "subfolder": ".."}, 403),
    ({"filename": "secret.png", "type": "input", "subfolder": "../outside"}, 403),
    ({"filename": "secret.png", "type": "input", "subfolder": "/tmp"}, 403),
    ({"filename": "secret.png", "type": "input", "subfolder": "escape"}, 403),
    ({"filename": "link.png", "type": "input"}, 403),
    ({"filename": "missing.png", "type": "input"}, 404),
    ({"filename": "a.png\x00.txt", "type": "input"}, 400),
])
def test_view_confinement(srv, params, status):
    assert srv.get("/view", params=params).status_code == status


def test_view_encoded_separators(srv):
    r = srv.get("/view?filename=..%2F..%2Foutside%2Fsecret.png&type=input")
    assert r.status_code == 400
    r = srv.get("/view?filename=secret.png&type=input&subfolder=%2E%2E%2Foutside")
    assert r.status_code == 403


def test_view_active_content_is_not_inline(srv):
    data = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"
    srv.post("/upload/image", files={"image": ("x.svg", data, "image/svg+xml")})
    r = srv.get("/view", params={"filename": "x.svg", "type": "input"})
    assert r.headers["content-type"].startswith("application/octet-stream")
    assert r.headers["content-disposition"].startswith("attachment")
    srv.post("/upload/image", files={"image": ("x.js", b"alert(1)", "text/javascript")})
    r = srv.get("/view", params={"filename": "x.js", "type": "input"})
    assert r.headers["content-disposition"].startswith("attachment")


@pytest.mark.parametrize("name", ["../evil.png", "a/b.png", "a\\b.png", "..", " "])
def test_upload_hostile_names(srv, name):
    r = srv.post("/upload/image", files={"image": (name, b"x", "image/png")})
    assert r.status_code == 400 and "error" in r.json()


@pytest.mark.parametrize("form", [{"subfolder": "../x"}, {"subfolder": "/abs"}, {"type": "models"}])
def test_upload_hostile_form(srv, form):
    r = srv.post("/upload/image", files={"image": ("ok.png", b"x", "image/png")}, data=form)
    assert r.status_code == 400
    assert not (srv.base.parent / "x" / "ok.png").exists()


def test_upload_errors(srv):
    assert srv.post("/upload/image", data={"type": "input"}).status_code == 400
    assert srv.post("/upload/image", content=b"{}", headers={"content-type": "application/json"}).status_code == 400
    big = b"x" * (1024 * 1024 + 10)
    r = srv.post("/upload/image", files={"image": ("big.png", big, "image/png")})
    assert r.status_code == 413
    assert not (srv.base / "input" / "big.png").exists()


def test_concurrent_uploads_same_name(srv):
    results = []

    def upload(i):
        data = png_bytes((i, i, i, 255))
        r = srv.client.__class__(base_url=srv.url).post(
            "/upload/image", files={"image": ("race.png", data, "image/png")})
        results.append(r.json()["name"])

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 6
    assert len([f for f in os.listdir(srv.base / "input") if f.startswith("race")]) == 6


def test_upload_mask(srv):
    orig = png_bytes((10, 20, 30, 255), text={"prompt": "{}"})
    srv.post("/upload/image", files={"image": ("orig.png", orig, "image/png")})
    mask = png_bytes((0, 0, 0, 7))
    ref = json.dumps({"filename": "orig.png", "subfolder": "", "type": "input"})
    r = srv.post("/upload/mask", files={"image": ("mask.png", mask, "image/png")},
                 data={"original_ref": ref, "subfolder": "clipspace"})
    assert r.json() == {"name": "mask.png", "subfolder": "clipspace", "type": "input"}
    out = Image.open(srv.base / "input" / "clipspace" / "mask.png")
    assert out.getpixel((0, 0)) == (10, 20, 30, 7) and out.text.get("prompt") == "{}"
    bad = json.dumps({"filename": "../orig.png", "type": "input"})
    assert srv.post("/upload/mask", files={"image": ("m2.png", mask, "image/png")},
                    data={"original_ref": bad}).status_code == 400
    missing = json.dumps({"filename": "nope.png", "type": "input"})
    assert srv.post("/upload/mask", files={"image": ("m3.png", mask, "image/png")},
                    data={"original_ref": missing}).status_code == 404
    assert srv.post("/upload/mask", files={"image": ("m4.png", mask, "image/png")},
                    data={"original_ref": "{not json"}).status_code == 400
    small = json.dumps({"filename": "orig.png", "type": "input"})
    assert srv.post("/upload/mask", files={"image": ("m5.png", png_bytes(size=(2, 2)), "image/png")},
                    data={"original_ref": small}).status_code == 400


def test_internal_routes(srv):
    paths = srv.get("/internal/folder_paths").json()
    assert paths["checkpoints"] == [str(srv.base / "models" / "checkpoints"), str(srv.base / "output" / "checkpoints")]
    assert srv.get("/api/internal/folder_paths").status_code == 404
    files = srv.get("/internal/files/input").json()
    assert "a.png" in files and "clipspace" not in files
    assert srv.get("/internal/files/models").json() == {"error": "Invalid directory type"}
    assert srv.get("/internal/files/models").status_code == 400
    assert isinstance(srv.get("/internal/logs").json(), str)
    raw = srv.get("/internal/logs/raw").json()
    assert set(raw) == {"entries", "size"} and set(raw["size"]) == {"cols", "rows"}
    assert srv.request("PATCH", "/internal/logs/subscribe", content=b"{}").status_code == 400
    assert srv.request("PATCH", "/internal/logs/subscribe", content=b"nope").status_code == 400


def test_logs_subscription_over_ws(srv):
    with srv.ws(client_id="logger") as ws:
        json.loads(ws.recv(timeout=10))
        r = srv.request("PATCH", "/internal/logs/subscribe", json={"clientId": "logger", "enabled": True})
        assert r.status_code == 200
        # Any request that logs produces entries; an invalid upload logs nothing, so ask the
        # server to log through a failing model preview of a broken header.
        srv.get("/view_metadata/loras", params={"filename": "bad.safetensors"})
        srv.post("/upload/image", files={"image": ("log.png", b"x", "image/png")}, data={"subfolder": "../x"})
        srv.get("/view", headers={"Origin": "http://evil.example"})  # logs a refusal warning
        message = json.loads(ws.recv(timeout=10))
        assert message["type"] == "logs" and message["data"]["entries"]


def test_generic_http_behaviour(srv):
    assert srv.request("OPTIONS", "/does/not/exist").status_code == 200
    missing = srv.get("/does/not/exist")
    assert missing.status_code == 404 and missing.content == b""
    assert srv.post("/does/not/exist").status_code == 405
    wrong = srv.request("DELETE", "/system_stats")
    assert wrong.status_code == 405
    assert srv.request("HEAD", "/system_stats").status_code == 200
    assert srv.get("/object_info").headers["content-type"].startswith("application/json")
    local = srv.get("/object_info", headers={"Accept-Encoding": "gzip"})  # loopback: plain bytes read faster
    assert "content-encoding" not in local.headers and local.headers["vary"] == "Accept-Encoding"


@pytest.mark.parametrize("host,origin,status", [
    ("127.0.0.1:{p}", "http://evil.com", 403),
    ("127.0.0.1:{p}", "http://127.0.0.1:{p}", 200),
    ("localhost:{p}", "http://127.0.0.1:{p}", 403),
    ("127.0.0.1:{p}", "http://127.0.0.1:9999", 403),
    ("127.0.0.1", "http://127.0.0.1:9999", 200),
    ("127.0.0.1:{p}", "null", 403),  # sandboxed iframes and data: pages are other origins
    ("evil.rebind.example:{p}", "http://evil.rebind.example:{p}", 403),
    ("evil.rebind.example:{p}", None, 403),
])
def test_origin_and_host_checks(srv, host, origin, status):
    headers = {"Host": host.format(p=srv.port)}
    if origin:
        headers["Origin"] = origin.format(p=srv.port)
    assert srv.get("/system_stats", headers=headers).status_code == status


def test_websocket_origin_refused(srv):
    from websockets.exceptions import InvalidStatus

    with pytest.raises((InvalidStatus, Exception)):
        with srv.ws(client_id="x", origin="http://evil.com") as ws:
            ws.recv(timeout=5)


def test_websocket_handshake(srv):
    with srv.ws(client_id="abc") as ws:
        first = json.loads(ws.recv(timeout=10))
        assert first == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "abc"}}
        ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        reply = json.loads(ws.recv(timeout=10))
        assert reply["type"] == "feature_flags" and reply["data"]["supports_preview_metadata"] is True
    with srv.ws() as ws:
        sid = json.loads(ws.recv(timeout=10))["data"]["sid"]
        assert len(sid) == 32 and "-" not in sid
    # Reusing a sid: the old socket closing must not unregister the new one.
    with srv.ws(client_id="dup") as old:
        old.recv(timeout=10)
        with srv.ws(client_id="dup") as new:
            new.recv(timeout=10)
            old.close()
            new.send(json.dumps({"type": "feature_flags", "data": {}}))
            assert json.loads(new.recv(timeout=10))["type"] == "feature_flags"


def test_cors_mode(tmp_path):
    with ServerProcess(tmp_path / "cors", "--enable-cors-header", *KERNEL_ONLY) as server:
        r = server.get("/system_stats", headers={"Origin": "http://elsewhere.example"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "http://elsewhere.example"
        assert "PATCH" in r.headers["access-control-allow-methods"]
        assert "Comfy-User" in r.headers["access-control-allow-headers"]
        pre = server.request("OPTIONS", "/prompt", headers={"Origin": "http://elsewhere.example"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-credentials"] == "true"


def test_cache_headers(srv):
    assert "cache-control" not in srv.get("/view", params={"filename": "a.png", "type": "input"}).headers
    r = srv.get("/missing.png")
    assert r.status_code == 404 and r.headers["cache-control"] == "public, max-age=3600"
    assert srv.get("/x.js").headers["cache-control"] == "no-cache"
