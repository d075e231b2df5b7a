"""Start Loop and End Loop (current ComfyUI's ``comfy_extras.nodes_loop``), and the nodes their loops unroll into.

The kernel pairs the two and hands the loop body to the start node
(``comfy_kernel.execution.loops``). When Start Loop runs it knows how many
iterations there are, so it expands into the body copied once per iteration:

    LoopIteration(i) -> body copy i -> LoopProgress(i) -> LoopIteration(i+1) -> ...

Each copy reads the iteration's index, list item and carried value from its
LoopIteration node, and the next iteration waits for the previous one's
``output_value``, ``next_iteration_value`` and terminations, so iterations
run in order and the carried value flows from one to the next. LoopCollect
gathers every iteration's ``output_value`` and Start Loop returns it at its
output 0, which End Loop reads: the last iteration's values, or all of them
with ``accumulate``. Nodes of the body that are output nodes (a preview in the
loop) run in every iteration. With ``cache_iterations`` the copies keep their
cache keys between prompts, so unchanged iterations are not run again.
"""

from __future__ import annotations

from typing import Any

from comfy_kernel.execution.loops import RESULT_INPUT
from comfy_kernel.nodes import io
from comfy_kernel.nodes.graph_utils import GraphBuilder, is_link
from comfy_kernel.progress import send_progress_text

from .common import NodeDef

NAN = float("nan")


def _first(value: Any, default: Any = None) -> Any:
    """The single value of an input-list input (``[v]``), or ``default`` when absent."""
    if isinstance(value, list):
        return value[0] if value else default
    return default if value is None else value


def iteration_values(mode: dict[str, Any]) -> tuple[list[int], list[Any] | None]:
    """The loop's ``iteration_index`` values and, in List mode, its items."""
    kind = _first(mode.get("mode"), "simple")
    if kind == "simple":
        return list(range(_first(mode.get("num_iterations"), 4))), None
    if kind == "For":
        step = _first(mode.get("step"), 1)
        if step == 0:
            raise ValueError("Start Loop step must not be 0")
        start, stop = _first(mode.get("start_iteration_index"), 0), _first(mode.get("max_iteration"), 4)
        return list(range(start, stop, step)), None
    items = list(mode.get("list") or [])
    return list(range(len(items))), items


def unroll(dynprompt: Any, start_id: str, values: list[int], with_items: bool, reuse: bool) -> tuple[dict, list]:
    """The graph Start Loop ``start_id`` expands into, and the link of what End Loop returns."""
    start = dynprompt.get_node(start_id)
    body, end_id = start["_loop_body"], start["_loop_end"]
    end = dynprompt.get_node(end_id)
    sources = {**end["inputs"], **end.get("_loop_inputs", {})}
    output_source, next_source = sources.get("output_value"), sources.get("next_iteration_value")
    terminations = [v for k, v in sorted(sources.items()) if k.startswith("terminations.") and is_link(v)]
    carry = start["inputs"].get("initial_iteration_value")
    list_source = start["inputs"].get("mode.list") if with_items else None
    shown = dynprompt.get_display_node_id

    graph = GraphBuilder()
    extras: dict[str, dict[str, Any]] = {}
    collected: list[list[Any]] = []
    waits: list[list[Any]] = []  # what the next iteration waits for
    progress = None
    for position, value in enumerate(values):
        inputs = {"iteration_index": value, "is_first": position == 0, "is_last": position == len(values) - 1,
                  "reuse_cache": reuse, **{f"dependency{i}": link for i, link in enumerate(waits)}}
        if carry is not None:
            inputs["current_iteration_value"] = carry
        if list_source is not None:
            inputs.update(list_item=list_source, list_index=position)
        iteration = graph.node("LoopIteration", f"iteration_{position}", **inputs)
        iteration.set_override_display_id(shown(start_id))
        copies = {nid: graph.node(dynprompt.get_node(nid)["class_type"], f"{position}_{nid}") for nid in body}

        def copied(link: Any, iteration: Any = iteration, copies: dict = copies) -> Any:
            if not is_link(link):
                return link
            if link[0] == start_id:
                return iteration.out(link[1])
            if link[0] in copies:
                return copies[link[0]].out(link[1])
            return link

        for nid, copy in copies.items():
            original = dynprompt.get_node(nid)
            for name, link in original["inputs"].items():
                copy.set_input(name, copied(link))
            copy.set_override_display_id(shown(nid))
            if "_loop_body" in original:  # an inner loop's start and end: their annotations follow the copies
                extras[copy.id] = {"_loop_body": [copies[b].id for b in original["_loop_body"]],
                                   "_loop_end": copies[original["_loop_end"]].id}
            if "_loop_inputs" in original:
                extras[copy.id] = {"_loop_inputs": {k: copied(v) for k, v in original["_loop_inputs"].items()}}

        waits = [copied(t) for t in terminations]
        if is_link(next_source):
            carry = copied(next_source)
            waits.insert(0, carry)
        if is_link(output_source):
            collected.append(copied(output_source))
            waits.insert(0, collected[-1])
        marker = {"previous_progress": progress} if progress is not None else {}
        progress = graph.node("LoopProgress", f"progress_{position}", start_id=shown(start_id),
                              position=position + 1, total=len(values), **marker,
                              **{f"dependency{i}": link for i, link in enumerate(waits)}).out(0)

    after = {"progress": progress} if progress is not None else {}
    result = graph.node("LoopCollect", "result", iterations=len(values), **after,
                        **{f"output{i}": link for i, link in enumerate(collected)})
    expanded = graph.finalize()
    for node_id, extra in extras.items():
        expanded[node_id].update(extra)
    return expanded, result.out(0)


class StartLoop(io.ComfyNode):
    """Opens a loop: the nodes between it and its End Loop run once per iteration."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        item_type, carried = io.MatchType.Template("list_item"), io.MatchType.Template("carried_value")
        return io.Schema(
            node_id="StartLoop", display_name="Start Loop", category="utilities/looping", loop_boundary="start",
            is_input_list=True, enable_expand=True,
            inputs=[
                io.DynamicCombo.Input("mode", options=[
                    io.DynamicCombo.Option("simple", [io.Int.Input("num_iterations", default=4, min=0)]),
                    io.DynamicCombo.Option("For", [
                        io.Int.Input("start_iteration_index", default=0),
                        io.Int.Input("max_iteration", default=4, max=0xFFFFFFFFFFFFFFFF),
                        io.Int.Input("step", default=1, min=1),
                    ]),
                    io.DynamicCombo.Option("List", [io.MatchType.Input("list", template=item_type)]),
                ], tooltip="How the iterations are counted: a number of times, a range, or one per list item."),
                io.Boolean.Input("cache_iterations", default=False, advanced=True,
                                 tooltip="Keep unchanged iterations' results between runs instead of running "
                                         "every iteration again."),
                io.Int.Input("parent_iteration", optional=True, force_input=True,
                             tooltip="Link an outer Start Loop's iteration_index here to nest this loop in it."),
                io.MatchType.Input("initial_iteration_value", template=carried, optional=True,
                                   tooltip="current_iteration_value in the first iteration."),
            ],
            outputs=[
                io.Int.Output("iteration_index", tooltip="This iteration's index."),
                io.Boolean.Output("is_first", tooltip="True in the first iteration."),
                io.Boolean.Output("is_last", tooltip="True in the last iteration."),
                io.MatchType.Output(item_type, id="list_item",
                                    tooltip="This iteration's list item (List mode; None otherwise)."),
                io.MatchType.Output(carried, id="current_iteration_value",
                                    tooltip="initial_iteration_value first, then the previous iteration's "
                                            "next_iteration_value."),
            ],
            hidden=[io.Hidden.dynprompt, io.Hidden.execution_list, io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, mode: dict[str, Any], cache_iterations: list[bool] | None = None,
                parent_iteration: list[int] | None = None,
                initial_iteration_value: list[Any] | None = None) -> io.NodeOutput:
        values, items = iteration_values(mode)
        start_id = cls.hidden.unique_id
        dynprompt = cls.hidden.dynprompt
        if "_loop_body" not in dynprompt.get_node(start_id):
            raise RuntimeError(f"Start Loop {start_id} ran without its loop (the prompt was not prepared)")
        graph, result = unroll(dynprompt, start_id, values, items is not None, bool(_first(cache_iterations, False)))
        send_progress_text(f"Iteration 0 / {len(values)}", dynprompt.get_display_node_id(start_id))
        return io.NodeOutput(result, False, not values, None, None, expand=graph)

    @classmethod
    def fingerprint_inputs(cls, **kwargs: Any) -> float:
        return NAN


class EndLoop(io.ComfyNode):
    """Closes a loop and gives out its result: the last iteration's output_value, or every iteration's."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        output_type, carried = io.MatchType.Template("output_value"), io.MatchType.Template("carried_value")
        terminations = io.Autogrow.TemplatePrefix(
            io.AnyType.Input("termination", tooltip="An output that must be computed in every iteration; its "
                                                    "value is not returned."),
            prefix="termination", min=0, max=50)
        return io.Schema(
            node_id="EndLoop", display_name="End Loop", category="utilities/looping", loop_boundary="end",
            is_input_list=True,
            inputs=[
                io.MatchType.Input("output_value", template=output_type, optional=True,
                                   tooltip="The value End Loop returns (last iteration, or all with accumulate)."),
                io.MatchType.Input("next_iteration_value", template=carried, optional=True,
                                   tooltip="Becomes Start Loop's current_iteration_value in the next iteration."),
                io.Boolean.Input("accumulate", default=False,
                                 tooltip="Return output_value of every iteration instead of the last one."),
                io.Autogrow.Input("terminations", template=terminations, optional=True,
                                  tooltip="Outputs that must be computed in every iteration."),
            ],
            outputs=[io.MatchType.Output(output_type, id="outputs", is_output_list=True,
                                         tooltip="The last iteration's output_value, or all of them.")],
            hidden=[io.Hidden.execution_list, io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, accumulate: list[bool], **kwargs: Any) -> io.NodeOutput:
        if RESULT_INPUT not in kwargs:
            raise RuntimeError(f"End Loop {cls.hidden.unique_id} ran without its Start Loop")
        iterations = _first(kwargs[RESULT_INPUT], None) or []
        if _first(accumulate, False):
            return io.NodeOutput([value for values in iterations for value in values])
        return io.NodeOutput(list(iterations[-1]) if iterations else [])


class LoopIteration(io.ComfyNode):
    """One iteration's view of Start Loop's outputs (made by the unrolling, never by hand)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoopIteration", is_input_list=True, is_dev_only=True, accept_all_inputs=True,
            inputs=[io.Int.Input("iteration_index"), io.Boolean.Input("is_first"), io.Boolean.Input("is_last"),
                    io.AnyType.Input("list_item", optional=True),
                    io.AnyType.Input("current_iteration_value", optional=True),
                    io.Boolean.Input("reuse_cache")],
            outputs=[io.Int.Output(), io.Boolean.Output(), io.Boolean.Output(), io.AnyType.Output(),
                     io.AnyType.Output(is_output_list=True)],
        )

    @classmethod
    def execute(cls, iteration_index: list[int], is_first: list[bool], is_last: list[bool],
                reuse_cache: list[bool], list_item: list[Any] | None = None,
                current_iteration_value: list[Any] | None = None, list_index: list[int] | None = None,
                **dependencies: Any) -> io.NodeOutput:
        item = None
        if list_item:
            item = list_item[list_index[0]] if list_index else list_item[0]
        carried = current_iteration_value if current_iteration_value is not None else [None]
        return io.NodeOutput(iteration_index[0], is_first[0], is_last[0], item, carried)

    @classmethod
    def fingerprint_inputs(cls, reuse_cache: list[bool], **kwargs: Any) -> float | None:
        return None if _first(reuse_cache, False) else NAN


class LoopProgress(io.ComfyNode):
    """Shows "Iteration k / n" on Start Loop once iteration k is done."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoopProgress", is_input_list=True, is_output_node=True, is_dev_only=True,
            accept_all_inputs=True,
            inputs=[io.String.Input("start_id"), io.Int.Input("position"), io.Int.Input("total")],
            outputs=[io.Int.Output()],
        )

    @classmethod
    def execute(cls, start_id: list[str], position: list[int], total: list[int], **dependencies: Any) -> io.NodeOutput:
        send_progress_text(f"Iteration {position[0]} / {total[0]}", start_id[0])
        return io.NodeOutput(position[0])

    @classmethod
    def fingerprint_inputs(cls, **kwargs: Any) -> float:
        return NAN


class LoopCollect(io.ComfyNode):
    """Every iteration's output_value, as one list of per-iteration value lists (Start Loop's output 0)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LoopCollect", category="utilities/looping", is_input_list=True,
                         is_dev_only=True, accept_all_inputs=True,
                         inputs=[io.Int.Input("iterations", default=0, min=0)],
                         outputs=[io.AnyType.Output()])

    @classmethod
    def execute(cls, iterations: list[int], **inputs: Any) -> io.NodeOutput:
        return io.NodeOutput([inputs[f"output{i}"] for i in range(iterations[0]) if f"output{i}" in inputs])

    @classmethod
    def fingerprint_inputs(cls, **kwargs: Any) -> float:
        return NAN


NODES = [
    NodeDef("StartLoop", StartLoop, "Start Loop", "comfy_extras.nodes_loop"),
    NodeDef("EndLoop", EndLoop, "End Loop", "comfy_extras.nodes_loop"),
    NodeDef("LoopIteration", LoopIteration, None, "comfy_extras.nodes_loop"),
    NodeDef("LoopProgress", LoopProgress, None, "comfy_extras.nodes_loop"),
    NodeDef("LoopCollect", LoopCollect, None, "comfy_kernel_core_nodes.nodes.loops"),
]
