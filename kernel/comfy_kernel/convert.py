"""UI-format workflow (``nodes``/``links``) to API-format prompt, on the server.

ComfyUI does this only in the browser, which is why a saved workflow cannot
be queued by id there. Here it serves the hub's queue-by-id routes and
``comfy-kernel run``. The rules follow what the frontend sends:

* Widget values map to inputs in the node's input order from
  ``/object_info`` (required, then optional), counting only widget inputs
  (``INT``, ``FLOAT``, ``STRING``, ``BOOLEAN``, ``COMBO`` and option lists,
  the frontend's ``COLOR``, ``CURVE``, ``BOUNDING_BOX(ES)`` widgets, not
  ``forceInput`` ones). A V3 dynamic combo stores its choice followed by the
  values of that choice's own widgets (named ``<combo>.<widget>``). An
  ``advanced`` widget with no stored value (one added to the node after the
  workflow was saved) takes its default, as the frontend does; list values
  are sent as ``{"__value__": [...]}`` like the frontend sends them. The extra value a ``control_after_generate``
  widget stores after its number/combo, and the upload button's value after
  an ``image_upload``-style combo, are skipped. ``dynamicPrompts`` text
  widgets get their ``{a|b}`` choices made and comments removed.
* A link becomes ``[source node id, output slot]``. Reroutes are followed
  to their source; a ``PrimitiveNode`` source becomes its value.
* Muted nodes (mode 2) are left out and their outputs are absent. Bypassed
  nodes (mode 4) are left out and pass through: an output takes the input of
  the same type (same slot first), as the frontend does.
* Subgraphs are flattened: an instance's inner node ``7`` of instance ``12``
  becomes ``"12:7"`` (nested: ``"12:5:7"``), subgraph inputs lead to what
  is linked to the instance (or its widget value), subgraph outputs to what
  is linked to the output node inside.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

MUTED, BYPASSED = 2, 4
SUBGRAPH_INPUT_NODE, SUBGRAPH_OUTPUT_NODE = -10, -20
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "COLOR", "CURVE", "BOUNDING_BOX", "BOUNDING_BOXES"}
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
# Widgets the frontend sends but never stores in ``widgets_values``: their constant value.
UNSTORED_WIDGETS = {"IMAGECOMPARE": {"__value__": ["", ""]}}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
UPLOAD_VALUES = {"image", "video", "audio", "mesh", "file", None, ""}
# Frontend-only nodes: never sent to the server.
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode", "Label (rgthree)"}


#: Widgets the frontend itself adds to a node, beyond its declared inputs: the names of the values that
#: follow the declared ones in ``widgets_values`` and are sent with the prompt (any further values are the
#: frontend's own, such as CustomCombo's option texts, and are not).
FRONTEND_WIDGETS = {"CustomCombo": ("index",)}


class ConversionError(ValueError):
    """The input is not a workflow that can be converted."""


@dataclass
class Graph:
    """One graph level: the top-level workflow or a subgraph definition."""

    nodes: dict[str, dict[str, Any]]
    links: dict[str, dict[str, Any]]
    definition: dict[str, Any] | None = None


@dataclass
class Context:
    """A graph as instantiated at one place: its id prefix and the instance that holds it."""

    graph: Graph
    prefix: str = ""
    parent: Context | None = None
    instance: dict[str, Any] | None = None
    depth: int = 0


@dataclass
class Result:
    prompt: dict[str, Any] = field(default_factory=dict)
    missing_nodes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _link_dict(link: Any) -> dict[str, Any] | None:
    if isinstance(link, dict):
        return link
    if isinstance(link, list) and len(link) >= 5:
        return {"id": link[0], "origin_id": link[1], "origin_slot": link[2], "target_id": link[3],
                "target_slot": link[4], "type": link[5] if len(link) > 5 else None}
    return None


def _graph(data: dict[str, Any]) -> Graph:
    nodes = {str(n["id"]): n for n in data.get("nodes") or [] if isinstance(n, dict) and "id" in n}
    links = {}
    for raw in data.get("links") or []:
        link = _link_dict(raw)
        if link is not None:
            links[str(link["id"])] = link
    return Graph(nodes, links, data)


def is_api_format(workflow: dict[str, Any]) -> bool:
    return "nodes" not in workflow and bool(workflow) and all(
        isinstance(v, dict) and "class_type" in v for v in workflow.values())


def widget_inputs(info: dict[str, Any], *, with_forced: bool = False) -> list[tuple[str, Any, dict[str, Any]]]:
    """The node's widget inputs in widget order: ``(name, type, options)``.

    ``with_forced`` also lists widget-typed ``forceInput`` inputs: older
    frontends stored a value for those too (the frontend migrates such
    workflows on load, and so does the converter).
    """
    inputs = info.get("input") or {}
    order = info.get("input_order") or {k: list((inputs.get(k) or {}).keys()) for k in ("required", "optional")}
    out = []
    for section in ("required", "optional"):
        specs = inputs.get(section) or {}
        for name in order.get(section) or []:
            spec = specs.get(name)
            if not isinstance(spec, (list, tuple)) or not spec:
                continue
            kind = spec[0]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if options.get("forceInput") and not with_forced:
                continue
            if isinstance(kind, list) or (isinstance(kind, str) and kind in WIDGET_TYPES | {DYNAMIC_COMBO}):
                out.append((name, kind, options))
    return out


def optional_widget_names(inputs: dict[str, Any], prefix: str = "") -> set[str]:
    """Names of the optional inputs, those inside dynamic combo options too (named ``combo.input``)."""
    names = {prefix + name for name in (inputs.get("optional") or {})}
    for section in ("required", "optional"):
        for name, spec in (inputs.get(section) or {}).items():
            if isinstance(spec, (list, tuple)) and len(spec) > 1 and spec[0] == DYNAMIC_COMBO:
                for option in (spec[1] or {}).get("options") or []:
                    names |= optional_widget_names(option.get("inputs") or {}, f"{prefix}{name}.")
    return names


def unstored_widgets(info: dict[str, Any]) -> dict[str, Any]:
    """Required inputs whose widget the frontend always sends without storing it, with that value."""
    required = (info.get("input") or {}).get("required") or {}
    return {name: UNSTORED_WIDGETS[spec[0]] for name, spec in required.items()
            if isinstance(spec, (list, tuple)) and spec and isinstance(spec[0], str) and spec[0] in UNSTORED_WIDGETS}


_COMMENTS = re.compile(r"/\*[\s\S]*?\*/|//[^\n]*")
_ESCAPED = re.compile(r"\\([{}|])")


def dynamic_prompt(text: str, rng: random.Random) -> str:
    """Expand ``{a|b|c}`` choices (nested, ``\\`` escapes) and drop ``//`` and ``/* */`` comments.

    The frontend does this to text widgets whose spec says
    ``dynamicPrompts`` when it queues; a workflow queued by id gets the same.
    """
    text = _COMMENTS.sub("", text)
    return _ESCAPED.sub(r"\1", _expand(text, rng))


def _expand(text: str, rng: random.Random) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            out.append(text[i:i + 2])
            i += 2
        elif char == "{":
            choices, current, depth, i = [], [], 0, i + 1
            while i < len(text):
                c = text[i]
                if c == "\\" and i + 1 < len(text):
                    current.append(text[i:i + 2])
                    i += 2
                    continue
                i += 1
                if c == "{":
                    depth += 1
                elif c == "}":
                    if depth == 0:
                        break
                    depth -= 1
                elif c == "|" and depth == 0:
                    choices.append("".join(current))
                    current = []
                    continue
                current.append(c)
            choices.append("".join(current))
            out.append(_expand(rng.choice(choices), rng))
        else:
            out.append(char)
            i += 1
    return "".join(out)


def consume_widget_values(values: list[Any], widgets: list[tuple[str, Any, dict[str, Any]]], start: int = 0,
                          prefix: str = "") -> tuple[dict[str, Any], int, list[str]]:
    """Map positional ``widgets_values`` onto widget inputs.

    Returns the values by input name, how many values were used, and the
    inputs that got none. A control value (``fixed``/``randomize``..., or the
    booleans old workflows stored) follows a widget whose spec asks for
    ``control_after_generate``; one also follows any ``INT`` widget when the
    node definition does not say so but the workflow has it. An upload
    button's value follows an ``*_upload`` combo. A dynamic combo's choice is
    followed by its option's widgets (``prefix`` names them).
    """
    out: dict[str, Any] = {}
    missing: list[str] = []
    i = start
    for name, kind, options in widgets:
        if i >= len(values):
            if options.get("advanced") and "default" in options:  # added to the node after the workflow was saved
                out[prefix + name] = options["default"]
            else:
                missing.append(prefix + name)
            continue
        out[prefix + name] = values[i]
        i += 1
        if kind == DYNAMIC_COMBO:
            option = next((o for o in options.get("options") or [] if o.get("key") == values[i - 1]), None)
            if option is not None:
                nested = widget_inputs({"input": option.get("inputs") or {}})
                inner, i, inner_missing = consume_widget_values(values, nested, i, f"{prefix}{name}.")
                out.update(inner)
                missing += inner_missing
            continue
        if i < len(values):
            value = values[i]
            is_control = isinstance(value, str) and value in CONTROL_VALUES
            if options.get("control_after_generate") and (is_control or isinstance(value, bool)):
                i += 1
            elif kind == "INT" and (is_control or (isinstance(value, bool) and name in ("seed", "noise_seed"))):
                i += 1
        if any(key.endswith("_upload") and options.get(key) for key in options):
            if i < len(values) and (values[i] is None or isinstance(values[i], str)) and values[i] in UPLOAD_VALUES:
                i += 1
    return out, i, missing


class Converter:
    """Converts one UI-format workflow with the given ``/object_info`` data."""

    def __init__(self, object_info: dict[str, Any], rng: random.Random | None = None):
        self.info = object_info
        self.rng = rng or random.Random()

    def convert(self, workflow: dict[str, Any]) -> Result:
        if not isinstance(workflow, dict):
            raise ConversionError("a workflow is a JSON object")
        if is_api_format(workflow):
            return Result(prompt=workflow)
        if not isinstance(workflow.get("nodes"), list):
            raise ConversionError("not a UI-format workflow (no nodes list) nor an API-format prompt")
        self.subgraphs = {sg["id"]: sg for sg in (workflow.get("definitions") or {}).get("subgraphs") or []
                          if isinstance(sg, dict) and "id" in sg}
        self.result = Result()
        self._walk(Context(_graph(workflow)))
        return self.result

    # --- emitting nodes --------------------------------------------------------

    def _walk(self, ctx: Context) -> None:
        for node in ctx.graph.nodes.values():
            mode = node.get("mode") or 0
            if mode in (MUTED, BYPASSED):
                continue
            kind = node.get("type")
            if kind in self.subgraphs:
                if ctx.depth > 32:
                    raise ConversionError("subgraphs nest too deeply (or recursively)")
                child = Context(_graph(self.subgraphs[kind]), f"{ctx.prefix}{node['id']}:", ctx, node, ctx.depth + 1)
                self._walk(child)
            elif kind not in VIRTUAL_NODES:
                self._emit(ctx, node)

    def _emit(self, ctx: Context, node: dict[str, Any]) -> None:
        kind = str(node.get("type"))
        info = self.info.get(kind)
        inputs: dict[str, Any] = {}
        if info is None:
            if kind not in self.result.missing_nodes:
                self.result.missing_nodes.append(kind)
        else:
            inputs.update(self._widget_values(node, info))
        for slot in node.get("inputs") or []:
            if not isinstance(slot, dict) or slot.get("link") is None:
                continue
            name = (slot.get("widget") or {}).get("name") or slot.get("name")
            resolved = self._resolve_link(ctx, slot["link"], set())
            if resolved is not None:
                inputs[name] = resolved[1] if resolved[0] == "value" else [resolved[1], resolved[2]]
        title = node.get("title") or (info or {}).get("display_name") or kind
        self.result.prompt[f"{ctx.prefix}{node['id']}"] = {"inputs": inputs, "class_type": kind,
                                                          "_meta": {"title": title}}

    def _widget_values(self, node: dict[str, Any], info: dict[str, Any], report: bool = True) -> dict[str, Any]:
        values = node.get("widgets_values")
        widgets = widget_inputs(info)
        if isinstance(values, dict):
            return {name: values[name] for name, _, _ in widgets if name in values}
        values = list(values or [])
        out, used, missing = consume_widget_values(values, widgets)
        out = {**unstored_widgets(info), **out}
        extra = FRONTEND_WIDGETS.get(node.get("type") or "")
        if extra is not None:
            out.update(zip(extra, values[used:], strict=False))
            used = len(values)
        if used < len(values):
            forced = widget_inputs(info, with_forced=True)
            if len(forced) > len(widgets):
                legacy, legacy_used, legacy_missing = consume_widget_values(values, forced)
                if legacy_used == len(values) and not legacy_missing:
                    names = {name for name, _, _ in widgets}
                    out, used, missing = {k: v for k, v in legacy.items() if k in names}, legacy_used, []
        # An optional input the workflow has no value for (added to the node after it was saved) is left
        # out, so the node uses its own default, as ComfyUI does for any optional input not given.
        optional = optional_widget_names(info.get("input") or {})
        missing = [name for name in missing if name not in optional]
        if report and missing:
            self.result.warnings.append(f"node {node.get('id')} ({node.get('type')}): no widget value for "
                                        f"{', '.join(missing)}")
        for name, kind, options in widgets:
            if kind == "STRING" and options.get("dynamicPrompts") and isinstance(out.get(name), str):
                out[name] = dynamic_prompt(out[name], self.rng)
        if report and used < len(values):
            self.result.warnings.append(f"node {node.get('id')} ({node.get('type')}): {len(values) - used} widget "
                                        "value(s) left over")
        # A list constant would read as a link: the frontend wraps it.
        return {k: {"__value__": v} if isinstance(v, list) else v for k, v in out.items()}

    # --- following links ---------------------------------------------------------

    def _resolve_link(self, ctx: Context, link_id: Any, seen: set[tuple[int, str]]) -> tuple | None:
        """``("ref", node id, slot)``, ``("value", v)``, or None when the input is absent."""
        key = (id(ctx), str(link_id))
        if key in seen:
            self.result.warnings.append(f"link cycle through link {link_id}")
            return None
        seen.add(key)
        link = ctx.graph.links.get(str(link_id))
        if link is None:
            return None
        origin = link.get("origin_id")
        if origin == SUBGRAPH_INPUT_NODE or str(origin) == str(SUBGRAPH_INPUT_NODE):
            return self._resolve_subgraph_input(ctx, int(link.get("origin_slot") or 0), seen)
        node = ctx.graph.nodes.get(str(origin))
        if node is None:
            return None
        return self._resolve_output(ctx, node, int(link.get("origin_slot") or 0), link.get("type"), seen)

    def _resolve_output(self, ctx: Context, node: dict[str, Any], slot: int, link_type: Any,
                        seen: set[tuple[int, str]]) -> tuple | None:
        mode = node.get("mode") or 0
        kind = node.get("type")
        if mode == MUTED:
            return None
        if kind == "Reroute":
            first = (node.get("inputs") or [{}])[0]
            return self._resolve_link(ctx, first.get("link"), seen) if first.get("link") is not None else None
        if kind == "PrimitiveNode":
            values = node.get("widgets_values") or []
            return ("value", values[0]) if values else None
        if mode == BYPASSED:
            return self._bypass(ctx, node, slot, link_type, seen)
        if kind in self.subgraphs:
            definition = self.subgraphs[kind]
            child = Context(_graph(definition), f"{ctx.prefix}{node['id']}:", ctx, node, ctx.depth + 1)
            outputs = definition.get("outputs") or []
            if slot >= len(outputs):
                return None
            for link_id in outputs[slot].get("linkIds") or []:
                return self._resolve_link(child, link_id, seen)
            return None
        if kind in VIRTUAL_NODES:
            return None
        return ("ref", f"{ctx.prefix}{node['id']}", slot)

    def _bypass(self, ctx: Context, node: dict[str, Any], slot: int, link_type: Any,
                seen: set[tuple[int, str]]) -> tuple | None:
        """A bypassed node's output ``slot`` passes through one of its inputs, chosen as the frontend does.

        The input is picked by type first (same slot if it fits, else the
        first input of the link's type, else the first compatible one); an
        unlinked pick means the value is absent, not that another input is tried.
        """
        outputs = node.get("outputs") or []
        output_type = outputs[slot].get("type") if slot < len(outputs) and isinstance(outputs[slot], dict) else None
        inputs = [i if isinstance(i, dict) else {} for i in node.get("inputs") or []]
        if not inputs:
            return None
        if link_type in (None, "", "*"):
            index = slot if len(inputs) > slot else 0
        elif slot < len(inputs) and compatible(inputs[slot].get("type"), output_type) and \
                compatible(inputs[slot].get("type"), link_type):
            index = slot
        else:
            exact = [n for n, i in enumerate(inputs) if i.get("type") == link_type]
            loose = [n for n, i in enumerate(inputs)
                     if compatible(i.get("type"), output_type) and compatible(i.get("type"), link_type)]
            candidates = exact or loose
            if not candidates:
                return None
            index = candidates[0]
        link = inputs[index].get("link")
        return self._resolve_link(ctx, link, seen) if link is not None else None

    def _resolve_subgraph_input(self, ctx: Context, index: int, seen: set[tuple[int, str]]) -> tuple | None:
        """What feeds subgraph input ``index``: the instance's link, else the instance's widget value."""
        if ctx.parent is None or ctx.instance is None:
            return None
        definition = ctx.graph.definition or {}
        declared = definition.get("inputs") or []
        if index >= len(declared):
            return None
        name = declared[index].get("name")
        instance = ctx.instance
        slots = [s for s in instance.get("inputs") or [] if isinstance(s, dict)]
        by_name = [s for s in slots if s.get("name") == name]
        slot = by_name[0] if by_name else None
        if slot is not None and slot.get("link") is not None:
            return self._resolve_link(ctx.parent, slot["link"], seen)
        named = instance.get("widgets_values_named")
        if isinstance(named, dict) and name in named:
            return ("value", named[name])
        values = instance.get("widgets_values")
        if isinstance(values, dict) and name in values:
            return ("value", values[name])
        widget_names = [d.get("name") for d in declared if isinstance(d.get("type"), str)
                        and (d.get("type") in WIDGET_TYPES or d.get("type") == "COMBO")]
        if isinstance(values, list) and name in widget_names and len(values) == len(widget_names):
            return ("value", values[widget_names.index(name)])
        return self._promoted_value(ctx, declared[index])

    def _promoted_value(self, ctx: Context, declared: dict[str, Any]) -> tuple | None:
        """The value of the inner widget a subgraph input is promoted from (``proxyWidgets`` style).

        The frontend keeps such a value on the inner node the input feeds; a
        socket fed by the same subgraph input gets that value too. None means
        the inner widget simply keeps its own value.
        """
        for link_id in declared.get("linkIds") or []:
            link = ctx.graph.links.get(str(link_id)) or {}
            target = ctx.graph.nodes.get(str(link.get("target_id")))
            info = self.info.get(str((target or {}).get("type")))
            if target is None or info is None:
                continue
            slots = target.get("inputs") or []
            slot_index = int(link.get("target_slot") or 0)
            if slot_index >= len(slots) or not isinstance(slots[slot_index], dict):
                continue
            widget = (slots[slot_index].get("widget") or {}).get("name")
            if widget:
                values = self._widget_values(target, info, report=False)
                if widget in values:
                    return ("value", values[widget])
        return None


def compatible(a: Any, b: Any) -> bool:
    """Litegraph's connection rule: wildcards match anything, lists (``"A,B"``) match any member."""
    if a in (None, "", "*", 0) or b in (None, "", "*", 0) or a == b:
        return True
    left, right = str(a).lower().split(","), str(b).lower().split(",")
    return any(x in right for x in left)


def convert_workflow(workflow: dict[str, Any], object_info: dict[str, Any]) -> Result:
    return Converter(object_info).convert(workflow)


def object_info_of(kernel: Any) -> dict[str, Any]:
    """The current ``/object_info`` data (the kernel caches it)."""
    return orjson.loads(kernel.object_info.body())
