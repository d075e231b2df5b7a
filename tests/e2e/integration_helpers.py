"""Helpers of the integration tests: a server with the test node packs, prompts, and an SSE reader."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

import httpx

from comfy_kernel.testing import ServerProcess

from .execution_helpers import install_pack

PACK = os.path.join(os.path.dirname(os.path.dirname(__file__)), "nodepacks", "integration_nodes")


def install_packs(base: Any) -> None:
    install_pack(base)
    target = os.path.join(str(base), "custom_nodes", "integration_nodes")
    if not os.path.isdir(target):
        shutil.copytree(PACK, target, ignore=shutil.ignore_patterns("__pycache__"))


def start_server(base: Any, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
    install_packs(base)
    return ServerProcess(base, *args, env=env).start()


def image_prompt(value: int = 128, *, steps: int = 0, delay: float = 0.0, prefix: str = "integration"
                 ) -> dict[str, Any]:
    """A prompt writing one PNG of grey level ``value``; with ``steps``, a previewing node runs first."""
    prompt: dict[str, Any] = {"1": {"class_type": "TestValue", "inputs": {"value": value}}}
    source: Any = ["1", 0]
    if steps:
        prompt["2"] = {"class_type": "TestPreviewSteps", "inputs": {"value": ["1", 0], "steps": steps,
                                                                    "delay": delay}}
        source = ["2", 0]
    prompt["3"] = {"class_type": "TestWriteImage", "inputs": {"value": source, "prefix": prefix}}
    return prompt


def sleep_prompt(seconds: float, value: int = 1) -> dict[str, Any]:
    return {"1": {"class_type": "TestSyncSleep", "inputs": {"value": value, "seconds": seconds}},
            "2": {"class_type": "TestOutput", "inputs": {"value": ["1", 0]}}}


def failing_prompt() -> dict[str, Any]:
    return {"1": {"class_type": "TestValue", "inputs": {"value": 1}},
            "2": {"class_type": "TestError", "inputs": {"value": ["1", 0]}},
            "3": {"class_type": "TestOutput", "inputs": {"value": ["2", 0]}}}


def read_sse(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parse a ``text/event-stream`` body into ``{"id", "event", "data"}`` dicts (comments skipped)."""
    event: dict[str, Any] = {}
    data: list[str] = []
    for line in response.iter_lines():
        if line == "":
            if data:
                event["data"] = json.loads("\n".join(data))
                yield event
            event, data = {}, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field in ("id", "event", "retry"):
            event[field] = value


def sse_events(server: ServerProcess, prompt_id: str, headers: dict[str, str] | None = None,
               timeout: float = 60.0) -> list[dict[str, Any]]:
    with httpx.stream("GET", f"{server.url}/api/jobs/{prompt_id}/events", headers=headers or {},
                      timeout=timeout) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return list(read_sse(r))
