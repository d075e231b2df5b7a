"""The hub over HTTP: profiles, labels, media upload URLs, listing, browsing, template index, feedback."""

from __future__ import annotations

import time

import httpx
import pytest
from hub_helpers import disable_all_but, make_user, save_userdata

from comfy_kernel.testing import ServerProcess

UPLOAD_TTL = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    args = [*disable_all_but("hub", "userdata", "assets"), "--multi-user", "--hub-upload-ttl", str(UPLOAD_TTL)]
    with ServerProcess(tmp_path_factory.mktemp("hubapi"), *args) as srv:
        yield srv


@pytest.fixture(scope="module")
def people(server):
    return make_user(server, "alice"), make_user(server, "bob")


@pytest.fixture(scope="module")
def profiles(server, people):
    alice, _ = people
    r = server.post("/api/hub/profiles", json={"workspace_id": "personal", "username": "alice",
                                               "display_name": "Alice", "website_urls": ["https://a.example"]},
                    headers=alice)
    assert r.status_code == 201, r.text
    return r.json()


def upload(server, user, content=b"\x89PNGthumb", content_type="image/png"):
    r = server.post("/api/hub/assets/upload-url", json={"filename": "t.png", "content_type": content_type},
                    headers=user)
    assert r.status_code == 200, r.text
    body = r.json()
    put = httpx.put(body["upload_url"], content=content, headers={"Content-Type": content_type})
    assert put.status_code == 200, put.text
    return body


def test_profiles(server, people, profiles):
    alice, bob = people
    assert profiles == {"username": "alice", "display_name": "Alice", "description": "",
                        "website_urls": ["https://a.example"]}
    assert server.get("/api/hub/profiles/me", headers=alice).json()["username"] == "alice"
    assert server.get("/api/hub/profiles/me", headers=bob).status_code == 404
    assert server.get("/api/hub/profiles/alice").json()["display_name"] == "Alice"
    assert server.get("/api/hub/profiles/nobody").status_code == 404
    # Username rules and availability.
    for bad in ("ab", "Alice", "-lead", "trail-", "has space", "x" * 40, "me"):
        r = server.get("/api/hub/profiles/check", params={"username": bad}, headers=bob).json()
        assert r["available"] is False and r["validation_error"], bad
    taken = server.get("/api/hub/profiles/check", params={"username": "alice"}, headers=bob).json()
    assert taken["available"] is False and len(taken["suggestions"]) == 5
    assert all(s.startswith("alice") for s in taken["suggestions"])
    assert server.get("/api/hub/profiles/check", params={"username": "alice"}, headers=alice).json()["available"]
    assert server.get("/api/hub/profiles/check", params={"username": "bob_1"}, headers=bob).json() == \
        {"username": "bob_1", "available": True}
    # Creation errors.
    assert server.post("/api/hub/profiles", json={"workspace_id": "p", "username": "alice"},
                       headers=bob).status_code == 409
    assert server.post("/api/hub/profiles", json={"workspace_id": "p", "username": "other"},
                       headers=alice).status_code == 409
    assert server.post("/api/hub/profiles", json={"workspace_id": "p", "username": "B!"}, headers=bob).status_code == 400
    assert server.post("/api/hub/profiles", json={"username": "bobby"}, headers=bob).status_code == 400
    # Updates: owner only, username immutable.
    r = server.request("PATCH", "/api/hub/profiles/alice", json={"description": "hello"}, headers=alice)
    assert r.status_code == 200 and r.json()["description"] == "hello"
    assert server.request("PATCH", "/api/hub/profiles/alice", json={"description": "x"}, headers=bob).status_code == 403
    assert server.request("PATCH", "/api/hub/profiles/alice", json={"username": "al"},
                          headers=alice).status_code == 400
    assert server.request("PATCH", "/api/hub/profiles/zed", json={}, headers=alice).status_code == 404


def test_avatar_upload_and_tokens(server, people, profiles):
    alice, bob = people
    body = upload(server, bob)
    assert body["public_url"].endswith(".png")
    r = server.post("/api/hub/profiles", json={"workspace_id": "personal", "username": "bob",
                                               "avatar_token": body["token"]}, headers=bob)
    assert r.status_code == 201, r.text
    avatar = r.json()["avatar_url"]
    assert server.get(avatar).content == b"\x89PNGthumb"
    assert server.get(avatar).headers["content-type"] == "image/png"
    # Tokens belong to their uploader.
    r = server.request("PATCH", "/api/hub/profiles/alice", json={"avatar_token": body["token"]}, headers=alice)
    assert r.status_code == 400
    r = server.request("PATCH", "/api/hub/profiles/bob", json={"avatar_token": ""}, headers=bob)
    assert "avatar_url" not in r.json()


def test_upload_url_is_signed_single_use_and_expires(server, people):
    alice, _ = people
    assert server.post("/api/hub/assets/upload-url", json={"filename": "x.svg", "content_type": "image/svg+xml"},
                       headers=alice).status_code == 400
    assert server.post("/api/hub/assets/upload-url", json={"content_type": "image/png"},
                       headers=alice).status_code == 400
    body = server.post("/api/hub/assets/upload-url", json={"filename": "a.webp", "content_type": "image/webp"},
                       headers=alice).json()
    url = body["upload_url"]
    assert httpx.put(url.replace("signature=", "signature=0"), content=b"x").status_code == 403
    assert httpx.put(url.replace("expires=", "expires=1"), content=b"x").status_code == 403
    assert httpx.put(url, content=b"x", headers={"Content-Type": "image/png"}).status_code == 400
    assert httpx.put(url, content=b"RIFFwebp", headers={"Content-Type": "image/webp"}).status_code == 200
    assert httpx.put(url, content=b"again", headers={"Content-Type": "image/webp"}).status_code == 409
    assert server.get(body["public_url"]).content == b"RIFFwebp"
    # A token for an upload that never happened is refused; an expired URL is refused.
    late = server.post("/api/hub/assets/upload-url", json={"filename": "b.png", "content_type": "image/png"},
                       headers=alice).json()
    r = server.request("PATCH", "/api/hub/profiles/alice", json={"avatar_token": late["token"]}, headers=alice)
    assert r.status_code in (400, 404)
    time.sleep(UPLOAD_TTL + 1.1)
    r = httpx.put(late["upload_url"], content=b"late", headers={"Content-Type": "image/png"})
    assert r.status_code == 403 and r.json()["code"] == "EXPIRED"
    assert server.get("/api/hub/media/..%2Fsecret.key").status_code == 404


def test_labels(server):
    labels = server.get("/api/hub/labels").json()["labels"]
    assert {lab["type"] for lab in labels} == {"tag", "model"}
    tags = server.get("/api/hub/labels", params={"type": "tag"}).json()["labels"]
    assert tags and all(t["type"] == "tag" and t["display_name"] for t in tags)
    assert server.get("/api/hub/labels", params={"type": "custom_node"}).json() == {"labels": []}
    assert server.get("/api/hub/labels", params={"type": "colour"}).status_code == 400


def publish(server, user, name, filename, **extra):
    body = {"username": "alice", "name": name, "workflow_filename": filename, "asset_ids": [], **extra}
    return server.post("/api/hub/workflows", json=body, headers=user)


def test_publish_browse_detail_index_unpublish(server, people, profiles):
    alice, bob = people
    save_userdata(server, alice, "workflows/cats.json", b'{"nodes": [], "links": [], "cats": true}')
    save_userdata(server, alice, "workflows/dogs.json", b'{"nodes": [], "links": [], "dogs": true}')
    thumb = upload(server, alice)
    r = publish(server, alice, "Cat Pictures", "workflows/cats.json", tags=["text-to-image"], models=["sdxl"],
                description="cats", thumbnail_token_or_url=thumb["token"], thumbnail_type="image",
                metadata={"vram": 8000000000, "open_source": True, "faq_items": ["stripped"]},
                tutorial_url="https://example.com/t")
    assert r.status_code == 200, r.text
    cats = r.json()
    assert cats["name"] == "Cat Pictures" and cats["status"] == "approved" and cats["workflow_json"]["cats"]
    assert cats["profile"]["username"] == "alice" and cats["tags"] == [{"name": "text-to-image",
                                                                         "display_name": "Text to Image"}]
    assert cats["thumbnail_url"].startswith("/api/hub/media/") and "faq_items" not in cats["metadata"]
    dogs = publish(server, alice, "Dog Pictures", "workflows/dogs.json", tags=["upscaling"]).json()

    # Publishing rules.
    assert publish(server, alice, "x", "workflows/cats.json", tags=["nope"]).status_code == 400
    assert publish(server, bob, "x", "workflows/cats.json").status_code == 403
    assert server.post("/api/hub/workflows", json={"username": "ghost", "name": "x",
                                                   "workflow_filename": "workflows/cats.json", "asset_ids": []},
                       headers=alice).status_code == 404
    assert publish(server, alice, "x", "workflows/none.json").status_code == 404

    # Browsing.
    listing = server.get("/api/hub/workflows").json()
    assert [w["share_id"] for w in listing["workflows"]] == [dogs["share_id"], cats["share_id"]]
    assert "workflow_json" not in listing["workflows"][0] and listing["next_cursor"] == ""
    page = server.get("/api/hub/workflows", params={"limit": 1}).json()
    assert len(page["workflows"]) == 1 and page["next_cursor"]
    rest = server.get("/api/hub/workflows", params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert rest["workflows"][0]["share_id"] == cats["share_id"] and rest["next_cursor"] == ""
    assert [w["name"] for w in server.get("/api/hub/workflows", params={"search": "cat"}).json()["workflows"]] == \
        ["Cat Pictures"]
    assert [w["name"] for w in server.get("/api/hub/workflows", params={"tag": "upscaling"}).json()["workflows"]] == \
        ["Dog Pictures"]
    assert len(server.get("/api/hub/workflows", params={"username": "alice"}).json()["workflows"]) == 2
    assert server.get("/api/hub/workflows", params={"username": "ghost"}).status_code == 404
    assert server.get("/api/hub/workflows", params={"status": "pending"}).json()["workflows"] == []
    assert server.get("/api/hub/workflows", params={"status": "weird"}).status_code == 400
    assert server.get("/api/hub/workflows", params={"cursor": "!!"}).status_code == 400
    assert server.get("/api/hub/workflows", params={"detail": "true", "limit": 50}).status_code == 400
    detailed = server.get("/api/hub/workflows", params={"detail": "true"}).json()["workflows"]
    assert all("workflow_json" in w and "assets" in w for w in detailed)

    # Detail and the template index.
    got = server.get(f"/api/hub/workflows/{cats['share_id']}").json()
    assert got["workflow_id"] == cats["workflow_id"] and got["tutorial_url"] == "https://example.com/t"
    index = server.get("/api/hub/workflows/index").json()
    entry = next(e for e in index if e["shareId"] == cats["share_id"])
    assert entry["title"] == "Cat Pictures" and entry["name"] and entry["status"] == "approved"
    assert entry["mediaType"] == "image" and entry["mediaSubtype"] == "png" and entry["tags"] == ["Text to Image"]
    assert entry["models"] == ["SDXL"] and entry["vram"] == 8000000000 and entry["openSource"] is True
    assert entry["thumbnailUrl"] == cats["thumbnail_url"] and len(entry["date"]) == 10
    assert entry["profile"]["username"] == "alice"

    # An unlisted share (published without the hub) is not browsable.
    save_userdata(server, alice, "workflows/quiet.json", b'{"nodes": [], "links": []}')
    quiet = server.post("/api/userdata/workflows%2Fquiet.json/publish", json={"asset_ids": []}, headers=alice).json()
    assert server.get(f"/api/hub/workflows/{quiet['share_id']}").status_code == 404
    assert server.get(f"/api/workflows/published/{quiet['share_id']}", headers=bob).status_code == 200

    # Unpublishing removes it from every listing.
    assert server.request("DELETE", f"/api/hub/workflows/{dogs['share_id']}", headers=bob).status_code == 403
    assert server.request("DELETE", f"/api/hub/workflows/{dogs['share_id']}", headers=alice).status_code == 204
    assert server.get(f"/api/hub/workflows/{dogs['share_id']}").status_code == 404
    assert [e["shareId"] for e in server.get("/api/hub/workflows/index").json()] == [cats["share_id"]]


def test_feedback(server, people):
    alice, _ = people
    r = server.post("/api/feedback", json={"type": "general", "content": "nice", "rating": 5,
                                           "metadata": {"page": "hub"}}, headers=alice)
    assert r.status_code == 201 and r.json()["id"]
    assert server.post("/api/feedback", json={"type": "missing_nodes"}, headers=alice).status_code == 201
    assert server.post("/api/feedback", json={"type": "other"}, headers=alice).status_code == 400
    assert server.post("/api/feedback", json={"type": "general", "rating": 6}, headers=alice).status_code == 400
    assert server.post("/api/feedback", json={"content": "no type"}, headers=alice).status_code == 400
