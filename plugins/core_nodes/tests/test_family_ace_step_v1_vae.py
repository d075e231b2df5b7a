"""ACE-Step 1.0's audio VAE (MusicDCAE) against ComfyUI's outputs, diffusers' DC-AE and the mel filters of
transformers' audio utilities.

The reference (``data/ace_step_v1/vae_reference.npz``) is ComfyUI's VAE on
the small random-weight MusicDCAE of ``_files_ace_step_v1_vae``, in float32 on
the CPU; ours matches it to 1.5e-6 of the largest value (latents), 4e-6
(waveforms) and the log-mel to 3e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _files_ace_step_v1_vae import (
    DCAE_CONFIG,
    MEL_KEYS,
    REFERENCE,
    comfy_shapes,
    file_name,
    vae_state_dict,
    vae_weights,
    waveform,
)
from _random_weights import cached_file

from comfy_kernel_core_nodes.families.ace_step_v1 import vae as ace_vae
from comfy_kernel_core_nodes.families.ace_step_v1.dcae import DCAE, DCAELayout, Stage
from comfy_kernel_core_nodes.families.ace_step_v1.vocoder import LogMel, VocoderLayout, mel_filters
from comfy_kernel_core_nodes.model import ops
from comfy_kernel_core_nodes.model.files import tensor_shapes

VERSION = "v1"
#: five times the largest error measured against ComfyUI (float32, relative to the largest value)
TOLERANCE = 2e-5


def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}


def vae_file(mel_buffers: bool = True) -> str:
    """The VAE alone (VAELoader's kind of file), with or without the stored Hann window and mel filters."""
    name = f"{VERSION}-ace_step_v1_vae{'' if mel_buffers else '_nomel'}.safetensors"
    return str(cached_file(name, lambda: {k[len("vae."):]: v
                                          for k, v in vae_state_dict(mel_buffers=mel_buffers).items()}))


def checkpoint_file() -> str:
    """The VAE under ``vae.`` beside another model's tensor, as in the all-in-one checkpoint."""
    return str(cached_file(f"{VERSION}-ace_step_v1_vae_prefixed.safetensors",
                           lambda: {**vae_state_dict(), "model.diffusion_model.x.weight": torch.zeros(1)}))


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max())


def cropped_waveform() -> torch.Tensor:
    """The test signal centre-cropped to whole 4096-sample frames, as ComfyUI's VAE.encode crops it."""
    audio = waveform()
    start = (audio.shape[-1] % 4096) // 2
    return audio[:, start: start + audio.shape[-1] // 4096 * 4096]


@pytest.fixture(scope="module")
def loaded_vae() -> ace_vae.AceV1AudioVAE:
    path = vae_file()
    return ace_vae.ace_v1_vae(path, "", tensor_shapes(path))


def test_layouts_read_from_shapes_build_every_tensor_of_the_file():
    shapes = tensor_shapes(vae_file())
    dcae, vocoder = ace_vae.layouts(shapes)
    assert dcae == DCAELayout(encoder=(Stage(16, 1), Stage(32, 1), Stage(32, 2), Stage(64, 1, (5,))),
                              decoder=(Stage(16, 2), Stage(16, 1), Stage(32, 1), Stage(64, 2, (5,))))
    assert vocoder == VocoderLayout(dims=(16, 24, 32, 48), depths=(1, 1, 2, 1), width=64, rates=(8, 4, 4, 4),
                                    up_kernels=(16, 8, 8, 8), res_kernels=(3, 7))
    with torch.device("meta"):
        net = ace_vae.MusicDCAE(ops.plain, dcae, vocoder)
    # every tensor but the stored Hann window and mel filters, which are computed
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == \
        {k: v for k, v in shapes.items() if k not in MEL_KEYS}
    assert all(k in shapes for k in MEL_KEYS)
    # ComfyUI's module names (torch's weight-norm parametrisation) read the same
    assert ace_vae.layouts(comfy_shapes()) == (dcae, vocoder)
    assert {file_name(k) for k in comfy_shapes()} == set(shapes)
    assert {ace_vae.module_key(k) for k in comfy_shapes()} - {None} == set(net.state_dict())


def test_detection_claims_this_vae_only():
    from _files_ace_step import vae_sd as ace15_vae_sd

    shapes = tensor_shapes(checkpoint_file())
    assert ace_vae.is_ace_v1_vae(shapes, "vae.") and not ace_vae.is_ace_v1_vae(shapes, "")
    assert ace_vae.is_ace_v1_vae(tensor_shapes(vae_file()))
    ace15 = {k: tuple(v.shape) for k, v in ace15_vae_sd().items()}
    assert not ace_vae.is_ace_v1_vae(ace15)
    assert not ace_vae.is_ace_v1_vae({f"vae.{k}": v for k, v in ace15.items()}, "vae.")
    assert not ace_vae.is_ace_v1_vae({k: v for k, v in shapes.items() if not k.startswith("vae.dcae.")}, "vae.")


def test_mel_transform_matches_comfyui():
    """ComfyUI's reflect padding, STFT magnitudes and torchaudio's Slaney filters (40 Hz - 16 kHz)."""
    got = LogMel(128)(cropped_waveform())
    expected = torch.from_numpy(reference()["mel"])
    assert got.shape == expected.shape == (2, 128, 24)
    error = float((got - expected).abs().max())
    assert error < 2e-4, error


def test_mel_filters_match_transformers():
    audio_utils = pytest.importorskip("transformers.audio_utils")
    expected = audio_utils.mel_filter_bank(num_frequency_bins=1025, num_mel_filters=128, min_frequency=40.0,
                                           max_frequency=16000.0, sampling_rate=44100, norm="slaney",
                                           mel_scale="slaney")
    assert torch.allclose(mel_filters(), torch.from_numpy(expected).float(), rtol=1e-5, atol=1e-9)


def test_encode_matches_comfyui(loaded_vae):
    latent = loaded_vae.encode(waveform()[None].movedim(1, -1))
    expected = torch.from_numpy(reference()["latent"])
    assert latent.shape == expected.shape == (1, 8, 16, 3) and latent.dtype == torch.float32
    error = relative_error(latent, expected)
    assert error < TOLERANCE, error


@pytest.mark.parametrize("case", ["decoded", "decoded_short"])
def test_decode_matches_comfyui(loaded_vae, case):
    """Three latent frames take the linear attention, two (32 positions, one head's width) the quadratic one
    (the two forms agree in float32 up to rounding)."""
    ref = reference()
    latent = torch.from_numpy(ref["latent"] if case == "decoded" else ref["short_latent"])
    audio = loaded_vae.decode(latent)
    expected = torch.from_numpy(ref[case])
    assert audio.shape == expected.shape == (1, latent.shape[-1] * 4096, 2)
    error = relative_error(audio, expected)
    assert error < TOLERANCE, error


def test_files_with_and_without_mel_buffers_load_alike():
    path = vae_file(mel_buffers=False)
    shapes = tensor_shapes(path)
    assert not any(k in shapes for k in MEL_KEYS)
    audio_vae = ace_vae.ace_v1_vae(path, "", shapes)
    assert set(audio_vae.get_sd()) == set(shapes) == set(ace_vae.ace_v1_vae(vae_file(), "", tensor_shapes(vae_file()))
                                                         .get_sd())
    latent = audio_vae.encode(waveform()[None].movedim(1, -1))
    error = relative_error(latent, torch.from_numpy(reference()["latent"]))
    assert error < TOLERANCE, error


def test_checkpoint_prefix_and_vae_conventions(loaded_vae):
    path = checkpoint_file()
    audio_vae = ace_vae.ace_v1_vae(path, "vae.", tensor_shapes(path))
    assert audio_vae.audio_sample_rate == 44100 and audio_vae.latent_channels == 8
    assert audio_vae.downscale_ratio == 4096 and audio_vae.output_channels == 2 and audio_vae.latent_dim == 2
    assert set(audio_vae.get_sd()) == {k[len("vae."):] for k in vae_state_dict(mel_buffers=False)}
    # a mono clip shorter than a latent frame: duplicated to stereo, padded to one frame
    mono = waveform(0.05)[0][None, :, None]
    latent = audio_vae.encode(mono)
    assert latent.shape == (1, 8, 16, 1)
    stereo = torch.nn.functional.pad(mono.expand(-1, -1, 2), (0, 0, 0, 4096 - mono.shape[1]))
    assert torch.equal(latent, loaded_vae.encode(stereo))


def test_dcae_matches_diffusers():
    """The DC-AE alone against diffusers' AutoencoderDC loaded (strictly) with the same weights and names."""
    from diffusers import AutoencoderDC

    sd = {k[len("dcae."):]: v for k, v in vae_weights().items() if k.startswith("dcae.")}
    with torch.device("meta"):
        ours = DCAE(ops.plain, ace_vae.layouts(comfy_shapes())[0])
    ours.load_state_dict(sd, assign=True)
    theirs = AutoencoderDC(**DCAE_CONFIG).eval()
    theirs.load_state_dict(sd, strict=True)
    g = torch.Generator().manual_seed(3)
    for frames in (24, 8):  # 3 and 1 latent frames: linear and quadratic attention
        mel = torch.randn(1, 2, 128, frames, generator=g)
        latent = torch.randn(1, 8, 16, frames // 8, generator=g)
        with torch.no_grad():
            encoded, decoded = ours.encoder(mel), ours.decoder(latent)
            assert encoded.shape == (1, 8, 16, frames // 8) and decoded.shape == mel.shape
            assert relative_error(encoded, theirs.encoder(mel)) < 1e-5
            assert relative_error(decoded, theirs.decoder(latent)) < 1e-5
