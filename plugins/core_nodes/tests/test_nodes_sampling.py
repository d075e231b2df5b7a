"""The model nodes called in-process on the tiny checkpoint: load -> encode -> sample -> decode.

Checks what the server-level parity test cannot see: progress and preview
frames per step, the interrupt checkpoint, the text-encoding cache, and the
VAE variants (tiled, inpainting) against the plain ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _nodes import use_base  # noqa: E402

from comfy_kernel_core_nodes.nodes import conditioning, ksampler, latent, loaders, vae  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory, sd15_tiny_checkpoint):
    base = tmp_path_factory.mktemp("nodes")
    folder = base / "models" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / sd15_tiny_checkpoint.name).symlink_to(sd15_tiny_checkpoint)  # model folders follow links
    use_base(base, preview_method="latent2rgb", preview_size=64)
    return loaders.CheckpointLoaderSimple().load_checkpoint(sd15_tiny_checkpoint.name)


class Recorder:
    """A RunState whose sends are recorded."""

    def __init__(self) -> None:
        from comfy_kernel.progress import RunState

        self.events: list[tuple[str, dict]] = []
        self.frames: list[tuple[int, bytes]] = []
        self.state = RunState("p1", "c1", lambda e, d, b: self.events.append((e, d)),
                              lambda kind, payload: self.frames.append((kind, payload)))

    def __enter__(self) -> Recorder:
        from comfy_kernel.progress import CurrentNodeContext, set_current_run

        self._token = set_current_run(self.state)
        self._ctx = CurrentNodeContext("p1", "5").__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        from comfy_kernel.progress import _run

        self._ctx.__exit__()
        _run.reset(self._token)


def test_txt2img_nodes_match_comfyui_with_progress_and_previews(models, reference_outputs):
    folder = reference_outputs / "txt2img"
    model, clip, vae_ref = models
    (positive,) = conditioning.CLIPTextEncode().encode(clip, "a photo of a cat")
    (negative,) = conditioning.CLIPTextEncode().encode(clip, "blurry")
    assert (positive[0][0] - torch.from_numpy(np.load(folder / "cond_positive.npy"))).abs().max() <= 1e-5
    (empty,) = latent.EmptyLatentImage().generate(64, 64, 1)
    with Recorder() as rec:
        (out,) = ksampler.KSampler().sample(model, 42, 4, 7.0, "euler", "normal", positive, negative, empty)
    expected = torch.from_numpy(np.load(folder / "latent_KSampler_node5.npy"))
    assert (out["samples"] - expected).abs().max() / expected.abs().max() <= 1e-4
    progress = [d for e, d in rec.events if e == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(i, 4, "5") for i in range(1, 5)]
    assert len(rec.frames) == 4 and all(kind == 1 and payload[:4] == b"\0\0\0\1" for kind, payload in rec.frames)
    assert rec.frames[0][1][4:6] == b"\xff\xd8"  # JPEG

    (image,) = vae.VAEDecode().decode(vae_ref, out)
    assert (image - torch.from_numpy(np.load(folder / "image.npy"))).abs().max() <= 1e-4
    (tiled,) = vae.VAEDecodeTiled().decode(vae_ref, out, 512, 64)
    assert (tiled - image).abs().max() <= 1e-5


def test_interrupt_stops_sampling(models):
    from comfy_kernel.progress import InterruptProcessingException

    model, clip, _ = models
    (positive,) = conditioning.CLIPTextEncode().encode(clip, "a photo of a cat")
    (empty,) = latent.EmptyLatentImage().generate(64, 64, 1)
    with Recorder() as rec, pytest.raises(InterruptProcessingException):
        rec.state.interrupt()
        ksampler.KSampler().sample(model, 1, 4, 1.0, "euler", "normal", positive, positive, empty)


def test_encodings_are_reused_and_clip_skip_changes_them(models):
    _, clip, _ = models
    (a,) = conditioning.CLIPTextEncode().encode(clip, "a photo of a cat")
    (b,) = conditioning.CLIPTextEncode().encode(clip, "a photo of a cat")
    assert torch.equal(a[0][0], b[0][0]) and a[0][0] is not b[0][0]
    (skipped_clip,) = conditioning.CLIPSetLastLayer().set_last_layer(clip, -2)
    (c,) = conditioning.CLIPTextEncode().encode(skipped_clip, "a photo of a cat")
    assert not torch.equal(a[0][0], c[0][0])


def test_encode_variants(models, reference_outputs):
    _, _, vae_ref = models
    pixels = torch.from_numpy(np.load(reference_outputs / "img2img" / "input_image.npy"))
    (plain,) = vae.VAEEncode().encode(vae_ref, pixels)
    expected = torch.from_numpy(np.load(reference_outputs / "img2img" / "latent_VAEEncode_node9.npy"))
    assert (plain["samples"] - expected).abs().max() / expected.abs().max() <= 1e-4
    (tiled,) = vae.VAEEncodeTiled().encode(vae_ref, pixels, 512, 64)
    assert (tiled["samples"] - plain["samples"]).abs().max() <= 1e-4
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:32, 16:32] = 1
    (inpaint,) = vae.VAEEncodeForInpaint().encode(vae_ref, pixels, mask, 6)
    assert inpaint["samples"].shape == (1, 4, 8, 8) and inpaint["noise_mask"].shape == (1, 1, 64, 64)
    grown = inpaint["noise_mask"][0, 0]
    assert grown[14, 14] == 1 and grown[13, 13] == 0 and grown[34, 34] == 1 and grown[35, 35] == 0


def test_advanced_split_run_and_combined_conditioning_match_the_plain_run(models):
    model, clip, _ = models
    (positive,) = conditioning.CLIPTextEncode().encode(clip, "a photo of a cat")
    (negative,) = conditioning.CLIPTextEncode().encode(clip, "blurry")
    (empty,) = latent.EmptyLatentImage().generate(64, 64, 1)
    (full,) = ksampler.KSampler().sample(model, 7, 4, 5.0, "euler", "normal", positive, negative, empty)

    adv = ksampler.KSamplerAdvanced()
    (half,) = adv.sample(model, "enable", 7, 4, 5.0, "euler", "normal", positive, negative, empty, 0, 2, "enable")
    (rest,) = adv.sample(model, "disable", 7, 4, 5.0, "euler", "normal", positive, negative, half, 2, 10000, "disable")
    assert (rest["samples"] - full["samples"]).abs().max() <= 1e-4 * full["samples"].abs().max()

    # Two identical entries blend to the same prediction: the composite path agrees with the plain one.
    (twice,) = conditioning.ConditioningCombine().combine(positive, positive)
    (combined,) = ksampler.KSampler().sample(model, 7, 4, 5.0, "euler", "normal", twice, negative, empty)
    assert (combined["samples"] - full["samples"]).abs().max() <= 1e-3 * full["samples"].abs().max()
    (area,) = conditioning.ConditioningSetArea().append(positive, 64, 64, 0, 0, 1.0)
    (masked,) = ksampler.KSampler().sample(model, 7, 4, 5.0, "euler", "normal", area, negative, empty)
    assert (masked["samples"] - full["samples"]).abs().max() <= 1e-3 * full["samples"].abs().max()


def test_standalone_loaders_find_the_parts_of_a_checkpoint_file(models, sd15_tiny_checkpoint):
    from comfy_kernel_core_nodes.nodes import context

    model, clip, vae_ref = models
    base = Path(context.folders().dirs.base)
    for sub in ("vae", "text_encoders", "diffusion_models"):
        (base / "models" / sub).mkdir(parents=True, exist_ok=True)
        target = base / "models" / sub / "parts.safetensors"
        if not target.exists():
            target.hardlink_to(sd15_tiny_checkpoint)
    (v,) = loaders.VAELoader().load_vae("parts.safetensors")
    (c,) = loaders.CLIPLoader().load_clip("parts.safetensors", "stable_diffusion")
    (u,) = loaders.UNETLoader().load_unet("parts.safetensors", "default")
    # the same weights, so the same model manager entries as the checkpoint's parts
    assert v.first_stage_model.weights.keys == vae_ref.first_stage_model.weights.keys
    assert c.cond_stage_model.weights.keys == clip.cond_stage_model.weights.keys
    assert u.model.weights.keys == model.model.weights.keys
    assert u.model.model_config.family == "sd15"
    with pytest.raises(ValueError, match="'mochi' is not supported yet"):
        loaders.CLIPLoader().load_clip("parts.safetensors", "mochi")


def test_textual_inversion_embedding_from_the_embeddings_folder(models):
    from safetensors.torch import save_file

    from comfy_kernel_core_nodes.components.clip.tokenizer import default_tokenizer
    from comfy_kernel_core_nodes.nodes import context

    _, clip, _ = models
    (cat_id,) = default_tokenizer().encode("cat")
    with clip.patcher.use() as encoder:
        vector = encoder.loaded_module.embeddings.token_embedding.weight[cat_id].float().clone()
    folder = Path(context.folders().paths("embeddings")[0])
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": vector[None]}, str(folder / "catvec.safetensors"))
    (plain,) = conditioning.CLIPTextEncode().encode(clip, "a photo of a cat")
    (embedded,) = conditioning.CLIPTextEncode().encode(clip, "a photo of a embedding:catvec")
    assert (embedded[0][0] - plain[0][0]).abs().max() <= 1e-5
