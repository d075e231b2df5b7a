"""Image nodes called directly: LoadImage against ComfyUI's capture, masks, resizing, padding, colours."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _nodes import use_base  # noqa: E402

from comfy_kernel_core_nodes.nodes import image as nodes  # noqa: E402


@pytest.fixture
def base(tmp_path):
    use_base(tmp_path)
    return tmp_path


def test_load_image_equals_comfyui_capture(base, reference_outputs):
    shutil.copy(reference_outputs.parent / "inputs" / "ref_input_64.png", base / "input" / "ref_input_64.png")
    assert nodes.LoadImage.INPUT_TYPES()["required"]["image"][0] == ["ref_input_64.png"]
    image, mask = nodes.LoadImage().load_image("ref_input_64.png")
    expected = np.load(reference_outputs / "img2img" / "input_image.npy")
    assert image.dtype == torch.float32 and torch.equal(image, torch.from_numpy(expected))
    assert mask.shape == (1, 64, 64) and not mask.any()
    assert nodes.LoadImage.VALIDATE_INPUTS("ref_input_64.png") is True
    assert nodes.LoadImage.VALIDATE_INPUTS("missing.png") == "Invalid image file: missing.png"
    assert len(nodes.LoadImage.IS_CHANGED("ref_input_64.png")) == 64


def test_alpha_becomes_the_mask(base):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, "RGBA").save(base / "input" / "a.png")
    image, mask = nodes.LoadImage().load_image("a.png")
    assert image.shape == (1, 4, 6, 3) and mask.shape == (1, 4, 6)
    assert mask[0, 0, 0] == 1.0 and mask[0, 1, 1] == 0.0
    (alpha,) = nodes.LoadImageMask().load_image("a.png", "alpha")
    assert torch.equal(alpha, mask)
    (red,) = nodes.LoadImageMask().load_image("a.png", "red")
    assert torch.allclose(red, torch.full((1, 4, 6), 200 / 255))


def test_load_image_refuses_paths_outside_input(base):
    (base / "secret.png").write_bytes(b"x")
    with pytest.raises(FileNotFoundError):
        nodes.LoadImage().load_image("../secret.png")


def test_resize_invert_batch_pad_and_empty_image(base):
    img = torch.rand(1, 16, 24, 3)
    (scaled,) = nodes.ImageScale().upscale(img, "bilinear", 12, 0, "disabled")
    assert scaled.shape == (1, 8, 12, 3)
    (by,) = nodes.ImageScaleBy().upscale(img, "lanczos", 0.5)
    assert by.shape == (1, 8, 12, 3)
    (inv,) = nodes.ImageInvert().invert(img)
    assert torch.equal(inv, 1.0 - img)
    (batch,) = nodes.ImageBatch().batch(img, torch.rand(1, 8, 8, 3))
    assert batch.shape == (2, 16, 24, 3)
    padded, mask = nodes.ImagePadForOutpaint().expand_image(img, 8, 0, 0, 8, 4)
    assert padded.shape == (1, 24, 32, 3) and mask.shape == (1, 24, 32)
    assert torch.equal(padded[:, :16, 8:], img) and padded[0, 20, 0, 0] == 0.5
    assert mask[0, 20, 0] == 1.0 and mask[0, 0, 31] == 0.0 and 0 < mask[0, 0, 8] <= 1
    (empty,) = nodes.EmptyImage().generate(4, 2, 3, 0xFF8000)
    assert empty.shape == (3, 2, 4, 3)
    assert empty[0, 0, 0].tolist() == pytest.approx([1.0, 128 / 255, 0.0])
