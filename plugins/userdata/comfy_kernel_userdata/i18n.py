"""``/i18n``: translations shipped by node packs, merged per locale.

Each pack may have ``locales/<lang>/main.json`` plus ``nodeDefs.json``,
``commands.json`` and ``settings.json`` (stored under those keys). Packs are
merged in order: objects key by key, lists concatenated, anything else
replaced by the later pack. Computed once per process, like ComfyUI.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from comfy_kernel.http import json_response
from comfy_kernel.routing import RouteTable

from .packs import all_pack_dirs

log = logging.getLogger(__name__)

SECTIONS = {"nodeDefs.json": "nodeDefs", "commands.json": "commands", "settings.json": "settings"}


def merge(into: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Deep merge ``other`` into ``into`` (returned)."""
    for key, value in other.items():
        current = into.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merge(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            into[key] = current + value
        else:
            into[key] = value
    return into


def _read(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        log.warning("skipping unreadable translation file %s", path)
        return None
    if not isinstance(value, dict):
        log.warning("skipping translation file %s: not a JSON object", path)
        return None
    return value


def pack_translations(pack_dir: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    locales = os.path.join(pack_dir, "locales")
    if not os.path.isdir(locales):
        return out
    for lang in sorted(os.listdir(locales)):
        lang_dir = os.path.join(locales, lang)
        if not os.path.isdir(lang_dir):
            continue
        data = _read(os.path.join(lang_dir, "main.json")) or {}
        for filename, key in SECTIONS.items():
            section = _read(os.path.join(lang_dir, filename))
            if section is not None:
                data[key] = section
        if data:
            out[lang] = data
    return out


def collect(kernel: Any) -> dict[str, Any]:
    translations: dict[str, Any] = {}
    for _name, path in all_pack_dirs(kernel):
        for lang, data in pack_translations(path).items():
            merge(translations.setdefault(lang, {}), data)
    return translations


def register(routes: RouteTable, kernel: Any) -> None:
    cache: dict[str, Any] = {}

    @routes.get("/i18n")
    async def i18n(request: Request) -> Response:
        if "value" not in cache:
            cache["value"] = await run_in_threadpool(collect, kernel)
        return json_response(cache["value"])
