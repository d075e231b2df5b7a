"""Type names for classic nodes: the ``IO`` enum and typing helpers.

``IO`` members are strings, so they can be used anywhere a type name is
expected; their ``!=`` is the wildcard-aware comparison the executor's link
type check relies on (spec §2.4): ``"*"`` on either side matches anything,
and two comma lists match when one is a subset of the other. ``==`` stays the
plain string comparison, as in ComfyUI: ``IO.ANY == "INT"`` is False, so a
value given to a ``*`` input is never converted to some other input's type.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum
from typing import Any, Literal, TypedDict


def _type_set(value: str) -> set[str]:
    return {part.strip() for part in value.split(",")}


def wildcard_ne(a: Any, b: Any) -> bool:
    """``a != b`` for type names where ``*`` matches anything and subsets match."""
    if not isinstance(a, str) or not isinstance(b, str):
        return True
    if str.__eq__(a, "*") or str.__eq__(b, "*"):
        return False
    sa, sb = _type_set(str(a)), _type_set(str(b))
    return not (sa <= sb or sb <= sa)


class StrEnum(str, Enum):
    def __str__(self) -> str:
        return self.value


class IO(StrEnum):
    """The built-in type names. ``IO.ANY`` is the wildcard ``"*"``."""

    STRING = "STRING"
    IMAGE = "IMAGE"
    MASK = "MASK"
    LATENT = "LATENT"
    BOOLEAN = "BOOLEAN"
    INT = "INT"
    FLOAT = "FLOAT"
    COMBO = "COMBO"
    CONDITIONING = "CONDITIONING"
    SAMPLER = "SAMPLER"
    SIGMAS = "SIGMAS"
    GUIDER = "GUIDER"
    NOISE = "NOISE"
    CLIP = "CLIP"
    CONTROL_NET = "CONTROL_NET"
    VAE = "VAE"
    MODEL = "MODEL"
    LORA_MODEL = "LORA_MODEL"
    LOSS_MAP = "LOSS_MAP"
    CLIP_VISION = "CLIP_VISION"
    CLIP_VISION_OUTPUT = "CLIP_VISION_OUTPUT"
    STYLE_MODEL = "STYLE_MODEL"
    GLIGEN = "GLIGEN"
    UPSCALE_MODEL = "UPSCALE_MODEL"
    AUDIO = "AUDIO"
    WEBCAM = "WEBCAM"
    POINT = "POINT"
    FACE_ANALYSIS = "FACE_ANALYSIS"
    BBOX = "BBOX"
    SEGS = "SEGS"
    VIDEO = "VIDEO"
    ANY = "*"
    NUMBER = "FLOAT,INT"
    PRIMITIVE = "STRING,FLOAT,INT,BOOLEAN"

    def __ne__(self, value: object) -> bool:  # type: ignore[override]
        return wildcard_ne(self, value)

    __hash__ = str.__hash__


class InputTypeOptions(TypedDict, total=False):
    default: Any
    defaultInput: bool
    forceInput: bool
    lazy: bool
    rawLink: bool
    tooltip: str
    min: float
    max: float
    step: float
    round: float
    display: Literal["number", "slider", "color"]
    control_after_generate: bool
    multiline: bool
    placeholder: str
    dynamicPrompts: bool
    label_on: str
    label_off: str
    image_upload: bool


class HiddenInputTypeDict(TypedDict, total=False):
    node_id: Literal["UNIQUE_ID"]
    unique_id: Literal["UNIQUE_ID"]
    prompt: Literal["PROMPT"]
    extra_pnginfo: Literal["EXTRA_PNGINFO"]
    dynprompt: Literal["DYNPROMPT"]


class InputTypeDict(TypedDict, total=False):
    required: dict[str, tuple]
    optional: dict[str, tuple]
    hidden: HiddenInputTypeDict


class ComfyNodeABC(ABC):
    """Optional base class documenting the classic node contract."""

    DESCRIPTION: str
    CATEGORY: str
    EXPERIMENTAL: bool
    DEPRECATED: bool
    RETURN_TYPES: tuple
    RETURN_NAMES: tuple
    OUTPUT_IS_LIST: tuple
    FUNCTION: str
    OUTPUT_NODE: bool
    INPUT_IS_LIST: bool

    @classmethod
    @abstractmethod
    def INPUT_TYPES(cls) -> InputTypeDict:
        """The input declaration (required/optional/hidden)."""


class CheckLazyMixin:
    """Default ``check_lazy_status``: ask for every lazy input that is still None."""

    def check_lazy_status(self, **kwargs: Any) -> list[str]:
        need = []
        declared = self.INPUT_TYPES()  # type: ignore[attr-defined]
        for section in ("required", "optional"):
            for name, spec in declared.get(section, {}).items():
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if opts.get("lazy") and kwargs.get(name) is None:
                    need.append(name)
        return need
