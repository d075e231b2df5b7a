"""ComfyUI's ``comfy.comfy_types.node_typing``: the kernel's typing helpers for classic nodes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypedDict

from comfy_kernel.nodes.types import (
    IO,
    CheckLazyMixin,
    ComfyNodeABC,
    HiddenInputTypeDict,
    InputTypeDict,
    InputTypeOptions,
    StrEnum,
)


class FileLocator(TypedDict):
    """Where a saved file is: what the frontend's ``/view`` needs."""

    filename: str
    subfolder: str
    type: Literal["input", "output", "temp"]


class UnetApplyConds(TypedDict):
    c_concat: Any
    c_crossattn: Any
    control: Any
    transformer_options: dict[str, Any]


class UnetParams(TypedDict):
    input: Any
    timestep: Any
    c: UnetApplyConds
    cond_or_uncond: list[int]


UnetApplyFunction = Callable[..., Any]
UnetWrapperFunction = Callable[[UnetApplyFunction, UnetParams], Any]

__all__ = ["IO", "ComfyNodeABC", "CheckLazyMixin", "InputTypeDict", "InputTypeOptions", "HiddenInputTypeDict",
           "StrEnum", "FileLocator", "UnetApplyConds", "UnetParams", "UnetApplyFunction", "UnetWrapperFunction"]
