"""Loops in a prompt: which start and end nodes pair up, and the graph the executor runs for them.

A V3 node whose schema says ``loop_boundary="start"`` opens a loop, one with
``"end"`` closes it (ComfyUI's Start Loop / End Loop). The pairing and each
loop's body are read from the links alone, the same way at validation and at
execution:

* A start pairs with the first end downstream of it: among the unpaired ends
  it reaches, the one no other of them leads to. Starts are paired innermost
  first (a start downstream of another start reaches fewer nodes), so nested
  and chained loops pair as drawn.
* The body is everything downstream of the start except the end and what
  comes after it. That is the nodes feeding the end, and the side-effect
  nodes hanging off them (a preview inside the loop runs every iteration).
* Nothing outside a loop may read the body or the start directly: its values
  leave through the end. An inner loop lies wholly inside or outside an outer
  body (its start is linked to the outer one through ``parent_iteration``).

The executor never runs a body as submitted. :func:`prepare` gives it a copy
of the prompt in which the start carries ``_loop_body`` (sorted ids) and
``_loop_end``; the end's inputs that read the body or the start move to
``_loop_inputs`` and one link, ``_loop_result``, to the start's output 0
takes their place; the body's output nodes stop being outputs of the run. The
start node's ``execute`` then expands into one copy of the body per iteration
and hands the end, through output 0, the value it returns
(``comfy_kernel_core_nodes.nodes.loops``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..nodes.graph_utils import is_link

START, END = "start", "end"
RESULT_INPUT = "_loop_result"
"""The input :func:`prepare` gives an end node: a link to its start's output 0."""


@dataclass(frozen=True)
class Loop:
    start: str
    end: str
    body: frozenset[str]


class LoopError(ValueError):
    """A prompt's loop nodes do not form loops; ``node_id`` is the node to blame."""

    def __init__(self, node_id: str, message: str):
        super().__init__(message)
        self.node_id = node_id


def boundaries(prompt: dict[str, Any], boundary_of: Callable[[str], str | None]) -> dict[str, str]:
    """``{node id: "start" | "end"}`` for the prompt's loop nodes; ``boundary_of`` maps a class type."""
    found = {}
    for node_id, node in prompt.items():
        kind = boundary_of(node["class_type"])
        if kind in (START, END):
            found[node_id] = kind
    return found


def find_loops(prompt: dict[str, Any], marks: dict[str, str]) -> list[Loop]:
    """The loops of a prompt whose loop nodes are ``marks``; raises :class:`LoopError` when they don't pair."""
    children: dict[str, set[str]] = {}
    for node_id, node in prompt.items():
        for value in node["inputs"].values():
            if is_link(value) and value[0] in prompt:
                children.setdefault(value[0], set()).add(node_id)
    below: dict[str, set[str]] = {}

    def downstream(node_id: str) -> set[str]:
        if node_id not in below:
            seen: set[str] = set()
            stack = list(children.get(node_id, ()))
            while stack:
                nid = stack.pop()
                if nid not in seen:
                    seen.add(nid)
                    stack.extend(children.get(nid, ()))
            below[node_id] = seen
        return below[node_id]

    starts = sorted((n for n, kind in marks.items() if kind == START), key=lambda n: len(downstream(n)))
    ends = {n for n, kind in marks.items() if kind == END}
    pairs: dict[str, str] = {}
    for start in starts:
        reached = [e for e in ends - set(pairs.values()) if e in downstream(start)]
        first = [e for e in reached if not any(e in downstream(other) for other in reached if other != e)]
        if not first:
            raise LoopError(start, f"Start Loop {start} has no End Loop after it: link the loop's last "
                                   "value to an End Loop")
        if len(first) > 1:
            raise LoopError(start, f"Start Loop {start} leads to more than one End Loop ({', '.join(sorted(first))})")
        pairs[start] = first[0]
    for end in sorted(ends - set(pairs.values())):
        raise LoopError(end, f"End Loop {end} has no Start Loop before it")

    loops = [Loop(s, e, frozenset(downstream(s) - downstream(e) - {e})) for s, e in pairs.items()]
    for loop in loops:
        for other in loops:
            if other is not loop and (other.start in loop.body) != (other.end in loop.body):
                raise LoopError(other.start, f"the loop {other.start}-{other.end} crosses the loop "
                                             f"{loop.start}-{loop.end}: an inner loop's Start Loop takes "
                                             "parent_iteration from the outer one")
        for node_id in sorted(loop.body | {loop.start}):
            for child in sorted(children.get(node_id, ())):
                if child not in loop.body and child != loop.end:
                    raise LoopError(child, f"node {child} reads node {node_id} inside the loop "
                                           f"{loop.start}-{loop.end}: take the value from End Loop {loop.end}")
    return loops


def prepare(prompt: dict[str, Any], outputs: list[str],
            boundary_of: Callable[[str], str | None]) -> tuple[dict[str, Any], list[str]]:
    """The graph and outputs the executor runs for ``prompt`` (the prompt itself when it has no loops)."""
    marks = boundaries(prompt, boundary_of)
    if not marks:
        return prompt, outputs
    loops = find_loops(prompt, marks)
    graph = dict(prompt)
    in_body: set[str] = set()
    for loop in loops:
        in_body |= loop.body
        graph[loop.start] = {**prompt[loop.start], "_loop_body": sorted(loop.body), "_loop_end": loop.end}
        end = prompt[loop.end]
        inside = loop.body | {loop.start}
        moved = {k: v for k, v in end["inputs"].items() if is_link(v) and v[0] in inside}
        kept = {k: v for k, v in end["inputs"].items() if k not in moved}
        graph[loop.end] = {**end, "inputs": {**kept, RESULT_INPUT: [loop.start, 0]}, "_loop_inputs": moved}
    return graph, [o for o in outputs if o not in in_body]
