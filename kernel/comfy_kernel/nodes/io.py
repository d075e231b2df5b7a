"""The V3 node API: schema-declared nodes made of classmethods.

A V3 node subclasses :class:`ComfyNode` and defines ``define_schema()``
returning a :class:`Schema` and ``execute(**inputs)`` returning a
:class:`NodeOutput`. The base class derives the classic attributes
(``INPUT_TYPES``, ``RETURN_TYPES``, ``FUNCTION``...) from the schema, so
code that inspects classic nodes works on V3 ones, and
``GET_NODE_INFO_V1()`` gives the ``/object_info`` entry.

The executor calls V3 hooks itself (see ``comfy_kernel.execution.nodeclass``):
hidden values go to ``cls.hidden`` of a per-call clone, not to keyword
arguments.

Dynamic inputs (``Autogrow``, ``DynamicCombo``) stand for inputs the prompt
names ``<id>.<name>``: :func:`expand_inputs` lists them for one node's prompt
inputs and :func:`group_inputs` hands them to ``execute`` as a dict under
``<id>``, as ComfyUI does.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .graph_utils import ExecutionBlocker


def _prune(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


# --- inputs and outputs -------------------------------------------------------------


class Input:
    """One input slot; ``as_options()`` is its classic options dict."""

    io_type = "*"

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                 tooltip: str | None = None, lazy: bool | None = None, extra_dict: dict | None = None,
                 raw_link: bool | None = None, **extra: Any):
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.raw_link = raw_link
        self.extra_dict = {**(extra_dict or {}), **extra}

    def get_io_type(self) -> Any:
        return self.io_type

    def as_options(self) -> dict[str, Any]:
        return _prune({"display_name": self.display_name, "tooltip": self.tooltip, "lazy": self.lazy,
                       "rawLink": self.raw_link, **self.extra_dict})


class WidgetInput(Input):
    def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                 tooltip: str | None = None, lazy: bool | None = None, default: Any = None,
                 socketless: bool | None = None, widget_type: str | None = None,
                 force_input: bool | None = None, extra_dict: dict | None = None, **kw: Any):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, **kw)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input

    def get_io_type(self) -> Any:
        return self.widget_type or self.io_type

    def as_options(self) -> dict[str, Any]:
        return _prune({**super().as_options(), "default": self.default, "socketless": self.socketless,
                       "forceInput": self.force_input})


class Output:
    io_type = "*"

    def __init__(self, id: str | None = None, display_name: str | None = None, tooltip: str | None = None,
                 is_output_list: bool = False):
        self.id = id
        self.display_name = display_name or id  # an output named only by its id shows the id
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    def get_io_type(self) -> Any:
        return self.io_type


class _IOType(str):
    """A V3 type string: wildcard-aware ``!=`` like the classic IO enum (``==`` stays plain)."""

    def __ne__(self, other: object) -> bool:
        from .types import wildcard_ne

        return wildcard_ne(self, other)

    __hash__ = str.__hash__


class ComfyType:
    """Base of the ``io.<Type>`` namespaces (``io.Int.Input``, ``io.Int.Output``)."""

    io_type: str = "*"
    Input: type[Input] = Input
    Output: type[Output] = Output


def _make_type(name: str, io_type: str, input_base: type[Input] = Input,
               input_keys: tuple[str, ...] = ()) -> type[ComfyType]:
    type_str = _IOType(io_type)

    def input_init(self, id: str, *args: Any, **kw: Any) -> None:
        own = {k: kw.pop(k) for k in list(kw) if k in input_keys}
        input_base.__init__(self, id, *args, **kw)
        self._own = own

    def as_options(self) -> dict[str, Any]:
        opts = input_base.as_options(self)
        for key, value in self._own.items():
            if key == "display_mode":
                key = "display"
            elif key == "dynamic_prompts":
                key = "dynamicPrompts"
            if isinstance(value, Enum):
                value = value.value
            if value is not None:
                opts[key] = value
        return opts

    in_cls = type("Input", (input_base,), {"io_type": type_str, "__init__": input_init,
                                           "as_options": as_options})
    out_cls = type("Output", (Output,), {"io_type": type_str})
    return type(name, (ComfyType,), {"io_type": type_str, "Input": in_cls, "Output": out_cls})


Int = _make_type("Int", "INT", WidgetInput, ("min", "max", "step", "control_after_generate", "display_mode"))
Float = _make_type("Float", "FLOAT", WidgetInput, ("min", "max", "step", "round", "display_mode"))
Boolean = _make_type("Boolean", "BOOLEAN", WidgetInput, ("label_on", "label_off"))
AnyType = _make_type("AnyType", "*")


class _StringInput(WidgetInput):
    io_type = _IOType("STRING")

    def __init__(self, id: str, *args: Any, multiline: bool = False, placeholder: str | None = None,
                 dynamic_prompts: bool | None = None, **kw: Any):
        super().__init__(id, *args, **kw)
        self.multiline, self.placeholder, self.dynamic_prompts = multiline, placeholder, dynamic_prompts

    def as_options(self) -> dict[str, Any]:
        return _prune({**super().as_options(), "multiline": self.multiline, "placeholder": self.placeholder,
                       "dynamicPrompts": self.dynamic_prompts})


class String(ComfyType):
    io_type = _IOType("STRING")
    Input = _StringInput
    Output = type("Output", (Output,), {"io_type": _IOType("STRING")})


def _widget(name: str, io_type: str, input_cls: type[WidgetInput], output: bool = True) -> type[ComfyType]:
    """A type whose input is ``input_cls`` (a widget with its own arguments), as ``io.<name>``."""
    type_str = _IOType(io_type)
    input_cls.io_type = type_str
    attrs: dict[str, Any] = {"io_type": type_str, "Input": input_cls}
    if output:
        attrs["Output"] = type("Output", (Output,), {"io_type": type_str})
    return type(name, (ComfyType,), attrs)


class _ColorInput(WidgetInput):
    """A colour picker (``#rrggbb``); newer ComfyUI releases' ``io.Color``."""

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 socketless: bool = True, advanced: bool | None = None, default: str = "#ffffff"):
        super().__init__(id, display_name, optional, tooltip, None, default, socketless, advanced=advanced)


class _ImageCompareInput(WidgetInput):
    """A before/after image slider the frontend draws (no socket, no value of its own)."""

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 socketless: bool = True, advanced: bool | None = None):
        super().__init__(id, display_name, optional, tooltip, None, None, socketless, advanced=advanced)


class _BoundingBoxInput(WidgetInput):
    """A box drawn on an image (``{"x", "y", "width", "height"}``); ``component`` names the frontend's editor."""

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 socketless: bool = True, default: dict | None = None, component: str | None = None,
                 force_input: bool | None = None):
        box = default if default is not None else {"x": 0, "y": 0, "width": 512, "height": 512}
        super().__init__(id, display_name, optional, tooltip, None, box, socketless, force_input=force_input,
                         component=component)


class _CurveInput(WidgetInput):
    """The curve editor; its value is ``{"points", "interpolation"}`` (``comfy_kernel.nodes.curves``)."""

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 socketless: bool = True, default: list[tuple[float, float]] | None = None,
                 advanced: bool | None = None):
        points = default if default is not None else [(0.0, 0.0), (1.0, 1.0)]
        super().__init__(id, display_name, optional, tooltip, None, points, socketless, advanced=advanced)

    def as_options(self) -> dict[str, Any]:
        options = super().as_options()
        options["default"] = {"points": [list(p) for p in self.default], "interpolation": "monotone_cubic"}
        return options


Color = _widget("Color", "COLOR", _ColorInput)
Curve = _widget("Curve", "CURVE", _CurveInput)
ImageCompare = _widget("ImageCompare", "IMAGECOMPARE", _ImageCompareInput, output=False)
BoundingBox = _widget("BoundingBox", "BOUNDING_BOX", _BoundingBoxInput)


class _ComboInput(WidgetInput):
    io_type = _IOType("COMBO")

    def __init__(self, id: str, options: Any = None, *args: Any, control_after_generate: bool | None = None,
                 upload: str | None = None, image_folder: str | None = None, remote: Any = None, **kw: Any):
        if isinstance(options, type) and issubclass(options, Enum):
            options = [m.value for m in options]
        if isinstance(kw.get("default"), Enum):
            kw["default"] = kw["default"].value
        super().__init__(id, *args, **kw)
        self.options = list(options or [])
        self.control_after_generate, self.upload = control_after_generate, upload
        self.image_folder, self.remote = image_folder, remote

    def as_options(self) -> dict[str, Any]:
        opts = {**super().as_options(), "options": self.options, "multiselect": False,
                "control_after_generate": self.control_after_generate, "image_folder": self.image_folder,
                "remote": self.remote}
        if self.upload:
            opts[f"{self.upload}_upload"] = True
        return _prune(opts)


class _MultiComboInput(_ComboInput):
    """A combo whose value is a list of selected options (``multi_select`` tells the frontend)."""

    def __init__(self, id: str, options: Any = None, *args: Any, placeholder: str | None = None,
                 chip: bool | None = None, **kw: Any):
        super().__init__(id, options, *args, **kw)
        self.placeholder, self.chip = placeholder, chip

    def as_options(self) -> dict[str, Any]:
        return {**super().as_options(), "multiselect": True,
                "multi_select": _prune({"placeholder": self.placeholder, "chip": self.chip})}


class _ComboOutput(Output):
    def __init__(self, id: str | None = None, display_name: str | None = None, options: list | None = None,
                 tooltip: str | None = None, is_output_list: bool = False):
        super().__init__(id, display_name, tooltip, is_output_list)
        self.options = list(options or [])

    def get_io_type(self) -> Any:
        return self.options


class Combo(ComfyType):
    io_type = _IOType("COMBO")
    Input = _ComboInput
    Output = _ComboOutput


class MultiCombo(ComfyType):
    io_type = _IOType("COMBO")
    Input = _MultiComboInput


_SIMPLE = {"Image": "IMAGE", "Mask": "MASK", "Latent": "LATENT", "Conditioning": "CONDITIONING",
           "Sampler": "SAMPLER", "Sigmas": "SIGMAS", "Noise": "NOISE", "Guider": "GUIDER", "Clip": "CLIP",
           "ControlNet": "CONTROL_NET", "Vae": "VAE", "Model": "MODEL", "ClipVision": "CLIP_VISION",
           "ClipVisionOutput": "CLIP_VISION_OUTPUT", "StyleModel": "STYLE_MODEL", "Gligen": "GLIGEN",
           "UpscaleModel": "UPSCALE_MODEL", "Audio": "AUDIO", "Video": "VIDEO", "SVG": "SVG",
           "LoraModel": "LORA_MODEL", "LossMap": "LOSS_MAP", "Voxel": "VOXEL", "Mesh": "MESH",
           "Hooks": "HOOKS", "HookKeyframes": "HOOK_KEYFRAMES", "TimestepsRange": "TIMESTEPS_RANGE",
           "LatentOperation": "LATENT_OPERATION", "FlowControl": "FLOW_CONTROL",
           "Accumulation": "ACCUMULATION", "Photomaker": "PHOTOMAKER", "Point": "POINT",
           "FaceAnalysis": "FACE_ANALYSIS", "BBOX": "BBOX", "SEGS": "SEGS", "Webcam": "WEBCAM",
           "MODEL_PATCH": "MODEL_PATCH", "AudioEncoder": "AUDIO_ENCODER",
           "AudioEncoderOutput": "AUDIO_ENCODER_OUTPUT", "Dict": "DICT", "Array": "ARRAY",
           "Load3D": "LOAD_3D", "Load3DCamera": "LOAD3D_CAMERA",
           "ModelPatch": "MODEL_PATCH", "Tracks": "TRACKS", "WanCameraEmbedding": "WAN_CAMERA_EMBEDDING",
           "LatentUpscaleModel": "LATENT_UPSCALE_MODEL", "Load3DAnimation": "LOAD_3D_ANIMATION",
           "Histogram": "HISTOGRAM", "File3DAny": "FILE_3D", "File3DGLB": "FILE_3D_GLB",
           "File3DGLTF": "FILE_3D_GLTF", "File3DFBX": "FILE_3D_FBX", "File3DOBJ": "FILE_3D_OBJ",
           "File3DSTL": "FILE_3D_STL", "File3DUSDZ": "FILE_3D_USDZ"}
for _name, _type in _SIMPLE.items():
    globals()[_name] = _make_type(_name, _type)


class _MultiTypeInput(Input):
    """A socket accepting several types; its type is their names joined by commas (``FLOAT,INT``)."""

    def __init__(self, id: str, types: list[Any], display_name: str | None = None, optional: bool = False,
                 tooltip: str | None = None, lazy: bool | None = None, extra_dict: dict | None = None,
                 raw_link: bool | None = None, **extra: Any):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link, **extra)
        self.types = list(types)

    def get_io_type(self) -> Any:
        names = [t.io_type for t in self.types]
        return _IOType(",".join(dict.fromkeys(names)))


class MultiType(ComfyType):
    """An input that takes any of the listed types: ``io.MultiType.Input("v", [io.Int, io.Float])``."""

    io_type = _IOType("COMFY_MULTITYPED_V3")
    Input = _MultiTypeInput


def Custom(io_type: str) -> type[ComfyType]:
    """A new type by name: ``io.Custom("MY_TYPE").Input("x")``."""
    return _make_type(io_type, io_type)


def comfytype(io_type: str, **kwargs: Any):
    """Class decorator turning a user class into an io type."""
    def deco(cls: type) -> type:
        made = _make_type(cls.__name__, io_type)
        cls.io_type = made.io_type
        if not isinstance(cls.__dict__.get("Input"), type):
            cls.Input = made.Input
        if not isinstance(cls.__dict__.get("Output"), type):
            cls.Output = made.Output
        return cls
    return deco


def _input_dict(inputs: Iterable[Input]) -> dict[str, dict[str, tuple[Any, dict[str, Any]]]]:
    """Inputs as classic ``INPUT_TYPES`` sections (no hidden ones)."""
    out: dict[str, dict[str, tuple[Any, dict[str, Any]]]] = {"required": {}}
    for inp in inputs:
        out.setdefault("optional" if inp.optional else "required", {})[inp.id] = (inp.get_io_type(), inp.as_options())
    return out


# --- dynamic inputs ---------------------------------------------------------------------

AUTOGROW = "COMFY_AUTOGROW_V3"
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
MATCH_TYPE = "COMFY_MATCHTYPE_V3"


class _MatchTemplate:
    """The type variable shared by MatchType inputs and outputs; the frontend resolves it."""

    def __init__(self, template_id: str, allowed_types: Any = None):
        allowed = AnyType if allowed_types is None else allowed_types
        self.template_id = template_id
        self.allowed_types = list(allowed) if isinstance(allowed, (list, tuple)) else [allowed]
        for t in self.allowed_types:
            if not isinstance(getattr(t, "io_type", None), str):
                raise ValueError(f"MatchType allowed types must be io types, got {t!r}")

    def as_dict(self) -> dict[str, Any]:
        return {"template_id": self.template_id, "allowed_types": ",".join(t.io_type for t in self.allowed_types)}


class _TemplatedInput(Input):
    """An input described by a template object (MatchType's type variable, Autogrow's repeated input)."""

    def __init__(self, id: str, template: Any, *args: Any, **kw: Any):
        super().__init__(id, *args, **kw)
        self.template = template

    def as_options(self) -> dict[str, Any]:
        return {**super().as_options(), "template": self.template.as_dict()}


class _MatchTypeInput(_TemplatedInput):
    io_type = _IOType(MATCH_TYPE)


class _MatchTypeOutput(Output):
    io_type = _IOType(MATCH_TYPE)

    def __init__(self, template: _MatchTemplate, id: str | None = None, display_name: str | None = None,
                 tooltip: str | None = None, is_output_list: bool = False):
        super().__init__(id, display_name or (None if id else "MATCHTYPE"), tooltip, is_output_list)
        self.template = template


class MatchType(ComfyType):
    """Inputs and outputs whose type is whatever gets linked to the template (``Template("T")``)."""

    io_type = _IOType(MATCH_TYPE)
    Template = _MatchTemplate
    Input = _MatchTypeInput
    Output = _MatchTypeOutput


class _AutogrowTemplate:
    """The one input an Autogrow repeats; always a socket, never a widget."""

    max_names = 100

    def __init__(self, input: Input, min: int):
        if isinstance(input, (_AutogrowInput, _DynamicComboInput)):
            raise ValueError("an Autogrow template cannot be a dynamic input")
        if min < 0:
            raise ValueError("Autogrow min must be >= 0")
        self.input = copy.copy(input)
        if isinstance(self.input, WidgetInput):
            self.input.force_input = True
        self.min = min

    def as_dict(self) -> dict[str, Any]:
        return {"input": _input_dict([self.input])}


class _TemplatePrefix(_AutogrowTemplate):
    """Inputs named ``<prefix>0`` .. ``<prefix><max-1>``."""

    def __init__(self, input: Input, prefix: str, min: int = 1, max: int = 10):
        super().__init__(input, min)
        if not 1 <= max <= self.max_names:
            raise ValueError(f"Autogrow max must be between 1 and {self.max_names}")
        self.prefix, self.max = prefix, max

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "prefix": self.prefix, "min": self.min, "max": self.max}


class _TemplateNames(_AutogrowTemplate):
    """Inputs with the given names, in order."""

    def __init__(self, input: Input, names: list[str], min: int = 1):
        super().__init__(input, min)
        self.names = list(names)[:self.max_names]

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "names": self.names, "min": self.min}


class _AutogrowInput(_TemplatedInput):
    io_type = _IOType(AUTOGROW)


class Autogrow(ComfyType):
    """A list of inputs that grows as the user links them; ``execute`` gets them as one dict."""

    io_type = _IOType(AUTOGROW)
    TemplatePrefix = _TemplatePrefix
    TemplateNames = _TemplateNames
    Input = _AutogrowInput


class _DynamicComboOption:
    def __init__(self, key: str, inputs: list[Input]):
        self.key, self.inputs = key, list(inputs)

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "inputs": _input_dict(self.inputs)}


class _DynamicComboInput(Input):
    io_type = _IOType(DYNAMIC_COMBO)

    def __init__(self, id: str, options: list[_DynamicComboOption], display_name: str | None = None,
                 optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
                 extra_dict: dict | None = None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
        self.options = list(options)

    def as_options(self) -> dict[str, Any]:
        return {**super().as_options(), "options": [o.as_dict() for o in self.options]}


class DynamicCombo(ComfyType):
    """A combo whose selected option brings its own inputs; ``execute`` gets the key and them as one dict."""

    io_type = _IOType(DYNAMIC_COMBO)
    Option = _DynamicComboOption
    Input = _DynamicComboInput


@dataclass
class ExpandedInputs:
    """One node's inputs once its dynamic inputs are expanded against what the prompt gives.

    ``declared`` maps every flat name (``values.value0``) to ``(section, spec)``
    for validation; ``paths`` maps the names that reach ``execute`` nested to
    their dotted path there; ``empty`` holds the groups that received nothing
    and so become ``{}``.
    """

    declared: dict[str, tuple[str, Any]] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    empty: set[str] = field(default_factory=set)


def expand_inputs(input_types: Mapping[str, Any], live: Mapping[str, Any]) -> ExpandedInputs:
    """Expand the dynamic inputs of ``INPUT_TYPES()`` for a node whose prompt inputs are ``live``.

    The expansion depends on the prompt (which Autogrow slots are filled, which
    DynamicCombo option is selected), so it is done per node, not per class.
    """
    out = ExpandedInputs()
    _expand_sections(out, live, input_types, ())
    return out


def _expand_sections(out: ExpandedInputs, live: Mapping[str, Any], sections: Mapping[str, Any],
                     prefix: tuple[str, ...]) -> None:
    for section in ("required", "optional"):
        for name, spec in (sections.get(section) or {}).items():
            kind = spec[0] if isinstance(spec, (list, tuple)) and spec else None
            expander = _EXPANDERS.get(kind) if isinstance(kind, str) else None
            if expander is not None:
                expander(out, live, spec, section, prefix + (name,))
                continue
            flat = ".".join(prefix + (name,))
            out.declared[flat] = (section, spec)
            if prefix:
                out.paths[flat] = flat


def _expand_autogrow(out: ExpandedInputs, live: Mapping[str, Any], spec: Any, section: str,
                     prefix: tuple[str, ...]) -> None:
    template = spec[1]["template"]
    if "names" in template:
        names = list(template["names"])
    else:
        names = [f"{template['prefix']}{i}" for i in range(template["max"])]
    template_section, template_spec = next(
        (sec, next(iter(inputs.values()))) for sec, inputs in template["input"].items() if inputs)
    group = ".".join(prefix)
    received = False
    for i, name in enumerate(names):
        flat = f"{group}.{name}"
        required = template_section == "required" and i < template["min"]
        out.declared[flat] = ("required" if required else "optional", template_spec)
        if flat in live:
            out.paths[flat] = flat
            received = True
    if not received:
        out.paths[group] = group
        out.empty.add(group)


def _expand_dynamic_combo(out: ExpandedInputs, live: Mapping[str, Any], spec: Any, section: str,
                          prefix: tuple[str, ...]) -> None:
    flat = ".".join(prefix)
    out.declared[flat] = (section, spec)  # validated as a combo of the option keys
    selected = live.get(flat)
    option = next((o for o in spec[1]["options"] if o["key"] == selected), None)
    if option is None:
        return
    _expand_sections(out, live, option["inputs"], prefix)
    out.paths[flat] = f"{flat}.{prefix[-1]}"


_EXPANDERS = {AUTOGROW: _expand_autogrow, DYNAMIC_COMBO: _expand_dynamic_combo}


def is_dynamic(spec: Any) -> bool:
    """True for an ``INPUT_TYPES`` spec whose inputs depend on the prompt (Autogrow, DynamicCombo)."""
    kind = spec[0] if isinstance(spec, (list, tuple)) and spec else None
    return isinstance(kind, str) and kind in _EXPANDERS


def group_inputs(values: dict[str, Any], expanded: ExpandedInputs) -> dict[str, Any]:
    """Nest the flat values of expanded inputs as ``execute`` receives them (``values={"value0": ...}``)."""
    if not expanded.paths:
        return values
    flat = dict(values)
    nested: dict[str, Any] = {}
    for key, path in expanded.paths.items():
        value = flat.pop(key, None)
        if value is None and key in expanded.empty:
            value = {}
        *parents, last = path.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    flat.update(nested)
    return flat


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    execution_list = "EXECUTION_LIST"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class HiddenHolder:
    """``cls.hidden`` during a call: declared hidden values, None for the rest."""

    def __init__(self, **values: Any):
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        return None


# --- schema -------------------------------------------------------------------------


@dataclass
class Schema:
    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list[Input] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    hidden: list[Hidden] = field(default_factory=list)
    description: str = ""
    search_aliases: list[str] | None = None
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False
    accept_all_inputs: bool = False
    is_dev_only: bool = False
    loop_boundary: str | None = None
    """``"start"`` / ``"end"``: the node opens or closes a loop (``comfy_kernel.execution.loops``)."""

    def finalize(self) -> Schema:
        self.inputs = list(self.inputs or [])
        self.outputs = list(self.outputs or [])
        self.hidden = list(self.hidden or [])
        extra: list[Hidden] = []
        if self.is_api_node:
            extra += [Hidden.auth_token_comfy_org, Hidden.api_key_comfy_org]
        if self.is_output_node:
            extra += [Hidden.prompt, Hidden.extra_pnginfo]
        for h in extra:
            if h not in self.hidden:
                self.hidden.append(h)
        for i, out in enumerate(self.outputs):
            if out.id is None:
                out.id = f"_{i}_{out.get_io_type()}_"
        return self

    def validate(self) -> None:
        ins = [i.id for i in self.inputs or []]
        outs = [o.id for o in self.outputs or [] if o.id is not None]
        if len(set(ins)) != len(ins):
            raise ValueError(f"Schema {self.node_id}: input ids must be unique")
        if len(set(outs)) != len(outs):
            raise ValueError(f"Schema {self.node_id}: output ids must be unique")
        if set(ins) & set(outs):
            raise ValueError(f"Schema {self.node_id}: ids shared between inputs and outputs")


class NodeOutput:
    """What ``execute`` returns: output values, plus optional ``ui``/``expand``/``block_execution``."""

    def __init__(self, *args: Any, ui: Any = None, expand: dict | None = None,
                 block_execution: str | None = None):
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> tuple | None:
        return self.args if self.args else None


# --- the node base class ----------------------------------------------------------------


class _ClassProperty:
    def __init__(self, fget: Any):
        self.fget = fget

    def __get__(self, obj: Any, owner: type) -> Any:
        return self.fget(owner)


def _overrides(cls: type, name: str) -> bool:
    fn = getattr(cls, name, None)
    base = getattr(ComfyNode, name, None)
    return fn is not None and getattr(fn, "__func__", fn) is not getattr(base, "__func__", base)


class ComfyNode:
    """Base of V3 nodes. Everything is a classmethod; no per-node instance state."""

    hidden: HiddenHolder = HiddenHolder()
    IS_V3 = True

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError(f"{cls.__name__} must define define_schema()")

    @classmethod
    def execute(cls, **kwargs: Any) -> NodeOutput:
        raise NotImplementedError(f"{cls.__name__} must define execute()")

    @classmethod
    def validate_inputs(cls, **kwargs: Any) -> bool | str:
        return True

    @classmethod
    def fingerprint_inputs(cls, **kwargs: Any) -> Any:
        return None

    @classmethod
    def check_lazy_status(cls, **kwargs: Any) -> list[str]:
        return []

    # -- schema and the classic façade --

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        schema = cls.define_schema().finalize()
        return schema

    @classmethod
    def INPUT_TYPES(cls, include_hidden: bool = True, return_schema: bool = False) -> Any:
        schema = cls.GET_SCHEMA()
        out: dict[str, Any] = _input_dict(schema.inputs)
        if include_hidden and schema.hidden:
            out["hidden"] = {h.name: (h.value,) for h in schema.hidden}
        return (out, schema) if return_schema else out

    @classmethod
    def _outputs(cls) -> list[Output]:
        return cls.GET_SCHEMA().outputs

    RETURN_TYPES = _ClassProperty(lambda cls: tuple(o.get_io_type() for o in cls._outputs()))
    RETURN_NAMES = _ClassProperty(lambda cls: tuple(o.display_name or str(o.get_io_type())
                                                    for o in cls._outputs()))
    OUTPUT_IS_LIST = _ClassProperty(lambda cls: tuple(o.is_output_list for o in cls._outputs()))
    OUTPUT_TOOLTIPS = _ClassProperty(lambda cls: tuple(o.tooltip for o in cls._outputs()))
    INPUT_IS_LIST = _ClassProperty(lambda cls: cls.GET_SCHEMA().is_input_list)
    OUTPUT_NODE = _ClassProperty(lambda cls: cls.GET_SCHEMA().is_output_node)
    CATEGORY = _ClassProperty(lambda cls: cls.GET_SCHEMA().category)
    DESCRIPTION = _ClassProperty(lambda cls: cls.GET_SCHEMA().description)
    DEPRECATED = _ClassProperty(lambda cls: cls.GET_SCHEMA().is_deprecated)
    EXPERIMENTAL = _ClassProperty(lambda cls: cls.GET_SCHEMA().is_experimental)
    API_NODE = _ClassProperty(lambda cls: cls.GET_SCHEMA().is_api_node)
    NOT_IDEMPOTENT = _ClassProperty(lambda cls: cls.GET_SCHEMA().not_idempotent)
    FUNCTION = _ClassProperty(lambda cls: "EXECUTE_NORMALIZED_ASYNC"
                              if inspect.iscoroutinefunction(cls.execute) else "EXECUTE_NORMALIZED")

    @classmethod
    def GET_NODE_INFO_V1(cls) -> dict[str, Any]:
        inputs, schema = cls.INPUT_TYPES(include_hidden=True, return_schema=True)
        info = {
            "input": {k: {n: [spec[0], spec[1]] if len(spec) > 1 else [spec[0]] for n, spec in v.items()}
                      for k, v in inputs.items()},
            "input_order": {k: list(v) for k, v in inputs.items()},
            "output": [o.get_io_type() for o in schema.outputs],
            "output_is_list": [o.is_output_list for o in schema.outputs],
            "output_name": [o.display_name or str(o.get_io_type()) for o in schema.outputs],
            "output_tooltips": [o.tooltip for o in schema.outputs],
            "name": schema.node_id,
            "display_name": schema.display_name,
            "description": schema.description,
            "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
            "category": schema.category,
            "output_node": schema.is_output_node,
            "deprecated": schema.is_deprecated,
            "experimental": schema.is_experimental,
            "api_node": schema.is_api_node,
        }
        if any(isinstance(o, _MatchTypeOutput) for o in schema.outputs):
            info["output_matchtypes"] = [o.template.template_id if isinstance(o, _MatchTypeOutput) else None
                                         for o in schema.outputs]
        if schema.search_aliases:
            info["search_aliases"] = list(schema.search_aliases)
        if schema.is_dev_only:
            info["dev_only"] = True
        return info

    @classmethod
    def has_hook(cls, name: str) -> bool:
        """True if the class overrides the optional hook ``name`` (the base ones are placeholders)."""
        return _overrides(cls, name)

    @classmethod
    def clone_with_hidden(cls, hidden: HiddenHolder) -> type[ComfyNode]:
        """A per-call subclass carrying ``hidden`` (V3 calls never see another call's values)."""
        return type(cls.__name__, (cls,), {"hidden": hidden, "__module__": cls.__module__})


def normalize_output(value: Any) -> NodeOutput:
    """Turn whatever ``execute`` returned into a NodeOutput (spec §3.5, Q8 fixed)."""
    if isinstance(value, NodeOutput):
        return value
    if value is None:
        return NodeOutput()
    if isinstance(value, tuple):
        return NodeOutput(*value)
    if isinstance(value, ExecutionBlocker):
        return NodeOutput(block_execution=value.message or "")
    if isinstance(value, dict):
        result = value.get("result") or ()
        return NodeOutput(*result, ui=value.get("ui"), expand=value.get("expand"))
    raise TypeError(f"Invalid return type from node: {type(value)}")


class ComfyExtension:
    """What a V3 pack's ``comfy_entrypoint()`` returns."""

    async def on_load(self) -> None:
        return None

    async def get_node_list(self) -> list[type[ComfyNode]]:
        return []


# --- ui helpers ------------------------------------------------------------------------------

class _UI:
    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError


class ui:  # noqa: N801 - mirrors the module name node packs use
    class SavedResult(dict):
        def __init__(self, filename: str, subfolder: str, type: str):
            super().__init__(filename=filename, subfolder=subfolder, type=type)

    class SavedImages(_UI):
        def __init__(self, results: list, is_animated: bool = False):
            self.results, self.is_animated = results, is_animated

        def as_dict(self) -> dict[str, Any]:
            out: dict[str, Any] = {"images": list(self.results)}
            if self.is_animated:
                out["animated"] = [True]
            return out

    class SavedAudios(_UI):
        def __init__(self, results: list):
            self.results = results

        def as_dict(self) -> dict[str, Any]:
            return {"audio": list(self.results)}

    class PreviewText(_UI):
        def __init__(self, value: str, **kwargs: Any):
            self.value = value

        def as_dict(self) -> dict[str, Any]:
            return {"text": [self.value]}
