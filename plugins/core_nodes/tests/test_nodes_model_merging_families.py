"""The per-family ModelMerge<family> nodes and CLIPTextEncodeSDXLRefiner through the server.

For each family the project runs, two tiny random-weight diffusion models of
that family (different seeds) are merged with the family's node and the merge
is written with ModelSave; the file read back shows which model each block
came from. A ratio is model1's share (ModelMergeBlocks): 1.0 keeps model1,
0.0 takes model2; a key takes the ratio of the longest prefix it starts with,
the first ratio when none matches. Families the project does not have are run
on a tiny Flux model, where their prefixes (bar ``final_layer.``) match
nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _files_qwen import _shapes as qwen_shapes  # noqa: E402
from _files_wan import transformer_sd as wan_sd  # noqa: E402
from _flux import flux_params, flux_state_dict  # noqa: E402
from _random_weights import module_shapes, random_state_dict, write  # noqa: E402
from _sd3 import mmdit_params, mmdit_state_dict  # noqa: E402
from _vision_files import link  # noqa: E402

from comfy_kernel_core_nodes.nodes.model_merging_specific import FAMILIES  # noqa: E402

pytestmark = pytest.mark.slow

#: SD2's UNet layout (context 1024, linear projections, 64-wide heads), reduced to two levels
SD2_UNET = {"in_channels": 4, "out_channels": 4, "model_channels": 320, "channel_mult": (1, 2),
            "num_res_blocks": (1, 1), "transformer_depth": (1, 0), "transformer_depth_output": (1, 1, 0, 0),
            "transformer_depth_middle": 1, "context_dim": 1024, "use_linear_in_transformer": True,
            "adm_in_channels": None, "num_heads": -1, "num_head_channels": 64}


def _sd2(seed: int) -> dict[str, torch.Tensor]:
    from comfy_kernel_core_nodes.families.sd.models import unet_layout
    from comfy_kernel_core_nodes.families.sd.unet import UNetModel

    with torch.device("meta"):
        unet = UNetModel(unet_layout(SD2_UNET))
    return random_state_dict(module_shapes(unet), seed=seed)


def _qwen(seed: int) -> dict[str, torch.Tensor]:
    from comfy_kernel_core_nodes.families.qwen_image.transformer import QwenImageConfig, QwenImageTransformer

    config = QwenImageConfig(num_layers=2, num_attention_heads=2, joint_attention_dim=256)
    return random_state_dict(qwen_shapes(lambda: QwenImageTransformer(config)), seed, torch.bfloat16)


#: family file name -> tensors of one random model (by seed)
MODELS = {
    "sd2": _sd2,
    "sd3": lambda seed: mmdit_state_dict(mmdit_params("sd3_medium"), seed=seed, dtype=torch.float16),
    "sd35": lambda seed: mmdit_state_dict(mmdit_params("sd3.5_large"), seed=seed, dtype=torch.float16),
    "flux": lambda seed: flux_state_dict(flux_params(), seed=seed, dtype=torch.float16),
    "wan": lambda seed: wan_sd("t2v", seed=seed),
    "qwen": _qwen,
}

#: node -> (file, ratio names set to 0.0 (model2), set to 0.5 (the mean); every other ratio is 1.0)
CASES = {
    "ModelMergeSD2": ("sd2", ("input_blocks.1.", "out."), ("middle_block.1.",)),
    "ModelMergeSD3_2B": ("sd3", ("joint_blocks.1.", "x_embedder."), ("final_layer.",)),
    "ModelMergeSD35_Large": ("sd35", ("joint_blocks.2.",), ("context_embedder.",)),
    "ModelMergeFlux1": ("flux", ("double_blocks.1.", "img_in."), ("single_blocks.0.",)),
    "ModelMergeWAN2_1": ("wan", ("blocks.0.", "head."), ("text_embedding.",)),
    "ModelMergeQwenImage": ("qwen", ("transformer_blocks.1.", "txt_in."), ("proj_out.",)),
}

#: nodes of families the project lacks -> the ratio prefixes that still match a Flux model's keys
ABSENT = {
    "ModelMergeAuraflow": (),
    "ModelMergeMochiPreview": ("final_layer.",),
    "ModelMergeLTXV": (),
    "ModelMergeCosmos7B": ("final_layer.",),
    "ModelMergeCosmos14B": ("final_layer.",),
    "ModelMergeCosmosPredict2_2B": ("final_layer.",),
    "ModelMergeCosmosPredict2_14B": ("final_layer.",),
}


@pytest.fixture(scope="module")
def merge_server(graph_server):
    models = {}
    folder = graph_server.models_dir("diffusion_models")
    for name, make in MODELS.items():
        models[name] = (make(1), make(2))
        for i, sd in enumerate(models[name]):
            write(folder / f"{name}_{i + 1}.safetensors", sd)
    return graph_server, models


def _node(class_type, **inputs):
    return {"class_type": class_type, "inputs": inputs}


def _saved(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    prefix = "model.diffusion_model."
    return {k[len(prefix):]: v.float() for k, v in load_file(str(path)).items() if k.startswith(prefix)}


def _merge_graph(node: str, file: str, ratios: dict[str, float], tag: str) -> dict:
    return {
        f"a_{tag}": _node("UNETLoader", unet_name=f"{file}_1.safetensors", weight_dtype="default"),
        f"b_{tag}": _node("UNETLoader", unet_name=f"{file}_2.safetensors", weight_dtype="default"),
        f"m_{tag}": _node(node, model1=[f"a_{tag}", 0], model2=[f"b_{tag}", 0], **ratios),
        f"s_{tag}": _node("ModelSave", model=[f"m_{tag}", 0], filename_prefix=f"diffusion_models/merged_{tag}"),
    }


def _check(merged: dict[str, torch.Tensor], one: dict[str, torch.Tensor], two: dict[str, torch.Tensor],
           expected: dict[str, float]) -> None:
    """``expected``: key -> model1's share; every tensor of the merge must be that blend."""
    assert set(merged) == set(one)
    for key, share in expected.items():
        a, b = one[key].float(), two[key].float()
        want = share * a + (1.0 - share) * b
        assert torch.allclose(merged[key], want, rtol=1e-2, atol=2e-3), (key, share)
        if share in (0.0, 1.0) and not torch.equal(a, b):  # the two models differ there
            other = b if share == 1.0 else a
            assert not torch.allclose(merged[key], other, rtol=1e-2, atol=2e-3), key


@pytest.mark.parametrize("node", sorted(CASES))
def test_family_merge_follows_block_ratios(merge_server, node):
    server, models = merge_server
    file, to_model2, to_mean = CASES[node]
    names = FAMILIES[node][0]
    assert set(to_model2) | set(to_mean) <= set(names)
    ratios = {r: 0.0 if r in to_model2 else 0.5 if r in to_mean else 1.0 for r in names}
    server.run(_merge_graph(node, file, ratios, node), timeout=600)
    merged = _saved(server.output_dir / f"diffusion_models/merged_{node}_00001_.safetensors")
    one, two = models[file]
    expected = {}
    for key in one:
        matches = [n for n in names if key.startswith(n)]
        expected[key] = ratios[max(matches, key=len)] if matches else ratios[names[0]]
    shares = set(expected.values())
    assert shares == {0.0, 0.5, 1.0}, shares  # every chosen prefix matched some key
    _check(merged, one, two, expected)


@pytest.mark.parametrize("node", sorted(ABSENT))
def test_absent_family_merge_on_flux(merge_server, node):
    """Default (first) ratio 1.0, every other 0.0: only keys under a matching prefix come from model2."""
    server, models = merge_server
    names = FAMILIES[node][0]
    ratios = {r: 1.0 if i == 0 else 0.0 for i, r in enumerate(names)}
    server.run(_merge_graph(node, "flux", ratios, node), timeout=600)
    merged = _saved(server.output_dir / f"diffusion_models/merged_{node}_00001_.safetensors")
    one, two = models["flux"]
    matching = ABSENT[node]
    _check(merged, one, two, {k: 0.0 if k.startswith(matching) else 1.0 for k in one})


def test_absent_family_default_ratio_is_the_first(merge_server):
    """With no prefix matching, the first ratio is every key's: 0.0 there turns the merge into model2."""
    server, models = merge_server
    names = FAMILIES["ModelMergeAuraflow"][0]
    ratios = {r: 0.0 if i == 0 else 1.0 for i, r in enumerate(names)}
    server.run(_merge_graph("ModelMergeAuraflow", "flux", ratios, "aura_first"), timeout=600)
    merged = _saved(server.output_dir / "diffusion_models/merged_aura_first_00001_.safetensors")
    one, two = models["flux"]
    _check(merged, one, two, dict.fromkeys(one, 0.0))


def test_sdxl_refiner_text_encode_carries_ascore_and_size(merge_server, sd15_tiny_checkpoint):
    """The refiner's prompt node puts ascore, width and height on the conditioning beside the pooled output."""
    server, _ = merge_server
    link(sd15_tiny_checkpoint, server.models_dir("checkpoints") / "tiny.safetensors")
    g = {"ckpt": _node("CheckpointLoaderSimple", ckpt_name="tiny.safetensors")}
    for tag, ascore, width, height in (("hi", 6.0, 1024, 768), ("lo", 2.5, 512, 640)):
        g[f"enc_{tag}"] = _node("CLIPTextEncodeSDXLRefiner", ascore=ascore, width=width, height=height,
                                text="a red cube", clip=["ckpt", 1])
        g[f"p_{tag}"] = _node("TestProbe", value=[f"enc_{tag}", 0], name=tag)
    out = server.run(g, timeout=600)
    for tag, ascore, width, height in (("hi", 6.0, 1024, 768), ("lo", 2.5, 512, 640)):
        (entry,) = out[tag]
        options = entry["options"]
        assert options["aesthetic_score"] == ascore
        assert (options["width"], options["height"]) == (width, height)
        assert options["pooled_output"]["tensor_shape"] == [1, 768]
    assert out["hi"][0]["shape"] == out["lo"][0]["shape"] == [1, 77, 768]
