"""``/userdata``, ``/v2/userdata``, ``/userdata/{file}`` and move, in single-user mode.

Paths are sent the way the frontend sends them: one segment encoded with
``encodeURIComponent``. Hostile paths must give 4xx answers, never 500, and
never touch anything outside the user's directory.
"""

from __future__ import annotations

import os
import time
from urllib.parse import quote

import pytest

INVALID_FILENAME = 'Invalid filename. Please avoid special characters like :\\/*?"<>|'


def enc(path: str) -> str:
    return quote(path, safe="")


def root(srv) -> str:
    return os.path.join(srv.base_dir, "user", "default")


def save(srv, path: str, body: bytes = b"{}", query: str = "", prefix: str = "/api") -> object:
    return srv.post(f"{prefix}/userdata/{enc(path)}{query}", content=body)


# --- save, read, delete ------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/api", ""])
def test_roundtrip_with_encoded_slash(server, prefix):
    name = f"rt{prefix.strip('/')}/my test/wf one.json"
    r = save(server, name, b'{"a": 1}', prefix=prefix)
    assert r.status_code == 200 and r.json() == name
    assert os.path.isfile(os.path.join(root(server), name))
    r = server.get(f"{prefix}/userdata/{enc(name)}")
    assert r.status_code == 200 and r.content == b'{"a": 1}'
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert server.request("HEAD", f"{prefix}/userdata/{enc(name)}").status_code == 200
    assert server.request("DELETE", f"{prefix}/userdata/{enc(name)}").status_code == 204
    assert not os.path.exists(os.path.join(root(server), name))
    assert server.request("DELETE", f"{prefix}/userdata/{enc(name)}").status_code == 404
    assert server.get(f"{prefix}/userdata/{enc(name)}").status_code == 404


def test_save_full_info_and_overwrite(server):
    name = "workflows/ow.json"
    r = save(server, name, b"one", "?overwrite=false&full_info=true")
    assert r.status_code == 200
    info = r.json()
    assert info["path"] == name and info["size"] == 3
    # integer epoch milliseconds (the seed specs' and the frontend's unit)
    assert isinstance(info["modified"], int) and isinstance(info["created"], int)
    assert abs(info["modified"] - time.time() * 1000) < 120_000
    r = save(server, name, b"two", "?overwrite=false")
    assert r.status_code == 409
    assert server.get(f"/api/userdata/{enc(name)}").content == b"one"
    # Anything but the exact value "false" overwrites.
    for flag in ("", "?overwrite=true", "?overwrite=False"):
        assert save(server, name, b"three" + flag.encode(), flag).status_code == 200
    assert server.get(f"/api/userdata/{enc(name)}").content == b"three?overwrite=False"


def test_body_is_stored_verbatim_whatever_the_content_type(server):
    body = b"\x00\xffnot json at all"
    r = server.post(f"/api/userdata/{enc('raw.bin')}", content=body, headers={"content-type": "text/plain"})
    assert r.status_code == 200
    with open(os.path.join(root(server), "raw.bin"), "rb") as f:
        assert f.read() == body


def test_no_temporary_files_left_behind(server):
    for i in range(5):
        assert save(server, "atomic/f.json", str(i).encode()).status_code == 200
    assert os.listdir(os.path.join(root(server), "atomic")) == ["f.json"]


def test_single_url_decoding(server):
    # "%25" is a literal percent sign: the name round-trips.
    assert save(server, "pct%41.json", b"p").json() == "pct%41.json"
    assert os.path.isfile(os.path.join(root(server), "pct%41.json"))
    assert server.get(f"/api/userdata/{enc('pct%41.json')}").content == b"p"
    # A double-encoded slash is a literal "%2F", not a directory separator.
    r = server.post("/api/userdata/c%252F.json", content=b"c")
    assert r.status_code == 200 and r.json() == "c%2F.json"
    assert os.path.isfile(os.path.join(root(server), "c%2F.json"))
    # Double-encoded dot-dot stays a harmless literal name inside the root.
    r = server.post("/api/userdata/%252E%252E%252Fesc.json", content=b"x")
    assert r.status_code == 200 and r.json() == "%2E%2E%2Fesc.json"


@pytest.mark.parametrize("raw", [
    "..%2F..%2Fescaped.json",
    "..%2Fusers.json",
    "%2E%2E%2Fescaped.json",
    "%2Fetc%2Fpasswd",
    "a%2F..%2F..%2F..%2Fescaped.json",
    "%2E%2E",
])
def test_escaping_paths_are_forbidden(server, raw):
    for method in ("GET", "POST", "DELETE"):
        r = server.request(method, f"/api/userdata/{raw}", content=b"x" if method == "POST" else None)
        assert r.status_code in (403, 404), (method, raw, r.status_code)
        assert r.status_code != 500
    assert server.post(f"/api/userdata/{raw}", content=b"x").status_code == 403
    assert not os.path.exists(os.path.join(server.base_dir, "user", "escaped.json"))
    assert not os.path.exists(os.path.join(server.base_dir, "escaped.json"))


def test_nul_byte_is_a_bad_request(server):
    assert server.post("/api/userdata/a%00b.json", content=b"x").status_code == 400
    assert server.get("/api/userdata/a%00b.json").status_code == 400
    assert server.get("/api/userdata?dir=a%00b").status_code == 400


def test_invalid_utf8_is_a_bad_request(server):
    assert server.post("/api/userdata/%ff%fe.json", content=b"x").status_code == 400


def test_dot_dot_inside_the_root_is_normalised(server):
    r = save(server, "norm/../normed.json", b"n")
    assert r.status_code == 200 and r.json() == "normed.json"


def test_symlink_out_of_the_root_is_refused(server, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text("secret")
    os.makedirs(root(server), exist_ok=True)
    os.symlink(outside, os.path.join(root(server), "link"))
    os.symlink(outside / "secret.json", os.path.join(root(server), "secret-link.json"))
    try:
        assert server.get(f"/api/userdata/{enc('link/secret.json')}").status_code == 403
        assert server.get(f"/api/userdata/{enc('secret-link.json')}").status_code == 403
        assert save(server, "link/planted.json", b"x").status_code == 403
        assert not (outside / "planted.json").exists()
        assert server.get("/api/userdata?dir=link").status_code == 403
        listed = server.get("/api/userdata?dir=.&recurse=true").json()
        assert "secret-link.json" not in listed and "link/secret.json" not in listed
        assert all(item["name"] != "secret-link.json" for item in server.get("/api/v2/userdata").json())
    finally:
        os.unlink(os.path.join(root(server), "link"))
        os.unlink(os.path.join(root(server), "secret-link.json"))


def test_write_errors_are_400_with_the_reason(server):
    assert save(server, "isdir/child.json").status_code == 200
    r = server.post(f"/api/userdata/{enc('isdir')}", content=b"x")
    assert r.status_code == 400
    assert r.json()["error"]["message"] == INVALID_FILENAME
    # A parent that is a file.
    r = server.post(f"/api/userdata/{enc('isdir/child.json/deeper.json')}", content=b"x")
    assert r.status_code == 400
    r = server.post(f"/api/userdata/{enc('x' * 300 + '.json')}", content=b"x")
    assert r.status_code == 400


def test_directories_are_forbidden_to_get_and_delete(server):
    assert save(server, "dirs/f.json").status_code == 200
    assert server.get(f"/api/userdata/{enc('dirs')}").status_code == 403
    assert server.request("DELETE", f"/api/userdata/{enc('dirs')}").status_code == 403
    assert os.path.isdir(os.path.join(root(server), "dirs"))


def test_unsafe_types_are_downloads(server):
    save(server, "page.html", b"<script>alert(1)</script>")
    r = server.get("/api/userdata/page.html")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"] == "attachment"
    save(server, "user.css", b"body{}")
    assert server.get("/api/userdata/user.css").headers["content-type"].startswith("text/css")


def test_unencoded_slash_is_not_a_file(server):
    save(server, "plain/x.json")
    assert server.get("/api/userdata/plain/x.json").status_code == 404


# --- listing -----------------------------------------------------------------


def test_list_errors(server):
    assert server.get("/api/userdata").status_code == 400
    assert server.get("/api/userdata?dir=").status_code == 400
    assert server.get("/api/userdata?dir=..").status_code == 403
    assert server.get("/api/userdata?dir=/etc").status_code == 403
    assert server.get("/api/userdata?dir=nope/a/b").status_code == 404
    # Listing creates nothing.
    assert not os.path.exists(os.path.join(root(server), "nope"))
    save(server, "afile.json")
    assert server.get("/api/userdata?dir=afile.json").json() == []


def test_list_shapes(server):
    for name in ("ls/b.json", "ls/a.json", "ls/sub/c.json", "ls/.hidden.json", "ls/.hdir/d.json"):
        assert save(server, name, b"12").status_code == 200
    assert server.get("/api/userdata?dir=ls").json() == ["a.json", "b.json"]
    assert server.get("/userdata?dir=ls&recurse=true").json() == ["a.json", "b.json", "sub/c.json"]
    split = server.get("/api/userdata?dir=ls&recurse=true&split=true").json()
    assert split == [["a.json", "a.json"], ["b.json", "b.json"], ["sub/c.json", "sub", "c.json"]]
    full = server.get("/api/userdata?dir=ls&recurse=true&split=false&full_info=true").json()
    assert [f["path"] for f in full] == ["a.json", "b.json", "sub/c.json"]
    assert all(f["size"] == 2 and isinstance(f["modified"], int) for f in full)
    assert all(abs(f["modified"] - time.time() * 1000) < 120_000 for f in full)


def test_v2_listing(server):
    for name in ("v2/B dir/x.json", "v2/a.json", "v2/.dot"):
        assert save(server, name, b"123").status_code == 200
    items = server.get("/api/v2/userdata?path=v2").json()
    assert items == [
        {"name": "B dir", "path": "v2/B dir", "type": "directory"},
        {"name": "a.json", "path": "v2/a.json", "type": "file", "size": 3,
         "modified": items[1]["modified"]},
        {"name": "x.json", "path": "v2/B dir/x.json", "type": "file", "size": 3,
         "modified": items[2]["modified"]},
    ]
    assert server.get("/v2/userdata?path=..").status_code == 400
    assert server.get("/api/v2/userdata?path=%2Fetc").status_code == 400
    assert server.get("/api/v2/userdata?path=missing").status_code == 404
    assert server.get("/api/v2/userdata?path=v2%2Fa.json").status_code == 400
    # The query is decoded once: "%2541" is the literal name "%41".
    save(server, "v2pct/%41/f.json")
    assert server.get("/api/v2/userdata?path=v2pct%2F%2541").json()[0]["path"] == "v2pct/%41/f.json"
    whole = server.get("/api/v2/userdata").json()
    assert {"name": "v2", "path": "v2", "type": "directory"} in whole


def test_v2_on_a_fresh_user_is_empty(make_server):
    srv = make_server()
    assert srv.get("/api/v2/userdata").json() == []
    assert not os.path.exists(root(srv))


# --- move --------------------------------------------------------------------


def test_move(server):
    save(server, "mv/src.json", b"S")
    r = server.post(f"/api/userdata/{enc('mv/src.json')}/move/{enc('mv/new dir/dst.json')}")
    assert r.status_code == 200 and r.json() == "mv/new dir/dst.json"
    assert not os.path.exists(os.path.join(root(server), "mv/src.json"))
    assert server.get(f"/api/userdata/{enc('mv/new dir/dst.json')}").content == b"S"

    save(server, "mv/other.json", b"O")
    r = server.post(f"/api/userdata/{enc('mv/other.json')}/move/{enc('mv/new dir/dst.json')}?overwrite=false")
    assert r.status_code == 409
    assert os.path.exists(os.path.join(root(server), "mv/other.json"))
    r = server.post(f"/userdata/{enc('mv/other.json')}/move/{enc('mv/new dir/dst.json')}?full_info=true")
    assert r.status_code == 200 and r.json()["path"] == "mv/new dir/dst.json" and r.json()["size"] == 1
    assert server.get(f"/api/userdata/{enc('mv/new dir/dst.json')}").content == b"O"


def test_move_errors(server):
    save(server, "mve/a.json", b"A")
    src = enc("mve/a.json")
    assert server.post(f"/api/userdata/{enc('mve/none.json')}/move/{enc('mve/b.json')}").status_code == 404
    assert server.post(f"/api/userdata/..%2Fx.json/move/{enc('mve/b.json')}").status_code == 403
    assert server.post(f"/api/userdata/{src}/move/..%2F..%2Fstolen.json").status_code == 403
    assert server.post(f"/api/userdata/{src}/move/%2Ftmp%2Fstolen.json").status_code == 403
    assert server.post(f"/api/userdata/{src}/move/a%00b").status_code == 400
    assert server.post(f"/api/userdata/{src}/move/{enc('mve')}").status_code == 409
    assert server.get(f"/api/userdata/{src}/move/{enc('mve/b.json')}").status_code == 405
    assert server.get(f"/api/userdata/{src}").content == b"A"
