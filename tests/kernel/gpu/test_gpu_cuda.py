"""A full-size SD1.5 checkpoint on a real CUDA device (skipped without one)."""

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ROOT = Path(__file__).resolve().parents[3]
# The checkpoint generator of the core_nodes tests (their tests/data).
MAKE = ROOT / "plugins" / "core_nodes" / "tests" / "data" / "make_checkpoint.py"
UNET = "model.diffusion_model."
MB = 1024**2


@pytest.fixture(scope="module")
def sd15():
    path = ROOT / ".cache" / "checkpoints" / "sd15-sd15-seed0.safetensors"
    if not path.exists():
        assert MAKE.exists(), f"test data missing: {MAKE}"
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(MAKE), "--preset", "sd15", "--out", str(path)], check=True,
                       stdout=subprocess.DEVNULL)
    return path


def test_load_offload_reload_full_size_unet(sd15):
    from comfy_kernel.gpu import ModelManager
    from comfy_kernel.gpu.loading import load_state_dict, weights_module
    from comfy_kernel.gpu.memory import DEVICE, DISK, OFFLOAD

    manager = ModelManager("cuda:0", offload_device="cpu")
    unet = manager.register_file(sd15, weights_module, prefix=UNET)
    assert unet.size > 1500 * MB  # ~860 M fp16 parameters
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()

    with manager.use(unet) as model:
        assert unet.state == DEVICE
        tensors = model.tensors()
        assert all(t.device.type == "cuda" for t in tensors.values())
        key = "out.2.weight"
        expected = load_state_dict(sd15, "cpu", prefix=UNET + key, strip_prefix=False)[UNET + key]
        assert torch.equal(tensors[key].cpu(), expected)
        del tensors
    loaded = torch.cuda.memory_allocated() - base
    peak = torch.cuda.max_memory_allocated() - base
    # one copy of the weights on the device, never two
    assert loaded <= unet.size + 64 * MB
    assert peak <= unet.size * 1.1

    assert manager.free_memory(device="cuda:0") == unet.size
    assert unet.state == OFFLOAD
    assert torch.cuda.memory_allocated() - base < 64 * MB

    with manager.use(unet):
        assert unet.state == DEVICE and unet.loads == 1  # back from host memory, not from the file
    assert manager.unload_all() == 1 and unet.state == DISK
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() - base < 64 * MB


def test_simulated_budget_on_cuda_evicts_and_streams(sd15):
    from comfy_kernel.gpu import ModelManager
    from comfy_kernel.gpu.loading import weights_module
    from comfy_kernel.gpu.memory import DEVICE, OFFLOAD, STREAMED

    manager = ModelManager("cuda:0", budgets={"cuda:0": 600 * MB}, offload_device="cpu")
    vae = manager.register_file(sd15, weights_module, prefix="first_stage_model.")
    clip = manager.register_file(sd15, weights_module, prefix="cond_stage_model.")
    unet = manager.register_file(sd15, weights_module, prefix=UNET)
    with manager.use(vae):
        pass
    with manager.use(clip):  # 160 MB + 246 MB fit together
        assert vae.state == DEVICE
    with manager.use(unet):  # 1.7 GB can never fit: streamed, and the others stay
        assert unet.state == STREAMED and vae.state == DEVICE and clip.state == DEVICE
    assert manager.free_memory(device="cuda:0") == vae.size + clip.size
    assert vae.state == OFFLOAD and clip.state == OFFLOAD
    manager.unload_all()
