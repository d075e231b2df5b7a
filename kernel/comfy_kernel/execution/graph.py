"""The live graph of one run (:class:`DynamicPrompt`) and its scheduler (:class:`ExecutionList`).

Scheduling follows spec §5.3: a node is ready when nothing it depends on is
pending; among ready nodes the UX-friendly rule prefers output and async
nodes, then nodes feeding an output, then nodes two links above one. The
ready set is scanned in pending (insertion) order; for the long chains this
matters for, the scan stops at the first ready node of the best class.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..nodes.graph_utils import is_link


class NodeNotFoundError(Exception):
    pass


class DependencyCycleError(Exception):
    pass


class NodeInputError(Exception):
    pass


class DynamicPrompt:
    """The submitted prompt plus the ephemeral nodes added by expansion, with their lineage."""

    def __init__(self, original_prompt: dict[str, Any]):
        self.original_prompt = original_prompt
        self.ephemeral_prompt: dict[str, Any] = {}
        self.ephemeral_parents: dict[str, str] = {}
        self.ephemeral_display: dict[str, str] = {}

    def get_node(self, node_id: str) -> dict[str, Any]:
        node = self.ephemeral_prompt.get(node_id)
        if node is None:
            node = self.original_prompt.get(node_id)
        if node is None:
            raise NodeNotFoundError(f"Node {node_id} not found")
        return node

    def has_node(self, node_id: str) -> bool:
        return node_id in self.original_prompt or node_id in self.ephemeral_prompt

    def add_ephemeral_node(self, node_id: str, node_info: dict[str, Any], parent_id: str, display_id: str) -> None:
        self.ephemeral_prompt[node_id] = node_info
        self.ephemeral_parents[node_id] = parent_id
        self.ephemeral_display[node_id] = display_id

    def get_real_node_id(self, node_id: str) -> str:
        parents = self.ephemeral_parents
        while node_id in parents:
            node_id = parents[node_id]
        return node_id

    def get_parent_node_id(self, node_id: str) -> str | None:
        return self.ephemeral_parents.get(node_id)

    def get_display_node_id(self, node_id: str) -> str:
        display = self.ephemeral_display
        seen = 0
        while node_id in display and seen < 10000:
            node_id = display[node_id]
            seen += 1
        return node_id

    def all_node_ids(self) -> set[str]:
        return set(self.original_prompt) | set(self.ephemeral_prompt)

    def get_original_prompt(self) -> dict[str, Any]:
        return self.original_prompt

    def node_ids(self, node_id: str) -> tuple[str, str | None, str]:
        """``(display id, parent id, real id)`` of a node, for messages."""
        if node_id not in self.ephemeral_parents:
            return node_id, None, node_id
        return self.get_display_node_id(node_id), self.ephemeral_parents[node_id], self.get_real_node_id(node_id)


class ExecutionList:
    """Pending nodes, what blocks what, and the single staged node."""

    def __init__(self, dynprompt: DynamicPrompt, is_cached: Callable[[str], bool],
                 node_class: Callable[[str], Any]):
        self.dynprompt = dynprompt
        self.is_cached = is_cached
        self.node_class = node_class  # node id -> NodeDef
        self.pending: dict[str, None] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, set[int]]] = {}
        self.external_blocks = 0
        self.unblocked = asyncio.Event()
        self.staged: str | None = None
        self.ready: set[str] = set()
        self.seq: dict[str, int] = {}
        self._counter = 0

    def is_empty(self) -> bool:
        return not self.pending

    def add_node(self, node_id: str) -> None:
        edges: list[tuple[str, int, str]] = []
        stack = [node_id]
        pending = self.pending
        while stack:
            nid = stack.pop()
            if nid in pending:
                continue
            pending[nid] = None
            self.block_count[nid] = 0
            self.ready.add(nid)
            self._counter += 1
            self.seq[nid] = self._counter
            self.blocking.setdefault(nid, {})
            node = self.dynprompt.get_node(nid)
            ndef = self.node_class(nid)
            lazy = ndef.lazy if ndef is not None else ()
            for name, value in node["inputs"].items():
                if not is_link(value) or name in lazy:
                    continue
                src = value[0]
                if self.is_cached(src):
                    continue
                stack.append(src)
                edges.append((src, value[1], nid))
        for src, slot, dst in edges:
            self.add_strong_link(src, slot, dst)

    def add_strong_link(self, src: str, slot: int, dst: str) -> None:
        if not self.is_cached(src):
            self.add_node(src)
            targets = self.blocking[src]
            if dst not in targets:
                targets[dst] = set()
                self.block_count[dst] += 1
                self.ready.discard(dst)
            targets[dst].add(slot)

    def make_input_strong_link(self, dst: str, input_name: str) -> None:
        node = self.dynprompt.get_node(dst)
        if input_name not in node["inputs"]:
            raise NodeInputError(f"Node {dst} says it needs input {input_name}, but there is no input to that node at all")
        value = node["inputs"][input_name]
        if not is_link(value):
            raise NodeInputError(f"Node {dst} says it needs input {input_name}, but that value is a constant")
        self.add_strong_link(value[0], value[1], dst)

    def add_external_block(self, node_id: str) -> Callable[[], None]:
        self.block_count[node_id] += 1
        self.ready.discard(node_id)
        self.external_blocks += 1
        loop = asyncio.get_running_loop()

        def unblock() -> None:
            self.external_blocks -= 1
            self.block_count[node_id] -= 1
            if self.block_count[node_id] == 0 and node_id in self.pending:
                self.ready.add(node_id)
            self.unblocked.set()

        def threadsafe() -> None:
            try:
                if asyncio.get_running_loop() is loop:
                    unblock()
                    return
            except RuntimeError:
                pass
            loop.call_soon_threadsafe(unblock)

        return threadsafe


    async def stage_node_execution(self) -> tuple[str | None, dict[str, Any] | None]:
        """Pick the next node; ``(None, error)`` on a dependency cycle."""
        assert self.staged is None
        if not self.pending:
            return None, None
        ready = self._first_ready_fast()
        while ready is None and self.external_blocks > 0:
            self.unblocked.clear()
            await self.unblocked.wait()
            ready = self._first_ready_fast()
        if ready is None:
            return None, self._cycle_error()
        self.staged = ready
        return ready, None

    def _first_ready_fast(self) -> str | None:
        if not self.ready:
            return None
        if len(self.ready) == 1:
            return next(iter(self.ready))
        seq = self.seq
        ready = sorted(self.ready, key=seq.__getitem__)
        first = ready[0]
        for n in ready:
            ndef = self.node_class(n)
            if ndef is not None and (ndef.is_output or ndef.is_async):
                return n
        for n in ready:
            if any(self._is_output(b) for b in self.blocking.get(n, ())):
                return n
        for n in ready:
            for b in self.blocking.get(n, ()):
                if any(self._is_output(c) for c in self.blocking.get(b, ())):
                    return n
        return first

    def _is_output(self, node_id: str) -> bool:
        ndef = self.node_class(node_id)
        return ndef is not None and ndef.is_output

    def _cycle_error(self) -> dict[str, Any]:
        remaining = set(self.pending)
        changed = True
        while changed:
            changed = False
            for n in list(remaining):
                if not any(b in remaining for b in self.blocking.get(n, ())):
                    remaining.discard(n)
                    changed = True
        cycle = [n for n in self.pending if n in remaining] or list(self.pending)
        blamed = cycle[0]
        for n in cycle:
            display = self.dynprompt.get_display_node_id(n)
            if display != n:
                blamed = display
                break
        return {"node_id": blamed, "exception_message": "Dependency cycle detected",
                "exception_type": "graph.DependencyCycleError", "traceback": [], "current_inputs": []}

    def unstage_node_execution(self) -> None:
        self.staged = None

    def complete_node_execution(self) -> None:
        node_id = self.staged
        assert node_id is not None
        del self.pending[node_id]
        self.ready.discard(node_id)
        bc = self.block_count
        for dst in self.blocking.pop(node_id, {}):
            bc[dst] -= 1
            if bc[dst] == 0:
                self.ready.add(dst)
        self.staged = None
