"""More end-to-end behaviours of spec §11 (lazy lists, async failures, async expansions, OOM),
through a real server."""

from __future__ import annotations

import time

import pytest

from .execution_helpers import OUT, V


def outputs(client, res):
    return client.history(res.prompt_id)["outputs"]


def test_mixed_lazy_results(client):
    """A lazy node mapped over a list asks for a different input per item; an
    INPUT_IS_LIST node then gets the items back in order."""
    prompt = {"1": V(11), "2": V(22),
              "3": {"class_type": "TestBoolList", "inputs": {"pattern": "TFFT"}},
              "4": {"class_type": "TestLazyMix", "inputs": {"use_a": ["3", 0], "a": ["1", 0], "b": ["2", 0]}},
              "5": {"class_type": "TestListOutput", "inputs": {"value": ["4", 0]}}}
    res = client.run(prompt)
    assert res.error is None
    assert outputs(client, res)["5"] == {"values": [11, 22, 22, 11]}
    # only the inputs some item asked for ran
    only_a = dict(prompt, **{"3": {"class_type": "TestBoolList", "inputs": {"pattern": "TT"}}, "1": V(12)})
    res = client.run(only_a)
    assert res.error is None and "2" not in res.ran
    assert outputs(client, res)["5"] == {"values": [12, 12]}


def test_async_error_then_recovery(client):
    res = client.run({"1": {"class_type": "TestAsyncError", "inputs": {"value": 7, "seconds": 0.05}},
                      "2": OUT(["1", 0])})
    assert res.error is not None and res.error["node_id"] == "1"
    assert "async test error 7" in res.error["exception_message"]
    res = client.run({"1": {"class_type": "TestSleep", "inputs": {"value": 8, "seconds": 0.05}},
                      "2": OUT(["1", 0])})
    assert res.error is None and "execution_success" in res.types()
    assert outputs(client, res)["2"] == {"text": ["8"]}


def test_async_nodes_from_expansion_run_in_parallel(client):
    prompt = {"1": {"class_type": "TestExpandSleep", "inputs": {"count": 3, "seconds": 0.6}},
              "2": OUT(["1", 0])}
    t = time.monotonic()
    res = client.run(prompt)
    elapsed = time.monotonic() - t
    assert res.error is None
    assert outputs(client, res)["2"] == {"text": ["6"]}  # 1 + 2 + 3
    assert elapsed < 1.5  # three 0.6 s sleeps overlapped (1.8 s if serial)


def test_sync_error_while_async_node_runs(client):
    prompt = {"1": {"class_type": "TestSleep", "inputs": {"value": 1, "seconds": 0.5}},
              "2": OUT(["1", 0]),
              "3": {"class_type": "TestError", "inputs": {"value": 3}},
              "4": OUT(["3", 0])}
    res = client.run(prompt)
    assert res.error is not None and res.error["node_id"] == "3"
    assert "test error 3" in res.error["exception_message"]
    assert "execution_success" not in res.types()
    status = client.history(res.prompt_id)["status"]
    assert status["status_str"] == "error"
    # the server is still usable afterwards
    res = client.run({"1": V(5), "2": OUT(["1", 0])})
    assert res.error is None


@pytest.mark.parametrize("kind", ["torch", "kernel"])
def test_out_of_memory_tips_and_unload(client, kind):
    """torch's CUDA OOM and the model manager's OutOfMemory both get the tips text and
    unload every unpinned model (spec §5.12)."""
    pytest.importorskip("torch")
    res = client.run({"1": {"class_type": "TestOOM", "inputs": {"value": 1, "kind": kind}}, "2": OUT(["1", 0])})
    err = res.error
    assert err is not None and err["node_id"] == "1"
    assert "This error means you ran out of memory on your GPU." in err["exception_message"]
    assert "TIPS:" in err["exception_message"]
    if kind == "torch":
        assert err["exception_type"].endswith("OutOfMemoryError")
    res = client.run({"1": {"class_type": "TestOOMModelLoaded", "inputs": {"value": 1}}, "2": OUT(["1", 0])})
    assert res.error is None
    assert outputs(client, res)["2"] == {"text": ["'unloaded'"]}
