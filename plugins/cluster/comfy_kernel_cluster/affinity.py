"""Model affinity: a prompt goes to a worker that already holds its model files when one is free.

Workers pull prompts from one JetStream consumer, so no front-end picks the
worker; the worker that receives a prompt decides instead. It looks at the
model files the prompt names (input values that are file names with a
model extension, such as ``ckpt_name`` or ``lora_name``) and at the other
workers' announcements (their loaded models, whether they are running
anything). If an idle worker holds more of those files than it does, it hands
the prompt back to the queue with a short delay (a NAK), so that the idle
holder, whose pull is already waiting, takes it. After :data:`TRIES`
deliveries any worker runs it, so a stale announcement costs at most
``TRIES x DELAY`` seconds, and a prompt naming no model file costs nothing.

Announced models are the model manager's keys, which begin with the file's
real path; a prompt names files relative to a model folder, so a file counts
as held when a key's path ends with ``/<name>`` (machines may keep their
model folders in different places).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

#: File name endings of model weights (ComfyUI's model folders, plus GGUF).
MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pt2", ".pth", ".bin", ".pkl", ".gguf")
#: Deliveries after which any worker runs a prompt, and the delay of each hand-back (seconds).
TRIES = 4
DELAY = 0.1


def model_files(prompt: dict[str, Any]) -> set[str]:
    """The model file names a prompt's inputs give (``sub/name.safetensors`` as written)."""
    found = set()
    for node in prompt.values():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        for value in inputs.values():
            if isinstance(value, str) and value.lower().endswith(MODEL_EXTENSIONS):
                found.add(value.replace("\\", "/"))
    return found


def held(files: Iterable[str], loaded: Iterable[str]) -> int:
    """How many of ``files`` a worker whose model manager holds ``loaded`` (its keys) has in memory."""
    paths = {_key_path(key) for key in loaded}
    return sum(1 for name in files if any(p == name or p.endswith("/" + name) for p in paths))


def _key_path(key: str) -> str:
    """The file path a model manager key begins with (up to its ``@version`` or ``#part``)."""
    for mark in ("@", "#"):
        key = key.split(mark, 1)[0]
    return key.replace("\\", "/")


def better_idle_holder(files: set[str], mine: Iterable[str], me: str, workers: list[dict[str, Any]],
                       fresh: float, now: float | None = None) -> str | None:
    """The id of an idle worker that holds more of ``files`` than this one (``mine``), or None.

    ``workers`` are announcements; one counts when it is not this worker, not
    draining, running nothing and announced within ``fresh`` seconds.
    """
    if not files:
        return None
    now = time.time() if now is None else now
    own = held(files, mine)
    best, best_id = own, None
    for worker in workers:
        if worker.get("id") == me or worker.get("draining") or worker.get("running"):
            continue
        if now - float(worker.get("updated") or 0) > fresh:
            continue
        score = held(files, worker.get("loaded_models") or ())
        if score > best:
            best, best_id = score, worker.get("id")
    return best_id


__all__ = ["DELAY", "MODEL_EXTENSIONS", "TRIES", "better_idle_holder", "held", "model_files"]
