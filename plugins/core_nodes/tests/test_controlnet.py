"""ControlNets, Control-LoRAs and T2I-Adapters: key layouts, ComfyUI's residuals, where and when they apply.

The control files are random-weight files in the real layouts (``_control_files.py``);
``data/controlnet/*.npz`` are ComfyUI 0.3.64's ``get_control`` outputs for the
same files and inputs (see data/controlnet/README.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _control_files import (  # noqa: E402
    TINY_LAYOUT,
    control_lora_sd,
    controlnet_sd,
    t2i_adapter_sd,
    tiny_layout,
    to_diffusers,
    write_controlnet,
)
from _nodes import use_base  # noqa: E402
from _random_weights import random_state_dict, write  # noqa: E402

from comfy_kernel_core_nodes.model import controlnet as cn  # noqa: E402

DATA = Path(__file__).parent / "data" / "controlnet"

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("control")
    use_base(base)
    folder = base / "models" / "controlnet"
    sd = controlnet_sd(seed=1)
    return {
        "ldm": write_controlnet(folder / "ldm.safetensors", seed=1, prefix="control_model."),
        "ldm_bare": write_controlnet(folder / "bare.safetensors", seed=1),
        "shuffle": write_controlnet(folder / "x_shuffle.safetensors", seed=1),
        "diffusers": write(folder / "diffusers.safetensors", to_diffusers(sd)),
        "union": write(folder / "union.safetensors", to_diffusers(controlnet_sd(seed=2, union_types=8), union=True)),
        "control_lora": write(folder / "clora.safetensors", control_lora_sd(seed=3)),
        "t2i": write(folder / "t2i.safetensors", t2i_adapter_sd(seed=5)),
        "t2i_light": write(folder / "t2i_light.safetensors", t2i_adapter_sd(seed=6, light=True)),
    }


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    ctx = torch.randn(2, 77, 768, generator=g)
    hint = torch.rand(1, 48, 40, 3, generator=g).movedim(-1, 1)
    return x, ctx, hint


def _sd15_model():
    from comfy_kernel_core_nodes.families.sd.models import SD15
    from comfy_kernel_core_nodes.model.base import BaseModel, ModelType

    return BaseModel(SD15(dict(TINY_LAYOUT)), ModelType.EPS)


def test_every_layout_is_recognised_with_all_its_weights(files):
    from comfy_kernel_core_nodes.families.sd.controlnet import ControlNetModel

    with torch.device("meta"):
        ldm_keys = set(ControlNetModel(tiny_layout(), 3).state_dict())
        union_keys = set(ControlNetModel(tiny_layout(), 3, union_types=8).state_dict())
    for name in ("ldm", "ldm_bare", "diffusers", "shuffle"):
        control = cn.load_controlnet(str(files[name]))
        assert type(control) is cn.ControlNet
        assert set(control.control_model_wrapped.model.weights.keys) == ldm_keys, name
        assert control.global_average_pooling == (name == "shuffle")
    union = cn.load_controlnet(str(files["union"]))
    assert set(union.control_model_wrapped.model.weights.keys) == union_keys
    assert union.control_model.num_control_type == 8
    assert type(cn.load_controlnet(str(files["control_lora"]))) is cn.ControlLora
    for name, cin in (("t2i", 192), ("t2i_light", 192)):
        adapter = cn.load_controlnet(str(files[name]))
        assert type(adapter) is cn.T2IAdapter and adapter.channels_in == cin // 64
        assert set(adapter.t2i_model_wrapped.model.weights.keys) == set(adapter.t2i_model.state_dict())


def test_unknown_and_unsupported_files_are_refused_clearly(tmp_path):
    write(tmp_path / "flux.safetensors", {"controlnet_blocks.0.weight": torch.zeros(2, 2),
                                           "double_blocks.0.img_attn.norm.key_norm.scale": torch.zeros(2)})
    with pytest.raises(cn.UnsupportedControlNet, match="Flux"):
        cn.load_controlnet(str(tmp_path / "flux.safetensors"))
    write(tmp_path / "junk.safetensors", {"something.weight": torch.zeros(2, 2)})
    with pytest.raises(cn.UnsupportedControlNet, match="does not contain a valid controlnet"):
        cn.load_controlnet(str(tmp_path / "junk.safetensors"))
    sd = controlnet_sd(seed=1)
    sd.pop("zero_convs.1.0.weight")
    write(tmp_path / "partial.safetensors", sd)
    with pytest.raises(cn.UnsupportedControlNet, match="missing"):
        cn.load_controlnet(str(tmp_path / "partial.safetensors"))


@pytest.mark.parametrize("name", ["ldm", "control_lora", "t2i", "t2i_light"])
def test_get_control_matches_comfyui(files, sd15_tiny_checkpoint, name):
    from comfy_kernel_core_nodes.model.loading import load_checkpoint

    x, ctx, hint = _inputs()
    control = cn.load_controlnet(str(files[name])).copy().set_cond_hint(hint, 0.7, (0.0, 1.0))
    model = load_checkpoint(str(sd15_tiny_checkpoint), output_vae=False, output_clip=False)[0]
    with model.use() as bound, control.sampling_context():
        control.pre_run(bound, lambda p: bound.model_sampling.percent_to_sigma(p))
        out = control.get_control(x, torch.tensor([3.5, 3.5]), {"c_crossattn": ctx}, 2, {})
        control.cleanup()
    expected = np.load(DATA / f"{name}.npz")
    got = {f"{k}{i}": t[:, :16].float().numpy() for k, v in out.items() for i, t in enumerate(v) if t is not None}
    assert sorted(got) == sorted(expected.files)
    for key in expected.files:
        scale = float(np.abs(expected[key]).max())
        assert np.abs(got[key] - expected[key]).max() <= 2e-5 * max(scale, 1.0), key


def test_the_diffusers_layout_is_the_same_network(files):
    x, ctx, _ = _inputs()
    ldm, diffusers = cn.load_controlnet(str(files["ldm"])), cn.load_controlnet(str(files["diffusers"]))
    hint2 = torch.rand(2, 3, 64, 64)
    a = ldm.control_model(x=x, hint=hint2, timesteps=torch.tensor([10.0, 10.0]), context=ctx)
    b = diffusers.control_model(x=x, hint=hint2, timesteps=torch.tensor([10.0, 10.0]), context=ctx)
    for p, q in zip(a["output"] + a["middle"], b["output"] + b["middle"], strict=True):
        assert torch.equal(p, q)


def test_union_control_types_change_the_residuals_and_are_checked(files):
    from comfy_kernel_core_nodes.nodes.controlnet import SetUnionControlNetType

    x, ctx, _ = _inputs()
    hint = torch.rand(2, 3, 64, 64)
    union = cn.load_controlnet(str(files["union"]))
    results = {}
    for kind in ("auto", "depth", "canny/lineart/anime_lineart/mlsd"):
        (typed,) = SetUnionControlNetType().set_controlnet_type(union, kind)
        assert typed is not union and "control_type" not in union.extra_args
        results[kind] = typed.control_model(x=x, hint=hint, timesteps=torch.tensor([10.0, 10.0]), context=ctx,
                                            **typed.extra_args)["output"][1]
    assert typed.extra_args == {"control_type": [3]}
    assert not torch.equal(results["auto"], results["depth"])
    assert not torch.equal(results["depth"], results["canny/lineart/anime_lineart/mlsd"])
    small = cn.load_controlnet(str(write(files["union"].parent / "union4.safetensors",
                                         to_diffusers(controlnet_sd(seed=2, union_types=4), union=True))))
    with pytest.raises(ValueError, match="out of range"):
        small.control_model(x=x, hint=hint, timesteps=torch.tensor([1.0, 1.0]), context=ctx, control_type=[6])


def _record_blocks(unet, control, x, ctx):
    """The UNet's skip tensors as each output block receives them, and the middle block's output."""
    seen: dict[str, torch.Tensor] = {}

    def output_patch(h, hsp, options):
        seen[f"output{options['block'][1]}"] = hsp.clone()
        return h, hsp

    def middle_patch(h, options):
        seen["middle"] = h.clone()
        return h

    options = {"patches": {"output_block_patch": [output_patch], "middle_block_patch": [middle_patch]}}
    unet(x, torch.tensor([500.0] * x.shape[0]), context=ctx, control=control, transformer_options=options)
    return seen


@pytest.mark.parametrize("only", [0, 2, 3, "middle"])
def test_residuals_reach_the_right_blocks(sd15_tiny_unet, tmp_path, only):
    """One non-zero output conv changes exactly the skip it belongs to (the middle one the middle output)."""
    sd = controlnet_sd(seed=4, only_zero_conv=None if only == "middle" else only, zero=only == "middle")
    if only == "middle":
        sd.update({k: v for k, v in controlnet_sd(seed=4).items() if k.startswith("middle_block_out.")})
    control = cn.load_controlnet(str(write(tmp_path / "one.safetensors", sd))).copy()
    control.set_cond_hint(torch.rand(1, 3, 64, 64), 1.0)
    x, ctx, _ = _inputs()
    control.pre_run(_sd15_model(), lambda p: 1.0)
    control.timestep_range = None
    residuals = control.get_control(x, torch.tensor([3.5, 3.5]), {"c_crossattn": ctx}, 2, {})
    plain = _record_blocks(sd15_tiny_unet, None, x, ctx)
    controlled = _record_blocks(sd15_tiny_unet, {k: list(v) for k, v in residuals.items()}, x, ctx)
    changed = sorted(k for k in plain if not torch.equal(plain[k], controlled[k]))
    skips = len(residuals["output"])
    expected = ["middle"] + [f"output{i}" for i in range(skips)] if only == "middle" else [
        f"output{skips - 1 - only}"]
    if only == "middle":
        assert changed == ["middle"]  # later skips are the encoder's, untouched
    else:
        assert changed == expected


def test_a_zero_initialised_controlnet_adds_exact_zeros(files, tmp_path):
    zero = cn.load_controlnet(str(write_controlnet(tmp_path / "zero.safetensors", zero=True))).copy()
    zero.set_cond_hint(torch.rand(1, 3, 64, 64), 1.0)
    zero.pre_run(_sd15_model(), lambda p: 1.0)
    zero.timestep_range = None
    x, ctx, _ = _inputs()
    out = zero.get_control(x, torch.tensor([3.5, 3.5]), {"c_crossattn": ctx}, 2, {})
    assert all(float(t.abs().max()) == 0.0 for t in out["output"] + out["middle"])


def test_the_step_range_and_chaining(files):
    x, ctx, hint = _inputs()
    first = cn.load_controlnet(str(files["ldm"])).copy().set_cond_hint(hint, 1.0, (0.0, 0.5))
    second = cn.load_controlnet(str(files["diffusers"])).copy().set_cond_hint(hint, 0.5, (0.5, 1.0))
    second.set_previous_controlnet(first)
    model = _sd15_model()
    second.pre_run(model, lambda p: model.model_sampling.percent_to_sigma(p))
    early, late = model.model_sampling.percent_to_sigma(0.2), model.model_sampling.percent_to_sigma(0.8)
    cond = {"c_crossattn": ctx}
    only_first = first.get_control(x, torch.tensor([early] * 2), cond, 2, {})
    first_and_none = second.get_control(x, torch.tensor([early] * 2), cond, 2, {})
    only_second = second.get_control(x, torch.tensor([late] * 2), cond, 2, {})
    assert first.get_control(x, torch.tensor([late] * 2), cond, 2, {}) is None
    for a, b in zip(only_first["output"], first_and_none["output"], strict=True):
        assert torch.equal(a, b)
    second.previous_controlnet = None
    alone = second.get_control(x, torch.tensor([late] * 2), cond, 2, {})
    for a, b in zip(only_second["output"], alone["output"], strict=True):
        assert torch.equal(a, b)
    second.set_previous_controlnet(first)
    second.cleanup()
    assert first.timestep_range is None and second.cond_hint is None


def test_a_t2i_adapter_feeds_the_last_block_of_each_level(files):
    """On a UNet with SD1.5's block structure, the adapter's four maps land after input blocks 2, 5, 8 and 11."""
    from comfy_kernel_core_nodes.families.sd.models import unet_layout
    from comfy_kernel_core_nodes.families.sd.unet import UNetModel

    config = dict(TINY_LAYOUT, model_channels=32, channel_mult=(1, 2, 4, 4), num_res_blocks=(2, 2, 2, 2),
                  transformer_depth=(1, 1, 0, 0, 0, 0, 0, 0), transformer_depth_output=(0,) * 12,
                  transformer_depth_middle=-1)
    with torch.device("meta"):
        unet = UNetModel(unet_layout(config))
    sd = random_state_dict({k: tuple(v.shape) for k, v in unet.state_dict().items()}, seed=9, dtype=torch.float32)
    unet.load_state_dict(sd, assign=True)
    adapter = cn.load_controlnet(str(files["t2i"])).copy().set_cond_hint(torch.rand(1, 3, 64, 64), 1.0)
    adapter.timestep_range = None
    x = torch.randn(1, 4, 8, 8)
    residuals = adapter.get_control(x, torch.tensor([3.5]), {}, 1, {})
    seen: dict[int, torch.Tensor] = {}

    def input_patch(h, options):
        seen[options["block"][1]] = h.clone()
        return h

    def run(control):
        seen.clear()
        unet(x, torch.tensor([500.0]), context=torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(1)),
             control=control, transformer_options={"patches": {"input_block_patch": [input_patch]}})
        return dict(seen)

    plain = run(None)
    controlled = run({k: list(v) for k, v in residuals.items()})
    first_changed = min(k for k in plain if not torch.equal(plain[k], controlled[k]))
    assert first_changed == 2
    assert [i for i, r in enumerate(residuals["input"]) if r is not None] == [0, 3, 6, 9]
    assert torch.allclose(controlled[2] - plain[2], residuals["input"][9], atol=1e-5)


#: An SDXL-shaped ControlNet on a small layout: linear transformer projections, 2048-wide context, ADM input.
XL_LAYOUT = {**TINY_LAYOUT, "context_dim": 2048, "use_linear_in_transformer": True, "adm_in_channels": 2816,
             "transformer_depth": (0, 2), "num_heads": -1, "num_head_channels": 64}


def test_an_sdxl_layout_controlnet_is_recognised_and_uses_the_adm_input(tmp_path):
    from comfy_kernel_core_nodes.families.sd.controlnet import ControlNetModel
    from comfy_kernel_core_nodes.families.sd.models import unet_layout

    with torch.device("meta"):
        net = ControlNetModel(unet_layout(XL_LAYOUT), 3)
    sd = random_state_dict({k: tuple(v.shape) for k, v in net.state_dict().items()}, seed=9)
    control = cn.load_controlnet(str(write(tmp_path / "xl.safetensors", {"control_model." + k: v
                                                                          for k, v in sd.items()})))
    assert type(control) is cn.ControlNet
    assert set(control.control_model_wrapped.model.weights.keys) == set(sd)
    model = control.control_model
    assert model.label_emb is not None
    g = torch.Generator().manual_seed(4)
    x, ctx, hint = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 2048, generator=g), torch.rand(1, 3, 64, 64)
    y1, y2 = torch.randn(1, 2816, generator=g), torch.randn(1, 2816, generator=g)
    t = torch.tensor([500.0])
    a = model(x=x, hint=hint, timesteps=t, context=ctx, y=y1)
    b = model(x=x, hint=hint, timesteps=t, context=ctx, y=y2)
    assert len(a["output"]) == 4 and len(a["middle"]) == 1
    assert not torch.equal(a["middle"][0], b["middle"][0])  # the pooled text / size embedding reaches it
