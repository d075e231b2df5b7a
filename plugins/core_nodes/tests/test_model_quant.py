"""Quantized files (model/quant.py, model/quant_layouts.py): weights stay quantized in memory and compute as
their dequantized values."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from _quant_files import comfy_quant, dequantize_layers, int8_layer, quantize_layers, regular_hadamard
from _random_weights import fp8_state_dict, write
from torch import nn

from comfy_kernel_core_nodes.model import ops, quant_layouts
from comfy_kernel_core_nodes.model.files import tensor_shapes
from comfy_kernel_core_nodes.model.quant import UnsupportedQuantization, inspect, network_weights


class Tiny(nn.Module):
    def __init__(self, layers, compute=None):
        super().__init__()
        self.first = layers.Linear(8, 16)
        self.norm = layers.LayerNorm(16)
        self.second = layers.Linear(16, 4)

    def forward(self, x):
        return self.second(self.norm(self.first(x)))


def _reference() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: torch.randn_like(v) for k, v in Tiny(ops.plain).state_dict().items()}


def _load(path, weight_dtype=None):
    weights = network_weights(str(path), "", tensor_shapes(str(path)), "tiny", "unet", Tiny,
                              weight_dtype=weight_dtype)
    return weights, weights.build(weights.read("cpu"))


def _dequantized(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        if key.endswith((".scale_weight", ".weight_scale", ".input_scale", ".comfy_quant")) or key == "scaled_fp8":
            continue
        scale = sd.get(key[: -len(".weight")] + ".scale_weight", sd.get(key[: -len(".weight")] + ".weight_scale"))
        value = value.float()
        out[key] = value * scale if scale is not None and key.endswith(".weight") else value
    return out


def _expected(sd, x):
    model = Tiny(ops.plain)
    model.load_state_dict(_dequantized(sd))
    return model(x)


@pytest.mark.parametrize("scaled", [False, True])
def test_fp8_files_stay_fp8_and_compute_their_values(tmp_path, scaled):
    sd = fp8_state_dict(_reference(), scaled=scaled)
    path = write(tmp_path / "tiny.safetensors", sd)
    info = inspect(str(path))
    assert info.fp8 == torch.float8_e4m3fn and info.scaled == scaled
    weights, model = _load(path)
    assert model.first.weight.dtype == torch.float8_e4m3fn and model.norm.weight.dtype == torch.float32
    assert isinstance(model.first, ops.CastLinear)
    assert hasattr(model.first, "scale_weight") == scaled
    assert "scaled_fp8" not in weights.keys and "first.scale_weight" not in weights.keys
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), _expected(sd, x), rtol=1e-5, atol=1e-5)


def test_mixed_precision_file(tmp_path):
    """ComfyUI's per-layer format: one fp8 layer with ``weight_scale`` and ``comfy_quant``, one bf16 layer."""
    ref = _reference()
    sd = {k: v.to(torch.bfloat16) for k, v in ref.items()}
    scale = ref["first.weight"].abs().max() / 448
    sd["first.weight"] = (ref["first.weight"] / scale).to(torch.float8_e4m3fn)
    sd["first.weight_scale"] = scale.reshape(())
    sd["first.input_scale"] = torch.tensor(1.0)
    sd["first.comfy_quant"] = torch.tensor(list(json.dumps({"format": "float8_e4m3fn"}).encode()), dtype=torch.uint8)
    path = write(tmp_path / "mixed.safetensors", sd)
    _, model = _load(path)
    assert model.first.weight.dtype == torch.float8_e4m3fn and model.second.weight.dtype == torch.float32
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), _expected(sd, x), rtol=1e-5, atol=1e-5)


def test_weight_dtype_stores_linear_weights_in_fp8(tmp_path):
    path = write(tmp_path / "full.safetensors", _reference())
    weights, model = _load(path, torch.float8_e5m2)
    assert weights.key.endswith("@torch.float8_e5m2")
    assert model.first.weight.dtype == torch.float8_e5m2 and model.first.bias.dtype == torch.float32
    assert model.norm.weight.dtype == torch.float32


def test_int8_weights_without_comfy_quant_are_refused_by_name(tmp_path):
    sd = _reference()
    sd["first.weight"] = torch.zeros(16, 8, dtype=torch.int8)
    path = write(tmp_path / "int8.safetensors", sd)
    with pytest.raises(UnsupportedQuantization, match="8-bit integer"):
        inspect(str(path))


@pytest.mark.parametrize("config", [{"format": "convrot_w4a4", "convrot_groupsize": 256}, {"format": "mxfp8"},
                                    {"format": "int8_tensorwise", "convrot": True, "convrot_groupsize": 32}])
def test_other_comfy_quant_formats_are_refused_by_name(tmp_path, config):
    sd = _reference()
    sd["first.weight"] = torch.zeros(16, 8, dtype=torch.int8)
    sd["first.weight_scale"] = torch.tensor(1.0)
    sd["first.comfy_quant"] = comfy_quant(config)
    with pytest.raises(UnsupportedQuantization, match=config["format"]) as error:
        inspect(str(write(tmp_path / "other.safetensors", sd)))
    if "convrot_groupsize" in config and config["format"] == "int8_tensorwise":
        assert "32" in str(error.value)


def test_nvfp4_decoding_follows_the_documented_layout():
    """Hand-made codes and block scales: 40 rows x 48 columns (3 blocks a row), decoded element by element."""
    g = torch.Generator().manual_seed(3)
    rows, cols = 40, 48
    codes = torch.randint(0, 16, (rows, cols), generator=g)
    scales = (torch.rand(rows, cols // 16, generator=g) * 3 + 0.25).to(torch.float8_e4m3fn)
    packed = torch.zeros(rows, cols // 2, dtype=torch.uint8)
    for r in range(rows):
        for c in range(0, cols, 2):
            packed[r, c // 2] = int(codes[r, c]) * 16 + int(codes[r, c + 1])
    stored = torch.zeros(128 * 4, dtype=torch.float32)  # one 128x4 tile holds the 40x3 grid
    for r in range(rows):
        for b in range(cols // 16):
            stored[(r % 32) * 16 + (r // 32) * 4 + b] = float(scales[r, b].float())
    stored = stored.reshape(128, 4).to(torch.float8_e4m3fn)
    table = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    expected = torch.zeros(rows, cols)
    for r in range(rows):
        for c in range(cols):
            code = int(codes[r, c])
            value = table[code & 7] * (-1 if code & 8 else 1)
            expected[r, c] = value * float(scales[r, c // 16].float())
    decoded = quant_layouts.decode_nvfp4(packed, stored, (rows, cols - 5), torch.float32)
    assert decoded.shape == (rows, cols - 5)
    assert torch.equal(decoded, expected[:, : cols - 5])


def test_block_scales_span_several_tiles():
    """A 300 x 40-block grid: 3 row tiles x 10 column tiles, tiles row-tile by row-tile."""
    scales = torch.arange(300 * 40, dtype=torch.float32).reshape(300, 40)
    flat = torch.zeros(3 * 10 * 512)
    for r in range(300):
        for c in range(40):
            tile = (r // 128) * 10 + c // 4
            flat[tile * 512 + (r % 32) * 16 + ((r % 128) // 32) * 4 + c % 4] = scales[r, c]
    assert torch.equal(quant_layouts.unswizzle_block_scales(flat.reshape(384, 40), 300, 40), scales)


def test_convrot_rotation_is_the_regular_hadamard_and_its_own_inverse():
    h = quant_layouts.regular_hadamard(16).double()
    assert torch.allclose(h, regular_hadamard(16), atol=1e-7)
    assert torch.allclose(h @ h, torch.eye(16, dtype=torch.float64), atol=1e-6)
    w = torch.randn(3, 32)
    rotated = (w.double().reshape(3, 2, 16) @ regular_hadamard(16).T).reshape(3, 32).float()
    assert torch.allclose(quant_layouts.unrotate(rotated, 16), w, atol=1e-5)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(("formats", "tolerance"), [
    ({"first": {"format": "nvfp4"}, "second": {"format": "nvfp4"}}, 0.2),
    ({"first": {"format": "int8"}, "second": {"format": "int8", "per_row": True}}, 0.03),
    ({"first": {"format": "nvfp4"}, "second": {"format": "int8", "per_row": True}}, 0.2),
])
def test_packed_layers_compute_close_to_their_bf16_weights(tmp_path, formats, tolerance):
    """Weights stay packed in memory; each layer decodes when it runs (here on the CPU in fp32)."""
    bf16 = {k: v.to(torch.bfloat16) for k, v in _reference().items()}
    path = write(tmp_path / "mixed.safetensors", quantize_layers(bf16, formats))
    info = inspect(str(path))
    assert info.packed and info.quantized
    weights, model = _load(path)
    for layer, spec in formats.items():
        stored = getattr(model, layer).weight.dtype
        assert stored == (torch.uint8 if spec["format"] == "nvfp4" else torch.int8)
    assert model.first.bias.dtype == torch.float32
    assert not any(k.endswith(("weight_scale", "weight_scale_2", "comfy_quant")) for k in weights.keys)
    expected = Tiny(ops.plain)
    expected.load_state_dict({k: v.float() for k, v in bf16.items()})
    x = torch.randn(5, 8)
    with torch.no_grad():
        out, ref = model(x), expected(x)
    assert out.shape == ref.shape and _relative(out, ref) < tolerance
    assert _relative(out, ref) > 0  # the quantization error is there: the packed data was decoded


class Wide(nn.Module):
    def __init__(self, layers, compute=None):
        super().__init__()
        self.proj = layers.Linear(256, 48)
        self.small = layers.Linear(64, 256)

    def forward(self, x):
        return self.proj(self.small(x))


@pytest.mark.parametrize("write_group", [True, False])
def test_int8_convrot_layers_are_rotated_back(tmp_path, write_group):
    """``"convrot": true`` layers (template files named *_int8_convrot): group 256 by default, 16 when written."""
    torch.manual_seed(1)
    sd = {k: torch.randn_like(v).to(torch.bfloat16) / 8 for k, v in Wide(ops.plain).state_dict().items()}
    quantized = dict(sd)
    for layer, group in (("proj", 256), ("small", 16)):
        weight = quantized.pop(f"{layer}.weight")
        tensors = int8_layer(weight, convrot=group, write_group=write_group or group != 256)
        quantized.update({f"{layer}.{k}": v for k, v in tensors.items()})
    path = write(tmp_path / "convrot.safetensors", quantized)
    weights = network_weights(str(path), "", tensor_shapes(str(path)), "wide", "unet", Wide)
    model = weights.build(weights.read("cpu"))
    assert model.proj.weight.dtype == torch.int8 and int(model.small.convrot_group) == 16
    expected = Wide(ops.plain)
    expected.load_state_dict({k: v.float() for k, v in sd.items()})
    x = torch.randn(4, 64)
    with torch.no_grad():
        assert _relative(model(x), expected(x)) < 0.03
        unrotated = model.proj.weight.float() * model.proj.scale_weight
        assert _relative(F.linear(model.small(x), unrotated, model.proj.bias), expected(x)) > 0.3


class WithConv(nn.Module):
    def __init__(self, layers, compute=None):
        super().__init__()
        self.conv = layers.Conv2d(4, 8, 3)


def test_packed_weights_on_other_layers_are_refused_by_name(tmp_path):
    sd = {k: v.to(torch.bfloat16) for k, v in WithConv(ops.plain).state_dict().items()}
    sd["conv.weight"] = torch.zeros(8, 4, 3, 3, dtype=torch.int8)
    sd["conv.weight_scale"] = torch.tensor(0.1)
    sd["conv.comfy_quant"] = comfy_quant({"format": "int8_tensorwise"})
    path = write(tmp_path / "conv.safetensors", sd)
    weights = network_weights(str(path), "", tensor_shapes(str(path)), "conv", "unet", WithConv)
    with pytest.raises(ValueError, match="conv.weight.*CastConv2d"):
        weights.build(weights.read("cpu"))


def test_decoder_with_packed_layers_embeddings_and_lm_head(tmp_path):
    """A mixed text-generation file: NVFP4 attention, int8 convrot MLP, an int8 lm_head and token embeddings."""
    from comfy_kernel_core_nodes.components.llm.decoder import DecoderLM, LLMConfig

    config = LLMConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_layers=1, num_heads=4,
                       num_kv_heads=2, head_dim=16, lm_head=True)
    torch.manual_seed(2)
    sd = {k: (torch.randn_like(v) / 8 if v.ndim == 2 else 1 + torch.randn_like(v) / 50).to(torch.bfloat16)
          for k, v in DecoderLM(config).state_dict().items()}
    formats = {"model.layers.0.self_attn.q_proj": {"format": "nvfp4"},
               "model.layers.0.self_attn.o_proj": {"format": "nvfp4"},
               "model.layers.0.mlp.up_proj": {"format": "int8", "convrot": 64},
               "model.layers.0.mlp.down_proj": {"format": "int8", "per_row": True},
               "model.embed_tokens": {"format": "int8", "per_row": True},
               "lm_head": {"format": "int8", "per_row": True}}
    stored = quantize_layers(sd, formats)
    path = write(tmp_path / "llm_int8_fp4_mixed.safetensors", stored)
    weights = network_weights(str(path), "", tensor_shapes(str(path)), "llm", "text_encoder",
                              lambda o, c: DecoderLM(config, o, c))
    model = weights.build(weights.read("cpu"))
    assert model.lm_head.weight.dtype == torch.int8 and model.model.embed_tokens.weight.dtype == torch.int8
    reference = DecoderLM(config)
    reference.load_state_dict(dequantize_layers(stored, {k: tuple(v.shape) for k, v in sd.items()}))
    ids = torch.tensor([[1, 5, 9, 40, 95]])
    with torch.no_grad():
        ours = model.logits(model(model.embed(ids))[0])
        ref = reference.logits(reference(reference.embed(ids))[0])
    assert _relative(ours, ref) < 1e-4
