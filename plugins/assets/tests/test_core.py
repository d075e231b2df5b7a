"""Upload, from-hash, HEAD, get, update, delete, content and tags over real HTTP."""

from __future__ import annotations

import concurrent.futures as cf
import os

import blake3
import orjson

from plugins.assets.tests.conftest import blobs, upload


def h(data: bytes) -> str:
    return "blake3:" + blake3.blake3(data).hexdigest()


def test_upload_get_and_dedup(server):
    data = os.urandom(5000)
    r = upload(server, data, "pic.png", tags="models,Checkpoint", user_metadata='{"k": 1}')
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["created_new"] is True
    assert first["asset_hash"] == first["hash"] == h(data)
    assert first["size"] == 5000 and first["name"] == "pic.png" and first["mime_type"] == "image/png"
    assert first["tags"] == ["checkpoint", "models"] and first["user_metadata"] == {"k": 1}

    again = upload(server, data, "copy.png")
    assert again.status_code == 201
    assert again.json()["created_new"] is False and again.json()["id"] != first["id"]
    assert len([b for b in blobs(server.base_dir) if b.endswith(h(data)[7:])]) == 1

    got = server.get(f"/api/assets/{first['id']}")
    assert got.status_code == 200 and got.json()["id"] == first["id"]
    assert server.request("HEAD", f"/api/assets/hash/{h(data)}").status_code == 200
    assert server.request("HEAD", f"/api/assets/hash/blake3:{'0' * 64}").status_code == 404
    assert server.request("HEAD", "/api/assets/hash/nothash").status_code == 400


def test_from_hash_update_delete(server):
    data = b"from-hash content" * 100
    created = upload(server, data, "a.txt").json()
    ref = server.post("/api/assets/from-hash", json={"hash": h(data), "name": "b.txt", "tags": ["x"]})
    assert ref.status_code == 201, ref.text
    assert ref.json()["created_new"] is False and ref.json()["size"] == len(data)
    unknown = server.post("/api/assets/from-hash", json={"hash": f"blake3:{'1' * 64}", "name": "z"})
    assert unknown.status_code == 404
    assert server.post("/api/assets/from-hash", json={"hash": "md5:abc", "name": "z"}).status_code == 400

    upd = server.put(f"/api/assets/{created['id']}", json={"name": "renamed.txt", "user_metadata": {"a": "b"},
                                                            "mime_type": "text/plain"}) \
        if hasattr(server, "put") else server.request("PUT", f"/api/assets/{created['id']}",
                                                      json={"name": "renamed.txt", "user_metadata": {"a": "b"},
                                                            "mime_type": "text/plain"})
    assert upd.status_code == 200, upd.text
    assert upd.json()["name"] == "renamed.txt" and upd.json()["user_metadata"] == {"a": "b"}
    assert server.request("PUT", f"/api/assets/{created['id']}", json={}).status_code == 400
    assert server.request("PUT", f"/api/assets/{created['id']}", json={"preview_id": "nope"}).status_code == 400

    # content survives while another asset references it
    r = server.request("DELETE", f"/api/assets/{created['id']}?delete_content=true")
    assert r.status_code == 204
    assert server.get(f"/api/assets/{created['id']}").status_code == 404
    content = server.get(f"/api/assets/{ref.json()['id']}/content")
    assert content.status_code == 200 and content.content == data
    r = server.request("DELETE", f"/api/assets/{ref.json()['id']}?delete_content=true")
    assert r.status_code == 204
    assert server.request("HEAD", f"/api/assets/hash/{h(data)}").status_code == 404
    assert not [b for b in blobs(server.base_dir) if b.endswith(h(data)[7:])]
    assert server.request("DELETE", f"/api/assets/{ref.json()['id']}").status_code == 404


def test_content_ranges_and_type(server):
    data = bytes(range(256)) * 40
    asset = upload(server, data, "clip.wav").json()
    url = f"/api/assets/{asset['id']}/content"
    full = server.get(url)
    assert full.status_code == 200 and full.content == data
    assert full.headers["content-type"].startswith("audio/")
    assert full.headers["accept-ranges"] == "bytes"
    part = server.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    tail = server.get(url, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == data[-5:]
    open_end = server.get(url, headers={"Range": f"bytes={len(data) - 3}-"})
    assert open_end.content == data[-3:]
    bad = server.get(url, headers={"Range": f"bytes={len(data) + 10}-"})
    assert bad.status_code == 416


def test_tags_and_tag_listing(server):
    a = upload(server, b"tag-a", "a.bin", tags="t-one,t-two").json()
    upload(server, b"tag-b", "b.bin", tags="t-one")
    add = server.post(f"/api/assets/{a['id']}/tags", json={"tags": ["t-three", "t-one"]})
    assert add.status_code == 200
    assert add.json()["added"] == ["t-three"] and add.json()["already_present"] == ["t-one"]
    rem = server.request("DELETE", f"/api/assets/{a['id']}/tags", json={"tags": ["t-two", "zzz"]})
    assert rem.json()["removed"] == ["t-two"] and rem.json()["not_present"] == ["zzz"]
    put = server.request("PUT", f"/api/assets/{a['id']}/tags", json={"add": ["t-four"], "remove": ["t-three"]})
    assert put.status_code == 200 and sorted(put.json()["total_tags"]) == ["t-four", "t-one"]
    rep = server.request("PUT", f"/api/assets/{a['id']}/tags", json={"tags": ["t-one", "t-five"]})
    assert sorted(rep.json()["total_tags"]) == ["t-five", "t-one"]
    assert server.post(f"/api/assets/{a['id']}/tags", json={"tags": []}).status_code == 400
    assert server.post(f"/api/assets/{a['id']}/tags", json={"tags": "nope"}).status_code == 400

    tags = server.get("/api/tags", params={"prefix": "t-"}).json()
    counts = {t["name"]: t["count"] for t in tags["tags"]}
    assert counts["t-one"] == 2 and counts["t-five"] == 1
    search = server.get("/api/tags", params={"search": "fiv"}).json()
    assert [t["name"] for t in search["tags"]] == ["t-five"]
    hist = server.get("/api/assets/tags/refine", params={"include_tags": "t-one"}).json()
    assert hist["tag_counts"]["t-one"] == 2 and hist["tag_counts"]["t-five"] == 1


def test_listing_filters_sort_and_paging(make_server):
    srv = make_server()
    for i in range(7):
        upload(srv, f"list-{i}".encode(), f"item-{i}.bin", tags="lst," + ("even" if i % 2 == 0 else "odd"),
               user_metadata=orjson.dumps({"i": i, "flag": i < 3}).decode())
    page = srv.get("/api/assets", params={"include_tags": "lst", "limit": 3, "sort": "name", "order": "asc"}).json()
    assert page["total"] == 7 and page["has_more"] and [a["name"] for a in page["assets"]] == \
        ["item-0.bin", "item-1.bin", "item-2.bin"]
    names = []
    cursor = None
    while True:
        params = {"include_tags": "lst", "limit": 3, "sort": "name", "order": "asc"}
        if cursor:
            params["after"] = cursor
        body = srv.get("/api/assets", params=params).json()
        names += [a["name"] for a in body["assets"]]
        cursor = body.get("next_cursor")
        if not cursor:
            break
    assert names == [f"item-{i}.bin" for i in range(7)]
    off = srv.get("/api/assets", params={"include_tags": "lst", "limit": 3, "offset": 6, "sort": "name"}).json()
    assert off["has_more"] is False and len(off["assets"]) == 1
    odd = srv.get("/api/assets", params=[("include_tags", "lst"), ("exclude_tags", "even")]).json()
    assert odd["total"] == 3
    named = srv.get("/api/assets", params={"name_contains": "M-5"}).json()
    assert [a["name"] for a in named["assets"]] == ["item-5.bin"]
    meta = srv.get("/api/assets", params={"metadata_filter": '{"flag": true}'}).json()
    assert meta["total"] == 3
    meta = srv.get("/api/assets", params={"metadata_filter": '{"i": [4, 6]}'}).json()
    assert sorted(a["name"] for a in meta["assets"]) == ["item-4.bin", "item-6.bin"]
    by_size = srv.get("/api/assets", params={"sort": "size", "order": "desc", "limit": 1}).json()
    assert by_size["assets"][0]["size"] == max(len(f"list-{i}") for i in range(7))


def test_owners_are_isolated(make_server):
    srv = make_server("--multi-user")
    r = upload(srv, b"private bytes", "p.bin", user="alice")
    assert r.status_code == 201
    asset_id = r.json()["id"]
    hdr = {"Comfy-User": "bob"}
    assert srv.get(f"/api/assets/{asset_id}", headers=hdr).status_code == 404
    assert srv.get(f"/api/assets/{asset_id}/content", headers=hdr).status_code == 404
    assert srv.request("DELETE", f"/api/assets/{asset_id}", headers=hdr).status_code == 404
    assert srv.get("/api/assets", headers=hdr).json()["total"] == 0
    assert srv.request("HEAD", f"/api/assets/hash/{h(b'private bytes')}", headers=hdr).status_code == 404
    assert srv.post("/api/assets/from-hash", json={"hash": h(b"private bytes"), "name": "x"},
                    headers=hdr).status_code == 404
    # the same bytes uploaded by bob are stored once
    again = upload(srv, b"private bytes", "p.bin", user="bob")
    assert again.status_code == 201 and again.json()["created_new"] is False


def test_hostile_inputs(server):
    bad_hash = upload(server, b"xyz", "x.bin", hash="blake3:zz")
    assert bad_hash.status_code == 400 and bad_hash.json()["code"] == "INVALID_HASH"
    mismatch = upload(server, b"xyz", "x.bin", hash=f"blake3:{'a' * 64}")
    assert mismatch.status_code == 400 and mismatch.json()["code"] == "HASH_MISMATCH"
    assert upload(server, b"xyz", "x.bin", user_metadata="{not json").status_code == 400
    assert upload(server, b"xyz", "x.bin", user_metadata="[1,2]").status_code == 400
    assert upload(server, b"xyz", "x.bin", preview_id="not-a-uuid").status_code == 400
    assert upload(server, b"xyz", "x.bin", mime_type="bad mime").status_code == 400
    assert upload(server, b"xyz", "x.bin", tags="a" * 500).status_code == 400
    assert server.post("/api/assets", data={"name": "x"}).status_code in (400, 415)
    assert server.post("/api/assets", content=b"garbage",
                       headers={"content-type": "multipart/form-data; boundary=zz"}).status_code == 400
    assert server.post("/api/assets", content=b"x", headers={"content-type": "text/plain"}).status_code == 415

    traversal = upload(server, b"path name", "../../etc/passwd")
    assert traversal.status_code == 201 and traversal.json()["name"] == "passwd"
    assert not os.path.exists(os.path.join(server.base_dir, "etc"))
    named = upload(server, b"path name 2", "x.bin", name="..\\..\\evil.txt")
    assert named.json()["name"] == "evil.txt"

    for filt in ["{", "[1]", '{"a": {"b": 1}}', '{"a\\"b": 1}', "{" + ",".join(f'"k{i}":1' for i in range(100)) + "}",
                 '{"a": "' + "x" * 20000 + '"}', '{"a": ' + "[" * 600 + "]" * 600 + "}"]:
        r = server.get("/api/assets", params={"metadata_filter": filt})
        assert r.status_code == 400, (filt[:40], r.status_code, r.text)
        assert "message" in r.json()
    for params in [{"limit": "-1"}, {"limit": "abc"}, {"offset": "-5"}, {"sort": "evil;drop"},
                   {"order": "sideways"}, {"after": "!!!"}, {"include_public": "maybe"},
                   {"asset_hash": "blake3:short"}]:
        assert server.get("/api/assets", params=params).status_code == 400, params
    assert server.get("/api/assets/does-not-exist").status_code == 404
    assert server.post("/api/assets/from-hash", content=b"{bad").status_code == 400
    assert server.post("/api/assets/from-hash", json=[1]).status_code == 400
    assert server.post("/api/assets/from-hash", json={"hash": 5}).status_code == 400


def test_concurrent_uploads_of_same_bytes(make_server):
    srv = make_server()
    data = os.urandom(300_000)

    def one(i: int):
        return upload(srv, data, f"same-{i}.bin")

    with cf.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(24)))
    assert all(r.status_code == 201 for r in results), [r.text for r in results if r.status_code != 201]
    ids = {r.json()["id"] for r in results}
    assert len(ids) == 24
    assert sum(r.json()["created_new"] for r in results) == 1
    assert len(blobs(srv.base_dir)) == 1
    listing = srv.get("/api/assets", params={"name_contains": "same-", "limit": 100}).json()
    assert listing["total"] == 24
    tmp = os.path.join(srv.base_dir, "user", "assets", "tmp")
    assert os.listdir(tmp) == []


def test_idempotent_id_and_preview(server):
    import uuid

    wanted = str(uuid.uuid4())
    first = upload(server, b"idempotent", "i.bin", id=wanted)
    assert first.status_code == 201 and first.json()["id"] == wanted
    second = upload(server, b"idempotent", "i.bin", id=wanted)
    assert second.status_code == 200 and second.json()["id"] == wanted and second.json()["created_new"] is False
    assert server.get("/api/assets", params={"name_contains": "i.bin"}).json()["total"] == 1

    preview = upload(server, b"\x89PNG preview", "thumb.png").json()
    model = upload(server, b"weights", "w.safetensors", preview_id=preview["id"]).json()
    assert model["preview_id"] == preview["id"] and model["preview_url"].endswith(f"{preview['id']}/content")
    missing = upload(server, b"weights 2", "w2.safetensors", preview_id=str(uuid.uuid4()))
    assert missing.status_code == 404
    cleared = server.request("PUT", f"/api/assets/{model['id']}", json={"preview_id": None})
    assert cleared.status_code == 200 and "preview_id" not in cleared.json()
    # deleting the preview asset clears the reference instead of leaving it dangling
    server.request("PUT", f"/api/assets/{model['id']}", json={"preview_id": preview["id"]})
    assert server.request("DELETE", f"/api/assets/{preview['id']}").status_code == 204
    assert "preview_id" not in server.get(f"/api/assets/{model['id']}").json()


def test_preview_url_is_an_absolute_uri(server):
    """Both seeds type ``preview_url`` as a URI: absolute, on the address the request reached."""
    image = upload(server, b"\x89PNG absolute", "abs.png").json()
    assert image["preview_url"] == f"{server.url}/api/assets/{image['id']}/content"
    assert server.get(image["preview_url"]).content == b"\x89PNG absolute"
    listed = server.get("/api/assets", params={"name_contains": "abs.png"}).json()["assets"]
    assert listed[0]["preview_url"].startswith("http://127.0.0.1:")


def test_user_metadata_nested_too_deeply_is_a_400(server):
    deep = '{"k":' * 300 + "1" + "}" * 300
    for body in ({"user_metadata": deep}, {"user_metadata": '{"ok": ' + '[' * 200 + ']' * 200 + "}"}):
        r = upload(server, b"deep metadata", "deep.bin", **body)
        assert r.status_code == 400, r.text
        assert "128 levels" in r.json()["message"]
    raw = '{"name": "x", "user_metadata": ' + deep + "}"
    created = upload(server, b"to update", "upd.bin").json()
    r = server.request("PUT", f"/api/assets/{created['id']}", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "128 levels" in r.json()["message"]
    assert "unhandled error" not in server.log()
