"""LTX-2 sampling: the audio + video latent through the sampler, the LTXV nodes, and the server end to end.

The checkpoint is the random-weight file of _files_ltx2.py (two blocks, 128 /
64 wide streams, the released key layout, no text encoder); prompts are
random text states of the transformer's input width loaded with Load
Conditioning. Videos are 2 latent frames of 64x64 pixels (9 frames) with
their 9-frame audio latent. The sampled result is checked against an Euler
loop written here over the network's token interface, so packing, noise
order, timesteps and guidance are all checked.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _files_ltx2 import (
    TRANSFORMER_CONFIG,
    checkpoint_file,
    conditioning_file,
    transformer_file,
    upsampler_file,
)
from _files_wan import place
from PIL import Image

from comfy_kernel_core_nodes.families.ltx2 import video_nodes
from comfy_kernel_core_nodes.families.ltx2.models import LTX2Model
from comfy_kernel_core_nodes.families.ltx2.transformer import LTX2Transformer, pixel_bounds
from comfy_kernel_core_nodes.model.loading import load_checkpoint, load_diffusion_model
from comfy_kernel_core_nodes.model.nested import NestedTensor, pack_latents, unpack_latents
from comfy_kernel_core_nodes.sampling.noise import prepare_noise

pytestmark = pytest.mark.usefixtures("single_torch_thread")

CKPT = "ltx-2-19b-dev-fp8.safetensors"
SEED, CFG = 21, 3.0


# --- the scheduler -----------------------------------------------------------------------------


def comfyui_ltxv_sigmas(steps, max_shift, base_shift, stretch, terminal, tokens=4096):
    """ComfyUI's LTXVScheduler, written out in float64: sigma = e^s / (e^s + 1/t - 1) on t = 1 .. 0, s linear in
    the token count (base_shift at 1024, max_shift at 4096), then 1 - sigma rescaled so the last non-zero
    sigma is ``terminal``."""
    shift = base_shift + (max_shift - base_shift) * (tokens - 1024) / (4096 - 1024)
    t = np.linspace(1.0, 0.0, steps + 1)
    with np.errstate(divide="ignore"):
        sigmas = np.where(t > 0, math.exp(shift) / (math.exp(shift) + 1 / t - 1), 0.0)
    if stretch:
        rest = 1.0 - sigmas[:-1]
        sigmas[:-1] = 1.0 - rest * (1.0 - terminal) / rest[-1]
    return sigmas


@pytest.mark.parametrize(("steps", "stretch", "terminal", "latent"), [
    (20, True, 0.1, None), (8, False, 0.1, None), (5, True, 0.3, (1, 128, 2, 2, 2)), (3, True, 0.1, (1, 128, 7, 16, 24)),
])
def test_scheduler_sigmas_follow_comfyuis_formula(steps, stretch, terminal, latent):
    given = None if latent is None else {"samples": torch.zeros(latent)}
    (sigmas,) = video_nodes.LTXVScheduler.execute(steps, 2.05, 0.95, stretch, terminal, given).result
    tokens = 4096 if latent is None else math.prod(latent[2:])
    expected = comfyui_ltxv_sigmas(steps, 2.05, 0.95, stretch, terminal, tokens)
    assert sigmas.dtype == torch.float32 and sigmas.shape == (steps + 1,)
    np.testing.assert_allclose(sigmas.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert sigmas[0] == pytest.approx(1.0) and sigmas[-1] == 0.0
    if stretch:
        assert sigmas[-2] == pytest.approx(terminal, abs=1e-6)


# --- nested latents ----------------------------------------------------------------------------


def test_packing_keeps_each_part_and_batches_of_another_size():
    video, audio = torch.randn(1, 128, 2, 2, 2), torch.randn(1, 8, 9, 16)
    packed, shapes = pack_latents([video, audio])
    assert packed.shape == (1, 1, 128 * 8 + 8 * 9 * 16)
    back = unpack_latents(torch.cat([packed, 2 * packed]), shapes)  # cond and uncond batched together
    assert torch.equal(back[0][:1], video) and torch.equal(back[1][1:], 2 * audio)
    nested = NestedTensor([video, audio])
    assert torch.equal((nested * 2 + 1).unbind()[1], audio * 2 + 1) and nested.shape == video.shape


def test_noise_of_a_nested_latent_is_drawn_part_after_part():
    latent = NestedTensor([torch.zeros(1, 128, 2, 2, 2), torch.zeros(1, 8, 9, 16)])
    video, audio = prepare_noise(latent, SEED).unbind()
    generator = torch.manual_seed(SEED)
    assert torch.equal(video, torch.randn(1, 128, 2, 2, 2, generator=generator))
    assert torch.equal(audio, torch.randn(1, 8, 9, 16, generator=generator))


def test_concat_and_separate_keep_both_latents_and_their_masks():
    from comfy_kernel_core_nodes.families.ltx2.latent_nodes import LTXVConcatAVLatent, LTXVSeparateAVLatent

    video, audio = torch.randn(1, 128, 2, 2, 2), torch.randn(1, 8, 9, 16)
    video_mask = torch.tensor([0.0, 1.0]).view(1, 1, 2, 1, 1)
    (av,) = LTXVConcatAVLatent.execute({"samples": video, "noise_mask": video_mask}, {"samples": audio}).result
    assert torch.equal(av["noise_mask"].unbind()[1], torch.ones_like(audio))
    split_video, split_audio = LTXVSeparateAVLatent.execute(av).result
    assert torch.equal(split_video["samples"], video) and torch.equal(split_video["noise_mask"], video_mask)
    assert torch.equal(split_audio["samples"], audio)
    # a new audio for an AV latent is cut or padded (the padding generated) to the audio it replaces
    (longer,) = LTXVConcatAVLatent.execute(av, {"samples": torch.ones(1, 8, 12, 16)}).result
    assert longer["samples"].unbind()[1].shape == (1, 8, 9, 16)
    (shorter,) = LTXVConcatAVLatent.execute(av, {"samples": torch.ones(1, 8, 6, 16),
                                                 "noise_mask": torch.zeros(1, 8, 6, 16)}).result
    new_audio, new_mask = shorter["samples"].unbind()[1], shorter["noise_mask"].unbind()[1]
    assert new_audio[:, :, 6:].abs().sum() == 0 and new_audio[:, :, :6].eq(1).all()
    assert new_mask[:, :, :6].eq(0).all() and new_mask[:, :, 6:].eq(1).all()
    assert torch.equal(shorter["noise_mask"].unbind()[0], video_mask)


# --- the model ---------------------------------------------------------------------------------


def test_latent_upscale_model_loader_reads_the_ltx2_upsampler():
    from comfy_kernel_core_nodes.families.hunyuan_video15.upsampler import load_latent_upsampler
    from comfy_kernel_core_nodes.families.ltx2.upsampler import LTXLatentUpsampler, UpsamplerLayout

    model = load_latent_upsampler(str(upsampler_file()))
    assert isinstance(model, LTXLatentUpsampler)
    assert model.layout == UpsamplerLayout(mid_channels=32, blocks=1, rational=True)
    assert model.upsample(torch.randn(1, 128, 2, 2, 3)).shape == (1, 128, 2, 4, 6)


def test_checkpoint_and_bare_transformer_load_as_ltx2():
    model, clip, vae = load_checkpoint(str(checkpoint_file()))
    assert isinstance(model.model, LTX2Model) and clip is None
    assert model.model.model_sampling.shift == 2.37 and model.model.model_sampling.sigma_max == pytest.approx(1.0)
    assert vae.downscale_index_formula == (8, 32, 32)
    bare = load_diffusion_model(str(transformer_file()))
    assert isinstance(bare.model, LTX2Model)


def test_text_connectors_beside_the_transformer_are_left_to_the_text_encoder(tmp_path):
    """Released checkpoints keep the text connectors under the transformer's prefix; the model skips them."""
    from safetensors.torch import load_file, save_file

    sd = load_file(transformer_file())
    sd["model.diffusion_model.video_embeddings_connector.learnable_registers"] = torch.zeros(128, 3840)
    sd["model.diffusion_model.audio_embeddings_connector.learnable_registers"] = torch.zeros(128, 3840)
    path = tmp_path / "with_connectors.safetensors"
    save_file(sd, str(path))
    model = load_diffusion_model(str(path)).model
    assert not any("connector" in k for k in model.weights.keys)
    assert model.diffusion_model.patchify_proj.weight.shape == (128, 128)


def test_lora_names_reach_every_transformer_layer():
    from comfy_kernel_core_nodes.model.lora import model_lora_keys_unet

    model = load_diffusion_model(str(transformer_file())).model
    names = model_lora_keys_unet(model)
    for layer in ("transformer_blocks.0.audio_to_video_attn.to_q", "transformer_blocks.1.ff.net.0.proj",
                  "audio_caption_projection.linear_1", "av_ca_v2a_gate_adaln_single.linear"):
        assert names[f"diffusion_model.{layer}"] == f"diffusion_model.{layer}.weight"
        assert names["lora_unet_" + layer.replace(".", "_")] == f"diffusion_model.{layer}.weight"


def test_kept_frames_get_their_own_timesteps():
    model = load_diffusion_model(str(transformer_file())).model
    video_mask = torch.ones(2, 128, 2, 2, 2)
    video_mask[:, :, 0] = 0.0
    audio_mask = torch.ones(2, 8, 3, 16)
    video_t, audio_t = model.process_timestep(torch.tensor([0.5, 0.25]), denoise_mask=video_mask,
                                              audio_denoise_mask=audio_mask)
    assert video_t.tolist() == [[0.0] * 4 + [0.5] * 4, [0.0] * 4 + [0.25] * 4]
    assert audio_t.tolist() == [[0.5] * 3, [0.25] * 3]
    plain = model.process_timestep(torch.tensor([0.5]))
    assert [t.tolist() for t in plain] == [[0.5], [0.5]]


def _network() -> LTX2Transformer:
    from safetensors.torch import load_file

    net = LTX2Transformer(TRANSFORMER_CONFIG).eval()
    sd = load_file(transformer_file())
    net.load_state_dict({k.removeprefix("model.diffusion_model."): v.float() for k, v in sd.items()})
    return net


def test_guide_positions_replace_the_last_frames_positions():
    """keyframe_idxs (LTXVAddGuide's spans) change what the appended frame attends as; without them the frame
    is the latent's next one."""
    net = _network()
    torch.manual_seed(3)
    x, a = torch.randn(1, 12, 128), torch.randn(1, 4, 128)
    context = torch.randn(1, 5, 3840)
    t = torch.tensor([500.0])
    with torch.no_grad():
        plain = net.forward_tokens(x, a, context, context, t, t, (3, 2, 2), 25.0)
        same = net.forward_tokens(x, a, context, context, t, t, (3, 2, 2), 25.0,
                                  keyframe_idxs=pixel_bounds((3, 2, 2), (8, 32, 32))[:, :, -4:])
        moved = net.forward_tokens(x, a, context, context, t, t, (3, 2, 2), 25.0,
                                   keyframe_idxs=pixel_bounds((1, 2, 2), (8, 32, 32)))
    assert torch.equal(plain[0], same[0])
    assert not torch.allclose(plain[0], moved[0])


def test_a_video_only_latent_samples_with_an_empty_audio_stream():
    from safetensors.torch import load_file

    from comfy_kernel_core_nodes.nodes.ksampler import common_ksampler
    from comfy_kernel_core_nodes.sampling.schedulers import simple

    model = load_diffusion_model(str(transformer_file()))
    positive, negative = ([[load_file(conditioning_file(i))["conditioning"], {"frame_rate": 25.0}]] for i in (1, 2))
    (out,) = common_ksampler(model, SEED, 2, CFG, "euler", "simple", positive, negative,
                             {"samples": torch.zeros(1, 128, 2, 2, 2)})
    expected, _ = reference(torch.zeros(1, 128, 2, 2, 2), torch.zeros(1, 8, 0, 16),
                            simple(model.model.model_sampling, 2))
    _close(out["samples"].numpy(), expected)


def test_without_noise_a_nested_latent_starts_from_itself():
    """KSamplerAdvanced's add_noise disabled: zero noise per part, so one step from sigma 1 gives the model's
    prediction of the latent itself (two runs agree, the seed does not matter)."""
    from safetensors.torch import load_file

    from comfy_kernel_core_nodes.nodes.ksampler import common_ksampler

    model = load_diffusion_model(str(transformer_file()))
    positive, negative = ([[load_file(conditioning_file(i))["conditioning"], {}]] for i in (1, 2))
    latent = {"samples": NestedTensor([torch.randn(1, 128, 2, 2, 2), torch.randn(1, 8, 9, 16)])}
    runs = [common_ksampler(model, seed, 1, CFG, "euler", "simple", positive, negative, latent,
                            disable_noise=True)[0]["samples"] for seed in (1, 2)]
    assert all(isinstance(r, NestedTensor) for r in runs)
    for a, b, source in zip(runs[0].unbind(), runs[1].unbind(), latent["samples"].unbind(), strict=True):
        assert a.shape == source.shape and torch.equal(a, b) and not torch.equal(a, source)


# --- the latent upsampler --------------------------------------------------------------------


@pytest.mark.parametrize(("which", "settings"), [
    ("ltx2", {"rational_spatial_scale": 2.0, "use_rational_resampler": True}),
    ("ltx2", {"rational_spatial_scale": 1.5, "use_rational_resampler": True}),
    ("ltx", {"spatial_upsample": True}),
    ("ltx", {"spatial_upsample": False, "temporal_upsample": True}),
    ("ltx", {"spatial_upsample": True, "temporal_upsample": True}),
    ("ltx", {"dims": 2}),
])
def test_upsampler_matches_diffusers(which, settings):
    """Our network, its layout read back from the weights' shapes, against diffusers' LTX-2 (rational) and
    LTX-Video (pixel shuffle) upsamplers at 32 middle channels."""
    pytest.importorskip("diffusers")
    from _oracle import close

    from comfy_kernel_core_nodes.families.ltx2.upsampler import LTXLatentUpsamplerNet, layout_of
    from comfy_kernel_core_nodes.model import ops

    if which == "ltx2":
        from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel as cls
    else:
        from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel as cls
    torch.manual_seed(4)
    ref = cls(in_channels=128, mid_channels=32, num_blocks_per_stage=2, **settings).eval()
    for p in ref.parameters():
        p.data.normal_(0, 0.05)
    sd = ref.state_dict()
    layout = layout_of({k: tuple(v.shape) for k, v in sd.items()},
                       {"spatial_scale": settings.get("rational_spatial_scale", 2.0)})
    ours = LTXLatentUpsamplerNet(layout, ops.plain).eval()
    ours.load_state_dict({k: v for k, v in sd.items() if not k.endswith("blur_down.kernel")})
    latent = torch.randn(1, 128, 3, 4, 4)
    with torch.no_grad():
        expected, got = ref(latent), ours(latent)
    assert got.shape == expected.shape
    close(got, expected)


# --- through the server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(graph_server):
    place(checkpoint_file(), graph_server.models_dir("checkpoints"), CKPT)
    place(conditioning_file(1), graph_server.models_dir("embeddings"), "ltx2_positive.safetensors")
    place(conditioning_file(2), graph_server.models_dir("embeddings"), "ltx2_negative.safetensors")
    place(upsampler_file(), graph_server.models_dir("latent_upscale_models"), "ltx-2-spatial-upscaler-x2-1.0.safetensors")
    pixels = (np.random.default_rng(5).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(graph_server.input_dir / "ltx2_start.png")
    return graph_server


def _graph(sampler: dict, image_to_video: str | None = None, guide: bool = False) -> dict:
    """Checkpoint + audio VAE, loaded prompts with the frame rate, a 9-frame 64x64 video and its audio, the
    given sampling nodes ("s"), then the latent split and probed."""
    g = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "avae": {"class_type": "LTXVAudioVAELoader", "inputs": {"ckpt_name": CKPT}},
        "pos": {"class_type": "ConditioningLoader", "inputs": {"conditioning_name": "ltx2_positive.safetensors"}},
        "neg": {"class_type": "ConditioningLoader", "inputs": {"conditioning_name": "ltx2_negative.safetensors"}},
        "fps": {"class_type": "LTXVConditioning", "inputs": {"positive": ["pos", 0], "negative": ["neg", 0],
                                                            "frame_rate": 25.0}},
        "video": {"class_type": "EmptyLTXVLatentVideo", "inputs": {"width": 64, "height": 64, "length": 9,
                                                                  "batch_size": 1}},
        "audio": {"class_type": "LTXVEmptyLatentAudio", "inputs": {"frames_number": 9, "frame_rate": 25,
                                                                  "batch_size": 1, "audio_vae": ["avae", 0]}},
        "av": {"class_type": "LTXVConcatAVLatent", "inputs": {"video_latent": ["video", 0],
                                                             "audio_latent": ["audio", 0]}},
        "split": {"class_type": "LTXVSeparateAVLatent", "inputs": {"av_latent": ["s", 0]}},
        "pv": {"class_type": "TestProbe", "inputs": {"value": ["split", 0], "name": "video"}},
        "pa": {"class_type": "TestProbe", "inputs": {"value": ["split", 1], "name": "audio"}},
    }
    positive, negative = ["fps", 0], ["fps", 1]
    if image_to_video or guide:
        g["img"] = {"class_type": "LoadImage", "inputs": {"image": "ltx2_start.png"}}
        g["pre"] = {"class_type": "LTXVPreprocess", "inputs": {"image": ["img", 0], "img_compression": 33}}
    if image_to_video:
        g["i2v"] = {"class_type": "LTXVImgToVideoInplace", "inputs": {
            "vae": ["ckpt", 2], "image": ["pre", 0], "latent": ["video", 0], "strength": 1.0, "bypass": False}}
        g["av"]["inputs"]["video_latent"] = ["i2v", 0]
        g["pi"] = {"class_type": "TestProbe", "inputs": {"value": ["i2v", 0], "name": "i2v"}}
    if guide:
        g["guide"] = {"class_type": "LTXVAddGuide", "inputs": {
            "positive": positive, "negative": negative, "vae": ["ckpt", 2], "latent": ["video", 0],
            "image": ["pre", 0], "frame_idx": -1, "strength": 1.0}}
        positive, negative = ["guide", 0], ["guide", 1]
        g["av"]["inputs"]["video_latent"] = ["guide", 2]
        g["crop"] = {"class_type": "LTXVCropGuides", "inputs": {"positive": positive, "negative": negative,
                                                                "latent": ["split", 0]}}
        g["pg"] = {"class_type": "TestProbe", "inputs": {"value": ["guide", 0], "name": "guided"}}
        g["pc"] = {"class_type": "TestProbe", "inputs": {"value": ["crop", 2], "name": "cropped"}}
        g["pgl"] = {"class_type": "TestProbe", "inputs": {"value": ["guide", 2], "name": "guide_latent"}}
    for name, node in sampler.items():
        node = {**node, "inputs": dict(node["inputs"])}
        for key, value in node["inputs"].items():
            if value == "POSITIVE":
                node["inputs"][key] = positive
            elif value == "NEGATIVE":
                node["inputs"][key] = negative
        g[name] = node
    return g


def custom_sampler(steps: int = 2) -> dict:
    """The templates' sampling: RandomNoise + CFGGuider + euler + LTXVScheduler into SamplerCustomAdvanced."""
    return {
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": SEED}},
        "guider": {"class_type": "CFGGuider", "inputs": {"model": ["ckpt", 0], "positive": "POSITIVE",
                                                         "negative": "NEGATIVE", "cfg": CFG}},
        "select": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "sched": {"class_type": "LTXVScheduler", "inputs": {"steps": steps, "max_shift": 2.05, "base_shift": 0.95,
                                                            "stretch": True, "terminal": 0.1, "latent": ["av", 0]}},
        "s": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["select", 0], "sigmas": ["sched", 0],
            "latent_image": ["av", 0]}},
    }


def reference(video: torch.Tensor, audio: torch.Tensor, sigmas: torch.Tensor, video_mask=None,
              keyframe_idxs=None, audio_cfg: float = CFG, ref_audio: torch.Tensor | None = None,
              identity: float = 0.0, kept: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Euler with CFG written over the network's token interface: noise drawn video then audio, flow
    interpolation, kept frames (mask 0) held at the input and given timestep 0. ``ref_audio`` tokens run ahead of
    the audio of both prompts; ``identity`` adds that much of (positive - positive without them)."""
    net = _network()
    from safetensors.torch import load_file

    texts = [load_file(conditioning_file(i))["conditioning"] for i in (1, 2)]
    generator = torch.manual_seed(SEED)
    noise_v = torch.randn(video.shape, generator=generator)
    noise_a = torch.randn(audio.shape, generator=generator)
    keep = torch.ones_like(video) if video_mask is None else video_mask.expand_as(video)
    s0 = sigmas[0]
    x_v = s0 * noise_v + (1 - s0) * video
    x_a = s0 * noise_a + (1 - s0) * audio
    frames, height, width = video.shape[2:]
    for sigma, next_sigma in zip(sigmas[:-1], sigmas[1:], strict=True):
        t_v = (keep[:, 0].flatten(1) * sigma * 1000.0)
        t_a = torch.full((1, 1), float(sigma) * 1000.0)
        in_v = x_v * keep + video * (1 - keep)
        tokens_v, tokens_a = in_v.flatten(2).transpose(1, 2), x_a.permute(0, 2, 1, 3).flatten(2)
        outs = []
        runs = [(text, ref_audio) for text in texts] + ([(texts[0], None)] if identity else [])
        with torch.no_grad():
            for text, reference_tokens in runs:
                v, a = net.forward_tokens(tokens_v, tokens_a, text[..., :3840], text[..., 3840:], t_v, t_a,
                                          (frames, height, width), 25.0, keyframe_idxs=keyframe_idxs,
                                          audio_reference=reference_tokens, kept=kept)
                outs.append((v.transpose(1, 2).reshape(video.shape),
                             a.reshape(1, audio.shape[2], 8, 16).permute(0, 2, 1, 3)))
        (vc, ac), (vu, au) = outs[:2]
        den_v = in_v - sigma * (vu + CFG * (vc - vu))
        den_a = x_a - sigma * (au + audio_cfg * (ac - au))
        if identity:  # (x - sigma * with) - (x - sigma * without), scaled
            (vn, an) = outs[2]
            den_v = den_v + identity * sigma * (vn - vc)
            den_a = den_a + identity * sigma * (an - ac)
        den_v = den_v * keep + video * (1 - keep)
        x_v = x_v + (x_v - den_v) / sigma * (next_sigma - sigma)
        x_a = x_a + (x_a - den_a) / sigma * (next_sigma - sigma)
    return x_v, x_a


def _close(ours: np.ndarray, expected: torch.Tensor) -> None:
    expected = expected.numpy()
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() <= 2e-5 * max(1.0, np.abs(expected).max())


@pytest.mark.slow
def test_text_to_audio_video_through_the_server_matches_an_euler_loop(files):
    graph = _graph(custom_sampler())
    graph["dsplit"] = {"class_type": "LTXVSeparateAVLatent", "inputs": {"av_latent": ["s", 1]}}
    graph["pd"] = {"class_type": "TestProbe", "inputs": {"value": ["dsplit", 1], "name": "denoised_audio"}}
    out = files.run(graph)
    video, audio = out["video"]["samples"], out["audio"]["samples"]
    # the last step ends at sigma 0: the last x0 prediction is the output
    np.testing.assert_allclose(out["denoised_audio"]["samples"], audio, rtol=1e-5, atol=1e-5)
    assert video.shape == (1, 128, 2, 2, 2) and audio.shape == (1, 8, 9, 16)  # 9 frames at 25 fps: 0.36 s
    sigmas = video_nodes.ltxv_sigmas(2, 2.05, 0.95, True, 0.1, {"samples": torch.zeros(1, 128, 2, 2, 2)})
    expected_v, expected_a = reference(torch.zeros(1, 128, 2, 2, 2), torch.zeros(1, 8, 9, 16), sigmas)
    _close(video, expected_v)
    _close(audio, expected_a)


@pytest.mark.slow
def test_latent_upsampler_doubles_the_sampled_video(files):
    """LatentUpscaleModelLoader + LTXVLatentUpsampler after sampling, as the two-stage templates do: the VAE's
    statistics undone, the network, the statistics redone."""
    graph = _graph(custom_sampler())
    graph["umodel"] = {"class_type": "LatentUpscaleModelLoader",
                       "inputs": {"model_name": "ltx-2-spatial-upscaler-x2-1.0.safetensors"}}
    graph["up"] = {"class_type": "LTXVLatentUpsampler", "inputs": {
        "samples": ["split", 0], "upscale_model": ["umodel", 0], "vae": ["ckpt", 2]}}
    graph["pu"] = {"class_type": "TestProbe", "inputs": {"value": ["up", 0], "name": "upsampled"}}
    out = files.run(graph)
    video, up = out["video"]["samples"], out["upsampled"]
    assert up["samples"].shape == (1, 128, 2, 4, 4) and "noise_mask" not in up
    from comfy_kernel_core_nodes.families.hunyuan_video15.upsampler import load_latent_upsampler

    vae = load_checkpoint(str(checkpoint_file()))[2]
    mean, std = vae.statistics()
    expected = (load_latent_upsampler(str(upsampler_file())).upsample(torch.from_numpy(video) * std + mean)
                - mean) / std
    _close(up["samples"], expected)


@pytest.mark.slow
def test_two_stages_as_the_templates_sample_them(files):
    """Stage 1 at 64x64, then the video upsampled to 128x128, the start image written in place, joined again with
    stage 1's audio and sampled from sigma 0.9 (ManualSigmas), as the distilled templates do."""
    graph = _graph(custom_sampler(), image_to_video="inplace")
    graph.update({
        "umodel": {"class_type": "LatentUpscaleModelLoader",
                   "inputs": {"model_name": "ltx-2-spatial-upscaler-x2-1.0.safetensors"}},
        "up": {"class_type": "LTXVLatentUpsampler", "inputs": {
            "samples": ["split", 0], "upscale_model": ["umodel", 0], "vae": ["ckpt", 2]}},
        "i2v2": {"class_type": "LTXVImgToVideoInplace", "inputs": {
            "vae": ["ckpt", 2], "image": ["pre", 0], "latent": ["up", 0], "strength": 1.0, "bypass": False}},
        "av2": {"class_type": "LTXVConcatAVLatent", "inputs": {"video_latent": ["i2v2", 0],
                                                              "audio_latent": ["split", 1]}},
        "sig2": {"class_type": "ManualSigmas", "inputs": {"sigmas": "0.9, 0.6, 0.0"}},
        "s2": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["select", 0], "sigmas": ["sig2", 0],
            "latent_image": ["av2", 0]}},
        "split2": {"class_type": "LTXVSeparateAVLatent", "inputs": {"av_latent": ["s2", 0]}},
        "pv2": {"class_type": "TestProbe", "inputs": {"value": ["split2", 0], "name": "video2"}},
        "pa2": {"class_type": "TestProbe", "inputs": {"value": ["split2", 1], "name": "audio2"}},
        "pi2": {"class_type": "TestProbe", "inputs": {"value": ["i2v2", 0], "name": "i2v2"}},
    })
    out = files.run(graph)
    start, video = out["i2v2"], out["video2"]["samples"]
    assert start["samples"].shape == video.shape == (1, 128, 2, 4, 4)
    assert out["video2"]["noise_mask"].shape == (1, 1, 2, 1, 1)  # the mask parts come back split
    expected_v, expected_a = reference(torch.from_numpy(start["samples"]), torch.from_numpy(out["audio"]["samples"]),
                                       torch.tensor([0.9, 0.6, 0.0]), video_mask=torch.from_numpy(start["noise_mask"]))
    _close(video, expected_v)
    _close(out["audio2"]["samples"], expected_a)


@pytest.mark.slow
def test_dual_cfg_guider_guides_video_and_audio_apart(files):
    sampler = custom_sampler()
    sampler["guider"] = {"class_type": "LTXVDualCFGGuider", "inputs": {
        "model": ["ckpt", 0], "positive": "POSITIVE", "negative": "NEGATIVE", "video_cfg": CFG, "audio_cfg": 6.5}}
    out = files.run(_graph(sampler))
    sigmas = video_nodes.ltxv_sigmas(2, 2.05, 0.95, True, 0.1, {"samples": torch.zeros(1, 128, 2, 2, 2)})
    expected_v, expected_a = reference(torch.zeros(1, 128, 2, 2, 2), torch.zeros(1, 8, 9, 16), sigmas,
                                       audio_cfg=6.5)
    _close(out["video"]["samples"], expected_v)
    _close(out["audio"]["samples"], expected_a)


@pytest.mark.slow
def test_ksampler_samples_the_audio_video_latent(files):
    ksampler = {"s": {"class_type": "KSampler", "inputs": {
        "model": ["ckpt", 0], "seed": SEED, "steps": 2, "cfg": CFG, "sampler_name": "euler", "scheduler": "simple",
        "positive": "POSITIVE", "negative": "NEGATIVE", "latent_image": ["av", 0], "denoise": 1.0}}}
    out = files.run(_graph(ksampler))
    from comfy_kernel_core_nodes.sampling.schedulers import simple

    sigmas = simple(load_checkpoint(str(checkpoint_file()))[0].model.model_sampling, 2)
    expected_v, expected_a = reference(torch.zeros(1, 128, 2, 2, 2), torch.zeros(out["audio"]["samples"].shape),
                                       sigmas)
    _close(out["video"]["samples"], expected_v)
    _close(out["audio"]["samples"], expected_a)


@pytest.mark.slow
def test_image_to_video_keeps_the_encoded_first_frame(files):
    out = files.run(_graph(custom_sampler(), image_to_video="inplace"))
    start = out["i2v"]
    assert start["noise_mask"].shape == (1, 1, 2, 1, 1) and start["noise_mask"].ravel().tolist() == [0.0, 1.0]
    assert np.abs(start["samples"][:, :, 0]).max() > 0 and not start["samples"][:, :, 1].any()
    video = out["video"]["samples"]
    np.testing.assert_allclose(video[:, :, 0], start["samples"][:, :, 0], rtol=1e-5, atol=1e-5)
    sigmas = video_nodes.ltxv_sigmas(2, 2.05, 0.95, True, 0.1, {"samples": torch.zeros(1, 128, 2, 2, 2)})
    expected_v, expected_a = reference(torch.from_numpy(start["samples"]), torch.zeros(1, 8, 9, 16), sigmas,
                                       video_mask=torch.from_numpy(start["noise_mask"]))
    _close(video, expected_v)
    _close(out["audio"]["samples"], expected_a)


@pytest.mark.slow
def test_a_guide_frame_is_appended_placed_and_cropped(files):
    out = files.run(_graph(custom_sampler(), guide=True))
    guided = out["guide_latent"]
    assert guided["samples"].shape == (1, 128, 3, 2, 2)
    assert guided["noise_mask"].ravel().tolist() == [1.0, 1.0, 0.0]
    (entry,) = out["guided"]
    keyframes = entry["options"]["keyframe_idxs"]
    assert keyframes["tensor_shape"] == [1, 3, 4, 2]
    # the last pixel frame of 9 (index 8), one causal frame: time spans [8, 9], rows and columns of 32 pixels
    bounds = pixel_bounds((1, 2, 2), (8, 32, 32))
    bounds[:, 0] += 8
    assert keyframes["mean"] == pytest.approx(float(bounds.mean()))
    video = out["video"]["samples"]
    assert video.shape == (1, 128, 3, 2, 2)
    np.testing.assert_allclose(video[:, :, 2], guided["samples"][:, :, 2], rtol=1e-5, atol=1e-5)
    sigmas = video_nodes.ltxv_sigmas(2, 2.05, 0.95, True, 0.1, {"samples": torch.zeros(1, 128, 3, 2, 2)})
    expected_v, _ = reference(torch.from_numpy(guided["samples"]), torch.zeros(1, 8, 9, 16), sigmas,
                              video_mask=torch.from_numpy(guided["noise_mask"]), keyframe_idxs=bounds)
    _close(video, expected_v)
    cropped = out["cropped"]
    np.testing.assert_array_equal(cropped["samples"], video[:, :, :2])
    assert cropped["noise_mask"].ravel().tolist() == [1.0, 1.0]


@pytest.mark.slow
def test_reference_audio_conditions_both_prompts_and_guides_identity(files):
    """LTXVReferenceAudio (ID-LoRA): a 0.5 s clip encoded by the audio VAE rides ahead of the audio of both
    prompts, and identity guidance adds 2x (positive - positive without the clip) each step."""
    from _media import tones, write_wav

    write_wav(files.input_dir / "ltx2_voice.wav", tones(44100, 0.5), 44100)
    sampler = custom_sampler()
    sampler.update({
        "voice": {"class_type": "LoadAudio", "inputs": {"audio": "ltx2_voice.wav"}},
        "ref": {"class_type": "LTXVReferenceAudio", "inputs": {
            "model": ["ckpt", 0], "positive": "POSITIVE", "negative": "NEGATIVE", "reference_audio": ["voice", 0],
            "audio_vae": ["avae", 0], "identity_guidance_scale": 2.0, "start_percent": 0.0, "end_percent": 1.0}},
        "enc": {"class_type": "LTXVAudioVAEEncode", "inputs": {"audio": ["voice", 0], "audio_vae": ["avae", 0]}},
        "pr": {"class_type": "TestProbe", "inputs": {"value": ["enc", 0], "name": "reference"}},
    })
    sampler["guider"]["inputs"].update({"model": ["ref", 0], "positive": ["ref", 1], "negative": ["ref", 2]})
    out = files.run(_graph(sampler))
    latent = torch.from_numpy(out["reference"]["samples"])
    assert latent.shape[:2] == (1, 8) and latent.shape[3] == 16
    tokens = latent.permute(0, 2, 1, 3).flatten(2)
    sigmas = video_nodes.ltxv_sigmas(2, 2.05, 0.95, True, 0.1, {"samples": torch.zeros(1, 128, 2, 2, 2)})
    expected_v, expected_a = reference(torch.zeros(1, 128, 2, 2, 2), torch.zeros(1, 8, 9, 16), sigmas,
                                       ref_audio=tokens, identity=2.0)
    _close(out["video"]["samples"], expected_v)
    _close(out["audio"]["samples"], expected_a)
    plain_v, _ = reference(torch.zeros(1, 128, 2, 2, 2), torch.zeros(1, 8, 9, 16), sigmas)
    assert np.abs(out["video"]["samples"] - plain_v.numpy()).max() > 1e-3  # the clip changes the video too


@pytest.mark.slow
def test_an_ic_lora_guide_is_spread_over_the_grid_and_its_gaps_left_out(files):
    """GetICLoRAParameters reads reference_downscale_factor 2 from the IC-LoRA file's metadata; LTXVAddGuide
    then encodes the guide at half size (32x32 pixels: one latent cell), writes it on every 2nd cell, marks
    the gaps -1 - strength in the noise mask and widens its spans by a cell; sampling leaves the gaps out."""
    from _files_ltx2_server import lora_file

    place(lora_file(downscale=2), files.models_dir("loras"), "ltx2_ic_lora_x2.safetensors")
    graph = _graph(custom_sampler(), guide=True)
    graph.update({
        "lora": {"class_type": "LoraLoaderModelOnly", "inputs": {
            "model": ["ckpt", 0], "lora_name": "ltx2_ic_lora_x2.safetensors", "strength_model": 1.0}},
        "ic": {"class_type": "GetICLoRAParameters", "inputs": {"iclora_model": ["lora", 0]}},
        "pic": {"class_type": "TestProbe", "inputs": {"value": ["ic", 0], "name": "iclora"}},
    })
    graph["guide"]["inputs"]["iclora_parameters"] = ["ic", 0]
    out = files.run(graph)
    assert out["iclora"] == {"reference_downscale_factor": 2}
    guided = out["guide_latent"]
    assert guided["samples"].shape == (1, 128, 3, 2, 2)
    guide = guided["samples"][0, :, 2]
    assert np.abs(guide[:, 0, 0]).max() > 0 and not guide[:, 0, 1].any() and not guide[:, 1].any()
    mask = guided["noise_mask"]
    assert mask.shape == (1, 1, 3, 2, 2) and (mask[:, :, :2] == 1).all()
    assert mask[0, 0, 2].tolist() == [[0.0, -2.0], [-2.0, -2.0]]
    (entry,) = out["guided"]
    bounds = pixel_bounds((1, 2, 2), (8, 32, 32))
    bounds[:, 0] += 8
    bounds[:, 1:, :, 1] += 32
    assert entry["options"]["keyframe_idxs"]["mean"] == pytest.approx(float(bounds.mean()))
    kept = torch.from_numpy(mask[0, 0] >= 0).flatten()
    sigmas = video_nodes.ltxv_sigmas(2, 2.05, 0.95, True, 0.1, {"samples": torch.zeros(1, 128, 3, 2, 2)})
    expected_v, _ = reference(torch.from_numpy(guided["samples"]), torch.zeros(1, 8, 9, 16), sigmas,
                              video_mask=torch.from_numpy(mask), keyframe_idxs=bounds, kept=kept)
    video = out["video"]["samples"]
    _close(video[:, :, :2], expected_v[:, :, :2])
    np.testing.assert_allclose(video[:, :, 2, 0, 0], guided["samples"][:, :, 2, 0, 0], rtol=1e-5, atol=1e-5)
    assert out["cropped"]["samples"].shape == (1, 128, 2, 2, 2)


#: the LTX-2 templates (LTX-2.3 / 2.5 need transformer parts not here); only the text encoder nodes are elsewhere
TEMPLATES = ["video_ltx2_t2v", "video_ltx2_t2v_distilled", "video_ltx2_i2v", "video_ltx2_i2v_distilled",
             "video_ltx2_i2v_lora", "video_ltx2_canny_to_video", "video_ltx2_depth_to_video"]
TEXT_NODES = {"LTXAVTextEncoderLoader", "TextGenerateLTX2Prompt"}
#: the depth template estimates depth with Lotus, a family not here
ELSEWHERE = {"video_ltx2_depth_to_video": {"LotusConditioning"}}


def _widget(value, kind) -> bool:
    """A widget value of that kind, or a link to the node giving it."""
    return isinstance(value, list) and len(value) == 2 or isinstance(value, kind)


@pytest.mark.slow
@pytest.mark.parametrize("name", TEMPLATES)
def test_ltx2_templates_convert_with_only_the_text_encoder_missing(graph_server, name):
    """The server converts each template; its LTXV nodes are all here and get the widget values as named
    inputs (LTXVImgToVideoInplace's strength and bypass, LTXVScheduler's five, LTXVAddGuide's two)."""
    from _templates import template

    converted = graph_server.server.post("/api/workflows/convert", json={"workflow": template(name)}).json()
    assert set(converted["missing_nodes"]) <= TEXT_NODES | ELSEWHERE.get(name, set())
    nodes = converted["prompt"].values()
    ltxv = [n for n in nodes if n["class_type"].startswith("LTXV") and n["class_type"] not in TEXT_NODES]
    assert ltxv
    for node in ltxv:
        if node["class_type"] == "LTXVImgToVideoInplace":
            assert _widget(node["inputs"]["strength"], (int, float)) and _widget(node["inputs"]["bypass"], bool)
        elif node["class_type"] == "LTXVScheduler":
            assert set(node["inputs"]) >= {"steps", "max_shift", "base_shift", "stretch", "terminal"}
        elif node["class_type"] == "LTXVAddGuide":
            assert _widget(node["inputs"]["frame_idx"], int) and _widget(node["inputs"]["strength"], (int, float))

