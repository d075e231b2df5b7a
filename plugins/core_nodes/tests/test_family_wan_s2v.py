"""Wan 2.2 S2V: the transformer and the nodes' conditioning against ComfyUI 0.3.64's recorded outputs, wav2vec2
against transformers' ``Wav2Vec2Model`` and ComfyUI's, the files detected with every key.

diffusers has no S2V transformer; ``data/wan_s2v/reference.npz`` holds what
ComfyUI's code computed on the weights and inputs of ``_files_wan_s2v.py``
(``data/wan_s2v/record.py``). Measured in float32 on a CPU: the transformer
within 6e-7 of the largest output value, the encoder within 4e-7 (of
transformers' too), the audio windows exactly; the tolerances below (1e-5)
leave room for other CPUs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _files_wan_s2v import (
    WAV2VEC2,
    WAV2VEC2_LAYERS,
    audio_features,
    random_weights,
    recorded_shapes,
    reference,
    run_network,
    s2v_file,
    transformer_inputs,
    wav2vec2_file,
    waveform,
)
from _oracle import close

from comfy_kernel_core_nodes.families.wan import sound_nodes
from comfy_kernel_core_nodes.families.wan.models import transformer_layout
from comfy_kernel_core_nodes.families.wan.s2v import S2VConfig, WanS2VTransformer
from comfy_kernel_core_nodes.families.wan.wav2vec2 import Wav2Vec2, Wav2Vec2Config, load
from comfy_kernel_core_nodes.model.files import tensor_shapes
from comfy_kernel_core_nodes.model.loading import load_diffusion_model, model_config

pytestmark = pytest.mark.usefixtures("single_torch_thread")

CONFIG = S2VConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=5, text_dim=128, audio_dim=128, inject_layers=(0, 4))
RTOL = 1e-5


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return reference()


@pytest.fixture(scope="module")
def network() -> WanS2VTransformer:
    net = WanS2VTransformer(CONFIG)
    net.load_state_dict(random_weights(recorded_shapes("s2v")), strict=True)
    return net.eval()


def test_layout_matches_comfyuis_network() -> None:
    ours = {k: tuple(v.shape) for k, v in WanS2VTransformer(CONFIG).state_dict().items()}
    assert ours == recorded_shapes("s2v")


@pytest.mark.parametrize("fp8", [False, True])
def test_s2v_file_is_detected_with_every_key(fp8: bool) -> None:
    path = s2v_file(fp8_scaled=fp8)
    found, prefix = model_config(str(path))
    assert type(found).__name__ == "Wan22S2V" and prefix == ""
    unet = found.unet_config
    assert (unet["model_type"], unet["num_layers"], unet["audio_dim"], unet["audio_layers"], unet["audio_tokens"],
            unet["inject_layers"], unet["cond_dim"]) == ("s2v", 5, 128, 25, 4, (0, 4), 16)
    assert transformer_layout(unet) == CONFIG
    patcher = load_diffusion_model(str(path))
    assert patcher.model.weights.keys == frozenset(recorded_shapes("s2v"))
    assert {k for k in tensor_shapes(str(path)) if not k.endswith("scale_weight") and k != "scaled_fp8"} == \
        set(recorded_shapes("s2v"))
    with patcher.use() as model:
        assert type(model.diffusion_model).__name__ == "WanS2VTransformer"
        if not fp8:  # the file's weights are the reference's, exactly
            out = run_network(model.diffusion_model, transformer_inputs()["full"])
            close(out, torch.from_numpy(reference()["full_out"]), rtol=RTOL)


@pytest.mark.parametrize("case", ["full", "reference_audio", "text", "motion"])
def test_transformer_matches_comfyui(network: WanS2VTransformer, ref: dict[str, np.ndarray], case: str) -> None:
    """full: audio, reference, motion (5 frames, padded to 19), control video, two timesteps; reference_audio:
    a 6x10 latent; text: odd sizes, padded to whole patches; motion: 21 frames (the last 19 kept)."""
    inputs = transformer_inputs()[case]
    np.testing.assert_allclose([float(v.double().abs().sum()) for v in inputs.values()], ref[f"{case}_checksum"],
                               rtol=1e-9)
    close(run_network(network, inputs), torch.from_numpy(ref[f"{case}_out"]), rtol=RTOL)


def test_each_conditioning_changes_the_output(network: WanS2VTransformer) -> None:
    inputs = transformer_inputs()["full"]
    base = run_network(network, inputs)
    for key in ("audio_embed", "reference_latent", "reference_motion", "control_video"):
        changed = dict(inputs, **{key: inputs[key] * 0.5})
        assert (run_network(network, changed) - base).abs().max() > 1e-3, key


def test_block_patch_sees_every_token(network: WanS2VTransformer) -> None:
    """The DiT block patch point gets the video, reference and motion tokens and can replace the block."""
    inputs = transformer_inputs()["full"]
    seen = []

    def patch(args: dict, extra: dict) -> dict:
        seen.append(args["img"].shape[1])
        return extra["original_block"](args)

    options = {"patches_replace": {"dit": {("double_block", 1): patch}}}
    out = run_network(network, dict(inputs, transformer_options=options))
    assert seen == [3 * 16 + 16 + 24]
    close(out, torch.from_numpy(reference()["full_out"]), rtol=RTOL)


def _hf_wav2vec2(config: Wav2Vec2Config, sd: dict[str, torch.Tensor]) -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    hf = transformers.Wav2Vec2Config(
        hidden_size=config.width, num_hidden_layers=config.layers, num_attention_heads=config.heads,
        intermediate_size=config.ffn_dim, conv_dim=(config.conv_dim,) * 7, conv_bias=config.conv_bias,
        feat_extract_norm="layer" if config.large else "group", do_stable_layer_norm=config.large,
        num_conv_pos_embeddings=config.position_kernel, num_conv_pos_embedding_groups=config.position_groups)
    model = transformers.Wav2Vec2Model(hf)
    model.load_state_dict(sd, strict=False)
    return model.eval()


@pytest.mark.parametrize("large", [True, False])
def test_wav2vec2_matches_transformers(large: bool) -> None:
    """Both of ComfyUI's layouts: "large" (layer-normed convolutions with biases, pre-norm blocks, normalised
    input) and "base" (one group norm, no biases, post-norm blocks, raw input)."""
    config = Wav2Vec2Config(width=128, layers=3, conv_dim=64, conv_bias=large, large=large, ffn_dim=256)
    ours = Wav2Vec2(config).eval()
    sd = random_weights({k: tuple(v.shape) for k, v in ours.state_dict().items()})
    ours.load_state_dict(sd, strict=True)
    hf = _hf_wav2vec2(config, sd)
    audio = waveform()
    mono = audio.mean(dim=1)
    if large:
        mono = (mono - mono.mean()) / torch.sqrt(mono.var() + 1e-7)
    with torch.no_grad():
        last, states = ours(audio)
        expected = hf(mono, output_hidden_states=True)
    # transformers 5 records the last block's output before the final norm as its last hidden state; ComfyUI
    # (like transformers 4) gives the normed one, which is ``last_hidden_state``
    assert len(states) == len(expected.hidden_states) == 4
    for mine, theirs in zip(states[:-1], expected.hidden_states[:-1], strict=True):
        close(mine, theirs, rtol=1e-5)
    close(last, expected.last_hidden_state, rtol=1e-5)
    assert torch.equal(states[-1], last)


def test_wav2vec2_file_matches_comfyui(ref: dict[str, np.ndarray]) -> None:
    """ComfyUI's file layout (``weight_g`` / ``weight_v``) loaded and run as AudioEncoderEncode runs it."""
    encoder = load(str(wav2vec2_file()))
    assert (encoder.config.width, encoder.config.layers, encoder.config.heads, encoder.config.large) == \
        (WAV2VEC2["embed_dim"], WAV2VEC2["num_layers"], WAV2VEC2["num_heads"], True)
    out = sound_nodes.AudioEncoderEncode.execute(encoder, {"waveform": waveform(), "sample_rate": 16000}).result[0]
    close(out["encoded_audio"], torch.from_numpy(ref["wav2vec2_last"]), rtol=RTOL)
    for i, layer in enumerate(WAV2VEC2_LAYERS):
        close(out["encoded_audio_all_layers"][layer], torch.from_numpy(ref["wav2vec2_layers"][i]), rtol=RTOL)


def test_audio_encoder_output_has_comfyuis_structure() -> None:
    """A 48 kHz clip is resampled to 16 kHz first; every hidden state comes back, 50 frames a second."""
    encoder = load(str(wav2vec2_file()))
    audio = torch.nn.functional.interpolate(waveform(), scale_factor=3, mode="linear")
    out = sound_nodes.AudioEncoderEncode.execute(encoder, {"waveform": audio, "sample_rate": 48000}).result[0]
    assert set(out) == {"encoded_audio", "encoded_audio_all_layers", "audio_samples"}
    assert out["audio_samples"] == 4000
    layers = out["encoded_audio_all_layers"]
    assert isinstance(layers, tuple) and len(layers) == 25
    assert all(t.shape == (1, 12, 128) for t in layers)
    assert torch.equal(out["encoded_audio"], layers[-1])


def _encoded() -> dict:
    features = audio_features()
    return {"encoded_audio": features[-1:], "encoded_audio_all_layers": tuple(f[None] for f in features),
            "audio_samples": 12800}


def test_sound_to_video_conditioning_matches_comfyui(ref: dict[str, np.ndarray]) -> None:
    cond = [[torch.zeros(1, 3, 8), {}]]
    positive, negative, latent = sound_nodes.WanSoundImageToVideo.execute(
        cond, cond, None, 32, 48, 9, 2, audio_encoder_output=_encoded()).result
    np.testing.assert_allclose(positive[0][1]["audio_embed"].numpy(), ref["node_audio_embed"], rtol=1e-6,
                               atol=1e-6)
    assert np.array_equal(negative[0][1]["audio_embed"].numpy(), ref["node_negative_audio_embed"])
    np.testing.assert_allclose(positive[0][1]["control_video"].numpy(), ref["node_control_video"], rtol=1e-6)
    assert list(latent["samples"].shape) == ref["node_latent_shape"].tolist()
    for frames in (3, 6):
        previous = {"samples": torch.arange(16 * frames * 24, dtype=torch.float32).reshape(1, 16, frames, 4, 6)}
        positive, _, latent = sound_nodes.WanSoundImageToVideoExtend.execute(
            cond, cond, None, 9, previous, audio_encoder_output=_encoded()).result
        options = positive[0][1]
        assert ("audio_embed" in options) == bool(ref[f"extend{frames}_has_audio"])
        if "audio_embed" in options:
            np.testing.assert_allclose(options["audio_embed"].numpy(), ref[f"extend{frames}_audio_embed"],
                                       rtol=1e-6, atol=1e-6)
        assert np.array_equal(options["reference_motion"].numpy(), ref[f"extend{frames}_reference_motion"])
        assert list(latent["samples"].shape) == ref[f"extend{frames}_latent_shape"].tolist()


class _StubVAE:
    """Latents [1, 16, (frames - 1) / 4 + 1, h / 8, w / 8] filled with the mean pixel of the encoded frames."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, ...]] = []

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(pixels.shape))
        n, h, w, _ = pixels.shape
        return torch.full((1, 16, (n - 1) // 4 + 1, h // 8, w // 8), float(pixels.mean()))


def test_images_become_reference_motion_and_control_latents() -> None:
    vae = _StubVAE()
    cond = [[torch.zeros(1, 3, 8), {"reference_latents": [torch.zeros(1, 16, 1, 6, 4)]}]]
    ref_image = torch.ones(2, 20, 30, 4)
    motion = torch.zeros(5, 48, 32, 3)
    control = torch.full((20, 48, 32, 3), 0.25)
    positive, negative, latent = sound_nodes.WanSoundImageToVideo.execute(
        cond, cond, vae, 32, 48, 9, 1, ref_image=ref_image, control_video=control, ref_motion=motion).result
    assert vae.seen == [(1, 48, 32, 3), (73, 48, 32, 3), (9, 48, 32, 3)]
    for options in (positive[0][1], negative[0][1]):
        assert len(options["reference_latents"]) == 2 and float(options["reference_latents"][-1].mean()) == 1.0
        assert options["reference_motion"].shape == (1, 16, 19, 6, 4)
        # 68 grey frames before the 5 black ones: the motion latents hold their mean
        assert float(options["reference_motion"].mean()) == pytest.approx(0.5 * 68 / 73, rel=1e-5)
        assert float(options["control_video"].mean()) == pytest.approx(0.25)
    assert latent["samples"].shape == (1, 16, 3, 6, 4)
