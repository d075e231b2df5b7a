"""The cache modes: LRU keeps results across prompts; --cache-none re-runs everything and
still supports node expansion (Quirk Q15 fixed)."""

from __future__ import annotations

import pytest

from .execution_helpers import Client, start_server


def loop(n: int) -> dict:
    return {"1": {"class_type": "TestForLoop", "inputs": {"total": 0, "remaining": n}},
            "2": {"class_type": "TestOutput", "inputs": {"value": ["1", 0]}}}


def simple(v: int) -> dict:
    return {"1": {"class_type": "TestValue", "inputs": {"value": v}},
            "2": {"class_type": "TestOutput", "inputs": {"value": ["1", 0]}}}


@pytest.mark.parametrize("flags", [("--cache-none",), ("--cache-lru", "100"), ("--cache-ram", "0.001")])
def test_cache_modes(tmp_path, flags):
    srv = start_server(tmp_path / "base", *flags)
    client = Client(srv)
    try:
        res = client.run(loop(3))
        assert res.error is None and client.history(res.prompt_id)["outputs"]["2"] == {"text": ["3"]}
        client.run(simple(1))
        client.run(simple(2))
        again = client.run(simple(1))
        if flags[0] == "--cache-none":
            assert again.ran == ["1", "2"]
        else:  # LRU-style caches keep the earlier prompt's results
            assert again.ran == []
    finally:
        client.close()
        srv.stop()
        srv.client.close()


def tracked_chain() -> dict:
    """1 makes an object, 2 reads it (its only consumer), 3 runs after 2 and checks 1's object."""
    return {"1": {"class_type": "TestTracked", "inputs": {"value": 5, "tag": "chain"}},
            "2": {"class_type": "TestUnwrap", "inputs": {"tracked": ["1", 0]}},
            "3": {"class_type": "TestAlive", "inputs": {"after": ["2", 0], "tag": "chain"}},
            "4": {"class_type": "TestOutput", "inputs": {"value": ["3", 0]}}}


@pytest.mark.parametrize("flags", [("--cache-none",), ()])
def test_cache_none_drops_outputs_once_consumed(tmp_path, flags):
    """--cache-none frees an output as soon as its last consumer ran, within the prompt;
    the classic cache keeps it (it may serve the next prompt)."""
    srv = start_server(tmp_path / "base", *flags)
    client = Client(srv)
    try:
        res = client.run(tracked_chain())
        assert res.error is None
        expected = "released" if flags else "alive"
        assert client.history(res.prompt_id)["outputs"]["4"] == {"text": [repr(expected)]}
        res = client.run(loop(4))  # expansions still resolve their results
        assert res.error is None and client.history(res.prompt_id)["outputs"]["2"] == {"text": ["4"]}
    finally:
        client.close()
        srv.stop()
        srv.client.close()
