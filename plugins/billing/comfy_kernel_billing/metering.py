"""Turning a finished prompt (``ck_prompt_finished``) into a usage record.

The cheap part runs on the server loop when the event arrives (who, which
worker, how long, what it costs, so the balance is right for the next
``/prompt``); the file-system part (models used, output files and their
sizes) runs on a thread just before the record is written.

What counts:

* ``busy_s``: the sum of the visited nodes' device seconds (see the kernel's
  ``ck_prompt_finished``); this is what is charged, at the plan's price for
  the worker's device class. Queue waits and the executor's own overhead
  between nodes are not charged.
* ``wall_s``: from the moment a worker took the prompt until it finished.
* models: every input value that names a file in a model folder
  (``checkpoints/x.safetensors``), of the nodes that executed and of every
  node they read from: a cached loader that fed an executed sampler served
  the run; a fully cached run used no model.
* outputs: every item of the prompt's UI outputs; ``outputs_bytes`` sums the
  sizes of those that are files in the output, temp or input directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pt2", ".pth", ".bin", ".pkl", ".gguf")
NOT_MODEL_FOLDERS = frozenset({"custom_nodes", "configs", "classifiers", "diffusers"})
STAMP = "billing"


def status_of(status: dict[str, Any]) -> str:
    """success, error or interrupted, from a history status object."""
    if status.get("status_str") == "success":
        return "success"
    for message in status.get("messages") or []:
        if message and message[0] == "execution_interrupted":
            return "interrupted"
    return "error"


def crashed(status: dict[str, Any]) -> bool:
    """Whether the kernel gave the prompt up because the server died while running it, twice."""
    for message in status.get("messages") or []:
        if message and message[0] == "execution_error" and isinstance(message[1], dict) \
                and message[1].get("exception_type") == "ServerCrash":
            return True
    return False


def busy_seconds(nodes: Any) -> float:
    return float(sum(n.get("busy_s", 0.0) for n in nodes.values())) if nodes else 0.0


def node_figures(nodes: Any) -> dict[str, list[Any]]:
    """``{node_id: [class_type, wall_s, busy_s, cached]}`` (compact, as stored)."""
    return {node_id: [n["class_type"], n["wall_s"], n["busy_s"], n["cached"]] for node_id, n in (nodes or {}).items()}


def models_used(folders: Any, prompt: dict[str, Any] | None, nodes: Any) -> list[str]:
    """``folder/file`` of every model file that the run's executed nodes depended on (sorted, unique).

    ``nodes`` is the event's per-node mapping: the nodes that executed (not
    cached) and everything they read from, transitively, count; a cached
    loader that fed an executed sampler did serve the run.
    """
    if not isinstance(prompt, dict):
        return []
    todo = [node_id for node_id, n in (nodes or {}).items() if not n.get("cached")] \
        if isinstance(nodes, Mapping) else list(nodes or [])
    seen: set[str] = set()
    names: list[str] | None = None
    found: set[str] = set()
    while todo:
        node_id = todo.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        node = prompt.get(node_id)
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        for value in inputs.values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                todo.append(value[0])
                continue
            if not isinstance(value, str) or not value.lower().endswith(MODEL_EXTENSIONS):
                continue
            if names is None:
                names = [n for n in folders.names() if n not in NOT_MODEL_FOLDERS]
            for folder in names:
                if folders.full_path(folder, value) is not None:
                    found.add(f"{folder}/{value}")
                    break
    return sorted(found)


def output_figures(dirs: Any, outputs: dict[str, Any]) -> tuple[int, int]:
    """(number of output items, bytes of those that are files we can find)."""
    count = size = 0
    for ui in (outputs or {}).values():
        if not isinstance(ui, dict):
            continue
        for items in ui.values():
            if not isinstance(items, list):
                continue
            for item in items:
                count += 1
                if isinstance(item, dict) and isinstance(item.get("filename"), str):
                    size += _file_size(dirs, item)
    return count, size


def _file_size(dirs: Any, item: dict[str, Any]) -> int:
    base = dirs.by_type(str(item.get("type") or "output"))
    if base is None:
        return 0
    subfolder, filename = str(item.get("subfolder") or ""), item["filename"]
    parts = subfolder.replace("\\", "/").split("/") + [filename]
    if any(p in ("..", ".") or "\x00" in p for p in parts) or subfolder.startswith("/") or "/" in filename:
        return 0  # only plain names under the directory (outputs are named by their nodes)
    try:
        return os.path.getsize(os.path.join(base, subfolder, filename))
    except OSError:
        return 0
