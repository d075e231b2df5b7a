"""IMAGE/MASK nodes against ComfyUI 0.3.64's outputs for fixed inputs, called directly and through the server.

``data/image_nodes/cases.json`` lists each case (node and inputs; ``"@name"``
names a tensor of ``inputs.npz``, ``"@latent:name"`` a LATENT made of it).
``outputs.npz`` holds what ComfyUI 0.3.64 returned for them (see the README
there). Every output must be bit-identical.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from comfy_kernel.nodes.io import ComfyNode, normalize_output
from comfy_kernel_core_nodes.nodes import NODES

DATA = Path(__file__).parent / "data" / "image_nodes"
CASES = json.loads((DATA / "cases.json").read_text())
CLASSES = {node.name: node.cls for node in NODES}


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    with np.load(DATA / "inputs.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(DATA / "outputs.npz") as data:
        return {k: data[k] for k in data.files}


def _resolve(value: Any, inputs: dict[str, np.ndarray]) -> Any:
    if isinstance(value, list):
        return [_resolve(v, inputs) for v in value]
    if isinstance(value, str) and value.startswith("@latent:"):
        return {"samples": torch.from_numpy(inputs[value[8:]].copy())}
    if isinstance(value, str) and value.startswith("@"):
        return torch.from_numpy(inputs[value[1:]].copy())
    return value


def _call(node: str, kwargs: dict[str, Any]) -> tuple[Any, ...]:
    cls = CLASSES[node]
    if issubclass(cls, ComfyNode):
        return normalize_output(cls.execute(**kwargs)).args
    return getattr(cls(), cls.FUNCTION)(**kwargs)


def _flatten(case: str, outputs: tuple[Any, ...]) -> dict[str, np.ndarray]:
    flat = {}
    for i, out in enumerate(outputs):
        if isinstance(out, dict):
            out = out["samples"]
        if isinstance(out, list):
            flat.update({f"{case}.{i}.{j}": item.numpy() for j, item in enumerate(out)})
        else:
            flat[f"{case}.{i}"] = out.numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    return flat


def assert_equal(key: str, got: np.ndarray, wanted: np.ndarray) -> None:
    """Equal, but for one float32 rounding step: torch's vectorised and scalar loops (chosen by a
    tensor's alignment and length) may round sqrt and pow differently in the last bit."""
    if np.issubdtype(wanted.dtype, np.floating):
        assert np.allclose(got, wanted, rtol=0, atol=1e-6), f"{key}: max diff {np.abs(got - wanted).max()}"
    else:
        assert np.array_equal(got, wanted), key


def test_every_captured_output_is_checked(expected):
    cases = {c["case"] for c in CASES}
    assert {key.split(".")[0] for key in expected} == cases
    assert len(expected) >= 140


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_node_equals_comfyui(case, inputs, expected):
    got = _flatten(case["case"], _call(case["node"], {k: _resolve(v, inputs) for k, v in case["inputs"].items()}))
    wanted = {k: v for k, v in expected.items() if k.split(".")[0] == case["case"]}
    assert sorted(got) == sorted(wanted)
    for key, value in wanted.items():
        assert got[key].shape == value.shape, key
        assert_equal(key, got[key], value)


def _graph_cases() -> list[dict[str, Any]]:
    # A whole list of batches only comes from a list output; through the server RebatchImages gets one batch.
    return [c for c in CASES if c["case"] != "rebatch_images"]


def test_every_case_through_the_server(graph_server, inputs, expected):
    """All cases in one prompt: exact inputs via TestLoad, every output recorded by a probe."""
    folder = graph_server.input_dir / "probes"
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in inputs.items():
        np.save(folder / f"{name}.npy", array)
        np.savez(folder / f"{name}.latent.npz", samples=array)

    prompt: dict[str, Any] = {}
    loaders: dict[str, str] = {}

    def link(ref: str) -> list[Any]:
        file = f"{ref[8:]}.latent.npz" if ref.startswith("@latent:") else f"{ref[1:]}.npy"
        if file not in loaders:
            loaders[file] = f"load_{len(loaders)}"
            prompt[loaders[file]] = {"class_type": "TestLoad", "inputs": {"name": file}}
        return [loaders[file], 0]

    outputs_of: dict[str, int] = {}
    for case in _graph_cases():
        node_inputs = {}
        for key, value in case["inputs"].items():
            if isinstance(value, list):
                value = value[0]
            node_inputs[key] = link(value) if isinstance(value, str) and value.startswith("@") else value
        node_id = f"case_{case['case']}"
        prompt[node_id] = {"class_type": case["node"], "inputs": node_inputs}
        count = len({k.split(".")[1] for k in expected if k.split(".")[0] == case["case"]})
        outputs_of[case["case"]] = count
        for i in range(count):
            probe = "TestProbeList" if case["node"] == "RebatchImages" else "TestProbe"
            prompt[f"probe_{case['case']}_{i}"] = {"class_type": probe,
                                                   "inputs": {"value": [node_id, i], "name": f"{case['case']}.{i}"}}
    recorded = graph_server.run(prompt)
    missing = sorted(k for k in expected if k.split(".")[0] in outputs_of and k not in recorded
                     and ".".join(k.split(".")[:2]) + "_" + k.split(".")[-1] not in recorded)
    assert missing == []

    checked = 0
    for key, value in expected.items():
        case = key.split(".")[0]
        if case not in outputs_of:
            continue
        parts = key.split(".")
        got = recorded[f"{parts[0]}.{parts[1]}_{parts[2]}" if len(parts) == 3 else key]  # list items: name_<i>
        got = got["samples"] if isinstance(got, dict) else got
        assert_equal(key, np.asarray(got, dtype=value.dtype), value)
        checked += 1
    assert checked == len([k for k in expected if k.split(".")[0] in outputs_of])
