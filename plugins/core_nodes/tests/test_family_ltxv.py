"""LTX-Video 0.9: the transformer and the three VAE layouts against diffusers; the released key layouts detected
and loaded (CheckpointLoaderSimple's parts, CLIPLoader type ``ltxv`` with T5); the model's inputs.

diffusers is a test-only oracle (the ``test`` extra). Forward passes run small
widths of the released layouts in fp32 (to 1e-4 relative); detection and
loading read the random-weight files of _files_ltxv.py.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from _files_ltx2 import TRANSFORMER_CONFIG as LTX2_CONFIG
from _files_ltx2 import VIDEO_VAE_LAYOUT as LTX2_VAE_LAYOUT
from _files_ltxv import T5_CONFIG, VAE_LAYOUTS, checkpoint_file, t5_file, transformer_sd
from _oracle import close, randomize
from _random_weights import module_shapes
from safetensors.torch import save_file

from comfy_kernel_core_nodes.families.ltx2.transformer import LTX2Transformer
from comfy_kernel_core_nodes.families.ltx2.vae import LTX2VideoVAENet
from comfy_kernel_core_nodes.families.ltxv import detect
from comfy_kernel_core_nodes.families.ltxv.transformer import LTXVConfig, LTXVTransformer, pixel_starts
from comfy_kernel_core_nodes.families.ltxv.vae import LTXVVideoVAENet, layout, released_layout
from comfy_kernel_core_nodes.model.files import tensor_shapes
from comfy_kernel_core_nodes.model.loading import load_checkpoint, load_clip, load_vae

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("single_torch_thread")

#: the released flat stage lists -> diffusers' blocks, per layout
ENCODER_090 = ["down_blocks.0", "down_blocks.0.downsamplers.0", "down_blocks.0.conv_out", "down_blocks.1",
               "down_blocks.1.downsamplers.0", "down_blocks.1.conv_out", "down_blocks.2",
               "down_blocks.2.downsamplers.0", "down_blocks.3", "mid_block"]
ENCODER_095 = ["down_blocks.0", "down_blocks.0.downsamplers.0", "down_blocks.1", "down_blocks.1.downsamplers.0",
               "down_blocks.2", "down_blocks.2.downsamplers.0", "down_blocks.3", "down_blocks.3.downsamplers.0",
               "mid_block"]
DECODER_090 = ["mid_block", "up_blocks.0", "up_blocks.1.upsamplers.0", "up_blocks.1", "up_blocks.2.conv_in",
               "up_blocks.2.upsamplers.0", "up_blocks.2", "up_blocks.3.conv_in", "up_blocks.3.upsamplers.0",
               "up_blocks.3"]
DECODER_091 = ["mid_block", "up_blocks.0.upsamplers.0", "up_blocks.0", "up_blocks.1.upsamplers.0", "up_blocks.1",
               "up_blocks.2.upsamplers.0", "up_blocks.2"]
RENAMES = {".res_blocks.": ".resnets.", "norm3.norm.": "norm3.", "conv_shortcut.": "conv_shortcut.conv.",
           "decoder.last_time_embedder.": "decoder.time_embedder.",
           "decoder.last_scale_shift_table": "decoder.scale_shift_table"}
STATISTICS = {"per_channel_statistics.mean-of-means": "latents_mean",
              "per_channel_statistics.std-of-means": "latents_std"}


def _vae_to_diffusers(key: str, encoder: list[str], decoder: list[str]) -> str:
    key = re.sub(r"^encoder\.down_blocks\.(\d+)\.", lambda m: f"encoder.{encoder[int(m[1])]}.", key)
    key = re.sub(r"^decoder\.up_blocks\.(\d+)\.", lambda m: f"decoder.{decoder[int(m[1])]}.", key)
    for old, new in RENAMES.items():
        key = key.replace(old, new)
    return STATISTICS.get(key, key)


def _reference_vae(version: str):
    """diffusers' AutoencoderKLLTXVideo in the small layout of ``version`` (its configs for 0.9.0 / 0.9.1 / 0.9.5,
    narrowed); diffusers lists decoder widths from the output side, before the upsamplers halve them."""
    common = dict(latent_channels=16, layers_per_block=(1, 2, 1, 1, 1))
    if version == "0.9.0":
        return diffusers.AutoencoderKLLTXVideo(block_out_channels=(8, 16, 32, 32),
                                               decoder_block_out_channels=(8, 16, 32, 32),
                                               decoder_layers_per_block=(1, 1, 2, 1, 1), **common), \
            ENCODER_090, DECODER_090
    later = dict(decoder_block_out_channels=(8, 16, 32), decoder_spatio_temporal_scaling=(True, True, True),
                 upsample_residual=(True, True, True), upsample_factor=(2, 2, 2), timestep_conditioning=True)
    if version == "0.9.1":
        return diffusers.AutoencoderKLLTXVideo(block_out_channels=(8, 16, 32, 32),
                                               decoder_layers_per_block=(1, 2, 1, 2),
                                               decoder_inject_noise=(True, True, True, False), **later, **common), \
            ENCODER_090, DECODER_091
    return diffusers.AutoencoderKLLTXVideo(
        block_out_channels=(8, 16, 32, 64, 128), spatio_temporal_scaling=(True, True, True, True),
        down_block_types=("LTXVideo095DownBlock3D",) * 4,
        downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
        decoder_layers_per_block=(1, 2, 1, 1),
        spatial_compression_ratio=32, temporal_compression_ratio=8, **later, **common), ENCODER_095, DECODER_091


SMALL_LAYOUTS = {
    "0.9.0": released_layout("0.9.0", encoder_width=8, decoder_width=8, latent=16, encoder_layers=(1, 2, 1, 1, 1),
                             decoder_layers=(1, 1, 2, 1, 1)),
    "0.9.1": released_layout("0.9.1", encoder_width=8, decoder_width=4, latent=16, encoder_layers=(1, 2, 1, 1, 1),
                             decoder_layers=(2, 1, 2, 1)),
    "0.9.5": released_layout("0.9.5", encoder_width=8, decoder_width=4, latent=16, encoder_layers=(1, 2, 1, 1, 1),
                             decoder_layers=(1, 1, 2, 1)),
}


@pytest.fixture(scope="module", params=["0.9.0", "0.9.1", "0.9.5"])
def vaes(request):
    """Ours and diffusers' on the same weights; the stage list is read back from the keys."""
    ours = LTXVVideoVAENet(SMALL_LAYOUTS[request.param]).eval()
    sd = randomize(ours)
    ref, encoder, decoder = _reference_vae(request.param)
    ref.eval().load_state_dict({_vae_to_diffusers(k, encoder, decoder): v for k, v in sd.items()}, strict=True)
    assert layout({k: tuple(v.shape) for k, v in sd.items()}, "") == SMALL_LAYOUTS[request.param]
    return ours, ref


@pytest.mark.parametrize("frames", [1, 9])
def test_vae_matches_diffusers(vaes, frames):
    """Encoder and decoder; the 0.9.1 decoder's block noise drawn from the same seed, its timestep embedded
    (ComfyUI's 0.05) the same way."""
    ours, ref = vaes
    torch.manual_seed(2)
    clip = torch.rand(1, 3, frames, 64, 64) * 2 - 1
    latent = torch.randn(1, 16, (frames - 1) // 8 + 1, 2, 2)
    with torch.no_grad():
        encoded = ours.encoder(clip)
        close(encoded, ref.encode(clip).latent_dist.mean)
        if ours.decoder.timestep_conditioning:
            decoded = ours.decoder(latent, 0.05, torch.Generator().manual_seed(5))
            torch.manual_seed(5)
            expected = ref.decode(latent, torch.tensor([0.05])).sample
        else:
            decoded, expected = ours.decoder(latent), ref.decode(latent).sample
        close(decoded, expected)
    assert encoded.shape == latent.shape and decoded.shape == clip.shape


def test_released_vae_layouts_are_read_back_from_their_keys():
    for version in ("0.9.0", "0.9.1", "0.9.5"):
        real = released_layout(version)
        with torch.device("meta"):
            shapes = module_shapes(LTXVVideoVAENet(real))
        assert layout(shapes, "") == real
        assert detect.is_video_vae(shapes, "")
    real = released_layout("0.9.5")
    assert [b.width for b in real.encoder if b.kind == "res"] == [128, 256, 512, 1024, 2048]
    assert [b.stride for b in real.encoder if b.kind == "down"] == [(1, 2, 2), (2, 1, 1), (2, 2, 2), (2, 2, 2)]
    assert [b.width for b in real.decoder if b.kind == "res"] == [1024, 512, 256, 128]
    assert [b.width for b in released_layout("0.9.0").decoder if b.kind == "res"] == [512, 512, 512, 256, 128]


def _to_diffusers(key: str) -> str:
    for old, new in (("patchify_proj", "proj_in"), ("adaln_single", "time_embed"), ("q_norm", "norm_q"),
                     ("k_norm", "norm_k")):
        key = key.replace(old, new)
    return key


@pytest.fixture(scope="module")
def transformers():
    from diffusers.models.transformers.transformer_ltx import LTXVideoTransformer3DModel

    ours = LTXVTransformer(LTXVConfig(head_dim=4, cross_attention_dim=128, caption_channels=48, num_layers=2)).eval()
    sd = randomize(ours)
    ref = LTXVideoTransformer3DModel(num_attention_heads=32, attention_head_dim=4, cross_attention_dim=128,
                                     num_layers=2, caption_channels=48).eval()
    ref.load_state_dict({_to_diffusers(k): v for k, v in sd.items()}, strict=True)
    return ours, ref


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("per_token", [False, True])
def test_transformer_matches_diffusers(transformers, causal, per_token):
    """A batch of two at different sigmas (or a timestep per token, as kept frames get), a padded prompt masked
    out; positions in seconds at 24 fps, or shifted by the causal VAE's first frame (diffusers given them)."""
    ours, ref = transformers
    ours.config = LTXVConfig(**{**ours.config.__dict__, "causal_positions": causal})
    torch.manual_seed(1)
    b, f, h, w = 2, 3, 2, 3
    x, context = torch.randn(b, 128, f, h, w), torch.randn(b, 7, 48)
    mask = torch.tensor([[1] * 5 + [0] * 2, [1] * 7])
    sigma = torch.rand(b, f * h * w) if per_token else torch.tensor([0.7, 0.3])
    with torch.no_grad():
        out = ours(x, sigma, context, attention_mask=mask, frame_rate=24.0)
        tokens = x.flatten(2).transpose(1, 2)
        if causal:
            coords = pixel_starts((f, h, w), (8, 32, 32), True)[None].repeat(b, 1, 1)
            coords[:, 0] /= 24.0
            expected = ref(tokens, context, sigma * 1000, mask, video_coords=coords).sample
        else:
            expected = ref(tokens, context, sigma * 1000, mask, num_frames=f, height=h, width=w,
                           rope_interpolation_scale=(8 / 24.0, 32, 32)).sample
    close(out, expected.transpose(1, 2).reshape(b, -1, f, h, w))


def test_gaps_of_a_spread_guide_are_left_out(transformers):
    """A guide frame whose noise mask marks tokens below 0 (an IC-LoRA guide's gaps): diffusers given only the
    other tokens, at their positions (the guide's from keyframe_idxs), gives the same velocities; the gaps get
    zero."""
    ours, ref = transformers
    ours.config = LTXVConfig(**{**ours.config.__dict__, "causal_positions": True})
    torch.manual_seed(2)
    f, h, w = 3, 2, 2
    x, context = torch.randn(1, 128, f, h, w), torch.randn(1, 7, 48)
    mask = torch.ones(1, 128, f, h, w)
    mask[:, :, 2] = torch.tensor([[0.0, -2.0], [-2.0, -2.0]])  # the guide frame: one kept token, three gaps
    sigma = (mask[:, 0].flatten(1) * 0.7)
    keyframes = pixel_starts((1, h, w), (8, 32, 32), True)[None]
    keyframes[:, 0] += 8
    with torch.no_grad():
        out = ours(x, sigma, context, frame_rate=24.0, keyframe_idxs=keyframes, denoise_mask=mask)
        kept = torch.tensor([True] * 8 + [True, False, False, False])
        coords = pixel_starts((f, h, w), (8, 32, 32), True)[None]
        coords[:, :, 8:] = keyframes
        coords[:, 0] /= 24.0
        tokens = x.flatten(2).transpose(1, 2)
        expected = ref(tokens[:, kept], context, sigma[:, kept] * 1000, torch.ones(1, 7),
                       video_coords=coords[:, :, kept]).sample
    got = out.flatten(2).transpose(1, 2)
    close(got[:, kept], expected)
    assert not got[:, ~kept].any()


def test_ltx2_files_are_not_taken_for_ltx_video_ones():
    with torch.device("meta"):
        transformer = module_shapes(LTX2Transformer(LTX2_CONFIG))
        vae = module_shapes(LTX2VideoVAENet(LTX2_VAE_LAYOUT))
    assert detect.transformer_config(transformer) is None and not detect.is_video_vae(vae, "")


@pytest.mark.parametrize("version", ["0.9.0", "0.9.5"])
def test_checkpoint_loads_as_comfyui_reads_it(version):
    """CheckpointLoaderSimple: ComfyUI's LTXV config (flow, shift 2.37) and unet_config, the VAE from ``vae.``
    with every key used (bar the statistics it does not read), no text encoder."""
    path = str(checkpoint_file(version))
    model, clip, vae = load_checkpoint(path)
    config = model.model.model_config
    assert type(config).__name__ == "LTXV" and clip is None
    assert {k: config.unet_config[k] for k in ("num_attention_heads", "attention_head_dim", "cross_attention_dim",
                                               "caption_channels", "num_layers", "in_channels")} \
        == {"num_attention_heads": 32, "attention_head_dim": 4, "cross_attention_dim": 128, "caption_channels": 64,
            "num_layers": 2, "in_channels": 128}
    assert abs(model.model.model_sampling.shift - 2.37) < 1e-6
    assert set(model.model.state_dict()) == {"diffusion_model." + k for k in transformer_sd()}
    assert type(vae).__name__ == "LTXVVideoVAE"
    assert (vae.latent_channels, vae.downscale_ratio, vae.temporal_compression_decode(), vae.latent_dim) \
        == (128, 32, 8, 3)
    shapes = tensor_shapes(path)
    used = {k[4:] for k in shapes if k.startswith("vae.") and not re.search(r"statistics\.(channel|mean-of-stds)", k)}
    assert set(vae.get_sd()) == used
    assert layout(shapes, "vae.") == VAE_LAYOUTS[version]


@pytest.mark.parametrize("version", ["0.9.0", "0.9.5"])
def test_vae_round_trip_shapes_and_repeatable_decode(version):
    """9 frames encode to 2 latent frames (normalised by the file's statistics) and decode back to 9; a
    timestep-conditioned decoder's noise is seeded, so decoding twice gives the same frames."""
    vae = load_checkpoint(str(checkpoint_file(version)), output_clip=False)[2]
    frames = torch.rand(9, 64, 96, 3, generator=torch.Generator().manual_seed(0))
    latent = vae.encode(frames)
    assert latent.shape == (1, 128, 2, 2, 3) and torch.isfinite(latent).all()
    first, second = vae.decode(latent), vae.decode(latent)
    assert first.shape == (1, 9, 64, 96, 3) and torch.equal(first, second)
    mean, std = vae.statistics()
    assert mean.shape == std.shape == (1, 128, 1, 1, 1)


def test_vae_file_alone_loads_in_vae_loader(tmp_path):
    from _files_ltxv import vae_sd

    path = tmp_path / "ltxv_vae.safetensors"
    save_file(vae_sd("0.9.5"), str(path))
    assert type(load_vae(str(path))).__name__ == "LTXVVideoVAE"


def test_checkpoint_metadata_sets_causal_positions(tmp_path):
    """The released files' ``config`` metadata: its transformer settings reach the network (ComfyUI reads them
    there too), its VAE's spatial padding the VAE."""
    from safetensors.torch import load_file

    path = tmp_path / "ltxv_with_config.safetensors"
    config = {"transformer": {"causal_temporal_positioning": True}, "vae": {"spatial_padding_mode": "replicate"}}
    save_file(load_file(str(checkpoint_file("0.9.5"))), str(path), metadata={"config": json.dumps(config)})
    model, _, vae = load_checkpoint(str(path), output_clip=False)
    with model.use() as bound:
        assert bound.diffusion_model.config.causal_positions
    with vae.patcher.use() as net:
        assert net.loaded_module.decoder.conv_in.conv.padding_mode == "replicate"


def test_ltxv_clip_type_loads_t5():
    """CLIPLoader type ``ltxv`` with a T5 file: 128 tokens at least, the token mask beside the states; the
    prompt's states are T5's on the prompt alone (the padding is masked out of attention, kept in the output)."""
    clip = load_clip([str(t5_file())], "ltxv")
    tokens = clip.tokenize("a red fox in the snow")
    chunk = tokens["t5xxl"][0]
    assert len(chunk) == 128
    out = clip.encode_from_tokens(tokens, return_dict=True)
    n = next(i for i, (t, *_) in enumerate(chunk) if t == 1) + 1
    assert out["cond"].shape == (1, 128, T5_CONFIG.width)
    assert out["attention_mask"].tolist() == [[1] * n + [0] * (128 - n)]
    alone = clip.encode_from_tokens({"t5xxl": [chunk[:n]]}, return_dict=True)["cond"]
    close(out["cond"][:, :n], alone, 1e-5)
    assert out["cond"][:, n:].abs().sum() > 0


def test_noise_mask_gives_kept_frames_their_own_timestep():
    """LTXVImgToVideo's mask (0.85 on the first latent frame): that frame's tokens run at 0.85 sigma."""
    model = load_checkpoint(str(checkpoint_file("0.9.0")), output_vae=False, output_clip=False)[0].model
    mask = torch.ones(1, 128, 3, 2, 2)
    mask[:, :, 0] = 0.85
    t = model.process_timestep(torch.tensor([0.5]), denoise_mask=mask)
    assert t.shape == (1, 12) and torch.allclose(t[0, :4], torch.tensor(0.425)) and torch.all(t[0, 4:] == 0.5)
