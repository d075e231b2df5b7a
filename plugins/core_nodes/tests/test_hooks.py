"""Hooks: keyframe maths against ComfyUI 0.3.64, and hooked LoRAs that change only the hooked conditioning.

``data/hooks/expected.json``: see data/hooks/README.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _control_files import tiny_lora_sd  # noqa: E402
from _random_weights import write  # noqa: E402
from _vision_files import link  # noqa: E402

from comfy_kernel_core_nodes.model import hooks as H  # noqa: E402
from comfy_kernel_core_nodes.nodes import hooks as nodes  # noqa: E402

EXPECTED = json.loads((Path(__file__).parent / "data" / "hooks" / "expected.json").read_text())


class _Model:
    from comfy_kernel_core_nodes.model.base import ModelType, model_sampling

    model_sampling = model_sampling(None, ModelType.EPS)


def _cases() -> dict[str, H.HookKeyframeGroup]:
    single = nodes.CreateHookKeyframe().create_hook_keyframe(1.2, 0.0)[0]
    return {
        "interp": nodes.CreateHookKeyframesInterpolated().create_hook_keyframes(0.0, 1.0, "ease_in_out", 0.1, 0.8,
                                                                                5)[0],
        "floats": nodes.CreateHookKeyframesFromFloats().create_hook_keyframes([1.0, 0.5, 0.0, 0.75], 0.0, 0.9)[0],
        "single": nodes.CreateHookKeyframe().create_hook_keyframe(0.3, 0.5, single)[0],
    }


def _schedule(kf: H.HookKeyframeGroup, steps: int, start: int = 0) -> list[float]:
    from comfy_kernel_core_nodes.sampling.schedulers import calculate_sigmas

    sigmas = calculate_sigmas(_Model.model_sampling, "normal", steps)[start:]
    hook = H.WeightHook()
    hook.hook_keyframe = kf.clone()
    hook.initialize_timesteps(_Model)
    strengths = []
    for sigma in sigmas[:-1]:
        hook.hook_keyframe.prepare_current_keyframe(torch.tensor([float(sigma)])[0], {"sample_sigmas": sigmas})
        strengths.append(float(hook.strength))
    return strengths


def test_interpolation_weights_are_comfyuis():
    for method in H.InterpolationMethod._LIST:
        for reverse, suffix in ((False, ""), (True, "_rev")):
            got = H.InterpolationMethod.get_weights(0.2, 1.7, 6, method, reverse=reverse).tolist()
            assert np.allclose(got, EXPECTED[f"weights_{method}{suffix}"], atol=1e-6), method


@pytest.mark.parametrize("name", ["interp", "floats", "single"])
def test_keyframes_give_comfyuis_strength_per_step(name):
    kf = _cases()[name]
    expected = EXPECTED[f"kf_{name}"]
    got = [[float(k.strength), k.start_percent, k.guarantee_steps] for k in kf.keyframes]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e)
    assert _schedule(kf, 10) == pytest.approx(EXPECTED[f"steps_{name}_10"], abs=1e-6)
    assert _schedule(kf, 7) == pytest.approx(EXPECTED[f"steps_{name}_7"], abs=1e-6)
    assert _schedule(kf, 10, 4) == pytest.approx(EXPECTED[f"steps_{name}_10_from4"], abs=1e-6)
    group = H.HookGroup()
    for keyframes in (kf, _cases()["single"]):
        hook = H.WeightHook()
        hook.hook_keyframe = keyframes.clone()
        group.add(hook)
    got = [[list(r), [None if k is None else float(k.strength) for _, k in hs]]
           for r, hs in group.get_hooks_for_clip_schedule()]
    expected = EXPECTED[f"clip_schedule_{name}"]
    assert len(got) == len(expected)
    for (r, s), (er, es) in zip(got, expected, strict=True):
        assert r == pytest.approx(er) and s == pytest.approx(es)


def test_hook_groups_combine_and_filter():
    from comfy_kernel_core_nodes.sampling.hooks import filter_registered_hooks_on_conds

    a, b = H.create_hook_lora({}, 1.0, 1.0), H.create_hook_lora({}, 0.5, 0.5)
    (combined,) = nodes._combine(4)().combine_hooks(hooks_A=a, hooks_C=b)
    assert len(combined) == 2 and combined.contains(a.hooks[0]) and combined.contains(b.hooks[0])
    assert nodes._combine(2)().combine_hooks(hooks_B=a) == (a,)
    assert nodes._combine(8)().combine_hooks() == (None,)
    registered = H.HookGroup()
    registered.add(a.hooks[0])
    conds = {"positive": [{"hooks": combined}, {"hooks": combined}, {}], "negative": [{"hooks": b}]}
    filter_registered_hooks_on_conds(conds, {"registered_hooks": registered})
    kept = conds["positive"][0]["hooks"]
    assert kept is conds["positive"][1]["hooks"] and len(kept) == 1 and kept.contains(a.hooks[0])
    assert conds["negative"][0]["hooks"] is None
    filter_registered_hooks_on_conds(conds, {})
    assert all("hooks" not in c for c in conds["positive"] + conds["negative"])


def test_conditioning_property_nodes():
    tensor = torch.zeros(1, 2, 3)
    cond = [[tensor, {"pooled_output": None}]]
    hooks = H.create_hook_lora({}, 1.0, 1.0)
    mask = torch.ones(4, 4)
    (out,) = nodes.ConditioningSetProperties().set_properties(cond, 0.7, "mask bounds", mask=mask, hooks=hooks,
                                                              timesteps=(0.2, 0.6))
    options = out[0][1]
    assert options["hooks"] is hooks and options["mask"].shape == (1, 4, 4) and options["mask_strength"] == 0.7
    assert options["set_area_to_bounds"] is True and (options["start_percent"], options["end_percent"]) == (0.2, 0.6)
    (combined,) = nodes.ConditioningSetPropertiesAndCombine().set_properties(out, cond, 1.0, "default", hooks=hooks)
    assert len(combined) == 2 and len(combined[1][1]["hooks"]) == 1
    (both,) = nodes.ConditioningSetPropertiesAndCombine().set_properties(cond, out, 1.0, "default",
                                                                         hooks=H.create_hook_lora({}, 1, 1))
    assert len(both[1][1]["hooks"]) == 2  # appended to the entry's own hooks
    (default,) = nodes.ConditioningSetDefaultCombine().set_default_and_combine(cond, cond)
    assert default[1][1]["default"] is True and "default" not in default[0][1]
    assert nodes.ConditioningTimestepsRange().create_range(0.25, 0.75) == ((0.25, 0.75), (0.0, 0.25), (0.75, 1.0))


@pytest.fixture(scope="module")
def sampling(tmp_path_factory, sd15_tiny_checkpoint):
    from _nodes import use_base

    from comfy_kernel_core_nodes.nodes import conditioning, latent, loaders

    base = tmp_path_factory.mktemp("hooks")
    link(sd15_tiny_checkpoint, base / "models" / "checkpoints" / "tiny.safetensors")
    write(base / "models" / "loras" / "tiny_lora.safetensors", tiny_lora_sd())
    use_base(base)
    model, clip, _ = loaders.CheckpointLoaderSimple().load_checkpoint("tiny.safetensors")
    pos = conditioning.CLIPTextEncode().encode(clip, "a cat")[0]
    neg = conditioning.CLIPTextEncode().encode(clip, "")[0]
    return model, clip, pos, neg, latent.EmptyLatentImage().generate(64, 64, 1)[0]


def _run(model, positive, negative, latent, steps: int = 4, end: int | None = None):
    from comfy_kernel_core_nodes.nodes import ksampler

    if end is None:
        return ksampler.KSampler().sample(model, 1, steps, 5.0, "euler", "normal", positive, negative,
                                          latent)[0]["samples"]
    return ksampler.KSamplerAdvanced().sample(model, "enable", 1, steps, 5.0, "euler", "normal", positive, negative,
                                              latent, 0, end, "enable")[0]["samples"]


@pytest.mark.usefixtures("single_torch_thread")
def test_a_hooked_lora_changes_only_the_hooked_conditioning(sampling):
    from comfy_kernel_core_nodes.nodes.lora import LoraLoaderModelOnly

    model, _, pos, neg, latent = sampling
    plain = _run(model, pos, neg, latent)
    with_lora = _run(LoraLoaderModelOnly().load_lora_model_only(model, "tiny_lora.safetensors", 0.9)[0], pos, neg,
                     latent)
    (hook,) = nodes.CreateHookLoraModelOnly().create_hook_model_only("tiny_lora.safetensors", 0.9)
    both = nodes.PairConditioningSetProperties().set_properties(pos, neg, 1.0, "default", hooks=hook)
    assert torch.equal(_run(model, *both, latent), with_lora)  # hooked everywhere = the LoRA'd model
    (only_pos,) = nodes.ConditioningSetProperties().set_properties(pos, 1.0, "default", hooks=hook)
    positive_only = _run(model, only_pos, neg, latent)
    assert not torch.equal(positive_only, with_lora) and not torch.equal(positive_only, plain)
    assert not model.hook_patches and model.current_hooks is None  # the MODEL itself stays unhooked
    assert torch.equal(_run(model, pos, neg, latent), plain)


@pytest.mark.usefixtures("single_torch_thread")
def test_keyframes_switch_the_hook_on_at_their_step(sampling):
    model, _, pos, neg, latent = sampling
    (hook,) = nodes.CreateHookLoraModelOnly().create_hook_model_only("tiny_lora.safetensors", 0.9)
    off = nodes.CreateHookKeyframe().create_hook_keyframe(0.0, 0.0)[0]
    later = nodes.CreateHookKeyframe().create_hook_keyframe(1.0, 0.5, off)[0]
    never = nodes.SetHookKeyframes().set_hook_keyframes(hook, off)[0]
    switched = nodes.SetHookKeyframes().set_hook_keyframes(hook, later)[0]
    plain = _run(model, pos, neg, latent, steps=6)
    assert torch.equal(_run(model, *nodes.PairConditioningSetProperties().set_properties(
        pos, neg, 1.0, "default", hooks=never), latent, steps=6), plain)
    hooked = nodes.PairConditioningSetProperties().set_properties(pos, neg, 1.0, "default", hooks=switched)
    assert torch.equal(_run(model, *hooked, latent, steps=6, end=3), _run(model, pos, neg, latent, steps=6, end=3))
    assert not torch.equal(_run(model, *hooked, latent, steps=6), plain)


@pytest.mark.usefixtures("single_torch_thread")
def test_clip_hooks_encode_with_the_hooked_text_encoder(sampling):
    from comfy_kernel_core_nodes.nodes.conditioning import CLIPTextEncode
    from comfy_kernel_core_nodes.nodes.lora import LoraLoader

    model, clip, pos, _, _ = sampling
    (hook,) = nodes.CreateHookLora().create_hook("tiny_lora.safetensors", 0.0, 0.7)
    (hooked_clip,) = nodes.SetClipHooks().apply_hooks(clip, schedule_clip=False, apply_to_conds=True, hooks=hook)
    (encoded,) = CLIPTextEncode().encode(hooked_clip, "a cat")
    (_, lora_clip) = LoraLoader().load_lora(model, clip, "tiny_lora.safetensors", 0.0, 0.7)
    (reference,) = CLIPTextEncode().encode(lora_clip, "a cat")
    assert torch.equal(encoded[0][0], reference[0][0]) and not torch.equal(encoded[0][0], pos[0][0])
    assert encoded[0][1]["hooks"] is hook
    kf = nodes.CreateHookKeyframe().create_hook_keyframe(0.5, 0.4,
                                                         nodes.CreateHookKeyframe().create_hook_keyframe(1.0, 0.0)[0])
    scheduled_hooks = nodes.SetHookKeyframes().set_hook_keyframes(hook, kf[0])[0]
    (scheduled_clip,) = nodes.SetClipHooks().apply_hooks(clip, schedule_clip=True, apply_to_conds=False,
                                                         hooks=scheduled_hooks)
    (entries,) = CLIPTextEncode().encode(scheduled_clip, "a cat")
    assert [(e[1]["clip_start_percent"], e[1]["clip_end_percent"]) for e in entries] == [(0.0, 0.4), (0.4, 1.0)]
    assert torch.equal(entries[0][0], reference[0][0]) and "hooks" not in entries[0][1]
    assert not torch.equal(entries[1][0], entries[0][0]) and not torch.equal(entries[1][0], pos[0][0])
