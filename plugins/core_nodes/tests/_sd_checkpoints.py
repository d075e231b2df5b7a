"""The random-weight SD checkpoints ComfyUI's references were made with, generated once and reused.

``data/make_checkpoint.py`` writes them (the tiny SD1.5 one in about 14 s, the
6.9 GB SDXL one in about 3 minutes) into ``.cache/checkpoints`` at the
repository root, through a partial file so that two test processes never read
half a file. The compat and userdata tests take the tiny one from here too.
A missing generator or a failed run fails the test: a parity check that cannot
run must not pass as skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
GENERATOR = Path(__file__).resolve().parent / "data" / "make_checkpoint.py"
CHECKPOINT_CACHE = REPO_ROOT / ".cache" / "checkpoints"
TINY_CHECKPOINT_NAME = "sd15-tiny-seed0.safetensors"
TINY_CHECKPOINT_BYTES = 573_247_766
SDXL_CHECKPOINT_NAME = "sdxl-seed0.safetensors"
SDXL_CHECKPOINT_BYTES = 6_938_041_144


def generated_checkpoint(name: str, size: int, preset: str) -> Path:
    """``CHECKPOINT_CACHE/name``, written by the generator's ``preset`` (seed 0) unless it is there at ``size``."""
    target = CHECKPOINT_CACHE / name
    if target.is_file() and target.stat().st_size == size:
        return target
    if not GENERATOR.is_file():
        pytest.fail(f"test data missing: {GENERATOR.relative_to(REPO_ROOT)}", pytrace=False)
    CHECKPOINT_CACHE.mkdir(parents=True, exist_ok=True)
    partial = CHECKPOINT_CACHE / f"{name}.{os.getpid()}.partial"
    done = subprocess.run([sys.executable, str(GENERATOR), "--preset", preset, "--seed", "0", "--out", str(partial)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        free = shutil.disk_usage(CHECKPOINT_CACHE).free / 2**30
        pytest.fail(f"checkpoint generator exited with {done.returncode} ({free:.1f} GiB free in "
                    f"{CHECKPOINT_CACHE}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}", pytrace=False)
    os.replace(partial, target)
    assert target.stat().st_size == size
    return target


def tiny_checkpoint() -> Path:
    """The tiny SD1.5 checkpoint every SD1.5 reference was made with."""
    return generated_checkpoint(TINY_CHECKPOINT_NAME, TINY_CHECKPOINT_BYTES, "tiny")


def sdxl_checkpoint() -> Path:
    """The full-size SDXL base checkpoint of the SDXL references."""
    return generated_checkpoint(SDXL_CHECKPOINT_NAME, SDXL_CHECKPOINT_BYTES, "sdxl")
