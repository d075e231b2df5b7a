"""The tiny random-weight SD1.5 checkpoint shared with core_nodes' tests (generated once, cached)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
# The generator belongs to the core_nodes tests' data, which the compat tests need anyway.
GENERATOR = REPO_ROOT / "plugins" / "core_nodes" / "tests" / "data" / "make_checkpoint.py"
CHECKPOINT = REPO_ROOT / ".cache" / "checkpoints" / "sd15-tiny-seed0.safetensors"
CHECKPOINT_BYTES = 573_247_766


def tiny_checkpoint() -> Path:
    """The checkpoint's path, generated when missing; a missing generator fails the test."""
    if CHECKPOINT.is_file() and CHECKPOINT.stat().st_size == CHECKPOINT_BYTES:
        return CHECKPOINT
    if not GENERATOR.is_file():
        pytest.fail(f"test data missing: {GENERATOR.relative_to(REPO_ROOT)}", pytrace=False)
    CHECKPOINT.parent.mkdir(parents=True, exist_ok=True)
    partial = CHECKPOINT.with_name(f"{CHECKPOINT.name}.{os.getpid()}.partial")
    done = subprocess.run([sys.executable, str(GENERATOR), "--preset", "tiny", "--seed", "0", "--out", str(partial)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        free = shutil.disk_usage(CHECKPOINT.parent).free / 2**30
        pytest.fail(f"checkpoint generator exited with {done.returncode} ({free:.1f} GiB free):\n"
                    f"{done.stderr[-4000:]}", pytrace=False)
    os.replace(partial, CHECKPOINT)
    return CHECKPOINT
