"""Saved workflows over HTTP: CRUD, paging/search/sort, versions, 409 concurrency, forks, owners."""

from __future__ import annotations

import threading

from hub_helpers import headers

ALICE, BOB = headers("alice"), headers("bob")
UI_WORKFLOW = {"last_node_id": 1, "last_link_id": 0, "nodes": [{"id": 1, "type": "Note", "widgets_values": ["hi"]}],
               "links": [], "version": 0.4}


def create(server, name="flow", user=ALICE, **extra):
    r = server.post("/api/workflows", json={"name": name, "workflow_json": UI_WORKFLOW, **extra}, headers=user)
    assert r.status_code == 201, r.text
    return r.json()


def test_create_get_update_delete(server):
    wf = create(server, "first", description="d", default_view="app")
    assert wf["latest_version"] == 1 and wf["name"] == "first" and wf["default_view"] == "app"
    assert wf["created_by"] == "alice" and wf["created_at"].endswith("Z")
    got = server.get(f"/api/workflows/{wf['id']}", headers=ALICE).json()
    assert got == wf
    r = server.request("PATCH", f"/api/workflows/{wf['id']}", json={"name": "renamed", "description": "new"},
                       headers=ALICE)
    assert r.status_code == 200 and r.json()["name"] == "renamed" and r.json()["description"] == "new"
    assert server.request("PATCH", f"/api/workflows/{wf['id']}", json={"default_view": "x"},
                          headers=ALICE).status_code == 422
    assert server.request("PATCH", f"/api/workflows/{wf['id']}", json={}, headers=ALICE).status_code == 422
    assert server.request("DELETE", f"/api/workflows/{wf['id']}", headers=ALICE).status_code == 204
    assert server.get(f"/api/workflows/{wf['id']}", headers=ALICE).status_code == 404
    assert server.request("DELETE", f"/api/workflows/{wf['id']}", headers=ALICE).status_code == 404


def test_create_validation(server):
    assert server.post("/api/workflows", json={"name": "x"}, headers=ALICE).status_code == 422
    assert server.post("/api/workflows", json={"workflow_json": [1]}, headers=ALICE).status_code == 422
    r = server.post("/api/workflows", content=b"{nope", headers=ALICE)
    assert r.status_code == 400 and r.json()["code"] == "INVALID_JSON"
    api_format = {"1": {"class_type": "Note", "inputs": {}}}
    r = server.post("/api/workflows", json={"workflow_json": api_format}, headers=ALICE)
    assert r.status_code == 201 and r.json()["name"]


def test_list_paging_search_sort(server):
    user = headers("lister")
    for name in ("Cats b", "dogs", "cats a", "Birds"):
        create(server, name, user=user)
    r = server.get("/api/workflows", params={"limit": 2}, headers=user).json()
    assert [w["name"] for w in r["data"]] == ["Birds", "cats a"]  # newest first by default
    assert r["pagination"] == {"offset": 0, "limit": 2, "total": 4, "has_more": True}
    r = server.get("/api/workflows", params={"limit": 2, "offset": 2}, headers=user).json()
    assert [w["name"] for w in r["data"]] == ["dogs", "Cats b"] and r["pagination"]["has_more"] is False
    r = server.get("/api/workflows", params={"name": "CATS", "sort": "name", "order": "asc"}, headers=user).json()
    assert [w["name"] for w in r["data"]] == ["cats a", "Cats b"]
    assert server.get("/api/workflows", params={"sort": "size"}, headers=user).status_code == 400
    assert server.get("/api/workflows", params={"limit": 101}, headers=user).status_code == 400
    assert server.get("/api/workflows", headers=headers("nobody")).json()["pagination"]["total"] == 0


def test_versions_and_content(server):
    wf = create(server)
    r = server.post(f"/api/workflows/{wf['id']}/versions", json={"base_version": 1, "workflow_json": {"v": 2}},
                    headers=ALICE)
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 2 and r.json()["latest_version"] == 2
    latest = server.get(f"/api/workflows/{wf['id']}/content", headers=ALICE).json()
    assert latest["version"] == 2 and latest["workflow_json"] == {"v": 2}
    first = server.get(f"/api/workflows/{wf['id']}/content", params={"version": 1}, headers=ALICE).json()
    assert first["version"] == 1 and first["workflow_json"] == UI_WORKFLOW
    assert server.get(f"/api/workflows/{wf['id']}/content", params={"version": 9}, headers=ALICE).status_code == 404
    assert server.get(f"/api/workflows/{wf['id']}", headers=ALICE).json()["latest_version"] == 2
    bad = server.post(f"/api/workflows/{wf['id']}/versions", json={"workflow_json": {}}, headers=ALICE)
    assert bad.status_code == 422


def test_stale_base_version_is_409_and_nothing_is_overwritten(server):
    wf = create(server)
    url = f"/api/workflows/{wf['id']}/versions"
    assert server.post(url, json={"base_version": 1, "workflow_json": {"by": "a"}}, headers=ALICE).status_code == 201
    r = server.post(url, json={"base_version": 1, "workflow_json": {"by": "b"}}, headers=ALICE)
    assert r.status_code == 409
    body = r.json()
    assert body["code"] == "VERSION_CONFLICT" and body["current_version"] == 2 and "version 2" in body["message"]
    content = server.get(f"/api/workflows/{wf['id']}/content", headers=ALICE).json()
    assert content["version"] == 2 and content["workflow_json"] == {"by": "a"}


def test_two_concurrent_writers_one_wins(server):
    """Many rounds of two writers racing on the same base: exactly one 201 and one 409 each time."""
    wf = create(server)
    url = f"{server.url}/api/workflows/{wf['id']}/versions"
    import httpx

    for base in range(1, 11):
        barrier = threading.Barrier(2)
        results: list[int] = []

        def write(tag: str, base: int = base, barrier: threading.Barrier = barrier,
                  results: list[int] = results) -> None:
            with httpx.Client() as client:
                barrier.wait()
                r = client.post(url, json={"base_version": base, "workflow_json": {"by": tag}}, headers=ALICE)
                results.append(r.status_code)

        threads = [threading.Thread(target=write, args=(t,)) for t in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [201, 409], results
    assert server.get(f"/api/workflows/{wf['id']}", headers=ALICE).json()["latest_version"] == 11


def test_fork_keeps_source_link(server):
    wf = create(server, "source")
    server.post(f"/api/workflows/{wf['id']}/versions", json={"base_version": 1, "workflow_json": {"v": 2}},
                headers=ALICE)
    r = server.post(f"/api/workflows/{wf['id']}/fork", json={"source_version": 1, "name": "mine"}, headers=ALICE)
    assert r.status_code == 201, r.text
    fork = r.json()
    v1 = server.get(f"/api/workflows/{wf['id']}/content", params={"version": 1}, headers=ALICE).json()
    assert fork["name"] == "mine" and fork["latest_version"] == 1
    assert fork["forked_from"] == {"workflow_id": wf["id"], "workflow_version_id": v1["id"]}
    assert server.get(f"/api/workflows/{fork['id']}/content", headers=ALICE).json()["workflow_json"] == UI_WORKFLOW
    assert server.post(f"/api/workflows/{wf['id']}/fork", json={"source_version": 5},
                       headers=ALICE).status_code == 404
    assert server.post(f"/api/workflows/{wf['id']}/fork", json={}, headers=ALICE).status_code == 422
    # A fork created from a published copy names its source through the create body.
    r = server.post("/api/workflows", json={"workflow_json": {}, "forked_from_workflow_id": wf["id"],
                                            "forked_from_workflow_version_id": v1["id"]}, headers=BOB)
    assert r.json()["forked_from"]["workflow_id"] == wf["id"]


def test_other_users_cannot_see_or_touch(server):
    wf = create(server, "private")
    wid = wf["id"]
    assert server.get(f"/api/workflows/{wid}", headers=BOB).status_code == 404
    assert server.get(f"/api/workflows/{wid}/content", headers=BOB).status_code == 404
    assert server.request("PATCH", f"/api/workflows/{wid}", json={"name": "x"}, headers=BOB).status_code == 404
    assert server.post(f"/api/workflows/{wid}/versions", json={"base_version": 1, "workflow_json": {}},
                       headers=BOB).status_code == 404
    assert server.post(f"/api/workflows/{wid}/fork", json={"source_version": 1}, headers=BOB).status_code == 404
    assert server.request("DELETE", f"/api/workflows/{wid}", headers=BOB).status_code == 404
    assert all(w["id"] != wid for w in server.get("/api/workflows", headers=BOB).json()["data"])
    assert server.get(f"/api/workflows/{wid}", headers=ALICE).status_code == 200


def test_workflow_nested_too_deeply_is_refused_at_the_door(server):
    deep = '{"k":' * 300 + "1" + "}" * 300
    r = server.post("/api/workflows", content='{"name": "deep", "workflow_json": ' + deep + "}", headers=ALICE)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "JSON_TOO_DEEP" and "128 levels" in r.json()["message"]
    assert server.get("/api/workflows", params={"name": "deep"}, headers=ALICE).json()["pagination"]["total"] == 0
    assert "unhandled error" not in server.log()
