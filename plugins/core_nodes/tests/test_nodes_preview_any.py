"""PreviewAny through the server: it shows a value as text and passes that text on, as current templates link it."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(300)


def test_the_shown_text_reaches_the_next_node(graph_server):
    out = graph_server.run({
        "n": {"class_type": "PrimitiveInt", "inputs": {"value": 42}},
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["n", 0]}},
        "probe": {"class_type": "TestProbe", "inputs": {"value": ["show", 0], "name": "text"}},
    })
    assert out["text"] == "42"
