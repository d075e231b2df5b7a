"""PreviewAny: shows any value as text in the front end."""

from __future__ import annotations

import json
from typing import Any

from .common import ANY, NodeDef


def preview_text(source: Any) -> str:
    """How PreviewAny shows a value: strings as they are, numbers via str, the rest as JSON if possible."""
    if isinstance(source, str):
        return source
    if isinstance(source, (int, float, bool)):
        return str(source)
    if source is None:
        return "None"
    try:
        return json.dumps(source)
    except Exception:
        try:
            return str(source)
        except Exception:
            return "source exists, but could not be serialized."


class PreviewAny:
    CATEGORY = "utils"
    RETURN_TYPES = ()
    FUNCTION = "main"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"source": (ANY, {})}}

    def main(self, source: Any = None) -> dict[str, Any]:
        return {"ui": {"text": (preview_text(source),)}}


NODES = [
    NodeDef("PreviewAny", PreviewAny, "Preview Any", "comfy_extras.nodes_preview_any"),
]
