"""One view of a node class, classic or V3, as the executor needs it.

:class:`NodeDef` reads ``INPUT_TYPES()`` once per prompt and answers the
questions validation and execution ask for every node (declared inputs,
lazy/rawLink options, hidden kinds, output flags, which hooks exist), and
calls the hooks uniformly: classic ones with hidden values as keyword
arguments on an instance, V3 ones on a per-call clone carrying ``cls.hidden``.
A V3 node with dynamic inputs declares different inputs per prompt node:
:meth:`NodeDef.expand` gives them, and its hooks get them grouped.
"""

from __future__ import annotations

import inspect
import weakref
from typing import Any

from ..nodes.graph_utils import ExecutionBlocker
from ..nodes.io import (
    ComfyNode,
    ExpandedInputs,
    HiddenHolder,
    expand_inputs,
    group_inputs,
    is_dynamic,
    normalize_output,
)

HIDDEN_MEMBER = {"UNIQUE_ID": "unique_id", "PROMPT": "prompt", "EXTRA_PNGINFO": "extra_pnginfo",
                 "DYNPROMPT": "dynprompt", "AUTH_TOKEN_COMFY_ORG": "auth_token_comfy_org",
                 "API_KEY_COMFY_ORG": "api_key_comfy_org"}


class NodeDef:
    __slots__ = ("cls", "class_type", "is_v3", "input_types", "declared", "hidden", "lazy", "raw_link",
                 "is_output", "input_is_list", "output_is_list", "is_async", "lazy_hook", "is_changed",
                 "validate", "validate_params", "validate_kwargs", "validate_input_types",
                 "not_idempotent", "id_in_key", "function_name", "enable_expand", "dynamic", "static",
                 "accept_all", "loop_boundary")

    def __init__(self, class_type: str, cls: type, input_types: dict[str, Any] | None = None):
        self.cls = cls
        self.class_type = class_type
        self.is_v3 = isinstance(cls, type) and issubclass(cls, ComfyNode)
        types = cls.INPUT_TYPES() if input_types is None else input_types
        self.input_types = types
        declared: dict[str, Any] = {}
        for section in ("required", "optional"):
            for name, spec in (types.get(section) or {}).items():
                declared[name] = (section, spec)
        self.declared = declared
        self.static = ExpandedInputs(declared)
        self.dynamic = self.is_v3 and any(is_dynamic(spec) for _section, spec in declared.values())
        self.hidden: dict[str, str] = {}
        for name, kind in (types.get("hidden") or {}).items():
            self.hidden[name] = kind[0] if isinstance(kind, (list, tuple)) and kind else kind
        lazy, raw = set(), set()
        for name, (_section, spec) in declared.items():
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else None
            if opts:
                if opts.get("lazy"):
                    lazy.add(name)
                if opts.get("rawLink"):
                    raw.add(name)
        self.lazy = frozenset(lazy)
        self.raw_link = frozenset(raw)
        self.is_output = getattr(cls, "OUTPUT_NODE", False) is True
        self.input_is_list = bool(getattr(cls, "INPUT_IS_LIST", False))
        self.output_is_list = tuple(getattr(cls, "OUTPUT_IS_LIST", None) or ())
        self.not_idempotent = bool(getattr(cls, "NOT_IDEMPOTENT", False))
        # Q7: only a classic string "UNIQUE_ID" puts the id into the cache key.
        self.id_in_key = self.not_idempotent or any(
            kind == "UNIQUE_ID" for kind in (types.get("hidden") or {}).values() if isinstance(kind, str))
        if self.is_v3:
            self.function_name = "execute"
            self.is_async = inspect.iscoroutinefunction(cls.execute)
            self.lazy_hook = cls.has_hook("check_lazy_status")
            self.is_changed = cls.fingerprint_inputs if cls.has_hook("fingerprint_inputs") else None
            self.validate = cls.validate_inputs if cls.has_hook("validate_inputs") else None
            schema = cls.GET_SCHEMA()
            self.enable_expand = schema.enable_expand
            self.accept_all = bool(getattr(schema, "accept_all_inputs", False))
            self.loop_boundary = getattr(schema, "loop_boundary", None)
        else:
            self.function_name = cls.FUNCTION
            fn = getattr(cls, cls.FUNCTION, None)
            self.is_async = inspect.iscoroutinefunction(fn)
            self.lazy_hook = hasattr(cls, "check_lazy_status")
            self.is_changed = getattr(cls, "IS_CHANGED", None)
            self.validate = getattr(cls, "VALIDATE_INPUTS", None)
            self.enable_expand = True
            self.accept_all = False
            self.loop_boundary = None
        self.validate_params: frozenset[str] = frozenset()
        self.validate_kwargs = False
        self.validate_input_types = False
        if self.validate is not None:
            try:
                sig = inspect.signature(self.validate)
                params = set(sig.parameters)
                self.validate_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD
                                           for p in sig.parameters.values())
            except (TypeError, ValueError):
                params = set()
            params.add("cls")
            self.validate_params = frozenset(params)
            self.validate_input_types = "input_types" in params

    def expand(self, live: dict[str, Any]) -> ExpandedInputs:
        """The inputs a node with prompt inputs ``live`` declares (the class's own unless dynamic)."""
        return expand_inputs(self.input_types, live) if self.dynamic else self.static

    def group(self, values: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments for a V3 hook: expanded dynamic inputs nested under their group."""
        live = values
        if self.input_is_list:
            live = {k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in values.items()}
        return group_inputs(values, expand_inputs(self.input_types, live))

    def new_instance(self) -> Any:
        return None if self.is_v3 else self.cls()

    def hidden_values(self, node_id: str, run: Any) -> dict[str, Any]:
        """Hidden input values by parameter name (classic) or member name (V3)."""
        out: dict[str, Any] = {}
        for name, kind in self.hidden.items():
            if kind == "UNIQUE_ID":
                value: Any = node_id
            elif kind == "PROMPT":
                value = run.prompt if run is not None else {}
            elif kind == "DYNPROMPT":
                value = run.dynprompt if run is not None else None
            elif kind == "EXTRA_PNGINFO":
                value = run.extra_data.get("extra_pnginfo") if run is not None else None
            elif kind == "AUTH_TOKEN_COMFY_ORG":
                value = run.extra_data.get("auth_token_comfy_org") if run is not None else None
            elif kind == "API_KEY_COMFY_ORG":
                value = run.extra_data.get("api_key_comfy_org") if run is not None else None
            else:
                continue
            out[HIDDEN_MEMBER.get(kind, name) if self.is_v3 else name] = value
        return out

    def bind(self, hook: str, instance: Any, hidden: dict[str, Any] | None) -> Any:
        """The callable for ``hook`` ("function", "lazy", "validate", "is_changed")."""
        if self.is_v3:
            clone = self.cls.clone_with_hidden(HiddenHolder(**(hidden or {})))
            name = {"function": "execute", "lazy": "check_lazy_status", "validate": "validate_inputs",
                    "is_changed": "fingerprint_inputs"}[hook]
            fn = getattr(clone, name)
            if hook == "function" or self.dynamic:
                return _adapt(fn, self.group if self.dynamic else None, v3_to_classic if hook == "function" else None)
            return fn
        if hook == "function":
            return getattr(instance, self.function_name)
        if hook == "lazy":
            return instance.check_lazy_status
        if hook == "validate":
            return self.validate
        return self.is_changed


def _same(value: Any) -> Any:
    return value


def _adapt(fn: Any, prepare: Any = None, convert: Any = None) -> Any:
    """``fn`` with its keyword arguments passed through ``prepare`` and its result through ``convert``.

    Stays a coroutine function when ``fn`` is one: the executor decides from
    that whether to await a hook.
    """
    prepare, convert = prepare or _same, convert or _same
    if inspect.iscoroutinefunction(fn):
        async def run_async(**kw: Any) -> Any:
            return convert(await fn(**prepare(kw)))
        return run_async

    def run(**kw: Any) -> Any:
        return convert(fn(**prepare(kw)))
    return run


def v3_to_classic(value: Any) -> Any:
    out = normalize_output(value)
    if out.block_execution is not None:  # Q9 fixed: block even without values
        return ExecutionBlocker(out.block_execution or None)
    ui = out.ui
    if ui is not None and not isinstance(ui, dict):
        ui = ui.as_dict()
    result: dict[str, Any] = {}
    if ui:
        result["ui"] = ui
    if out.args:
        result["result"] = out.args
    if out.expand is not None:
        result["expand"] = out.expand
        result.setdefault("result", ())
    return result


_last: weakref.WeakKeyDictionary[type, NodeDef] = weakref.WeakKeyDictionary()


def current_def(class_type: str, cls: type) -> NodeDef:
    """The NodeDef of ``cls`` for this prompt: INPUT_TYPES() is asked every time, as ComfyUI does.

    When it answers what it answered last time, the NodeDef built then is
    reused (they are read-only), so a prompt does not pay again for
    signatures, coroutine checks and V3 schemas. The class's other attributes
    (OUTPUT_NODE, FUNCTION, its hooks) are read when a NodeDef is built.
    """
    types = cls.INPUT_TYPES()
    last = _last.get(cls)
    if last is not None and last.class_type == class_type and last.input_types == types:
        return last
    ndef = NodeDef(class_type, cls, types)
    try:
        _last[cls] = ndef
    except TypeError:  # not weak-referenceable: no reuse
        pass
    return ndef


class NodeDefs:
    """NodeDef per class type, looked up once per prompt (INPUT_TYPES may list files)."""

    def __init__(self, registry: Any):
        self.registry = registry
        self._defs: dict[str, NodeDef | None] = {}

    def get(self, class_type: str) -> NodeDef | None:
        try:
            return self._defs[class_type]
        except KeyError:
            cls = self.registry.get(class_type)
            ndef = current_def(class_type, cls) if cls is not None else None
            self._defs[class_type] = ndef
            return ndef

    def loop_boundary(self, class_type: str) -> str | None:
        """``"start"``/``"end"`` for the classes that open or close a loop (``execution.loops``)."""
        ndef = self.get(class_type)
        return ndef.loop_boundary if ndef is not None else None
