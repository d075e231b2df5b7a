"""PreviewAny: shows any value as text in the front end, and passes that text on.

ComfyUI 0.3.64's PreviewAny had no output; later releases give it the shown text as a
STRING output, which the current templates link to other nodes (prompt builders, LLM
replies shown and then encoded).
"""

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
    RETURN_TYPES = ("STRING",)
    FUNCTION = "main"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"source": (ANY, {})}}

    def main(self, source: Any = None) -> dict[str, Any]:
        text = preview_text(source)
        return {"ui": {"text": (text,)}, "result": (text,)}


NODES = [
    NodeDef("PreviewAny", PreviewAny, "Preview Any", "comfy_extras.nodes_preview_any"),
]
