"""End-to-end execution behaviours of spec §11, through a real server."""

from __future__ import annotations

import time

from .execution_helpers import OUT, Client, V


def text(client, res, node):
    return client.history(res.prompt_id)["outputs"][node]["text"]


def test_lazy_input_not_requested_never_runs(client):
    prompt = {"1": V(101), "2": V(102),
              "3": {"class_type": "TestLazyMix", "inputs": {"use_a": True, "a": ["1", 0], "b": ["2", 0]}},
              "4": OUT(["3", 0])}
    res = client.run(prompt)
    assert "2" not in res.ran and "1" in res.ran
    assert res.ran.count("3") == 2  # staged again after its lazy input ran
    assert text(client, res, "4") == ["101"]


def test_validation_errors_over_http(exec_server):
    r = exec_server.post("/prompt", json={"prompt": {"1": {"class_type": "TestFloat", "inputs": {"value": 5}}, "2": OUT(["1", 0])}})
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"]["1"]["errors"][0]["type"] == "value_bigger_than_max"
    r = exec_server.post("/prompt", json={"foo": 1})
    assert r.status_code == 400 and r.json()["error"]["type"] == "no_prompt"
    r = exec_server.post("/prompt", content=b"{nope")
    assert r.status_code == 400
    r = exec_server.post("/prompt", json={"prompt": {"1": V(1), "2": OUT(["1", 0])}, "partial_execution_targets": []})
    assert r.status_code == 400 and r.json()["error"]["type"] == "prompt_no_outputs"


def test_missing_node_output_dropped_others_run(client):
    prompt = {"1": V(7), "2": OUT(["1", 0]), "3": OUT(["removeme", 0])}
    r = client.queue(prompt)
    assert r.status_code == 200
    body = r.json()
    assert "3" in body["node_errors"]
    res = client.wait(body["prompt_id"])
    assert res.ran == ["1", "2"]


def test_is_changed_false_caches_nan_reruns(client):
    def prompt(change):
        return {"1": {"class_type": "TestIsChanged", "inputs": {"value": 3, "change": change}}, "2": OUT(["1", 0])}
    client.run(prompt("same"))
    assert "1" not in client.run(prompt("same")).ran
    client.run(prompt("nan"))
    assert "1" in client.run(prompt("nan")).ran


def test_undeclared_inputs_passed(client):
    prompt = {"1": V(2), "2": V(3), "3": {"class_type": "TestVariadic", "inputs": {"x": ["1", 0], "y": ["2", 0], "z": 100}},
              "4": OUT(["3", 0])}
    res = client.run(prompt)
    assert text(client, res, "4") == ["5"]  # constants that are not declared are dropped


def test_expansion_and_for_loop(client):
    prompt = {"1": V(10), "2": {"class_type": "TestExpandAdd", "inputs": {"value": ["1", 0], "times": 3}},
              "3": OUT(["2", 0])}
    res = client.run(prompt)
    assert text(client, res, "3") == ["13"]
    ephemeral = [d for d in res.events("executing") if (d["node"] or "").startswith("2.")]
    assert ephemeral and all(d["display_node"] == "2" for d in ephemeral)
    for n in (1, 2, 4):
        loop = {"1": {"class_type": "TestForLoop", "inputs": {"total": 0, "remaining": n}}, "2": OUT(["1", 0])}
        assert text(client, client.run(loop), "2") == [str(n)]


def test_dynamic_cycle_blames_expanding_node(client):
    prompt = {"1": V(1), "2": {"class_type": "TestExpandCycle", "inputs": {"value": ["1", 0]}}, "3": OUT(["2", 0])}
    res = client.run(prompt)
    err = res.error
    assert err["node_id"] == "2" and err["exception_message"] == "Dependency cycle detected"
    assert client.history(res.prompt_id)["status"]["status_str"] == "error"  # Q14 fixed


def test_list_mapping_mixed_returns_and_blockers(client):
    prompt = {"1": {"class_type": "TestList", "inputs": {"value": 0, "count": 4}},
              "2": {"class_type": "TestMixedReturns", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "TestListOutput", "inputs": {"value": ["2", 0]}}}
    res = client.run(prompt)
    assert client.history(res.prompt_id)["outputs"]["3"]["values"] == [0, 10, 20, 30]
    prompt = {"1": {"class_type": "TestList", "inputs": {"value": 0, "count": 3}},
              "2": {"class_type": "TestBlockOdd", "inputs": {"value": ["1", 0], "message": ""}},
              "3": {"class_type": "TestAdd", "inputs": {"a": ["2", 0], "b": 1}},
              "4": OUT(["3", 0])}
    res = client.run(prompt)
    assert text(client, res, "4") == ["1", "3"]  # the blocked item produces no UI
    assert "execution_success" in res.types()
    prompt["2"]["inputs"]["message"] = "odd!"
    res = client.run(prompt)
    blocked = [e for e in res.events("execution_error") if e["exception_type"] == "ExecutionBlocked"]
    assert len(blocked) == 1 and blocked[0]["exception_message"] == "Execution Blocked: odd!"
    assert "execution_success" in res.types()


def test_async_nodes_overlap(client):
    prompt = {}
    for i in range(3):
        prompt[f"s{i}"] = {"class_type": "TestSleep", "inputs": {"value": i, "seconds": 0.5}}
        prompt[f"o{i}"] = OUT([f"s{i}", 0])
    t = time.monotonic()
    res = client.run(prompt)
    assert time.monotonic() - t < 1.3
    assert res.error is None and len(res.events("executed")) == 3


def test_partial_execution_targets(client):
    prompt = {"1": V(1), "2": OUT(["1", 0]), "3": V(2), "4": OUT(["3", 0])}
    res = client.run(prompt, partial_execution_targets=["4"])
    assert res.ran == ["3", "4"]


def test_v3_nodes(client, exec_server):
    prompt = {"1": V(4), "2": {"class_type": "TestV3Add", "inputs": {"a": ["1", 0], "b": 5}},
              "3": {"class_type": "TestV3Output", "inputs": {"value": ["2", 0]}}}
    res = client.run(prompt)
    assert res.error is None, res.error
    assert client.history(res.prompt_id)["outputs"]["3"] == {"text": ["v3:9"]}
    info = exec_server.get("/object_info/TestV3Add").json()["TestV3Add"]
    assert info["input"]["required"]["b"] == ["INT", {"default": 1, "min": 0, "max": 100}]
    assert info["display_name"] == "V3 add" and info["output"] == ["INT"]


def test_progress_messages(client):
    prompt = {"1": {"class_type": "TestProgress", "inputs": {"value": 1, "steps": 3, "delay": 0.0}}, "2": OUT(["1", 0])}
    res = client.run(prompt)
    progress = res.events("progress")
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(1, 3, "1"), (2, 3, "1"), (3, 3, "1")]


def test_progress_isolation_between_clients(exec_server):
    a, b = Client(exec_server), Client(exec_server)
    try:
        prompt = {"1": {"class_type": "TestProgress", "inputs": {"value": 77, "steps": 2, "delay": 0.0}}, "2": OUT(["1", 0])}
        ra = a.queue(prompt).json()["prompt_id"]
        prompt2 = {"1": {"class_type": "TestProgress", "inputs": {"value": 78, "steps": 2, "delay": 0.0}}, "2": OUT(["1", 0])}
        rb = b.queue(prompt2).json()["prompt_id"]
        res_a, res_b = a.wait(ra), b.wait(rb)
        assert res_a.events("progress_state") and res_b.events("progress_state")
        assert all(s["prompt_id"] == ra for s in res_a.events("progress_state"))
    finally:
        a.close()
        b.close()


def test_interrupt(client, exec_server):
    prompt = {"1": {"class_type": "TestProgress", "inputs": {"value": 1, "steps": 50, "delay": 0.05}}, "2": OUT(["1", 0])}
    pid = client.queue(prompt).json()["prompt_id"]
    time.sleep(0.4)
    exec_server.post("/interrupt", json={"prompt_id": pid})
    res = client.wait(pid)
    inter = res.events("execution_interrupted")
    assert inter and inter[0]["node_id"] == "1"
    hist = client.history(pid)
    assert hist["status"]["status_str"] == "error" and hist["status"]["messages"][-1][0] == "execution_interrupted"


def test_queue_front_delete_and_history_windows(client, exec_server):
    exec_server.post("/history", json={"clear": True})
    slow = {"1": {"class_type": "TestSyncSleep", "inputs": {"value": 1, "seconds": 0.6}}, "2": OUT(["1", 0])}
    first = client.queue(slow).json()["prompt_id"]
    ids = [client.queue({"1": V(500 + i), "2": OUT(["1", 0])}).json()["prompt_id"] for i in range(3)]
    front = client.queue({"1": V(600), "2": OUT(["1", 0])}, front=True).json()
    assert front["number"] < 0
    q = exec_server.get("/queue").json()
    assert len(q["queue_running"]) == 1 and len(q["queue_pending"]) == 4
    exec_server.post("/queue", json={"delete": [ids[2]]})
    assert len(exec_server.get("/queue").json()["queue_pending"]) == 3
    r = exec_server.get(f"/history/{ids[0]}")
    assert r.json() == {} and r.headers["x-prompt-status"] == "pending"
    assert exec_server.get("/history/unknown-id").headers["x-prompt-status"] == "unknown"
    for pid in [first, front["prompt_id"], ids[0], ids[1]]:
        client.wait(pid)
    order = list(exec_server.get("/history").json())
    assert order == [first, front["prompt_id"], ids[0], ids[1]]
    assert list(exec_server.get("/history?max_items=2").json()) == order[2:]
    assert list(exec_server.get("/history?max_items=2&offset=1").json()) == order[1:3]
    assert list(exec_server.get("/history?offset=3").json()) == order[3:]
    assert exec_server.get("/history?offset=10&max_items=2").json() == {}
    assert list(exec_server.get("/history?offset=0").json()) == order
    jobs = exec_server.get("/api/jobs?status=completed&sort_order=asc").json()
    assert [j["id"] for j in jobs["jobs"]] == [first, ids[0], ids[1], front["prompt_id"]]  # by create_time
    assert jobs["pagination"]["total"] == 4
    detail = exec_server.get(f"/api/jobs/{first}").json()
    assert detail["status"] == "completed" and detail["outputs"]["2"] == {"text": ["1"]}
    assert exec_server.get("/api/jobs/nope").status_code == 404
    assert exec_server.post(f"/api/jobs/{first}/cancel").json() == {"cancelled": False}
    v2 = exec_server.get("/api/history_v2?max_items=1").json()
    assert v2["history"][0]["prompt_id"] == ids[1]


def test_sensitive_extra_data_stripped(client, exec_server):
    r = client.queue({"1": V(900), "2": OUT(["1", 0])}, extra_data={"auth_token_comfy_org": "secret", "keep": 1})
    pid = r.json()["prompt_id"]
    client.wait(pid)
    hist = client.history(pid)
    assert "auth_token_comfy_org" not in hist["prompt"][3] and hist["prompt"][3]["keep"] == 1
