"""The tiny random-weight SD1.5 checkpoint, from the core_nodes tests (generated once, cached)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
# The generator and its cache belong to the core_nodes tests' data, which the compat tests need anyway.
sys.path.append(str(REPO_ROOT / "plugins" / "core_nodes" / "tests"))
from _sd_checkpoints import CHECKPOINT_CACHE, TINY_CHECKPOINT_NAME, tiny_checkpoint  # noqa: E402,F401

CHECKPOINT = CHECKPOINT_CACHE / TINY_CHECKPOINT_NAME
