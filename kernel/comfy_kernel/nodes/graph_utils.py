"""Helpers for nodes that build graphs at run time (node expansion).

Public names mirror what node packs import from ComfyUI's graph utilities:
:func:`is_link`, :class:`ExecutionBlocker`, :class:`GraphBuilder`,
:class:`Node` and :func:`add_graph_prefix`. The default id prefix of a
GraphBuilder is per execution context (a context variable the executor sets
before each list item), so several workers can expand nodes at once.
"""

from __future__ import annotations

import contextvars
from typing import Any


def is_link(obj: Any) -> bool:
    """The execution link rule: ``[source_id: str, slot: int]`` and nothing else."""
    return (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], str)
            and isinstance(obj[1], int) and not isinstance(obj[1], bool))


class ExecutionBlocker:
    """An output value that stops every downstream consumer of it.

    With a ``message`` the client is told once (an ``execution_error`` of
    the "blocked" kind) and the run goes on; without one it is silent.
    """

    __slots__ = ("message",)

    def __init__(self, message: str | None):
        self.message = message

    def __repr__(self) -> str:
        return f"ExecutionBlocker({self.message!r})"


# (root, call index, graph index) for GraphBuilders created without a prefix.
_prefix_state: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "comfy_kernel_graph_prefix", default=None)


class GraphBuilder:
    """Builds an expansion subgraph with deterministic, collision-free node ids."""

    def __init__(self, prefix: str | None = None):
        self.prefix = prefix if prefix is not None else GraphBuilder.alloc_prefix()
        self.nodes: dict[str, Node] = {}
        self.id_gen = 1

    @classmethod
    def set_default_prefix(cls, prefix_root: str, call_index: int, graph_index: int = 0) -> None:
        _prefix_state.set([prefix_root, call_index, graph_index])

    @classmethod
    def alloc_prefix(cls, root: str | None = None, call_index: int | None = None,
                     graph_index: int | None = None) -> str:
        state = _prefix_state.get()
        if state is None:
            state = ["", 0, 0]
            _prefix_state.set(state)
        root = state[0] if root is None else root
        call_index = state[1] if call_index is None else call_index
        if graph_index is None:
            graph_index = state[2]
            state[2] += 1
        return f"{root}.{call_index}.{graph_index}."

    def node(self, class_type: str, id: str | None = None, **kwargs: Any) -> Node:
        if id is None:
            id = str(self.id_gen)
            self.id_gen += 1
        full_id = self.prefix + id
        if full_id in self.nodes:
            return self.nodes[full_id]
        node = Node(full_id, class_type, kwargs)
        self.nodes[full_id] = node
        return node

    def lookup_node(self, id: str) -> Node | None:
        return self.nodes.get(self.prefix + id)

    def finalize(self) -> dict[str, Any]:
        return {node_id: node.serialize() for node_id, node in self.nodes.items()}

    def replace_node_output(self, node_id: str, index: int, new_value: Any) -> None:
        node_id = self.prefix + node_id
        for node in self.nodes.values():
            for key, value in list(node.inputs.items()):
                if is_link(value) and value[0] == node_id and value[1] == index:
                    if new_value is None:
                        del node.inputs[key]
                    else:
                        node.inputs[key] = new_value

    def remove_node(self, id: str) -> None:
        self.nodes.pop(self.prefix + id, None)


class Node:
    """One node of a :class:`GraphBuilder` graph."""

    def __init__(self, id: str, class_type: str, inputs: dict[str, Any]):
        self.id = id
        self.class_type = class_type
        self.inputs = inputs
        self.override_display_id: str | None = None

    def out(self, index: int) -> list[Any]:
        return [self.id, index]

    def set_input(self, key: str, value: Any) -> None:
        if value is None:
            self.inputs.pop(key, None)
        else:
            self.inputs[key] = value

    def get_input(self, key: str) -> Any:
        return self.inputs.get(key)

    def set_override_display_id(self, override_display_id: str) -> None:
        self.override_display_id = override_display_id

    def serialize(self) -> dict[str, Any]:
        out: dict[str, Any] = {"class_type": self.class_type, "inputs": self.inputs}
        if self.override_display_id is not None:
            out["override_display_id"] = self.override_display_id
        return out


def add_graph_prefix(graph: dict[str, Any], outputs: list[Any], prefix: str) -> tuple[dict[str, Any], tuple]:
    """Prefix every node id of ``graph`` (and links to them, in inputs and ``outputs``)."""
    new_graph: dict[str, Any] = {}
    for node_id, node in graph.items():
        inputs = {}
        for key, value in node["inputs"].items():
            inputs[key] = [prefix + value[0], value[1]] if is_link(value) and value[0] in graph else value
        new_node = dict(node)
        new_node["inputs"] = inputs
        new_graph[prefix + node_id] = new_node
    new_outputs = tuple([prefix + o[0], o[1]] if is_link(o) and o[0] in graph else o for o in outputs)
    return new_graph, new_outputs
