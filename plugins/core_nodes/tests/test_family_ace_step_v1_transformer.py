"""ACE-Step 1.0's transformer against ComfyUI 0.3.64's, on the small network of
_files_ace_step_v1_transformer.py (outputs recorded by
data/ace_step_v1/record_transformer.py).

Float32 on the CPU: the largest measured difference to ComfyUI is 1.4e-6 at
outputs of standard deviation ~1.2 (the linear attention's sums run in
another order); the tests allow 2e-5. In bfloat16 the relative error is 0.7%.
"""

from __future__ import annotations

import pytest
import torch
from _files_ace_step import DIT, _shapes
from _files_ace_step_v1_transformer import PREFIX, reference, transformer_shapes, transformer_state_dict
from _random_weights import module_shapes

from comfy_kernel_core_nodes.families.ace_step.transformer import AceStep15
from comfy_kernel_core_nodes.families.ace_step_v1.transformer import (
    AceStepV1Config,
    AceStepV1Transformer,
    config_from_shapes,
    is_ace_v1_transformer,
)
from comfy_kernel_core_nodes.model import ops

TOLERANCE = 2e-5


def _build(config: AceStepV1Config, layers=ops.plain, compute: torch.dtype | None = None) -> AceStepV1Transformer:
    with torch.device("meta"):
        return AceStepV1Transformer(config, layers, compute)


def _loaded(layers=ops.plain, compute: torch.dtype | None = None, dtype: torch.dtype = torch.float32):
    sd = {k[len(PREFIX):]: v.to(dtype) for k, v in transformer_state_dict(0).items()}
    model = _build(config_from_shapes(transformer_shapes()), layers, compute)
    model.load_state_dict(sd, strict=True, assign=True)
    if layers.cast:
        ops.set_compute_dtype(model, compute)
    return model.eval()


def test_config_from_shapes_builds_every_tensor():
    shapes = transformer_shapes()
    config = config_from_shapes({PREFIX + k: v for k, v in shapes.items()}, PREFIX)
    assert config == config_from_shapes(shapes)
    assert (config.hidden_size, config.num_heads, config.num_layers, config.ff_inner) == (256, 2, 2, 384)
    assert (config.lyric_vocab, config.lyric_embed_dim, config.lyric_width, config.lyric_heads,
            config.lyric_ffn, config.lyric_layers) == (96, 48, 64, 4, 128, 2)
    assert (config.text_dim, config.speaker_dim, config.ssl_dims) == (64, 512, (24, 16))
    assert module_shapes(_build(config)) == shapes
    sd = transformer_state_dict(0)
    assert set(sd) == {PREFIX + k for k in shapes}


def test_released_layout_round_trips():
    """The defaults are the released 3.5B network: its shapes give back the same config."""
    shapes = module_shapes(_build(AceStepV1Config()))
    assert config_from_shapes(shapes) == AceStepV1Config()
    assert is_ace_v1_transformer(shapes)
    params = sum(torch.Size(s).numel() for s in shapes.values())
    assert 3.2e9 < params < 3.8e9, params


def test_is_ace_v1_transformer():
    shapes = {PREFIX + k: v for k, v in transformer_shapes().items()}
    assert is_ace_v1_transformer(shapes, PREFIX)
    assert not is_ace_v1_transformer(shapes)
    ace15 = _shapes(lambda: AceStep15(DIT, ops.plain))
    assert not is_ace_v1_transformer(ace15)
    assert not is_ace_v1_transformer({PREFIX + k: v for k, v in ace15.items()}, PREFIX)
    pruned = {k: v for k, v in shapes.items() if "lyric_encoder" not in k}
    assert not is_ace_v1_transformer(pruned, PREFIX)


CASES = {
    "plain": {},
    "half": {"lyrics_strength": 0.5, "speaker_embeds": "speaker_embeds"},
    "lyric_mask": {"lyric_mask": "lyric_mask"},
    "masked": {"text_attention_mask": "text_attention_mask", "lyric_mask": "lyric_mask"},
}


def _inputs(ref, case: str) -> dict:
    kwargs = {k: torch.from_numpy(ref[v]) if isinstance(v, str) else v for k, v in CASES[case].items()}
    return {"x": torch.from_numpy(ref["x"]), "timestep": torch.from_numpy(ref["timestep"]),
            "context": torch.from_numpy(ref["context"]), "lyric_token_idx": torch.from_numpy(ref["lyric_token_idx"]),
            **kwargs}


@pytest.fixture(scope="module")
def ref():
    return reference()


@pytest.fixture(scope="module")
def model():
    return _loaded()


@pytest.mark.parametrize("case", list(CASES))
def test_forward_matches_comfyui(model, ref, case):
    expected = torch.from_numpy(ref[f"out_{case}"])
    with torch.no_grad():
        out = model(**_inputs(ref, case), control=None, transformer_options={})
    assert out.shape == expected.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=TOLERANCE)


def test_cases_differ(ref):
    """The recorded cases are distinct, so each comparison checks its own input."""
    outs = [torch.from_numpy(ref[f"out_{case}"]) for case in CASES]
    for i, a in enumerate(outs):
        for b in outs[i + 1:]:
            assert (a - b).abs().max() > 1e-2


def test_cast_layers_from_bfloat16_weights(ref):
    """bf16-stored weights computed in float32 through the casting layers give the same velocity."""
    model = _loaded(ops.manual_cast, torch.float32, torch.bfloat16)
    with torch.no_grad():
        out = model(**_inputs(ref, "half"))
    torch.testing.assert_close(out, torch.from_numpy(ref["out_half"]), rtol=0, atol=TOLERANCE)


def test_bfloat16_forward_stays_close(ref):
    model = _loaded(dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    with torch.no_grad():
        out = model(**_inputs(ref, "plain"))
    assert out.dtype == torch.bfloat16
    expected = torch.from_numpy(ref["out_plain"])
    error = (out.float() - expected).norm() / expected.norm()
    assert error < 0.03, error

