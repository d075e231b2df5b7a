"""DiffusersLoader: diffusers pipeline folders load as the single-file checkpoints of the same weights.

The folders are written by diffusers from the checkpoints (see _files_diffusers.py),
so each comparison pits this package's reading of diffusers' layout against its
reading of the LDM layout: the same model config, the same tensors under the same
names, the same text encodings and decoded images. The UNet is also run against
diffusers' own UNet2DConditionModel on the folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _files_diffusers import SDXL_UNET, flux_folder, sd2_checkpoint, sd2_folder, sd3_folder, sd15_folder  # noqa: E402

from comfy_kernel_core_nodes.model.base import ModelType  # noqa: E402
from comfy_kernel_core_nodes.model.loading import load_checkpoint, load_diffusers  # noqa: E402

pytestmark = [pytest.mark.usefixtures("single_torch_thread"), pytest.mark.timeout(900)]


@pytest.fixture(autouse=True)
def _unload_after():
    """Each test loads two copies of a model (folder and checkpoint): free them before the next one."""
    yield
    import gc

    from comfy_kernel import gpu

    gpu.model_manager().unload_all()
    gc.collect()


def _weights(patcher_model) -> dict[str, torch.Tensor]:
    return patcher_model.weights.read("cpu")


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def sd15(sd15_tiny_checkpoint):
    return sd15_folder(sd15_tiny_checkpoint), sd15_tiny_checkpoint


def test_folder_files_are_the_ones_diffusers_wrote(sd15):
    from comfy_kernel_core_nodes.model.folders import weights_files

    folder, _ = sd15
    unet = weights_files(str(folder / "unet"))
    assert len(unet) > 1 and all("-of-" in Path(p).name for p in unet)  # shards named by the index
    assert [Path(p).name for p in weights_files(str(folder / "text_encoder"))] == ["model.fp16.safetensors"]
    assert [Path(p).name for p in weights_files(str(folder / "vae"))] == ["diffusion_pytorch_model.safetensors"]


def test_sd15_folder_loads_as_its_checkpoint(sd15):
    folder, checkpoint = sd15
    model, clip, vae = load_diffusers(str(folder))
    ref_model, ref_clip, ref_vae = load_checkpoint(str(checkpoint))
    config, ref_config = model.model.model_config, ref_model.model.model_config
    assert config.family == ref_config.family == "sd15"
    assert config.unet_config == ref_config.unet_config
    assert model.model.model_type == ref_model.model.model_type == ModelType.EPS
    _same_tensors(_weights(model.model), _weights(ref_model.model))
    _same_tensors(clip.cond_stage_model.weights.read("cpu"), ref_clip.cond_stage_model.weights.read("cpu"))
    _same_tensors(vae.first_stage_model.weights.read("cpu"), ref_vae.first_stage_model.weights.read("cpu"))

    tokens = clip.tokenize("a photo of a (red:1.2) fox")
    cond, ref = clip.encode_from_tokens_scheduled(tokens), ref_clip.encode_from_tokens_scheduled(tokens)
    assert torch.equal(cond[0][0], ref[0][0])
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(vae.decode(latent), ref_vae.decode(latent))


def test_sd15_unet_matches_diffusers_forward(sd15):
    """The folder's UNet through this package (LDM names) against diffusers' UNet on the same folder."""
    from diffusers import UNet2DConditionModel

    folder, _ = sd15
    model, _, _ = load_diffusers(str(folder), output_vae=False, output_clip=False)
    ours = model.model.weights.build(model.model.weights.read("cpu")).float()
    theirs = UNet2DConditionModel.from_pretrained(str(folder / "unet"), torch_dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(1)
    x, context, t = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 768, generator=g), torch.tensor([500.0])
    with torch.no_grad():
        expected = theirs(x, t, encoder_hidden_states=context).sample
        got = ours(x, t, context=context)
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_vae_matches_diffusers_decode(sd15):
    from diffusers import AutoencoderKL

    folder, _ = sd15
    _, _, vae = load_diffusers(str(folder), output_clip=False)
    theirs = AutoencoderKL.from_pretrained(str(folder / "vae"), torch_dtype=torch.float32).eval()
    ours = vae.first_stage_model.weights.build(vae.first_stage_model.weights.read("cpu")).float()
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = theirs.decode(z).sample
        got = ours.decode_raw(z)
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


@pytest.mark.parametrize("v_prediction", [False, True])
def test_sd2_folder_keeps_v_prediction_and_the_23_layer_text_encoder(v_prediction):
    checkpoint = sd2_checkpoint(v_prediction)
    folder = sd2_folder(checkpoint, f"sd2-small{'-v' if v_prediction else ''}")
    model, clip, vae = load_diffusers(str(folder))
    ref_model, ref_clip, _ = load_checkpoint(str(checkpoint))
    assert model.model.model_config.family == "sd2"
    assert model.model.model_type == ref_model.model.model_type == \
        (ModelType.V_PREDICTION if v_prediction else ModelType.EPS)
    _same_tensors(_weights(model.model), _weights(ref_model.model))
    assert "clip_h.transformer.text_model.encoder.layers.22.mlp.fc2.weight" in clip.cond_stage_model.state_dict_keys()
    tokens = clip.tokenize("a photo of a cat")
    cond, ref = clip.encode_from_tokens_scheduled(tokens), ref_clip.encode_from_tokens_scheduled(tokens)
    assert (cond[0][0] - ref[0][0]).abs().max() <= 1e-5 * ref[0][0].abs().max()  # the same penultimate layer
    assert vae.latent_channels == 4


def test_sdxl_unet_layout_is_read_from_diffusers_names():
    """SDXL's full-size UNet, from diffusers' own module on the meta device (no weights): every diffusers
    tensor gets an LDM name with the LDM network's shape, and detection calls it SDXL."""
    from diffusers import UNet2DConditionModel

    from comfy_kernel_core_nodes.families.sd.diffusers_layout import ldm_keys, unet_config, unet_key_layout
    from comfy_kernel_core_nodes.model import detection

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_UNET)
    shapes = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    layout = unet_key_layout(shapes)
    assert sorted(layout.names) == sorted(shapes)
    renamed = {ours: shapes[theirs] for theirs, ours in layout.names.items()}
    assert renamed == ldm_keys(unet_config(shapes))
    config = detection.model_config_from(renamed, "")
    assert config is not None and config.family == "sdxl" and config.clip_type == "sdxl"
    assert config.unet_config["transformer_depth_output"] == (0, 0, 0, 2, 2, 2, 10, 10, 10)


def test_sdxl_style_unet_forward_matches_diffusers():
    """A reduced SDXL-style UNet (size embedding, linear projections, two-block transformers) converted by the
    folder reader runs as diffusers' own: the size-embedding (label_emb) and depth mapping hold."""
    from diffusers import UNet2DConditionModel

    from comfy_kernel_core_nodes.families.sd.diffusers_layout import unet_config, unet_key_layout
    from comfy_kernel_core_nodes.families.sd.models import unet_layout
    from comfy_kernel_core_nodes.families.sd.unet import UNetModel
    from comfy_kernel_core_nodes.model.files import load_module

    config = {**SDXL_UNET, "block_out_channels": (32, 64), "layers_per_block": 1,
              "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
              "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "transformer_layers_per_block": (1, 2),
              "attention_head_dim": (2, 4), "cross_attention_dim": 64, "addition_time_embed_dim": 8,
              "projection_class_embeddings_input_dim": 32 + 6 * 8}
    torch.manual_seed(0)
    theirs = UNet2DConditionModel(**config).eval()
    sd = theirs.state_dict()
    layout = unet_key_layout({k: tuple(v.shape) for k, v in sd.items()})
    found = unet_config({k: tuple(v.shape) for k, v in sd.items()})
    assert found["transformer_depth"] == (0, 2) and found["adm_in_channels"] == 80
    with torch.device("meta"):
        ours = UNetModel(unet_layout({**found, "num_heads": -1, "num_head_channels": 16}))
    ours = load_module(ours, {ours_key: sd[k] for k, ours_key in layout.names.items()}, "UNet")
    g = torch.Generator().manual_seed(1)
    x, context = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 7, 64, generator=g)
    pooled, sizes = torch.randn(1, 32, generator=g), torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])
    t = torch.tensor([300.0])
    from comfy_kernel_core_nodes.families.sd.unet import timestep_embedding

    y = torch.cat([pooled, timestep_embedding(sizes.flatten(), 8).reshape(1, -1)], dim=1)  # SDXL's ADM, 8 wide
    with torch.no_grad():
        expected = theirs(x, t, encoder_hidden_states=context,
                          added_cond_kwargs={"text_embeds": pooled, "time_ids": sizes}).sample
        got = ours(x, t, context=context, y=y)
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_unknown_folder_is_refused_with_the_reason(tmp_path):
    from comfy_kernel_core_nodes.model.loading import UnsupportedModel

    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(UnsupportedModel, match="unet/ or transformer/"):
        load_diffusers(str(tmp_path))



def test_flux_folder_loads_transformer_text_encoders_and_16_channel_vae():
    """A diffusers Flux.1 folder: the transformer (diffusers' names, which Flux detection reads), CLIP-L and a
    sharded T5 as the ``flux`` CLIP, the 16-channel VAE renamed to the LDM layout; checked against the
    transformers / diffusers modules that wrote them."""
    from diffusers import AutoencoderKL
    from transformers import T5EncoderModel

    from comfy_kernel_core_nodes.model.loading import load_diffusion_model

    folder = flux_folder()
    model, clip, vae = load_diffusers(str(folder))
    assert model.model.model_config.family == "flux"
    single = load_diffusion_model(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))
    _same_tensors(_weights(model.model), _weights(single.model))

    tokens = clip.tokenize("a red fox")
    cond = clip.encode_from_tokens_scheduled(tokens)
    t5 = T5EncoderModel.from_pretrained(str(folder / "text_encoder_2"), torch_dtype=torch.float32).eval()
    ids = torch.tensor([[t for t, _ in tokens["t5xxl"][0]]])
    with torch.no_grad():
        expected = t5(input_ids=ids).last_hidden_state
    assert cond[0][0].shape == expected.shape
    assert (cond[0][0] - expected).abs().max() <= 2e-2 * expected.abs().max()  # fp16 weights on both sides
    assert cond[0][1]["pooled_output"].shape == (1, 768)

    assert vae.latent_channels == 16
    theirs = AutoencoderKL.from_pretrained(str(folder / "vae"), torch_dtype=torch.float32).eval()
    ours = vae.first_stage_model.weights.build(vae.first_stage_model.weights.read("cpu")).float()
    z = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = theirs.decode(z).sample
        got = ours.decode_raw(z)
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_sdxl_second_text_encoder_names_are_read_as_clip_g():
    """SDXL folders keep OpenCLIP-G as transformers' CLIPTextModelWithProjection (text_encoder_2/): its tensor
    names (with the ``text_model.`` level, or without it as transformers 5 saves a CLIPTextModel) are recognised as CLIP-G, with the
    projection beside the tower."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from comfy_kernel_core_nodes.components.clip.files import g_reader, hf_g_prefix
    from comfy_kernel_core_nodes.model.detection import text_encoder_kind

    config = CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                            max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)
    with torch.device("meta"):
        model = CLIPTextModelWithProjection(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for names in (shapes, {k.removeprefix("text_model."): v for k, v in shapes.items()}):
        prefix = hf_g_prefix(names)
        assert prefix is not None and text_encoder_kind(names)[0].name == "clip_g"
        _, keys, _ = g_reader("unused.safetensors", names, lambda: torch.float16)
        assert "text_projection.weight" in keys and "encoder.layers.31.mlp.fc2.weight" in keys


def test_single_diffusers_files_load_in_unet_and_vae_loaders(sd15):
    """As ComfyUI's UNETLoader and VAELoader do, a diffusers UNet or VAE file on its own loads (renamed as read)."""
    from comfy_kernel_core_nodes.model.loading import load_diffusion_model, load_vae

    folder, checkpoint = sd15
    sd2 = sd2_folder(sd2_checkpoint(True), "sd2-small-v")
    unet = load_diffusion_model(str(sd2 / "unet" / "diffusion_pytorch_model.safetensors"))
    ref_model, _, _ = load_checkpoint(str(sd2_checkpoint(True)))
    assert unet.model.model_config.family == "sd2" and unet.model.model_type == ModelType.V_PREDICTION
    _same_tensors(_weights(unet.model), _weights(ref_model.model))
    vae = load_vae(str(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    _, _, ref_vae = load_checkpoint(str(checkpoint))
    _same_tensors(vae.first_stage_model.weights.read("cpu"), ref_vae.first_stage_model.weights.read("cpu"))


def test_sd3_folder_loads_transformer_clip_l_t5_and_vae():
    from diffusers import SD3Transformer2DModel

    folder = sd3_folder()
    model, clip, vae = load_diffusers(str(folder))
    assert model.model.model_config.family == "sd3" and vae.latent_channels == 16
    keys = clip.cond_stage_model.state_dict_keys()
    assert any(k.startswith("clip_l.") for k in keys) and any(k.startswith("t5xxl.") for k in keys)
    cond = clip.encode_from_tokens_scheduled(clip.tokenize("a red fox"))
    assert cond[0][0].shape[-1] == 4096 and torch.isfinite(cond[0][0]).all()

    theirs = SD3Transformer2DModel.from_pretrained(str(folder / "transformer"), torch_dtype=torch.float32).eval()
    ours = model.model.weights.build(model.model.weights.read("cpu")).float()
    g = torch.Generator().manual_seed(0)
    latent, context = torch.randn(1, 16, 8, 8, generator=g), torch.randn(1, 10, 4096, generator=g)
    pooled, t = torch.randn(1, 2048, generator=g), torch.tensor([400.0])
    with torch.no_grad():
        got = ours(latent, t, context=context, y=pooled)
        expected = theirs(hidden_states=latent, encoder_hidden_states=context, pooled_projections=pooled,
                          timestep=t).sample
    assert (got - expected).abs().max() <= 1e-3 * expected.abs().max()


def test_wan21_vae_saved_by_diffusers_loads_as_qwen_images_vae(tmp_path):
    """diffusers' AutoencoderKLWan (Wan 2.1's VAE, the one Qwen-Image folders carry), as a folder and as the
    single file: detected as the Wan 2.1 VAE and decoding a latent frame as diffusers does."""
    from diffusers import AutoencoderKLWan

    from comfy_kernel_core_nodes.model.loading import load_vae

    torch.manual_seed(0)
    theirs = AutoencoderKLWan(base_dim=32).eval()
    theirs.save_pretrained(str(tmp_path / "vae"))
    z = torch.randn(1, 16, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = theirs.decode(z).sample
    for path in (tmp_path / "vae", tmp_path / "vae" / "diffusion_pytorch_model.safetensors"):
        vae = load_vae(str(path))
        assert vae.latent_channels == 16
        ours = vae.first_stage_model.weights.build(vae.first_stage_model.weights.read("cpu")).float()
        with torch.no_grad():
            got = ours.decode_raw(z).clamp(-1, 1)
        assert got.shape == expected.shape
        assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_qwen_image_transformer_and_vae_folders_load(tmp_path):
    """A Qwen-Image folder's transformer/ (diffusers' names are the ones Qwen-Image's detection reads) and vae/
    (diffusers' Wan 2.1 VAE) load; the text encoder (Qwen2.5-VL 7B, detected at its full width) is not part of
    this test."""
    from diffusers import AutoencoderKLWan, QwenImageTransformer2DModel

    from comfy_kernel_core_nodes.model.loading import load_diffusion_model, load_vae

    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=64, out_channels=16, num_layers=2,
                                              attention_head_dim=32, num_attention_heads=2, joint_attention_dim=64,
                                              axes_dims_rope=(8, 12, 12))
    transformer.save_pretrained(str(tmp_path / "transformer"))
    AutoencoderKLWan(base_dim=32).save_pretrained(str(tmp_path / "vae"))
    model = load_diffusion_model(str(tmp_path / "transformer")).model
    assert model.model_config.family == "qwen_image" and model.model_config.clip_type == "qwen_image"
    assert model.model_config.unet_config["num_layers"] == 2
    reference = transformer.state_dict()
    read = model.weights.read("cpu")
    assert set(read) == set(reference)
    assert all(torch.equal(read[k], reference[k].to(read[k].dtype)) for k in read)  # in the storage dtype
    assert load_vae(str(tmp_path / "vae")).latent_channels == 16
