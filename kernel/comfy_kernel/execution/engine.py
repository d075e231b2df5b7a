"""The executor's algorithm, in one place (spec §5).

:class:`Engine` runs one prompt at a time on a worker thread, in that
worker's own asyncio loop. A run:

1. announces ``execution_start``; builds the :class:`DynamicPrompt`;
2. evaluates IS_CHANGED fingerprints and computes every node's cache key
   once (``caching.Signatures``); loads what the cache holds into
   ``run.outputs`` and announces ``execution_cached``;
3. schedules the outputs with an :class:`ExecutionList` and executes staged
   nodes one by one (:meth:`Engine._execute`): cached visit, async
   resumption, expansion resumption, or a fresh run (inputs resolved, lazy
   inputs requested, FUNCTION list-mapped, results merged, UI sent and
   stored, expansions spliced in);
4. reports success, an ``execution_error`` (§5.12) or ``execution_interrupted``;
5. returns the history status/outputs/meta.

Messages go through a :class:`progress.RunState`, which routes them to the
prompt's client (or broadcasts the kinds Quirk Q18 broadcasts).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

from ..files.access import reset_owner, set_owner
from ..gpu.devices import loaded_torch
from ..nodes.graph_utils import ExecutionBlocker, GraphBuilder, is_link
from ..progress import (
    ExecutionContext,
    InterruptProcessingException,
    RunState,
    _executing,
    set_current_run,
    throw_exception_if_processing_interrupted,
)
from .caching import CacheEntry, ObjectCache, OutputCache, Signatures, make_cache
from .graph import DependencyCycleError, DynamicPrompt, ExecutionList, NodeInputError
from .loops import LoopError, prepare
from .nodeclass import NodeDef, NodeDefs
from .timing import NodeTimes, worker_device
from .validation import exception_type_name

log = logging.getLogger(__name__)

NodeInputError.__module__ = "comfy_execution.graph"
DependencyCycleError.__module__ = "comfy_execution.graph"

SUCCESS, PENDING, FAILURE = 0, 1, 2
FINAL_MESSAGES = frozenset({"execution_success", "execution_error", "execution_interrupted"})
"""The message that ends a run is held back until its history row is committed (see ``run_prompt``)."""
OOM_TIPS = ("This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before you "
            "might have accidentally set the batch_size to a large number.")


class DuplicateNodeError(Exception):
    pass


DuplicateNodeError.__module__ = "execution"


def now_ms() -> int:
    return int(time.time() * 1000)


class Run:
    """The state of one prompt run."""

    def __init__(self, prompt_id: str, prompt: dict[str, Any], extra_data: dict[str, Any],
                 outputs_to_execute: list[str], state: RunState, defs: NodeDefs):
        self.prompt_id = prompt_id
        self.prompt = prompt
        self.extra_data = extra_data
        self.client_id: str | None = extra_data.get("client_id") or None
        self.state = state
        self.defs = defs
        self.loop_error: LoopError | None = None
        try:  # the graph to run: the prompt, with its loops' bodies handed to their start nodes
            self.graph, self.outputs_to_execute = prepare(prompt, outputs_to_execute, defs.loop_boundary)
        except LoopError as exc:  # validation reports these; a prompt restored from an older queue may not
            self.graph, self.outputs_to_execute, self.loop_error = prompt, [], exc
        self.dynprompt = DynamicPrompt(self.graph)
        self.messages: list[list[Any]] = []
        self.final: list[tuple[str, dict[str, Any], bool]] = []
        self.executed: list[str] = []
        self.executed_set: set[str] = set()
        self.outputs: dict[str, list[list[Any]]] = {}
        self.ui: dict[str, dict[str, Any]] = {}
        self.keys: Signatures | None = None
        self.pending_async: dict[str, list[Any]] = {}
        self.pending_subgraph: dict[str, list[Any]] = {}
        self.tasks: list[asyncio.Task] = []
        self.success = False
        # --cache-none only (see Engine._release): who reads each node's outputs, which
        # nodes have finished, and outputs an expanding node will read when it resumes.
        self.consumers: dict[str, set[str]] | None = None
        self.finished: set[str] = set()
        self.held: dict[str, int] = {}
        self.release_after: list[str] = []
        self.times = NodeTimes(worker_device())
        self.cached: set[str] = set()
        self.torch_late = False  # torch was not loaded when the run started (see Engine._call)

    def node_def(self, node_id: str) -> NodeDef | None:
        try:
            node = self.dynprompt.get_node(node_id)
        except Exception:
            return None
        return self.defs.get(node["class_type"])


class Engine:
    """One worker's executor: its caches, node instances and event loop."""

    def __init__(self, kernel: Any, notify_executed: Callable[[dict[str, Any]], None] | None = None):
        self.kernel = kernel
        self.config = kernel.config
        self.cache: OutputCache = make_cache(self.config)
        self.objects = ObjectCache(keep=not getattr(self.config, "cache_none", False))
        self.release_early = bool(getattr(self.config, "cache_none", False))
        self.loop: asyncio.AbstractEventLoop | None = asyncio.new_event_loop()  # runs on the worker thread
        self.notify_executed = notify_executed
        self.current: Run | None = None

    def free(self) -> None:
        """Drop every cache (``POST /free`` with ``free_memory``)."""
        self.cache.clear()
        self.objects.clear()

    # -- entry point (worker thread) --------------------------------------------------

    def run_prompt(self, prompt_id: str, prompt: dict[str, Any], extra_data: dict[str, Any],
                   outputs: list[str], owner: str | None = None, defs: NodeDefs | None = None) -> dict[str, Any]:
        """Run one prompt; returns its history result.

        ``defs`` are the node definitions read when the prompt was validated
        (a prompt restored after a restart has none: they are read again).

        The message that ends the run (``execution_success``, ``execution_error``
        or ``execution_interrupted``) is not sent here: the result's
        ``send_final()`` sends it, which the queue calls once the history row is
        committed, so a client that reads ``/history/{id}`` on that message
        always finds the prompt there.
        """
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        ws = self.kernel.ws
        client_id = extra_data.get("client_id") or None
        feed = getattr(getattr(self.kernel, "executor", None), "jobs", None)  # for events, waits and webhooks

        def send(event: str, data: Any, broadcast: bool) -> None:
            if feed is not None:
                feed.record(prompt_id, event, data)
            if client_id is not None:
                ws.send(event, data, client_id)
            elif broadcast:
                ws.send(event, data, None)

        def send_bytes(kind: int, payload: bytes) -> None:
            if feed is not None:
                feed.record_bytes(prompt_id, kind, payload)
            ws.send_bytes(kind, payload, client_id)

        state = RunState(prompt_id, client_id, send, send_bytes,
                         supports_metadata=ws.client_supports(client_id, "supports_preview_metadata"))
        run = Run(prompt_id, prompt, extra_data, outputs, state, defs or NodeDefs(self.kernel.nodes))
        run.owner = owner  # type: ignore[attr-defined]
        state.registry.node_ids = run.dynprompt.node_ids
        server_loop = getattr(self.kernel, "loop", None)
        if server_loop is not None:
            def schedule(delay: float, fn: Callable[[], None]) -> None:
                server_loop.call_soon_threadsafe(server_loop.call_later, delay, fn)
            state.registry.schedule = schedule
        state.prompt = prompt  # type: ignore[attr-defined]
        self.current = run
        token = set_current_run(state)
        owner_token = set_owner(owner)  # nodes open files by name as the prompt's owner
        try:
            torch = loaded_torch()
            if torch is not None:
                with torch.inference_mode():
                    self.loop.run_until_complete(self._run(run))
            else:
                run.torch_late = True
                self.loop.run_until_complete(self._run(run))
        finally:
            self._cancel_leftovers()
            from ..progress import _run as run_var
            run_var.reset(token)
            reset_owner(owner_token)
            self.current = None
        result = self._history_result(run)

        def send_final() -> None:
            for event, data, broadcast in run.final:
                send(event, data, broadcast)

        result["send_final"] = send_final
        return result

    def interrupt(self) -> None:
        run = self.current
        if run is not None:
            run.state.interrupt()

    def running_display_node(self) -> str | None:
        run = self.current
        return run.state.last_node_id if run is not None else None

    def _cancel_leftovers(self) -> None:
        loop = self.loop
        if loop is None:
            return
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

    # -- messages ------------------------------------------------------------------------

    def _emit(self, run: Run, event: str, data: dict[str, Any], broadcast: bool = False) -> None:
        data["timestamp"] = now_ms()
        run.messages.append([event, data])
        if event in FINAL_MESSAGES:
            run.final.append((event, data, broadcast))
        else:
            run.state.send(event, data, broadcast)

    def _to_client(self, run: Run, event: str, data: dict[str, Any]) -> None:
        run.state.send(event, data, False)  # the prompt's client only (and the job feed)

    # -- the run -------------------------------------------------------------------------

    async def _run(self, run: Run) -> None:
        state = run.state
        state.interrupted.clear()
        self._emit(run, "execution_start", {"prompt_id": run.prompt_id})
        if run.loop_error is not None:
            self._failed(run, run.loop_error.node_id, run.loop_error, {})
            return
        prompt = run.graph
        fingerprints = {}
        for node_id, node in prompt.items():
            ndef = run.defs.get(node["class_type"])
            if ndef is not None and ndef.is_changed is not None:
                fingerprints[node_id] = await self._fingerprint(run, node_id, node, ndef)
        run.keys = Signatures(run.dynprompt, run.defs, fingerprints, getattr(run, "owner", None))
        keys = {}
        for node_id in prompt:
            keys[node_id] = run.keys.key(node_id)
        self.cache.start_prompt({k for k in keys.values() if k is not None}, prompt)
        self.objects.start_prompt(prompt)
        cached = []
        for node_id, key in keys.items():
            entry = self.cache.get(key)
            if entry is not None:
                run.outputs[node_id] = entry.outputs
                if entry.ui is not None:
                    run.ui[node_id] = entry.ui
                cached.append(node_id)
        run.cached = set(cached)
        self._emit(run, "execution_cached", {"nodes": cached, "prompt_id": run.prompt_id})

        if self.release_early:
            run.consumers = {}
            self._add_consumers(run, prompt)
        elist = ExecutionList(run.dynprompt, run.outputs.__contains__, run.node_def)
        run.elist = elist  # type: ignore[attr-defined]
        for node_id in run.outputs_to_execute:
            elist.add_node(node_id)
        failed = False
        times = run.times
        while not elist.is_empty():
            node_id, cycle = await elist.stage_node_execution()
            if cycle is not None:
                real = run.dynprompt.get_real_node_id(cycle["node_id"])
                payload = {"prompt_id": run.prompt_id, "node_id": real,
                           "node_type": run.dynprompt.get_node(real)["class_type"],
                           "executed": list(run.executed), **{k: v for k, v in cycle.items() if k != "node_id"},
                           "current_outputs": list(prompt)}
                self._emit(run, "execution_error", payload)
                failed = True
                break
            assert node_id is not None
            mark = times.begin()
            try:
                result = await self._execute(run, elist, node_id)
            except InterruptProcessingException:
                times.end(node_id, mark)
                self._interrupted(run, node_id)
                failed = True
                break
            except Exception as exc:
                times.end(node_id, mark)
                self._failed(run, node_id, exc, getattr(exc, "_ck_inputs", {}))
                failed = True
                break
            times.end(node_id, mark)
            if result == SUCCESS:
                elist.complete_node_execution()
                if run.consumers is not None:
                    self._release(run, node_id)
            else:
                elist.unstage_node_execution()
            self.cache.after_node()
        state.registry.flush()
        if not failed:
            run.success = True
            self._emit(run, "execution_success", {"prompt_id": run.prompt_id})

    async def _fingerprint(self, run: Run, node_id: str, node: dict[str, Any], ndef: NodeDef) -> Any:
        if "is_changed" in node:  # Q1: a client-supplied value wins
            return node["is_changed"]
        try:
            kwargs: dict[str, list[Any]] = {}
            for name, value in node["inputs"].items():
                kwargs[name] = [None if is_link(value) else value]
            hidden = ndef.hidden_values(node_id, None)
            if not ndef.is_v3:
                for k, v in hidden.items():
                    kwargs[k] = [v]
            fn = ndef.bind("is_changed", None, None if ndef.is_v3 else hidden)
            results = []
            for item in _items(kwargs, ndef.input_is_list):
                with _Context(run.prompt_id, node_id, None):
                    value = fn(**item)
                    if inspect.isawaitable(value):
                        value = await value
                results.append(None if isinstance(value, ExecutionBlocker) else value)
            return results
        except Exception as exc:
            log.warning("WARNING: IS_CHANGED of %s (%s) failed: %s", node["class_type"], node_id, exc)
            return float("nan")

    # -- one node (spec §5.4) -----------------------------------------------------------------

    async def _execute(self, run: Run, elist: ExecutionList, node_id: str) -> int:
        dynprompt = run.dynprompt
        node = dynprompt.get_node(node_id)
        class_type = node["class_type"]
        ndef = run.defs.get(class_type)
        registry = run.state.registry
        display = dynprompt.get_display_node_id(node_id) if node_id in dynprompt.ephemeral_display else node_id
        if ndef is None:
            raise KeyError(f"Node type {class_type} not found")

        if node_id in run.outputs:  # branch 1: cached
            ui = run.ui.get(node_id)
            self._to_client(run, "executed", {"node": node_id, "display_node": display,
                                              "output": ui["output"] if ui else None,
                                              "prompt_id": run.prompt_id})
            registry.finish_progress(node_id)
            return SUCCESS

        inputs: dict[str, list[Any]] = {}
        if node_id in run.pending_async:  # branch 2: async tasks finished
            items = run.pending_async.pop(node_id)
            results = [t.result() if isinstance(t, asyncio.Task) else t for t in items]
            outputs, uis, subgraphs = self._process(run, ndef, results)
        elif node_id in run.pending_subgraph:  # branch 3: expansion finished
            items = run.pending_subgraph.pop(node_id)
            if run.consumers is not None:
                run.release_after = [o[0] for kind, value in items if kind == "subgraph" for o in value if is_link(o)]
            resolved = []
            for kind, value in items:
                if kind == "subgraph":
                    tup = []
                    for o in value:
                        if is_link(o):
                            src = run.outputs.get(o[0])
                            tup.extend(src[o[1]] if src is not None and o[1] < len(src) else [None])
                        else:
                            tup.append(o)
                    resolved.append(("out", tuple(tup)))
                else:
                    resolved.append((kind, value))
            outputs = _merge(resolved, ndef)
            uis, subgraphs = [], None
        else:  # branch 4: a fresh run
            registry.start_progress(node_id)
            inputs = self._resolve_inputs(run, node_id, node, ndef)
            run.state.last_node_id = display
            self._to_client(run, "executing", {"node": node_id, "display_node": display,
                                               "prompt_id": run.prompt_id})
            instance = None
            if not ndef.is_v3:
                instance = self.objects.get(node_id, class_type)
                if instance is None:
                    instance = ndef.new_instance()
                    self.objects.set(node_id, class_type, instance)
            hidden = ndef.hidden_values(node_id, run)
            try:
                if ndef.lazy_hook:
                    needed = await self._check_lazy(run, node_id, node, ndef, instance, inputs, hidden)
                    if needed:
                        for name in needed:
                            elist.make_input_strong_link(node_id, name)
                        return PENDING
                results, has_tasks = await self._call(run, node_id, ndef, instance, inputs, hidden)
            except Exception as exc:
                exc._ck_inputs = inputs  # type: ignore[attr-defined]
                raise
            if has_tasks:
                run.pending_async[node_id] = results
                unblock = elist.add_external_block(node_id)
                tasks = [t for t in results if isinstance(t, asyncio.Task)]

                def done(_fut: Any, tasks: list = tasks) -> None:
                    if all(t.done() for t in tasks):
                        unblock()

                for t in tasks:
                    t.add_done_callback(done)
                return PENDING
            try:
                outputs, uis, subgraphs = self._process(run, ndef, results)
            except Exception as exc:
                exc._ck_inputs = inputs  # type: ignore[attr-defined]
                raise

        ui_record = None
        if uis:
            merged = _merge_ui(uis)
            if merged:
                dp = dynprompt
                ui_record = {"meta": {"node_id": node_id, "display_node": display,
                                      "parent_node": dp.get_parent_node_id(node_id),
                                      "real_node_id": dp.get_real_node_id(node_id)}, "output": merged}
                run.ui[node_id] = ui_record
                self._to_client(run, "executed", {"node": node_id, "display_node": display, "output": merged,
                                                  "prompt_id": run.prompt_id})
                if self.notify_executed is not None:
                    self.notify_executed({"prompt_id": run.prompt_id, "node": node_id, "display_node": display,
                                          "output": merged, "owner": getattr(run, "owner", None)})
        if subgraphs:
            await self._expand(run, elist, node_id, ndef, subgraphs)
            return PENDING
        run.outputs[node_id] = outputs
        assert run.keys is not None
        self.cache.set(run.keys.key(node_id), CacheEntry(outputs, ui_record))
        registry.finish_progress(node_id)
        if node_id not in run.executed_set:
            run.executed_set.add(node_id)
            run.executed.append(node_id)
        return SUCCESS

    def _resolve_inputs(self, run: Run, node_id: str, node: dict[str, Any], ndef: NodeDef) -> dict[str, list[Any]]:
        values: dict[str, list[Any]] = {}
        outputs = run.outputs
        declared, hidden_decl, raw = ndef.expand(node["inputs"]).declared, ndef.hidden, ndef.raw_link
        for name, value in node["inputs"].items():
            if is_link(value) and name not in raw:
                src = outputs.get(value[0])
                slot = value[1]
                values[name] = src[slot] if src is not None and slot < len(src) else [None]
            elif name in declared or name in hidden_decl or ndef.accept_all:
                values[name] = [value]
        return values

    async def _check_lazy(self, run: Run, node_id: str, node: dict[str, Any], ndef: NodeDef, instance: Any,
                          inputs: dict[str, list[Any]], hidden: dict[str, Any]) -> list[str]:
        kwargs = dict(inputs)
        for name in ndef.lazy:
            if name not in kwargs:
                pass
        if not ndef.is_v3:
            for k, v in hidden.items():
                kwargs[k] = [v]
        fn = ndef.bind("lazy", instance, hidden)
        names: list[str] = []
        for index, item in enumerate(_items(kwargs, ndef.input_is_list)):
            if _blocked(item, ndef.input_is_list):
                continue
            throw_exception_if_processing_interrupted()
            with _Context(run.prompt_id, node_id, index):
                result = fn(**item)
                if inspect.isawaitable(result):
                    result = await result
            if isinstance(result, list):
                names.extend(n for n in result if isinstance(n, str) and n not in names)
        links = node["inputs"]
        outputs = run.outputs
        return [n for n in names
                if n not in links or (is_link(links[n]) and n not in ndef.raw_link and links[n][0] not in outputs)]

    async def _call(self, run: Run, node_id: str, ndef: NodeDef, instance: Any, inputs: dict[str, list[Any]],
                    hidden: dict[str, Any]) -> tuple[list[Any], bool]:
        kwargs = inputs
        if not ndef.is_v3 and hidden:
            kwargs = dict(inputs)
            for k, v in hidden.items():
                kwargs[k] = [v]
        fn = ndef.bind("function", instance, hidden)
        is_async = inspect.iscoroutinefunction(fn)
        results: list[Any] = []
        has_tasks = False
        prompt_id = run.prompt_id
        for index, item in enumerate(_items(kwargs, ndef.input_is_list)):
            if _blocked(item, ndef.input_is_list):
                blocker = _first_blocker(item)
                if blocker.message is not None:
                    self._blocked_message(run, node_id, blocker.message)
                results.append(ExecutionBlocker(None))
                continue
            throw_exception_if_processing_interrupted()
            if is_async:
                task = asyncio.get_running_loop().create_task(_run_async_item(fn, item, prompt_id, node_id, index))
                run.tasks.append(task)
                results.append(task)
                has_tasks = True
                continue
            token = _executing.set(ExecutionContext(prompt_id, node_id, index))
            GraphBuilder.set_default_prefix(node_id, index, 0)
            try:
                results.append(_inference(fn, item) if run.torch_late else fn(**item))
            finally:
                _executing.reset(token)
        if has_tasks:
            await asyncio.sleep(0)
            if all(not isinstance(r, asyncio.Task) or r.done() for r in results):
                return [r.result() if isinstance(r, asyncio.Task) else r for r in results], False
        return results, has_tasks

    def _blocked_message(self, run: Run, node_id: str, message: str) -> None:
        real = run.dynprompt.get_real_node_id(node_id)
        run.state.send("execution_error", {
            "prompt_id": run.prompt_id, "node_id": real, "node_type": run.dynprompt.get_node(real)["class_type"],
            "executed": list(run.executed), "exception_message": f"Execution Blocked: {message}",
            "exception_type": "ExecutionBlocked", "traceback": [], "current_inputs": [], "current_outputs": []}, True)

    def _process(self, run: Run, ndef: NodeDef, results: list[Any]) -> tuple[list[list[Any]], list[dict], list | None]:
        """Normalise per-item returns (spec §2.7) → merged outputs, UI dicts, expansion items."""
        items: list[tuple[str, Any]] = []
        uis: list[dict[str, Any]] = []
        has_subgraph = False
        n_slots = len(ndef.cls.RETURN_TYPES)
        for r in results:
            if ndef.is_v3 and not isinstance(r, (dict, ExecutionBlocker)):
                from .nodeclass import v3_to_classic
                r = v3_to_classic(r)
            if isinstance(r, ExecutionBlocker):
                items.append(("out", (r,) * n_slots))
            elif isinstance(r, dict):
                if r.get("ui"):
                    uis.append(r["ui"])
                if "expand" in r:
                    if ndef.is_v3 and not ndef.enable_expand:
                        raise RuntimeError("Node returned an expansion but its schema does not enable_expand")
                    has_subgraph = True
                    res = r.get("result", ())
                    if isinstance(res, ExecutionBlocker):
                        res = (res,) * n_slots
                    items.append(("subgraph", (tuple(res), r["expand"])))
                elif "result" in r:
                    res = r["result"]
                    items.append(("out", (res,) * n_slots if isinstance(res, ExecutionBlocker) else tuple(res)))
                else:
                    items.append(("none", None))
            elif isinstance(r, (tuple, list)):
                items.append(("out", tuple(r)))
            elif r is None:
                raise TypeError(f"Node {ndef.class_type} returned None; expected a tuple or a dict")
            else:
                raise TypeError(f"Node {ndef.class_type} returned an invalid value of type {type(r).__name__}")
        if has_subgraph:
            return [], uis, items
        return _merge(items, ndef), uis, None

    async def _expand(self, run: Run, elist: ExecutionList, node_id: str, ndef: NodeDef, items: list) -> None:
        dynprompt = run.dynprompt
        new_ids: list[str] = []
        stored: list[tuple[str, Any]] = []
        for kind, value in items:
            if kind != "subgraph":
                stored.append((kind, value))
                continue
            result, graph = value
            for nid, info in graph.items():
                if dynprompt.has_node(nid):
                    raise DuplicateNodeError(f"Attempt to add duplicate node {nid}. Ensure node ids are unique and "
                                             "deterministic or use graph_utils.GraphBuilder.")
                display = info.get("override_display_id", node_id)
                dynprompt.add_ephemeral_node(nid, info, node_id, display)
                new_ids.append(nid)
            stored.append(("subgraph", result))
        keys = run.keys
        assert keys is not None
        for nid in new_ids:
            nd = run.node_def(nid)
            if nd is not None and nd.is_changed is not None:
                keys.fingerprints[nid] = await self._fingerprint(run, nid, dynprompt.get_node(nid), nd)
        new_keys = {nid: keys.key(nid) for nid in new_ids}
        for nid, key in new_keys.items():
            entry = self.cache.get(key)
            if entry is not None:
                run.outputs[nid] = entry.outputs
                if entry.ui is not None:
                    run.ui[nid] = entry.ui
        if run.consumers is not None:
            self._add_consumers(run, {nid: dynprompt.get_node(nid) for nid in new_ids})
            for kind, value in stored:
                if kind == "subgraph":
                    for o in value:
                        if is_link(o):
                            run.held[o[0]] = run.held.get(o[0], 0) + 1
        real = dynprompt.get_real_node_id(node_id)
        self.cache.register_expansion(node_id, (real, dynprompt.get_node(real)["class_type"]), new_keys)
        for nid in new_ids:
            nd = run.node_def(nid)
            if nd is not None and nd.is_output:
                elist.add_node(nid)
        for kind, value in stored:
            if kind == "subgraph":
                for o in value:
                    if is_link(o):
                        elist.add_strong_link(o[0], o[1], node_id)
        run.pending_subgraph[node_id] = stored

    # -- --cache-none: drop outputs early (spec §5.11 "None") ---------------------------------------

    @staticmethod
    def _add_consumers(run: Run, nodes: dict[str, Any]) -> None:
        consumers = run.consumers
        assert consumers is not None
        for nid, node in nodes.items():
            for value in node["inputs"].values():
                if is_link(value):
                    consumers.setdefault(value[0], set()).add(nid)

    def _release(self, run: Run, node_id: str) -> None:
        """Drop outputs nobody in this prompt will read again, so peak memory stays low.

        Called after ``node_id`` finished. A candidate (the node itself, its sources,
        and the results an expansion just handed back) is dropped once every node
        that links to it has finished and no pending expansion still holds it. If a
        later expansion links to a dropped node anyway, the node is simply executed
        again (it is no longer "cached" for the execution list), so results stay right.
        """
        consumers, finished, held, outputs = run.consumers, run.finished, run.held, run.outputs
        assert consumers is not None
        finished.add(node_id)
        candidates = [node_id]
        for value in run.dynprompt.get_node(node_id)["inputs"].values():
            if is_link(value):
                candidates.append(value[0])
        released = run.release_after
        if released:
            run.release_after = []
            for src in released:
                held[src] -= 1
                if not held[src]:
                    del held[src]
                candidates.append(src)
        for src in candidates:
            if src in outputs and src not in held and consumers.get(src, set()) <= finished:
                del outputs[src]

    # -- failures ------------------------------------------------------------------------------

    def _failed(self, run: Run, node_id: str, exc: BaseException, inputs: dict[str, list[Any]]) -> None:
        real = run.dynprompt.get_real_node_id(node_id)
        message = f"{exc}\n"
        if _is_oom(exc):
            message = f"{exc}\n{OOM_TIPS}"
            try:
                from .. import gpu
                gpu.model_manager().unload_all()
            except Exception:
                pass
        current_inputs = {name: [v if v is None or isinstance(v, (int, float, bool, str)) else str(v) for v in vals]
                          for name, vals in inputs.items()}
        log.error("!!! Exception during processing !!! %s", exc, exc_info=exc)
        self._emit(run, "execution_error", {
            "prompt_id": run.prompt_id, "node_id": real, "node_type": run.dynprompt.get_node(real)["class_type"],
            "executed": list(run.executed), "exception_message": message,
            "exception_type": exception_type_name(exc), "traceback": traceback.format_tb(exc.__traceback__),
            "current_inputs": current_inputs, "current_outputs": list(run.prompt)})

    def _interrupted(self, run: Run, node_id: str) -> None:
        real = run.dynprompt.get_real_node_id(node_id)
        self._emit(run, "execution_interrupted", {
            "prompt_id": run.prompt_id, "node_id": real, "node_type": run.dynprompt.get_node(real)["class_type"],
            "executed": list(run.executed)}, broadcast=True)

    # -- history -------------------------------------------------------------------------------------

    def _history_result(self, run: Run) -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        for node_id in list(run.prompt) + list(run.dynprompt.ephemeral_prompt):
            record = run.ui.get(node_id)
            if record is not None:
                outputs[node_id] = record["output"]
                meta[node_id] = record["meta"]
        failed = not run.success
        return {"outputs": outputs, "meta": meta,
                "status": {"status_str": "error" if failed else "success", "completed": not failed,
                           "messages": run.messages},
                "nodes": run.times.report(_ClassOf(run.dynprompt), run.cached)}


class _ClassOf:
    """Node id -> class type, holding only the run's graph (not its outputs) while a report lives."""

    __slots__ = ("dynprompt",)

    def __init__(self, dynprompt: DynamicPrompt):
        self.dynprompt = dynprompt

    def __call__(self, node_id: str) -> str | None:
        try:
            return self.dynprompt.get_node(node_id)["class_type"]
        except Exception:
            return None


# --- list mapping helpers (spec §5.6) ---------------------------------------------------------------


def _items(inputs: dict[str, list[Any]], input_is_list: bool):
    """Per-call keyword arguments: whole lists, or element i (the last one for short lists)."""
    if input_is_list:
        yield inputs
        return
    if not inputs:
        yield {}
        return
    n = max(len(v) for v in inputs.values())
    if n == 0:
        yield {}
        return
    if n == 1:
        yield {k: v[0] for k, v in inputs.items()}
        return
    for i in range(n):
        yield {k: v[i] if i < len(v) else v[-1] for k, v in inputs.items()}


def _blocked(item: dict[str, Any], input_is_list: bool) -> bool:
    if input_is_list:
        return any(isinstance(x, ExecutionBlocker) for v in item.values() if isinstance(v, list) for x in v)
    return any(isinstance(v, ExecutionBlocker) for v in item.values())


def _first_blocker(item: dict[str, Any]) -> ExecutionBlocker:
    for v in item.values():
        if isinstance(v, ExecutionBlocker):
            return v
        if isinstance(v, list):
            for x in v:
                if isinstance(x, ExecutionBlocker):
                    return x
    return ExecutionBlocker(None)


def _merge(items: list[tuple[str, Any]], ndef: NodeDef) -> list[list[Any]]:
    tuples = [v for kind, v in items if kind == "out"]
    if not tuples:
        return []
    n = len(tuples[0])
    is_list = ndef.output_is_list
    if is_list and len(is_list) < n:
        n = len(is_list)
    merged: list[list[Any]] = []
    for slot in range(n):
        if is_list and is_list[slot]:
            out: list[Any] = []
            for t in tuples:
                value = t[slot]
                if isinstance(value, ExecutionBlocker):
                    out.append(value)
                else:
                    out.extend(value)
            merged.append(out)
        else:
            merged.append([t[slot] for t in tuples])
    return merged


def _merge_ui(uis: list[dict[str, Any]]) -> dict[str, Any]:
    if len(uis) == 1:
        return dict(uis[0])
    merged: dict[str, Any] = {}
    for key in uis[0]:
        merged[key] = [x for ui in uis for x in ui[key]]
    return merged


class _Context:
    __slots__ = ("ctx", "token")

    def __init__(self, prompt_id: str, node_id: str, index: int | None):
        self.ctx = ExecutionContext(prompt_id, node_id, index)

    def __enter__(self) -> None:
        self.token = _executing.set(self.ctx)

    def __exit__(self, *exc: Any) -> None:
        _executing.reset(self.token)


def _inference(fn: Any, kwargs: dict[str, Any]) -> Any:
    """``fn(**kwargs)`` under ``torch.inference_mode()`` once torch is loaded, as every node runs in ComfyUI.

    A run that started before torch was imported (the first prompt after
    start-up, while the warm-up still imports it) could not enter inference
    mode up front: its nodes after the one that imported torch enter it here.
    Without it they ran with autograd's bookkeeping, left normal tensors in
    the cache, and ``serve --compile`` compiled the network twice, the second
    time without frozen weights.
    """
    torch = loaded_torch()
    if torch is None:
        return fn(**kwargs)
    with torch.inference_mode():
        return fn(**kwargs)


async def _run_async_item(fn: Any, kwargs: dict[str, Any], prompt_id: str, node_id: str, index: int) -> Any:
    _executing.set(ExecutionContext(prompt_id, node_id, index))
    GraphBuilder.set_default_prefix(node_id, index, 0)
    return await fn(**kwargs)


def _is_oom(exc: BaseException) -> bool:
    name = type(exc).__name__
    return name in ("OutOfMemoryError", "OutOfMemory") or (isinstance(exc, RuntimeError)
                                                          and "out of memory" in str(exc).lower())
