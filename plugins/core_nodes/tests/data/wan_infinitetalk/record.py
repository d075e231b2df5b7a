"""Record ``reference.npz``: ComfyUI's InfiniteTalk (``comfy/ldm/wan/model_multitalk.py`` and
``WanInfiniteTalkToVideo``, newer than 0.3.64; recorded with 0.18.1) on the weights and inputs of
``tests/_files_wan_infinitetalk.py``.

From such a checkout, in an environment with its requirements (CPU torch is
enough), with this repository at REPO:

    cd COMFYUI && python REPO/plugins/core_nodes/tests/data/wan_infinitetalk/record.py

Recorded: the audio tokens of one and two speakers' states (frames 0-9, and
7-16 past the end of the sound); the speaker attention map and the audio
attention (one speaker, two with the map) on ``attention_inputs()``; the
Wan I2V forward with the patch (one speaker; two with the map); and the
node's conditioning, latent, trim count, audio tokens, held latents and token
masks per case of ``NODE_CASES`` (``StubVAE``, ``StubModel``, ``StubPatch``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, os.getcwd())

from _files_wan_humo import StubVAE  # noqa: E402
from _files_wan_infinitetalk import (  # noqa: E402
    NODE_CASES,
    PATCH,
    SCALE,
    WAN,
    StubModel,
    StubPatch,
    attention_inputs,
    encoder_output,
    masks,
    previous_frames,
    random_weights,
    speaker_states,
    start_image,
    token_masks,
    transformer_inputs,
)


def _load(module: torch.nn.Module, seed: int) -> dict[str, list[int]]:
    shapes = {k: list(v.shape) for k, v in module.state_dict().items()}
    module.load_state_dict(random_weights({k: tuple(v) for k, v in shapes.items()}, seed))
    module.eval()
    return shapes


def main() -> None:
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.ops
    from comfy.ldm.wan import model_multitalk as mt
    from comfy.ldm.wan.model import WanModel
    from comfy_extras.nodes_model_patch import MultiTalkModelPatch
    from comfy_extras.nodes_wan import WanInfiniteTalkToVideo

    out: dict[str, np.ndarray] = {}
    ops = comfy.ops.manual_cast
    wan = WanModel(**WAN, device="cpu", dtype=torch.float32, operations=ops)
    out["wan_shapes"] = np.array(json.dumps(_load(wan, 31)))
    net = MultiTalkModelPatch(**PATCH, device="cpu", dtype=torch.float32, operations=ops)
    out["patch_shapes"] = np.array(json.dumps(_load(net, 32)))
    holder = SimpleNamespace(model=net)

    one, two = speaker_states(15, 41), speaker_states(10, 42)
    with torch.no_grad():
        out["tokens_one"] = mt.project_audio_features(net.audio_proj, [one], 0, 9).numpy()
        out["tokens_two"] = mt.project_audio_features(net.audio_proj, [one, two], 0, 9).numpy()
        out["tokens_past_end"] = mt.project_audio_features(net.audio_proj, [one, two], 7, 16).numpy()

        a = attention_inputs()
        grid = (3, 2, 3)
        attn_map = mt.get_attn_map_with_target(a["q"], a["k"], grid, ref_target_masks=token_masks())
        out["attn_map"] = attn_map.numpy()
        block = net.blocks[1].audio_cross_attn
        tokens_one, tokens_two = torch.from_numpy(out["tokens_one"]), torch.from_numpy(out["tokens_two"])
        out["audio_attn_one"] = block(a["x"], tokens_one, shape=grid).numpy()
        out["audio_attn_two"] = block(a["x"], tokens_two, shape=grid, x_ref_attn_map=attn_map).numpy()

        inputs = transformer_inputs()
        for case, tokens, with_map in (("one", tokens_one, False), ("two", tokens_two, True)):
            patches = {"attn2_patch": [mt.MultiTalkCrossAttnPatch(holder, SCALE)]}
            if with_map:
                patches["attn1_patch"] = [mt.MultiTalkGetAttnMapPatch(token_masks())]
            options = {"patches": patches, "audio_embeds": tokens}
            out[f"forward_{case}"] = wan(inputs["x"], inputs["timestep"], inputs["context"],
                                         transformer_options=options).numpy()
        out["forward_plain"] = wan(inputs["x"], inputs["timestep"], inputs["context"],
                                   transformer_options={}).numpy()

    cond = [[torch.zeros(1, 3, 8), {}]]
    left, right = masks()
    for case, (mode, second, extend) in NODE_CASES.items():
        extra = {"mode": mode}
        if second:
            extra.update(audio_encoder_output_2=encoder_output(6400, 52), mask_1=left, mask_2=right)
        result = WanInfiniteTalkToVideo.execute(
            extra, StubModel(), StubPatch(net), cond, cond, StubVAE(), 64, 48, 9, encoder_output(9600, 51), 5,
            start_image=start_image(), previous_frames=previous_frames() if extend else None,
            audio_scale=0.8).args
        patched, positive, negative, latent, trim = result
        out[f"node_{case}_concat"] = positive[0][1]["concat_latent_image"].numpy()
        out[f"node_{case}_mask"] = positive[0][1]["concat_mask"].numpy()
        assert torch.equal(negative[0][1]["concat_latent_image"], positive[0][1]["concat_latent_image"])
        out[f"node_{case}_latent"] = latent["samples"].numpy()
        out[f"node_{case}_trim"] = np.array(trim)
        out[f"node_{case}_audio"] = patched.model_options["transformer_options"]["audio_embeds"].detach().numpy()
        wrapper = patched.wrappers["infinite_talk_outer_sample"]
        out[f"node_{case}_motion"] = wrapper.motion_frames_latent.numpy()
        out[f"node_{case}_extend"] = np.array(wrapper.is_extend)
        assert patched.patches["attn2_patch"][0].audio_scale == 0.8
        if "attn1_patch" in patched.patches:
            out[f"node_{case}_token_masks"] = patched.patches["attn1_patch"][0].ref_target_masks.numpy()

    np.savez_compressed(HERE / "reference.npz", **out)
    print({k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    main()
