"""HuMo: the transformer and the node's conditioning against ComfyUI 0.3.64's recorded outputs, the Whisper
encoder against transformers' ``WhisperEncoder`` / ``WhisperFeatureExtractor`` and ComfyUI's, the files
detected with every key.

diffusers has no HuMo transformer; ``data/wan_humo/reference.npz`` holds what
ComfyUI's code computed on the weights and inputs of ``_files_wan_humo.py``
(``data/wan_humo/record.py``). Measured in float32 on a CPU: see the
tolerances at each test (they leave room for other CPUs).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _files_wan_humo import (
    NODE_CASES,
    WHISPER_LAYERS,
    WHISPER_POSITIONS,
    StubVAE,
    encoder_output,
    humo_file,
    recorded_shapes,
    reference,
    reference_image,
    speech,
    transformer_inputs,
    whisper_file,
)
from _files_wan_s2v import random_weights, run_network, wav2vec2_file
from _oracle import close

from comfy_kernel_core_nodes.families.wan import audio_encoder, humo_nodes
from comfy_kernel_core_nodes.families.wan.humo import HumoConfig, WanHumoTransformer
from comfy_kernel_core_nodes.families.wan.models import transformer_layout
from comfy_kernel_core_nodes.families.wan.sound_nodes import AudioEncoderEncode
from comfy_kernel_core_nodes.families.wan.whisper import Whisper, WhisperConfig, log_mel
from comfy_kernel_core_nodes.model.files import tensor_shapes
from comfy_kernel_core_nodes.model.loading import load_diffusion_model, model_config

pytestmark = pytest.mark.usefixtures("single_torch_thread")

CONFIG = HumoConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=3, text_dim=128, audio_width=128,
                    audio_hidden=64, audio_dim=96, audio_tokens=16)
WHISPER = WhisperConfig(width=128, layers=32, ffn_dim=512)
RTOL = 1e-5


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return reference()


@pytest.fixture(scope="module")
def network() -> WanHumoTransformer:
    net = WanHumoTransformer(CONFIG)
    net.load_state_dict(random_weights(recorded_shapes("humo")), strict=True)
    return net.eval()


def test_layout_matches_comfyuis_network() -> None:
    ours = {k: tuple(v.shape) for k, v in WanHumoTransformer(CONFIG).state_dict().items()}
    assert ours == recorded_shapes("humo")


@pytest.mark.parametrize("fp8", [False, True])
def test_humo_file_is_detected_with_every_key(fp8: bool) -> None:
    path = humo_file(fp8=fp8)
    found, prefix = model_config(str(path))
    assert type(found).__name__ == "Wan21HuMo" and prefix == ""
    unet = found.unet_config
    assert (unet["model_type"], unet["num_layers"], unet["audio_width"], unet["audio_hidden"], unet["audio_dim"],
            unet["audio_tokens"]) == ("humo", 3, 128, 64, 96, 16)
    assert transformer_layout(unet) == CONFIG
    patcher = load_diffusion_model(str(path))
    assert patcher.model.weights.keys == frozenset(recorded_shapes("humo"))
    assert {k for k in tensor_shapes(str(path))} == set(recorded_shapes("humo"))
    with patcher.use() as model:
        net = model.diffusion_model
        assert type(net).__name__ == "WanHumoTransformer"
        if fp8:
            assert net.blocks[0].audio_cross_attn_wrapper.audio_cross_attn.k.weight.dtype == torch.float8_e4m3fn
        else:  # the file's weights are the reference's, exactly
            close(run_network(net, transformer_inputs()["full"]), torch.from_numpy(reference()["full_out"]), rtol=RTOL)


@pytest.mark.parametrize("case", ["full", "audio", "reference", "silence", "text"])
def test_transformer_matches_comfyui(network: WanHumoTransformer, ref: dict[str, np.ndarray], case: str) -> None:
    """full: audio and reference, two timesteps; audio: a 6x10 latent; reference: no audio; silence: the node's
    all-zero audio, one frame longer than the video, with a reference; text: odd sizes, padded to patches."""
    inputs = transformer_inputs()[case]
    np.testing.assert_allclose([float(v.double().abs().sum()) for v in inputs.values()], ref[f"{case}_checksum"],
                               rtol=1e-9)
    close(run_network(network, inputs), torch.from_numpy(ref[f"{case}_out"]), rtol=RTOL)


def test_each_conditioning_changes_the_output(network: WanHumoTransformer) -> None:
    inputs = transformer_inputs()["full"]
    base = run_network(network, inputs)
    for key in ("audio_embed", "reference_latent"):
        changed = dict(inputs, **{key: inputs[key] * 0.5})
        assert (run_network(network, changed) - base).abs().max() > 1e-3, key
    # each latent frame hears its own audio window: changing the last one leaves the first frame nearly alone
    audio = inputs["audio_embed"].clone()
    audio[:, -1] = 0
    changed = run_network(network, dict(inputs, audio_embed=audio)) - base
    assert changed[:, :, -1].abs().max() > 10 * changed[:, :, 0].abs().max()


def test_zero_audio_of_any_length(network: WanHumoTransformer) -> None:
    """The node's silence has one frame more than the video; where the tokens do not split evenly into the
    audio frames (ComfyUI fails there) each latent frame takes its own, all alike, so the length is moot."""
    g = torch.Generator().manual_seed(12)
    x, ref = torch.randn(1, 16, 2, 6, 10, generator=g), torch.randn(1, 16, 1, 6, 10, generator=g)
    inputs = dict(x=x, timestep=torch.tensor([400.0]), context=torch.randn(1, 5, 128, generator=g),
                  reference_latent=ref)
    outs = [run_network(network, dict(inputs, audio_embed=torch.zeros(1, frames, 8, 5, 128))) for frames in (2, 3, 4)]
    close(outs[1], outs[0], rtol=RTOL)
    close(outs[2], outs[0], rtol=RTOL)


def test_block_patch_sees_video_and_reference_tokens(network: WanHumoTransformer,
                                                     ref: dict[str, np.ndarray]) -> None:
    inputs = transformer_inputs()["full"]
    seen = []

    def patch(args: dict, extra: dict) -> dict:
        seen.append(args["img"].shape[1])
        return extra["original_block"](args)

    out = run_network(network, dict(inputs, transformer_options={"patches_replace": {"dit": {("double_block", 1): patch}}}))
    assert seen == [3 * 16 + 16]
    close(out, torch.from_numpy(ref["full_out"]), rtol=RTOL)


def test_model_conditions_from_the_nodes_values() -> None:
    """The reference latent goes in whole (5-d), after the latent format's scaling; the audio as it is."""
    patcher = load_diffusion_model(str(humo_file()))
    noise = torch.zeros(1, 16, 2, 4, 6)
    ref_latent, audio = torch.randn(1, 16, 1, 4, 6), torch.randn(1, 2, 8, 5, 128)
    conds = patcher.model.extra_conds(noise=noise, device=torch.device("cpu"), cross_attn=torch.zeros(1, 3, 128),
                                      reference_latents=[torch.zeros(1, 16, 1, 4, 6), ref_latent],
                                      audio_embed=audio)
    assert "c_concat" not in conds
    torch.testing.assert_close(conds["reference_latent"].cond, patcher.model.process_latent_in(ref_latent))
    assert torch.equal(conds["audio_embed"].cond, audio)


def _hf_whisper(config: WhisperConfig, sd: dict[str, torch.Tensor]) -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    hf = transformers.WhisperConfig(d_model=config.width, encoder_layers=config.layers,
                                    encoder_attention_heads=config.heads, encoder_ffn_dim=config.ffn_dim,
                                    num_mel_bins=config.mels, max_source_positions=config.positions,
                                    decoder_layers=1, decoder_attention_heads=config.heads)
    encoder = transformers.models.whisper.modeling_whisper.WhisperEncoder(hf)
    missing, unexpected = encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in sd.items()},
                                                  strict=False)
    assert not unexpected and not missing
    return encoder.eval()


def test_log_mel_matches_transformers_and_comfyui(ref: dict[str, np.ndarray]) -> None:
    """Whisper's log-mel (torchaudio's transform in ComfyUI, numpy's in transformers): within 2e-5."""
    transformers = pytest.importorskip("transformers")
    audio = speech()
    mel = log_mel(audio)
    assert mel.shape == (1, 128, 3000)
    close(mel, torch.from_numpy(ref["whisper_mel"]), rtol=2e-5)
    extractor = transformers.WhisperFeatureExtractor(feature_size=128)
    features = extractor(audio.mean(dim=1)[0].numpy(), sampling_rate=16000, return_tensors="pt").input_features
    close(mel, features, rtol=2e-5)


def test_whisper_matches_transformers() -> None:
    ours = Whisper(WHISPER).eval()
    sd = random_weights({k: tuple(v.shape) for k, v in ours.state_dict().items()})
    ours.load_state_dict(sd, strict=True)
    hf = _hf_whisper(WHISPER, sd)
    audio = speech()
    with torch.no_grad():
        last, states = ours(audio)
        expected = hf(log_mel(audio), output_hidden_states=True)
    # transformers 5 records block outputs (the last before the final norm); ComfyUI gives the normed one
    assert len(states) == len(expected.hidden_states) == 33
    for mine, theirs in zip(states[:-1], expected.hidden_states[:-1], strict=True):
        close(mine, theirs, rtol=RTOL)
    close(last, expected.last_hidden_state, rtol=RTOL)
    assert torch.equal(states[-1], last)


def test_whisper_file_matches_comfyui(ref: dict[str, np.ndarray]) -> None:
    """The file (encoder under ``model.encoder.``, a decoder beside it) loaded by AudioEncoderLoader's rule
    and run as AudioEncoderEncode runs it; every state's sums and some states whole."""
    encoder = audio_encoder.load(str(whisper_file()))
    assert isinstance(encoder.config, WhisperConfig) and encoder.config == WHISPER
    out = AudioEncoderEncode.execute(encoder, {"waveform": speech(), "sample_rate": 16000}).result[0]
    states = out["encoded_audio_all_layers"]
    assert len(states) == 33 and out["audio_samples"] == 9600 and torch.equal(out["encoded_audio"], states[-1])
    sums = np.array([[float(s.double().sum()), float(s.double().abs().sum())] for s in states])
    np.testing.assert_allclose(sums[:, 1], ref["whisper_sums"][:, 1], rtol=RTOL)
    np.testing.assert_allclose(sums[:, 0], ref["whisper_sums"][:, 0], atol=RTOL * ref["whisper_sums"][:, 1].max())
    for i, layer in enumerate(WHISPER_LAYERS):
        close(states[layer][:, list(WHISPER_POSITIONS)], torch.from_numpy(ref["whisper_layers"][i]), rtol=RTOL)


def test_audio_encoder_loader_tells_the_kinds_apart(tmp_path) -> None:
    from safetensors.torch import save_file

    assert type(audio_encoder.load(str(wav2vec2_file())).config).__name__ == "Wav2Vec2Config"
    assert type(audio_encoder.load(str(whisper_file())).config).__name__ == "WhisperConfig"
    other = tmp_path / "other.safetensors"
    save_file({"decoder.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(audio_encoder.UnsupportedAudioEncoder):
        audio_encoder.load(str(other))


@pytest.mark.parametrize("case", list(NODE_CASES))
def test_audio_windows_match_comfyui(ref: dict[str, np.ndarray], case: str) -> None:
    """short: a 9-frame clip well inside the sound; long: 33 frames past the end of a sound cut to 0.8 s."""
    length, samples = NODE_CASES[case]
    cond = [[torch.zeros(1, 3, 8), {}]]
    positive, negative, latent = humo_nodes.WanHuMoImageToVideo.execute(
        cond, cond, None, 32, 48, length, 1, audio_encoder_output=encoder_output(samples)).result
    np.testing.assert_allclose(positive[0][1]["audio_embed"].numpy(), ref[f"node_{case}_audio_embed"], rtol=1e-6,
                               atol=1e-6)
    assert not negative[0][1]["audio_embed"].any()
    assert negative[0][1]["audio_embed"].shape == positive[0][1]["audio_embed"].shape
    assert list(latent["samples"].shape) == ref[f"node_{case}_latent_shape"].tolist()
    for options in (positive[0][1], negative[0][1]):  # no image: a zero reference frame
        assert options["reference_latents"][-1].shape == (1, 16, 1, 6, 4) and not options["reference_latents"][-1].any()


def test_reference_image_and_silence_match_comfyui(ref: dict[str, np.ndarray]) -> None:
    cond = [[torch.zeros(1, 3, 8), {"reference_latents": [torch.ones(1, 16, 1, 6, 4)]}]]
    positive, negative, latent = humo_nodes.WanHuMoImageToVideo.execute(
        cond, cond, StubVAE(), 32, 48, 9, 2, ref_image=reference_image()).result
    assert len(positive[0][1]["reference_latents"]) == 2
    np.testing.assert_allclose(positive[0][1]["reference_latents"][-1].numpy(), ref["node_reference"], rtol=1e-6)
    assert not negative[0][1]["reference_latents"][-1].any()
    assert negative[0][1]["reference_latents"][-1].shape == positive[0][1]["reference_latents"][-1].shape
    assert np.array_equal(positive[0][1]["audio_embed"].numpy(), ref["node_silence"])
    assert np.array_equal(negative[0][1]["audio_embed"].numpy(), ref["node_silence"])
    assert list(latent["samples"].shape) == ref["node_silence_latent_shape"].tolist()
