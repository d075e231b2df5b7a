"""Shared fixtures: the reference outputs and the tiny SD1.5 checkpoint they were made with.

The reference data (ComfyUI's captured outputs, the workflows and the input
image) lives in ``tests/data/reference``; the checkpoint is generated once (about
14 s) by ``tests/data/make_checkpoint.py`` and cached under `.cache/checkpoints/`
at the repository root; later sessions reuse it. Missing data fails the tests
that need it: a parity check that cannot run must not pass as skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _graph import graph_server  # noqa: E402,F401  (a fixture for every test module here)

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA_DIR = Path(__file__).resolve().parent / "data"
REFERENCE_DIR = DATA_DIR / "reference"
GENERATOR = DATA_DIR / "make_checkpoint.py"
CHECKPOINT_CACHE = REPO_ROOT / ".cache" / "checkpoints"
TINY_CHECKPOINT_NAME = "sd15-tiny-seed0.safetensors"
TINY_CHECKPOINT_BYTES = 573_247_766


def require_data(path: Path) -> Path:
    """``path`` if the test data is there; a failure (never a skip) otherwise."""
    if not path.exists():
        pytest.fail(f"test data missing: {path.relative_to(REPO_ROOT)}", pytrace=False)
    return path


def run_generator(cmd: list[str], partial: Path) -> None:
    """Run the checkpoint generator; a failure says why (its output, the free disk space)."""
    import shutil

    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        free = shutil.disk_usage(partial.parent).free / 2**30
        pytest.fail(f"checkpoint generator exited with {done.returncode} ({free:.1f} GiB free in "
                    f"{partial.parent}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}", pytrace=False)


@pytest.fixture(scope="session")
def reference_outputs() -> Path:
    """Folder of ComfyUI's captured outputs, one subfolder per workflow."""
    return require_data(REFERENCE_DIR / "outputs")


@pytest.fixture(scope="session")
def checkpoint_generator() -> Path:
    """The script that writes the random-weight checkpoints the references were made with."""
    return require_data(GENERATOR)


@pytest.fixture(scope="session")
def sd15_tiny_checkpoint(checkpoint_generator: Path) -> Path:
    """Path of the tiny random-weight SD1.5 checkpoint all references were made with."""
    target = CHECKPOINT_CACHE / TINY_CHECKPOINT_NAME
    if target.is_file() and target.stat().st_size == TINY_CHECKPOINT_BYTES:
        return target
    CHECKPOINT_CACHE.mkdir(parents=True, exist_ok=True)
    partial = CHECKPOINT_CACHE / f"{TINY_CHECKPOINT_NAME}.{os.getpid()}.partial"
    cmd = [
        sys.executable,
        str(checkpoint_generator),
        "--preset", "tiny", "--seed", "0",
        "--out", str(partial),
    ]
    run_generator(cmd, partial)
    os.replace(partial, target)
    assert target.stat().st_size == TINY_CHECKPOINT_BYTES
    return target


SDXL_CHECKPOINT_NAME = "sdxl-seed0.safetensors"
SDXL_CHECKPOINT_BYTES = 6_938_041_144


@pytest.fixture(scope="session")
def sdxl_checkpoint(checkpoint_generator: Path) -> Path:
    """The random-weight SDXL base checkpoint of the SDXL references (6.9 GB, about 3 minutes to write once)."""
    target = CHECKPOINT_CACHE / SDXL_CHECKPOINT_NAME
    if target.is_file() and target.stat().st_size == SDXL_CHECKPOINT_BYTES:
        return target
    CHECKPOINT_CACHE.mkdir(parents=True, exist_ok=True)
    partial = CHECKPOINT_CACHE / f"{SDXL_CHECKPOINT_NAME}.{os.getpid()}.partial"
    cmd = [sys.executable, str(checkpoint_generator), "--preset", "sdxl", "--seed", "0",
           "--out", str(partial)]
    run_generator(cmd, partial)
    os.replace(partial, target)
    assert target.stat().st_size == SDXL_CHECKPOINT_BYTES
    return target


@pytest.fixture(scope="session")
def sd15_tiny_parts(sd15_tiny_checkpoint: Path):
    """(unet, vae, clip) state dicts of the tiny checkpoint, read once per session."""
    from _sd import split

    return split(sd15_tiny_checkpoint)


def _build(module: Any, sd: dict, dtype: Any) -> Any:
    from comfy_kernel_core_nodes.model.files import load_module

    return load_module(module, {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}, "test")


@pytest.fixture(scope="session")
def sd15_tiny_clip(sd15_tiny_parts):
    """The tiny checkpoint's text encoder (fp16 weights, fp32 maths)."""
    import torch

    from comfy_kernel_core_nodes.components.clip.text_model import CLIPTextModel

    with torch.device("meta"):
        model = CLIPTextModel()
    return _build(model, sd15_tiny_parts[2], torch.float16)


@pytest.fixture(scope="session")
def sd15_tiny_unet(sd15_tiny_parts):
    """The tiny checkpoint's UNet in fp32, its layout read from the keys."""
    import torch

    from comfy_kernel_core_nodes.families.sd.detect import unet_config
    from comfy_kernel_core_nodes.families.sd.models import SD15, unet_layout
    from comfy_kernel_core_nodes.families.sd.unet import UNetModel

    shapes = {k: tuple(v.shape) for k, v in sd15_tiny_parts[0].items()}
    with torch.device("meta"):
        model = UNetModel(unet_layout(SD15(unet_config(shapes)).unet_config))
    return _build(model, sd15_tiny_parts[0], torch.float32)


@pytest.fixture(scope="session")
def sd15_tiny_vae(sd15_tiny_parts):
    """The tiny checkpoint's VAE in fp32."""
    import torch

    from comfy_kernel_core_nodes.components.kl_vae import AutoencoderKL

    with torch.device("meta"):
        model = AutoencoderKL()
    return _build(model, sd15_tiny_parts[1], torch.float32)


@pytest.fixture(scope="module")
def single_torch_thread():
    """Run a module's model calls on one CPU thread, restoring the previous setting afterwards.

    The reference workloads are tiny (8x8 to 12x12 latents, 77 tokens), so extra
    threads mostly add synchronisation; on a shared or busy CI machine, two
    spinning OpenMP threads made these tests several times slower than one.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
