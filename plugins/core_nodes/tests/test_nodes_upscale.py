"""Upscale models through the server: random-weight files in real key layouts, against spandrel and ComfyUI."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _media import Decoded, gradient_frames, tones, write_video  # noqa: E402
from _upscale_models import real_esrgan, write_all  # noqa: E402

DATA = Path(__file__).parent / "data" / "upscale"

if importlib.util.find_spec("spandrel") is None:
    pytest.skip("spandrel is not installed (pip install --no-deps 'spandrel>=0.4,<0.5'; tox does this)",
                allow_module_level=True)


def tiled_input() -> np.ndarray:
    """The 600x560 8-bit image ComfyUI's capture was made from."""
    y, x = np.mgrid[0:560, 0:600].astype(np.float64)
    rgb = np.stack([0.5 + 0.5 * np.sin(x / 17 + y / 29), 0.5 + 0.5 * np.cos(x / 23 - y / 13),
                    ((x * 7 + y * 3) % 97) / 96], axis=-1)
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


def small_input() -> np.ndarray:
    y, x = np.mgrid[0:36, 0:40]
    return np.stack([x * 6, y * 7, (x * y) % 251], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def models(graph_server):
    files = write_all(graph_server.models_dir("upscale_models"))
    shutil.copy(DATA / "compact-1x.safetensors", graph_server.models_dir("upscale_models"))
    Image.fromarray(small_input()).save(graph_server.input_dir / "small.png")
    Image.fromarray(tiled_input()).save(graph_server.input_dir / "large.png")
    return files


def _upscale(model: str, image: str, name: str) -> dict:
    return {
        f"{name}_load": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": model}},
        f"{name}_img": {"class_type": "LoadImage", "inputs": {"image": image}},
        f"{name}_up": {"class_type": "ImageUpscaleWithModel",
                       "inputs": {"upscale_model": [f"{name}_load", 0], "image": [f"{name}_img", 0]}},
        f"{name}_probe": {"class_type": "TestProbe", "inputs": {"value": [f"{name}_up", 0], "name": name}},
    }


def _spandrel(path: Path, image: np.ndarray) -> np.ndarray:
    """spandrel's own model for the file, called directly (keys fixed up only where ComfyUI does)."""
    from comfy_kernel_core_nodes.upscale.spandrel_import import import_spandrel

    spandrel = import_spandrel()
    state = spandrel.ModelLoader().load_state_dict_from_file(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    descriptor = spandrel.ModelLoader().load_from_state_dict(state).eval()
    pixels = torch.from_numpy(image.astype(np.float32) / 255.0).movedim(-1, 0)[None]
    with torch.inference_mode():
        return descriptor(pixels).clamp(0, 1)[0].movedim(0, -1).numpy()


def test_every_layout_matches_spandrel(graph_server, models):
    prompt = {}
    for kind, path in models.items():
        prompt.update(_upscale(path.name, "small.png", kind))
    probes = graph_server.run(prompt)
    scales = {"esrgan": 4, "real_esrgan": 4, "compact": 2, "swinir": 2}
    for kind, path in models.items():
        ours = probes[kind][0]
        assert ours.shape == (36 * scales[kind], 40 * scales[kind], 3), kind
        expected = _spandrel(path, small_input())
        assert np.abs(ours - expected).max() < 1e-5, kind
        assert ours.std() > 0.01, kind  # the weights do something: the comparison can fail


def test_tiles_blend_like_comfyui(graph_server, models):
    probes = graph_server.run(_upscale("compact-1x.safetensors", "large.png", "large"))
    ours = probes["large"][0]
    assert ours.shape == (560, 600, 3)
    assert np.abs(ours[448:544, 448:544] - np.load(DATA / "comfyui-tiled-seams.npy")).max() < 1e-5
    pooled = ours.reshape(70, 8, 75, 8, 3).mean(axis=(1, 3))
    assert np.abs(pooled - np.load(DATA / "comfyui-tiled-pooled8.npy")).max() < 1e-5
    untiled = _spandrel(DATA / "compact-1x.safetensors", tiled_input())
    assert np.abs(untiled[448:544, 448:544] - ours[448:544, 448:544]).max() > 1e-3  # the seams were blended


def test_free_unloads_upscale_models(graph_server, models):
    states = {"class_type": "TestModelStates", "inputs": {}}
    prompt = {**_upscale("compact-2x.safetensors", "small.png", "a"), "s": {**states, "inputs": {"after": ["a_up", 0]}}}
    outputs = graph_server.outputs(prompt)
    mine = [s for s in outputs["s"]["states"] if "compact-2x.safetensors#upscale" in s]
    assert len(mine) == 1 and mine[0].endswith("=device:1")
    assert graph_server.server.post("/free", json={"unload_models": True}).status_code == 200
    after = graph_server.outputs({"s": states})["s"]["states"]
    assert [s for s in after if "compact-2x.safetensors#upscale" in s][0].endswith("=disk:1")
    assert graph_server.server.post("/free", json={"free_memory": True}).status_code == 200
    again = graph_server.outputs(prompt)["s"]["states"]
    assert [s for s in again if "compact-2x.safetensors#upscale" in s][0].endswith("=device:2")


def test_bad_model_files_fail_clearly(graph_server, models):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2, 2)}, str(graph_server.models_dir("upscale_models") / "junk.safetensors"))
    error = graph_server.error(_upscale("junk.safetensors", "small.png", "junk"))
    assert "not an upscale model architecture spandrel knows" in error["exception_message"]
    r = graph_server.server.post("/prompt", json={"prompt": _upscale("missing.pth", "small.png", "m")})
    assert r.status_code == 400


def test_out_of_memory_halves_the_tile(tmp_path):
    """A device that cannot fit a 512-pixel tile: the upscale retries with 256-pixel tiles."""
    from comfy_kernel_core_nodes.upscale.model import load_descriptor, upscale_image

    descriptor = load_descriptor(str(DATA / "compact-1x.safetensors"))
    seen: list[int] = []

    class SmallDevice:
        scale, output_channels, device = descriptor.scale, descriptor.output_channels, descriptor.device

        def __call__(self, tile: torch.Tensor) -> torch.Tensor:
            seen.append(max(tile.shape[-2:]))
            if max(tile.shape[-2:]) > 300:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return descriptor(tile)

    image = torch.from_numpy(tiled_input().astype(np.float32) / 255.0)[None]
    out = upscale_image(SmallDevice(), image)
    assert seen[0] == 512 and max(seen[1:]) == 256
    reference = upscale_image(descriptor, image, tile=256)
    assert torch.equal(out, reference)

    class NoMemory(SmallDevice):
        def __call__(self, tile: torch.Tensor) -> torch.Tensor:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        upscale_image(NoMemory(), image)


def test_rgba_keeps_its_alpha():
    from comfy_kernel_core_nodes.upscale.model import load_descriptor, upscale_image

    descriptor = load_descriptor(str(DATA / "compact-1x.safetensors"))
    image = torch.rand(2, 20, 24, 4)
    out = upscale_image(descriptor, image)
    assert out.shape == (2, 20, 24, 4)
    assert torch.allclose(out[..., 3], image[..., 3], atol=1e-6)
    assert torch.allclose(out[..., :3], upscale_image(descriptor, image[..., :3]))


def test_spandrel_imports_without_torchvision():
    code = ("import sys, importlib.util\n"
            "from comfy_kernel_core_nodes.upscale.spandrel_import import import_spandrel\n"
            "real = importlib.util.find_spec('torchvision') is not None\n"
            "spandrel = import_spandrel()\n"
            "ids = {a.architecture.id for a in spandrel.MAIN_REGISTRY.architectures()}\n"
            "assert {'ESRGAN', 'SwinIR', 'Compact', 'HAT', 'DAT', 'SPAN'} <= ids, ids\n"
            "if not real:\n"
            "    assert 'torchvision' not in sys.modules\n"
            "    try:\n"
            "        import torchvision\n"
            "    except ModuleNotFoundError:\n"
            "        print('stand-in removed')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tiled_upscale_on_cuda_matches_comfyui():
    from comfy_kernel_core_nodes.upscale.model import load_descriptor, upscale_image

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        descriptor = load_descriptor(str(DATA / "compact-1x.safetensors"), "cuda")
        image = torch.from_numpy(tiled_input().astype(np.float32) / 255.0)[None]
        out = upscale_image(descriptor, image)[0].numpy()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert np.abs(out[448:544, 448:544] - np.load(DATA / "comfyui-tiled-seams.npy")).max() < 1e-4


def test_gan_upscaler_template_runs(graph_server, models):
    """The frontend's "GAN upscaler" video template, converted from its UI format and run end to end."""
    import glob
    import json
    import os

    from safetensors.torch import save_file

    spec = importlib.util.find_spec("comfyui_workflow_templates_core")
    if spec is None:
        pytest.skip("comfyui-workflow-templates is not installed")
    found = glob.glob(os.path.join(os.path.dirname(os.path.dirname(spec.origin)), "comfyui_workflow_templates_*",
                                   "**", "utility-gan_upscaler.json"), recursive=True)
    if not found:
        pytest.skip("the GAN upscaler template is not in this comfyui-workflow-templates")
    template = json.loads(Path(found[0]).read_text())
    save_file(real_esrgan(), str(graph_server.models_dir("upscale_models") / "RealESRGAN_x4plus.safetensors"))
    frames = gradient_frames(4, 24, 32)
    write_video(graph_server.input_dir / "gan_input.mp4", frames, 30, (tones(16000, 4 / 30), 16000))

    converted = graph_server.server.post("/api/workflows/convert", json={"workflow": template}).json()
    assert converted["missing_nodes"] == []
    outputs = graph_server.outputs(converted["prompt"])
    (saved,) = [o for o in outputs.values() if "animated" in o]
    item = saved["images"][0]
    result = Decoded(graph_server.output_dir / item["subfolder"] / item["filename"])
    assert item["subfolder"] == "video" and result.fps == 30
    assert result.frames.shape == (4, 96, 128, 3) and result.audio is not None
    source = Decoded(graph_server.input_dir / "gan_input.mp4").frames
    path = graph_server.models_dir("upscale_models") / "RealESRGAN_x4plus.safetensors"
    expected = np.stack([_spandrel(path, frame) for frame in source])
    assert np.abs(result.frames / 255.0 - expected).mean() < 0.02
