"""``GET /openapi.json`` and ``GET /docs``."""

from __future__ import annotations

from typing import Any

from ..routing import RouteTable


def register(table: RouteTable, kernel: Any) -> None:
    return None
