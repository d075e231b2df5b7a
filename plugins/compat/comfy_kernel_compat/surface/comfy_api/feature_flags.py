"""ComfyUI's ``comfy_api.feature_flags``: what a connected client and this server support.

Client flags are those the frontend sent in its ``feature_flags`` websocket
message (``PromptServer.instance.sockets_metadata``); server flags are the
kernel's ``/features`` answer.
"""

from __future__ import annotations

from typing import Any

from comfy_kernel_compat import state


def get_connection_feature(sockets_metadata: dict[str, dict[str, Any]], sid: str, feature_name: str,
                           default: Any = False) -> Any:
    if sid not in sockets_metadata:
        return default
    return sockets_metadata[sid].get("feature_flags", {}).get(feature_name, default)


def supports_feature(sockets_metadata: dict[str, dict[str, Any]], sid: str, feature_name: str) -> bool:
    return get_connection_feature(sockets_metadata, sid, feature_name, False) is True


def get_server_features() -> dict[str, Any]:
    kernel = state.kernel()
    return dict(kernel.feature_flags()) if kernel is not None else {"supports_preview_metadata": True}
