"""End-to-end: POST /prompt → WebSocket events → /history, on a real server."""

from __future__ import annotations


def simple(value: int) -> dict:
    return {"1": {"class_type": "TestValue", "inputs": {"value": value}},
            "2": {"class_type": "TestOutput", "inputs": {"value": ["1", 0]}}}


def test_normal_run_messages_and_history(client, exec_server):
    res = client.run(simple(5))
    types = res.types()
    assert types[0] == "execution_start"
    assert types[1] == "execution_cached"
    assert res.ran == ["1", "2"]
    assert "execution_success" in types and types[-1] == "executing"
    executed = res.events("executed")
    assert executed == [{"node": "2", "display_node": "2", "output": {"text": ["5"]}, "prompt_id": res.prompt_id}]
    states = res.events("progress_state")
    assert states[-1]["nodes"]["2"]["state"] == "finished"
    hist = client.history(res.prompt_id)
    assert hist["outputs"] == {"2": {"text": ["5"]}}
    assert hist["status"]["status_str"] == "success" and hist["status"]["completed"] is True
    assert [m[0] for m in hist["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    assert hist["meta"]["2"] == {"node_id": "2", "display_node": "2", "parent_node": None, "real_node_id": "2"}
    assert hist["prompt"][1] == res.prompt_id and hist["prompt"][4] == ["2"]


def test_full_and_partial_cache(client):
    first = client.run(simple(6))
    assert first.ran == ["1", "2"]
    again = client.run(simple(6))
    assert again.ran == [] and sorted(again.cached) == ["1", "2"]
    assert again.events("executed")[0]["output"] == {"text": ["6"]}
    prompt = simple(6)
    prompt["3"] = {"class_type": "TestValue", "inputs": {"value": 1}}
    prompt["4"] = {"class_type": "TestAdd", "inputs": {"a": ["1", 0], "b": ["3", 0]}}
    prompt["5"] = {"class_type": "TestOutput", "inputs": {"value": ["4", 0]}}
    part = client.run(prompt)
    assert "1" not in part.ran and set(part.ran) == {"3", "4", "5"}


def test_error_reports_execution_error(client):
    prompt = {"1": {"class_type": "TestValue", "inputs": {"value": 1}},
              "2": {"class_type": "TestError", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "TestOutput", "inputs": {"value": ["2", 0]}}}
    res = client.run(prompt)
    err = res.error
    assert err["prompt_id"] == res.prompt_id and err["node_id"] == "2" and err["node_type"] == "TestError"
    assert err["exception_type"] == "ValueError" and err["exception_message"] == "test error 1\n"
    assert err["current_inputs"] == {"value": [1]}
    assert "execution_success" not in res.types()
    hist = client.history(res.prompt_id)
    assert hist["status"]["status_str"] == "error" and hist["status"]["messages"][-1][0] == "execution_error"


def test_get_prompt_and_queue(exec_server):
    assert exec_server.get("/prompt").json() == {"exec_info": {"queue_remaining": 0}}
    assert exec_server.get("/queue").json() == {"queue_running": [], "queue_pending": []}
