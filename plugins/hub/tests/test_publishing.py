"""Publishing over HTTP: userdata files and saved workflows, snapshots, asset status, import, unpublish."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hub_helpers import disable_all_but, make_user, save_userdata, wait_seed

from comfy_kernel.testing import ServerProcess

FLOW = {"nodes": [{"id": 1, "type": "CheckpointLoaderSimple", "widgets_values": ["tiny.safetensors"],
                   "properties": {"models": [{"name": "absent.safetensors", "directory": "loras"}]}}],
        "links": []}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("publish")
    (base / "models" / "checkpoints").mkdir(parents=True)
    (base / "models" / "checkpoints" / "tiny.safetensors").write_bytes(b"not really a model")
    args = [*disable_all_but("hub", "userdata", "assets"), "--multi-user"]
    with ServerProcess(base, *args) as srv:
        srv.post("/api/assets/seed", json={"roots": ["models"]})
        wait_seed(srv)
        yield srv


@pytest.fixture(scope="module")
def people(server):
    return make_user(server, "alice"), make_user(server, "bob")


def upload_asset(server, user, name=b"photo", filename="photo.png"):
    r = server.post("/api/assets", files={"file": (filename, b"\x89PNG" + name, "image/png")},
                    data={"tags": "input"}, headers=user)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def model_asset(server, user):
    assets = server.get("/api/assets", params={"include_tags": "models"}, headers=user).json()["assets"]
    return next(a["id"] for a in assets if a["name"] == "tiny.safetensors")


def publish_url(path):
    return "/api/userdata/" + quote(path, safe="") + "/publish"


def test_publish_userdata_file(server, people):
    alice, bob = people
    save_userdata(server, alice, "workflows/flow.json", json.dumps(FLOW).encode())
    info = server.get(publish_url("workflows/flow.json"), headers=alice).json()
    assert info["publish_time"] is None and info["share_id"] == "" and info["assets"] == []
    photo, model = upload_asset(server, alice), model_asset(server, alice)

    r = server.post(publish_url("workflows/flow.json"), json={"asset_ids": [photo, model]}, headers=alice)
    assert r.status_code == 200, r.text
    info = r.json()
    share = info["share_id"]
    assert share and info["listed"] is False and info["publish_time"]
    assert {a["id"] for a in info["assets"]} == {photo, model}
    assert server.get(publish_url("workflows/flow.json"), headers=alice).json()["share_id"] == share

    # Anyone may read the share; what they have and miss is theirs.
    detail = server.get(f"/api/workflows/published/{share}", headers=bob).json()
    assert detail["workflow_json"] == FLOW and detail["name"] == "flow" and detail["workflow_id"] == info["workflow_id"]
    by_id = {a["id"]: a for a in detail["assets"]}
    assert by_id[photo]["in_library"] is False and by_id[photo]["model"] is False
    assert by_id[model]["in_library"] is True and by_id[model]["model"] is True and by_id[model]["public"] is True
    models = {m["name"]: m for m in detail["models"]}
    assert models["tiny.safetensors"]["in_library"] is True
    assert models["absent.safetensors"]["in_library"] is False and models["absent.safetensors"]["directory"] == "loras"
    assert detail["missing_models"] == ["absent.safetensors"] and detail["missing_assets"] == [photo]
    mine = server.get(f"/api/workflows/published/{share}", headers=alice).json()
    assert {a["id"]: a["in_library"] for a in mine["assets"]}[photo] is True

    # Importing the shared model into bob's library goes through the assets plugin.
    r = server.post("/api/assets/import", json={"published_asset_ids": [model], "share_id": share}, headers=bob)
    assert r.status_code == 200, r.text
    assert r.json()["assets"][0]["name"] == "tiny.safetensors"

    # The file's workflow stays private as a saved workflow.
    assert server.get(f"/api/workflows/{info['workflow_id']}", headers=bob).status_code == 404
    assert server.get(f"/api/workflows/{info['workflow_id']}", headers=alice).json()["source_file"] == \
        "workflows/flow.json"


def test_republish_adds_an_immutable_snapshot(server, people):
    alice, bob = people
    save_userdata(server, alice, "workflows/evolving.json", b'{"nodes": [], "links": [], "v": 1}')
    first = server.post(publish_url("workflows/evolving.json"), json={"asset_ids": []}, headers=alice).json()
    save_userdata(server, alice, "workflows/evolving.json", b'{"nodes": [], "links": [], "v": 2}')
    second = server.post(publish_url("workflows/evolving.json"), json={"asset_ids": []}, headers=alice).json()
    assert second["share_id"] == first["share_id"] and second["version_id"] != first["version_id"]
    assert server.get(f"/api/workflows/published/{first['share_id']}", headers=bob).json()["workflow_json"]["v"] == 2
    wid = first["workflow_id"]
    assert server.get(f"/api/workflows/{wid}", headers=alice).json()["latest_version"] == 2
    v1 = server.get(f"/api/workflows/{wid}/content", params={"version": 1}, headers=alice).json()
    assert v1["workflow_json"]["v"] == 1 and v1["id"] == first["version_id"]
    # Publishing an unchanged file adds a snapshot of the same version, no new version.
    third = server.post(publish_url("workflows/evolving.json"), json={"asset_ids": []}, headers=alice).json()
    assert third["version_id"] == second["version_id"]


def test_publish_saved_workflow_and_unpublish(server, people):
    alice, bob = people
    wf = server.post("/api/workflows", json={"name": "saved", "workflow_json": {"nodes": [], "links": []}},
                     headers=alice).json()
    server.post(f"/api/workflows/{wf['id']}/versions", json={"base_version": 1, "workflow_json": {"v": 2}},
                headers=alice)
    r = server.post(f"/api/workflows/{wf['id']}/publish", json={"asset_ids": [], "version": 1}, headers=alice)
    assert r.status_code == 200, r.text
    share = r.json()["share_id"]
    assert server.get(f"/api/workflows/published/{share}", headers=bob).json()["workflow_json"] == \
        {"nodes": [], "links": []}
    assert server.post(f"/api/workflows/{wf['id']}/publish", json={"asset_ids": []}, headers=bob).status_code == 404
    # Only the publisher unpublishes.
    assert server.request("DELETE", f"/api/hub/workflows/{share}", headers=bob).status_code == 403
    assert server.request("DELETE", f"/api/hub/workflows/{share}", headers=alice).status_code == 204
    assert server.get(f"/api/workflows/published/{share}", headers=bob).status_code == 404
    assert server.request("DELETE", f"/api/hub/workflows/{share}", headers=alice).status_code == 404
    # Publishing again brings the same share id back.
    again = server.post(f"/api/workflows/{wf['id']}/publish", json={"asset_ids": []}, headers=alice).json()
    assert again["share_id"] == share
    assert server.get(f"/api/workflows/published/{share}", headers=bob).json()["workflow_json"] == {"v": 2}
    assert server.request("DELETE", f"/api/workflows/published/{share}", headers=alice).status_code == 204


def test_publish_errors(server, people):
    alice, bob = people
    assert server.post(publish_url("workflows/none.json"), json={"asset_ids": []}, headers=alice).status_code == 404
    assert server.get(publish_url("workflows/none.json"), headers=alice).status_code == 404
    save_userdata(server, alice, "workflows/text.json", b"not json")
    assert server.post(publish_url("workflows/text.json"), json={"asset_ids": []}, headers=alice).status_code == 400
    save_userdata(server, alice, "workflows/ok.json", b'{"nodes": [], "links": []}')
    assert server.post(publish_url("workflows/ok.json"), json={}, headers=alice).status_code == 400
    r = server.post(publish_url("workflows/ok.json"), json={"asset_ids": ["nope"]}, headers=alice)
    assert r.status_code == 400 and r.json()["code"] == "INVALID_ASSETS"
    # Another user's private asset cannot be published by bob.
    photo = upload_asset(server, alice, b"secret", "secret.png")
    save_userdata(server, bob, "workflows/bob.json", b'{"nodes": [], "links": []}')
    assert server.post(publish_url("workflows/bob.json"), json={"asset_ids": [photo]}, headers=bob).status_code == 400
    # bob has no file of alice's name: userdata is per user.
    assert server.post(publish_url("workflows/ok.json"), json={"asset_ids": []}, headers=bob).status_code == 404
    # An unknown user is refused by the userdata plugin's rules.
    assert server.post(publish_url("workflows/ok.json"), json={"asset_ids": []},
                       headers={"Comfy-User": "stranger"}).status_code == 403
    assert server.get("/api/workflows/published/unknown", headers=bob).status_code == 404


def test_import_published_assets_into_own_library(server, people):
    alice, bob = people
    carol = make_user(server, "carol")
    save_userdata(server, alice, "workflows/with-assets.json", json.dumps(FLOW).encode())
    photo = upload_asset(server, alice, b"shared-photo", "shared.png")
    model = model_asset(server, alice)
    share = server.post(publish_url("workflows/with-assets.json"), json={"asset_ids": [photo, model]},
                        headers=alice).json()["share_id"]
    before = server.get(f"/api/workflows/published/{share}", headers=bob).json()
    assert {a["id"]: a["in_library"] for a in before["assets"]}[photo] is False

    r = server.post(f"/api/workflows/published/{share}/import", json={}, headers=bob)
    assert r.status_code == 200, r.text
    imported = {a["name"]: a for a in r.json()["assets"]}
    assert set(imported) == {"shared.png", "tiny.safetensors"}
    assert server.get(f"/api/assets/{imported['shared.png']['id']}/content", headers=bob).content == \
        b"\x89PNGshared-photo"
    after = server.get(f"/api/workflows/published/{share}", headers=bob).json()
    assert all(a["in_library"] for a in after["assets"]) and after["missing_assets"] == []
    # Importing again returns the same asset instead of a copy.
    again = server.post(f"/api/workflows/published/{share}/import", json={"published_asset_ids": [photo]},
                        headers=bob).json()["assets"]
    assert again[0]["id"] == imported["shared.png"]["id"]

    # The published copy outlives the publisher's own asset.
    assert server.request("DELETE", f"/api/assets/{photo}", params={"delete_content": "true"},
                          headers=alice).status_code == 204
    r = server.post(f"/api/workflows/published/{share}/import", json={"published_asset_ids": [photo, model]},
                    headers=carol)
    assert r.status_code == 200, r.text
    photo_copy, model_copy = r.json()["assets"]
    assert server.get(f"/api/assets/{photo_copy['id']}/content", headers=carol).content == b"\x89PNGshared-photo"
    assert model_copy["name"] == "tiny.safetensors" and model_copy["id"] != model  # carol's own reference
    assert server.post(f"/api/workflows/published/{share}/import", json={"published_asset_ids": ["x"]},
                       headers=carol).status_code == 400
    assert server.post("/api/workflows/published/nope/import", json={}, headers=carol).status_code == 404


def test_concurrent_first_publishes_share_one_workflow(server, people):
    import threading

    import httpx

    alice, _ = people
    save_userdata(server, alice, "workflows/race.json", b'{"nodes": [], "links": []}')
    barrier = threading.Barrier(4)
    answers: list[httpx.Response] = []

    def publish() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            barrier.wait()
            answers.append(client.post(publish_url("workflows/race.json"), json={"asset_ids": []}, headers=alice))

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
    assert len({r.json()["share_id"] for r in answers}) == 1
    assert len({r.json()["workflow_id"] for r in answers}) == 1
