"""Shared fixtures: the reference outputs and the tiny SD1.5 checkpoint they were made with.

The reference data (ComfyUI's captured outputs, the workflows and the input
image) lives in ``tests/data/reference``; the checkpoint is generated once by
``tests/data/make_checkpoint.py`` and cached (see ``_sd_checkpoints``). Missing
data fails the tests that need it: a parity check that cannot run must not pass
as skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _sd_checkpoints  # noqa: E402
from _graph import graph_server  # noqa: E402,F401  (a fixture for every test module here)

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA_DIR = Path(__file__).resolve().parent / "data"
REFERENCE_DIR = DATA_DIR / "reference"
GENERATOR = _sd_checkpoints.GENERATOR


def require_data(path: Path) -> Path:
    """``path`` if the test data is there; a failure (never a skip) otherwise."""
    if not path.exists():
        pytest.fail(f"test data missing: {path.relative_to(REPO_ROOT)}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def reference_outputs() -> Path:
    """Folder of ComfyUI's captured outputs, one subfolder per workflow."""
    return require_data(REFERENCE_DIR / "outputs")


@pytest.fixture(scope="session")
def checkpoint_generator() -> Path:
    """The script that writes the random-weight checkpoints the references were made with."""
    return require_data(GENERATOR)


@pytest.fixture(scope="session")
def sd15_tiny_checkpoint() -> Path:
    """Path of the tiny random-weight SD1.5 checkpoint all references were made with."""
    return _sd_checkpoints.tiny_checkpoint()


@pytest.fixture(scope="session")
def sdxl_checkpoint() -> Path:
    """The random-weight SDXL base checkpoint of the SDXL references (6.9 GB, about 3 minutes to write once)."""
    return _sd_checkpoints.sdxl_checkpoint()


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
