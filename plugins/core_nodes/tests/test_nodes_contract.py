"""Every core node's /object_info entry against ComfyUI's contract.

``data/comfyui-0.3.64-object_info.local.json`` is ComfyUI 0.3.64's
``/object_info`` without its paid API nodes; ``data/comfyui-0.3.64-nodes_*.json``
add the 0.3.64 modules that release could not list (they failed to import
there for lack of an optional package). Nodes newer than that release
(the frontend's templates use them) have their contracts in ``data/newer/``
(one file per ComfyUI module), written from current ComfyUI's node
definitions. A node we register must appear in one of the two and match it
in everything a client relies on; descriptions and tooltips are our own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from comfy_kernel.nodes.info import node_info
from comfy_kernel.nodes.registry import NodeRegistry
from comfy_kernel_core_nodes import plugin

DATA = Path(__file__).parent / "data"
REFERENCE = {name: entry for path in [DATA / "comfyui-0.3.64-object_info.local.json",
                                       *sorted(DATA.glob("comfyui-0.3.64-nodes_*.json"))]
             for name, entry in json.loads(path.read_text()).items()}
NEWER = {name: entry for path in sorted((DATA / "newer").glob("*.json"))
         for name, entry in json.loads(path.read_text()).items()}
CONTRACTS = {**REFERENCE, **NEWER}
OWN = {"LoopCollect"}
"""Dev-only nodes of this project that ComfyUI has no counterpart for (the frontend hides them)."""

FIELDS = ("name", "display_name", "category", "output", "output_name", "output_is_list", "output_node",
          "python_module", "input_order")


def _ours() -> dict[str, dict[str, Any]]:
    registry = NodeRegistry()
    plugin.ck_register_nodes(registry)
    return {entry.name: json.loads(json.dumps(node_info(entry))) for entry in registry.entries()}


OURS = _ours()


def _without_tooltips(value: Any) -> Any:
    """``value`` with every ``tooltip`` key removed, also inside nested inputs (dynamic combo options)."""
    if isinstance(value, dict):
        return {k: _without_tooltips(v) for k, v in value.items() if k != "tooltip"}
    if isinstance(value, list):
        return [_without_tooltips(v) for v in value]
    return value


def _options(spec: list[Any]) -> dict[str, Any]:
    return _without_tooltips(dict(spec[1])) if len(spec) > 1 and isinstance(spec[1], dict) else {}


def _combo(spec: list[Any]) -> list[Any] | None:
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO":
        return _options(spec).get("options")
    return None


def _input_differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    problems = []
    for section in sorted(set(ours) | set(theirs)):
        mine, ref = ours.get(section) or {}, theirs.get(section) or {}
        if section == "hidden":
            if mine != ref:
                problems.append(f"hidden inputs {mine} != {ref}")
            continue
        if set(mine) != set(ref):
            problems.append(f"{section} inputs {sorted(mine)} != {sorted(ref)}")
            continue
        for name, ref_spec in ref.items():
            spec = mine[name]
            ref_combo, combo = _combo(ref_spec), _combo(spec)
            if ref_combo is not None:
                if combo is None:
                    problems.append(f"{name}: not a combo")
                elif ref_combo and combo != ref_combo:  # an empty list in the reference is a folder listing
                    problems.append(f"{name}: options {combo} != {ref_combo}")
                mine_opts = {k: v for k, v in _options(spec).items() if k != "options"}
                ref_opts = {k: v for k, v in _options(ref_spec).items() if k != "options"}
            else:
                if spec[0] != ref_spec[0]:
                    problems.append(f"{name}: type {spec[0]!r} != {ref_spec[0]!r}")
                mine_opts, ref_opts = _options(spec), _options(ref_spec)
            if mine_opts != ref_opts:
                problems.append(f"{name}: options {mine_opts} != {ref_opts}")
    return problems


def contract_differences(name: str, ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """What differs between our /object_info entry and ComfyUI's, in the fields clients read."""
    problems = [f"{field}: {ours.get(field)!r} != {theirs.get(field)!r}"
                for field in FIELDS if ours.get(field) != theirs.get(field)]
    for flag in ("deprecated", "experimental"):
        if bool(ours.get(flag)) != bool(theirs.get(flag)):
            problems.append(f"{flag}: {ours.get(flag)!r} != {theirs.get(flag)!r}")
    problems += _input_differences(ours.get("input") or {}, theirs.get("input") or {})
    return problems


def test_every_core_node_has_a_contract():
    assert sorted(set(OURS) - set(CONTRACTS) - OWN) == []


def test_own_nodes_are_dev_only_and_not_comfyuis():
    assert all(OURS[name].get("dev_only") is True and name not in CONTRACTS for name in OWN)


@pytest.mark.parametrize("name", sorted(set(OURS) - OWN))
def test_contract_matches_comfyui(name: str):
    assert contract_differences(name, OURS[name], CONTRACTS[name]) == []


def test_the_comparison_catches_a_changed_default():
    entry = json.loads(json.dumps(REFERENCE["EmptyLatentImage"]))
    entry["input"]["required"]["width"][1]["default"] = 768
    assert contract_differences("EmptyLatentImage", entry, REFERENCE["EmptyLatentImage"])
