"""A ``*`` input takes any value as given: validation converts nothing for it.

``IO.ANY == "INT"`` used to be true (the wildcard was built into ``==``), so
validation ran ``int("value1")`` on a string given to a ``*`` input and refused
the prompt. Only ``!=`` is wildcard-aware, as in ComfyUI.
"""

from __future__ import annotations

import pytest

from comfy_kernel.nodes import io
from comfy_kernel.nodes.types import IO


def test_only_not_equal_is_wildcard_aware():
    assert not (IO.ANY != "INT") and not (IO.ANY != "STRING")  # the link check: * matches anything
    assert (IO.ANY == "INT") is False and (IO.ANY == "*") is True
    assert (io.AnyType.io_type == "INT") is False and not (io.AnyType.io_type != "INT")
    assert {IO.INT: 1}["INT"] == 1 and hash(IO.ANY) == hash("*")


@pytest.mark.parametrize("node", ["TestIOAny", "TestV3Output"])
@pytest.mark.parametrize("value,shown", [("value1", "'value1'"), (7, "7"), ("3.5", "'3.5'"), (True, "True")])
def test_plain_values_reach_a_wildcard_input_unchanged(client, node, value, shown):
    prompt = {"1": {"class_type": node, "inputs": {"value": value}}}
    r = client.queue(prompt)
    assert r.status_code == 200, r.text
    result = client.wait(r.json()["prompt_id"])
    text = result.events("executed")[0]["output"]["text"][0]
    assert text == (shown if node == "TestIOAny" else f"v3:{value}")
