"""Running the graphs of ``_sampling_graphs`` through a real server and comparing them with ComfyUI's records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from _random_weights import link

DATA = Path(__file__).parent / "data" / "sampling_nodes"


def expected_values() -> dict[str, Any]:
    return json.loads((DATA / "values.json").read_text())


def expected(name: str) -> np.ndarray:
    return np.load(DATA / f"{name}.npy")


def install_checkpoint(graph_server: Any, checkpoint: Path) -> None:
    """Hard-link the tiny checkpoint into the server's checkpoints folder (a copy across file systems)."""
    link(checkpoint, graph_server.models_dir("checkpoints") / checkpoint.name)
    graph_server.input_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA / "gradient_mask.png", graph_server.input_dir / "gradient_mask.png")


def probe_array(value: Any) -> np.ndarray:
    """A probe's tensor: SIGMAS as is, LATENT as its ``samples``, a number as a 0-d array."""
    return value["samples"] if isinstance(value, dict) else np.asarray(value, dtype=np.float32)


def assert_close(name: str, ours: Any, rtol: float = 1e-4) -> None:
    """Max |ours - theirs| within ``rtol`` of max |theirs| (float rounding of a different op order)."""
    theirs = expected(name)
    ours = probe_array(ours)
    assert ours.shape == theirs.shape, f"{name}: shape {ours.shape} != {theirs.shape}"
    scale = max(float(np.abs(theirs).max()), 1e-6)
    err = float(np.abs(ours - theirs).max())
    assert err <= rtol * scale, f"{name}: max error {err:.3g} (relative {err / scale:.3g})"


def check(name: str, ours: Any, rtol: float = 1e-4) -> list[AssertionError]:
    """:func:`assert_close`'s failure as a list (empty when it passes), to report every probe at once."""
    try:
        assert_close(name, ours, rtol)
    except AssertionError as e:
        return [e]
    return []
