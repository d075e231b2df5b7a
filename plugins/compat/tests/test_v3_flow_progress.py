"""V3 packs, flow control (lazy, ExecutionBlocker, expansion) and progress/interrupts on a real server."""

from __future__ import annotations

import json

import pytest
from compat_helpers import Client, events, start


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start(tmp_path_factory.mktemp("flow"), "v3_pack", "flow_pack", "progress_pack")
    yield srv
    srv.stop()
    srv.client.close()


def test_v3_object_info(server):
    info = server.get("/object_info/V3Repeat").json()["V3Repeat"]
    assert info["display_name"] == "V3 Repeat"
    assert info["python_module"] == "custom_nodes.v3_pack"
    assert info["category"] == "v3_pack"
    assert info["output"] == ["STRING"] and info["output_name"] == ["repeated"]
    assert info["input"]["required"]["times"] == ["INT", {"default": 2, "min": 1, "max": 10}]
    assert info["input"]["required"]["sep"][0] == "COMBO"
    assert info["input"]["required"]["sep"][1]["options"] == ["-", "+"]
    length = server.get("/object_info/V3Length").json()["V3Length"]
    assert length["output_node"] is True


def test_v3_nodes_run(server):
    prompt = {"1": {"class_type": "V3Repeat", "inputs": {"text": "ab", "times": 3, "sep": "+"}},
              "2": {"class_type": "V3Length", "inputs": {"text": ["1", 0]}}}
    with Client(server) as client:
        prompt_id, messages = client.run(prompt)
    executed = {e["node"]: e["output"] for e in events(messages, "executed")}
    assert executed["1"] == {"text": ["1:ab+ab+ab"]}
    assert executed["2"] == {"length": [8]}
    states = events(messages, "progress_state")
    assert any(s["nodes"].get("1", {}).get("max") == 2 and s["nodes"]["1"]["value"] == 1 for s in states)
    assert "execution_success" in [t for t, _ in messages]


def test_v3_ui_preview_and_save_helpers(server):
    import io as _io

    from PIL import Image

    with Client(server) as client:
        _, messages = client.run({"1": {"class_type": "V3Preview", "inputs": {"size": 3}}})
    out = events(messages, "executed")[0]["output"]
    assert out["animated"] == [False]
    assert [i["type"] for i in out["images"]] == ["temp", "temp"]
    assert out["saved"] == [{"filename": "blue_00001_.png", "subfolder": "v3", "type": "output"}]
    for ref in out["images"] + out["saved"]:
        r = server.get("/view", params=ref)
        assert r.status_code == 200
        png = Image.open(_io.BytesIO(r.content))
        assert png.size == (3, 3) and png.getpixel((0, 0)) == (0, 0, 255)
    saved = Image.open(_io.BytesIO(server.get("/view", params=out["saved"][0]).content))
    assert "V3Preview" in saved.info["prompt"]  # the prompt is embedded as metadata


def test_lazy_inputs_evaluate_only_the_needed_branch(server):
    prompt = {"1": {"class_type": "FlowText", "inputs": {"text": "left"}},
              "2": {"class_type": "FlowText", "inputs": {"text": "right"}},
              "3": {"class_type": "FlowSwitch", "inputs": {"choose_a": False, "a": ["1", 0], "b": ["2", 0]}},
              "4": {"class_type": "FlowShow", "inputs": {"value": ["3", 0]}}}
    with Client(server) as client:
        _, messages = client.run(prompt)
    ran = [d["node"] for d in events(messages, "executing") if d.get("node") is not None]
    assert "1" not in ran and "2" in ran
    assert events(messages, "executed")[0]["output"] == {"text": ["right"]}


def test_execution_blocker_stops_consumers_silently(server):
    prompt = {"1": {"class_type": "FlowText", "inputs": {"text": "secret"}},
              "2": {"class_type": "FlowGate", "inputs": {"value": ["1", 0], "open": False}},
              "3": {"class_type": "FlowShow", "inputs": {"value": ["2", 0]}}}
    with Client(server) as client:
        _, messages = client.run(prompt)
    assert events(messages, "executed") == []
    assert events(messages, "execution_error") == []
    assert "execution_success" in [t for t, _ in messages]


def test_graph_builder_expansion(server):
    prompt = {"1": {"class_type": "FlowText", "inputs": {"text": "v"}},
              "2": {"class_type": "FlowRepeat", "inputs": {"value": ["1", 0], "times": 3}},
              "3": {"class_type": "FlowShow", "inputs": {"value": ["2", 0]}}}
    with Client(server) as client:
        prompt_id, messages = client.run(prompt)
    assert events(messages, "executed")[-1]["output"] == {"text": ["v012"]}
    ran = [d for d in events(messages, "executing") if d.get("node") is not None]
    expanded = [d for d in ran if d["node"].startswith("2.")]
    # Ephemeral nodes report the expanding node as their display node.
    assert len(expanded) == 3 and all(d["display_node"] == "2" for d in expanded)


def test_dynprompt_hidden_input_is_the_executors_dynamic_prompt(server):
    with Client(server) as client:
        _, messages = client.run({"5": {"class_type": "FlowInspect", "inputs": {}}})
    assert events(messages, "executed")[0]["output"] == {"class_type": ["FlowInspect"], "is_dynprompt": [True],
                                                        "parent": [None]}


def test_progress_bar_messages(server):
    prompt = {"1": {"class_type": "SlowCounter", "inputs": {"steps": 3, "delay": 0.0}}}
    with Client(server) as client:
        prompt_id, messages = client.run(prompt)
    progress = events(messages, "progress")
    assert progress == [{"value": k, "max": 3, "prompt_id": prompt_id, "node": "1"} for k in (1, 2, 3)]
    kinds = [t for t, _ in messages]
    first = kinds.index("progress")
    assert kinds[first - 1] == "progress_state"
    out = events(messages, "executed")[0]["output"]
    assert out["count"] == [3]
    # The worker's device, as the GPU scheduler lists it.
    assert out["device"][0] in {d["type"] for d in server.get("/system_stats").json()["devices"]}


def test_interrupt_stops_the_node_at_a_checkpoint(server):
    prompt = {"1": {"class_type": "SlowCounter", "inputs": {"steps": 400, "delay": 0.02}}}
    with Client(server) as client:
        r = client.queue(prompt)
        prompt_id = r.json()["prompt_id"]
        while True:
            msg = json.loads(client.ws.recv(timeout=30))
            if msg["type"] == "progress":
                break
        assert server.post("/interrupt", json={}).status_code == 200
        messages = client.wait(prompt_id)
    interrupted = events(messages, "execution_interrupted")
    assert interrupted and interrupted[0]["node_id"] == "1"
    assert events(messages, "executed") == []
    assert all(p["value"] < 400 for p in events(messages, "progress"))
