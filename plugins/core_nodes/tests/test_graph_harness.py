"""The graph harness itself: a probe records tensors, latents and plain values through a real server."""

from __future__ import annotations

import numpy as np
import pytest


def test_probe_reads_back_tensors_latents_and_values(graph_server):
    out = graph_server.run({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 4, "batch_size": 2, "color": 0xFF0000}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "TestProbe", "inputs": {"value": ["2", 0], "name": "inverted"}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 32, "batch_size": 1}},
        "5": {"class_type": "TestProbe", "inputs": {"value": ["4", 0], "name": "latent"}},
        "6": {"class_type": "PrimitiveInt", "inputs": {"value": 7}},
        "7": {"class_type": "TestProbe", "inputs": {"value": ["6", 0], "name": "int"}},
    })
    assert out["inverted"].shape == (2, 4, 8, 3)
    assert np.allclose(out["inverted"][..., 0], 0.0) and np.allclose(out["inverted"][..., 1:], 1.0)
    assert out["latent"]["samples"].shape == (1, 4, 4, 8)
    assert out["int"] == 7


def test_an_invalid_prompt_is_reported(graph_server):
    with pytest.raises(AssertionError, match="400"):
        graph_server.run({"1": {"class_type": "NoSuchNode", "inputs": {}}})
