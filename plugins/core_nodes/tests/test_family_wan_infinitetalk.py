"""InfiniteTalk: the audio tokens, the speaker map, the audio attention, the patched Wan I2V forward and the
node's outputs against ComfyUI 0.18.1's recorded ones; the patch file detected with every key; the
motion-frame wrapper.

``data/wan_infinitetalk/reference.npz`` holds what ComfyUI's code computed on
the weights and inputs of ``_files_wan_infinitetalk.py``
(``data/wan_infinitetalk/record.py``). Float32 on a CPU.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _files_wan_humo import StubVAE
from _files_wan_infinitetalk import (
    NODE_CASES,
    SCALE,
    StubModel,
    StubPatch,
    attention_inputs,
    encoder_output,
    masks,
    patch_file,
    previous_frames,
    reference,
    speaker_states,
    start_image,
    token_masks,
    transformer_inputs,
    weights,
)
from _oracle import close

from comfy_kernel_core_nodes.families.wan import multitalk as mt
from comfy_kernel_core_nodes.families.wan.talk_nodes import WanInfiniteTalkToVideo
from comfy_kernel_core_nodes.families.wan.transformer import WanConfig, WanTransformer
from comfy_kernel_core_nodes.model import ops
from comfy_kernel_core_nodes.model.model_patch import MULTITALK, load_model_patch

pytestmark = pytest.mark.usefixtures("single_torch_thread")

WAN = WanConfig(model_type="i2v", in_dim=36, dim=320, ffn_dim=640, num_heads=2, num_layers=2, text_dim=128,
                image_embedding=True)
RTOL = 1e-5
GRID = (3, 2, 3)


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return reference()


@pytest.fixture(scope="module")
def patch() -> mt.MultiTalkPatch:
    net = mt.MultiTalkPatch(mt.MultiTalkConfig(dim=320, audio_dim=32, hidden=16, num_layers=40), ops.plain)
    net.load_state_dict(weights("patch"), strict=True)
    return net.eval()


@pytest.fixture(scope="module")
def wan() -> WanTransformer:
    net = WanTransformer(WAN)
    net.load_state_dict(weights("wan"), strict=True)
    return net.eval()


def test_audio_tokens_match_comfyui(patch: mt.MultiTalkPatch, ref: dict[str, np.ndarray]) -> None:
    one, two = speaker_states(15, 41), speaker_states(10, 42)
    with torch.no_grad():
        close(mt.audio_tokens(patch.audio_proj, [one], 0, 9), torch.from_numpy(ref["tokens_one"]), RTOL)
        close(mt.audio_tokens(patch.audio_proj, [one, two], 0, 9), torch.from_numpy(ref["tokens_two"]), RTOL)
        close(mt.audio_tokens(patch.audio_proj, [one, two], 7, 16), torch.from_numpy(ref["tokens_past_end"]), RTOL)


def test_speaker_map_and_audio_attention_match_comfyui(patch: mt.MultiTalkPatch, ref: dict[str, np.ndarray]) -> None:
    a = attention_inputs()
    attn_map = mt.attention_map(a["q"], a["k"], GRID, token_masks())
    close(attn_map, torch.from_numpy(ref["attn_map"]), RTOL)
    block = patch.blocks[1].audio_cross_attn
    with torch.no_grad():
        one = block(a["x"], torch.from_numpy(ref["tokens_one"]).squeeze(0), GRID)
        two = block(a["x"], torch.from_numpy(ref["tokens_two"]).squeeze(0), GRID, attn_map)
    close(one, torch.from_numpy(ref["audio_attn_one"]), RTOL)
    close(two, torch.from_numpy(ref["audio_attn_two"]), RTOL)


@pytest.mark.parametrize("case", ["one", "two"])
def test_patched_forward_matches_comfyui(wan: WanTransformer, patch: mt.MultiTalkPatch, ref: dict[str, np.ndarray],
                                         case: str) -> None:
    holder = StubPatch(patch)
    patches = {"attn2_patch": [mt.MultiTalkAudioPatch(holder, SCALE)]}
    if case == "two":
        patches["attn1_patch"] = [mt.MultiTalkAttnMapPatch(token_masks())]
    options = {"patches": patches, "audio_embeds": torch.from_numpy(ref[f"tokens_{case}"])}
    inputs = transformer_inputs()
    with torch.no_grad():
        out = wan(inputs["x"], inputs["timestep"], inputs["context"], transformer_options=options)
        plain = wan(inputs["x"], inputs["timestep"], inputs["context"], transformer_options={})
    close(out, torch.from_numpy(ref[f"forward_{case}"]), RTOL)
    close(plain, torch.from_numpy(ref["forward_plain"]), RTOL)
    assert (out - plain).abs().max() > 1e-2 * plain.abs().max()  # the audio does change the prediction


@pytest.mark.parametrize("case", list(NODE_CASES))
def test_node_matches_comfyui(patch: mt.MultiTalkPatch, ref: dict[str, np.ndarray], case: str) -> None:
    mode, second, extend = NODE_CASES[case]
    chosen: dict = {"mode": mode}
    left, right = masks()
    if second:
        chosen.update(audio_encoder_output_2=encoder_output(6400, 52), mask_1=left, mask_2=right)
    patched, positive, negative, latent, trim = WanInfiniteTalkToVideo.execute(
        chosen, StubModel(), StubPatch(patch), [[torch.zeros(1, 3, 8), {}]], [[torch.zeros(1, 3, 8), {}]],
        StubVAE(), 64, 48, 9, encoder_output(9600, 51), 5, start_image=start_image(),
        previous_frames=previous_frames() if extend else None, audio_scale=0.8).args
    close(positive[0][1]["concat_latent_image"], torch.from_numpy(ref[f"node_{case}_concat"]), RTOL)
    assert torch.equal(positive[0][1]["concat_mask"], torch.from_numpy(ref[f"node_{case}_mask"]))
    assert torch.equal(negative[0][1]["concat_latent_image"], positive[0][1]["concat_latent_image"])
    assert torch.equal(latent["samples"], torch.from_numpy(ref[f"node_{case}_latent"]))
    assert trim == int(ref[f"node_{case}_trim"])
    close(patched.model_options["transformer_options"]["audio_embeds"], torch.from_numpy(ref[f"node_{case}_audio"]),
          RTOL)
    wrapper = patched.wrappers["infinite_talk_outer_sample"]
    close(wrapper.motion_latent, torch.from_numpy(ref[f"node_{case}_motion"]), RTOL)
    assert wrapper.extend == bool(ref[f"node_{case}_extend"])
    assert patched.patches["attn2_patch"][0].scale == 0.8
    if f"node_{case}_token_masks" in ref:
        assert torch.equal(patched.patches["attn1_patch"][0].masks, torch.from_numpy(ref[f"node_{case}_token_masks"]))
    else:
        assert "attn1_patch" not in patched.patches


def test_node_refuses_two_sounds_without_masks(patch: mt.MultiTalkPatch) -> None:
    chosen = {"mode": "two_speakers", "audio_encoder_output_2": encoder_output(6400, 52), "mask_1": None,
              "mask_2": None}
    with pytest.raises(ValueError, match="masks"):
        WanInfiniteTalkToVideo.execute(chosen, StubModel(), StubPatch(patch), [], [], StubVAE(), 64, 48, 9,
                                       encoder_output(9600, 51), 5, start_image=start_image())


def test_patch_file_is_detected_with_every_key() -> None:
    patcher = load_model_patch(str(patch_file()))
    assert patcher.model.patch_kind == MULTITALK
    assert patcher.model.patch_config == mt.MultiTalkConfig(dim=320, audio_dim=32, hidden=16, num_layers=40)
    with patcher.use() as holder:
        net = holder.loaded_module
        expected = weights("patch")
        loaded = net.state_dict()
        assert set(loaded) == set(expected)
        assert torch.equal(loaded["blocks.39.audio_cross_attn.kv_linear.weight"].float(),
                           expected["blocks.39.audio_cross_attn.kv_linear.weight"])


class _Executor:
    """An OUTER_SAMPLE executor: the guider as ``class_obj``, calling ``run``."""

    def __init__(self, guider: object, run: object) -> None:
        self.class_obj, self.run = guider, run

    def __call__(self, *args: object, **kwargs: object) -> torch.Tensor:
        return self.run(*args)


def test_motion_wrapper_holds_the_start_and_prepends_it_when_extending() -> None:
    motion = torch.randn(1, 16, 2, 3, 4)
    seen = []

    def apply_model(x: torch.Tensor, *args) -> torch.Tensor:
        seen.append(x)
        return x

    options: dict = {"transformer_options": {}}
    model = SimpleNamespace(process_latent_in=lambda v: v * 2)
    guider = SimpleNamespace(model_patcher=SimpleNamespace(model=model), model_options=options)

    def sample(*args) -> torch.Tensor:
        inner = options["transformer_options"]["wrappers"]["apply_model"]["MultiTalk_apply_model"][0]
        x = torch.zeros(1, 16, 4, 3, 4)
        inner(apply_model, x, None)
        assert not x.any()  # the sampler's own state is left alone
        return torch.ones(1, 16, 4, 3, 4)

    for extend in (False, True):
        result = mt.MotionFramesWrapper(motion, None, extend)(_Executor(guider, sample))
        assert torch.equal(seen[-1][:, :, :2], motion * 2) and not seen[-1][:, :, 2:].any()
        if extend:
            assert torch.equal(result[:, :, :2], motion) and torch.equal(result[:, :, 2:], torch.ones(1, 16, 2, 3, 4))
        else:
            assert torch.equal(result, torch.ones(1, 16, 4, 3, 4))
