"""Record ``transformer_reference.npz``: the small ACE-Step 1.0 transformer of
``tests/_files_ace_step_v1_transformer.py`` run through ComfyUI 0.3.64's code.

Run it with ComfyUI's own Python from a ComfyUI 0.3.64 checkout (or point
``COMFYUI`` at one):

    cd COMFYUI_CHECKOUT && .venv/bin/python REPO/plugins/core_nodes/tests/data/ace_step_v1/record_transformer.py

It builds ``comfy.ldm.ace.model.ACEStepTransformer2DModel(**SMALL)`` with
``comfy.ops.disable_weight_init`` in float32 on the CPU, swaps in the small
lyric Conformer and its projection, loads ``random_weights(shapes, seed=0)``
and records, for a batch of two latents [2, 8, 16, 12] at timesteps 999 and
312.5 with a 5-token caption and 7 lyric tokens:

* ``out_plain``: what ComfyUI's ACE-Step model passes (zero speaker embedding,
  no masks, lyrics_strength 1);
* ``out_half``: lyrics_strength 0.5 and a random speaker embedding;
* ``out_lyric_mask``: a lyric padding mask only (it reaches the lyric encoder;
  the cross-attention stays unmasked, as when no caption mask is given);
* ``out_masked``: caption and lyric masks (ComfyUI needs a latent
  ``attention_mask`` for those; all ones here, which changes nothing else).

Also saved: the inputs and the state dict's key -> shape table (``shapes``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, os.environ.get("COMFYUI", os.getcwd()))

from _files_ace_step_v1_transformer import SMALL, SMALL_LYRIC, random_weights  # noqa: E402


def build() -> torch.nn.Module:
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.ops
    from comfy.ldm.ace.lyric_encoder import ConformerEncoder
    from comfy.ldm.ace.model import ACEStepTransformer2DModel

    ops = comfy.ops.disable_weight_init
    model = ACEStepTransformer2DModel(**SMALL, dtype=torch.float32, operations=ops)
    model.lyric_encoder = ConformerEncoder(input_size=SMALL["lyric_hidden_size"], static_chunk_size=0,
                                           dtype=torch.float32, operations=ops, **SMALL_LYRIC)
    model.lyric_proj = ops.Linear(SMALL_LYRIC["output_size"], SMALL["inner_dim"], dtype=torch.float32)
    return model


def main() -> None:
    torch.manual_seed(0)
    model = build()
    state = model.state_dict()
    shapes = {k: list(v.shape) for k, v in state.items()}
    weights = random_weights({k: tuple(v) for k, v in shapes.items()}, seed=0)
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    model.eval()

    g = torch.Generator().manual_seed(1)
    batch, length, text_len, lyric_len = 2, 12, 5, 7
    x = torch.randn(batch, 8, 16, length, generator=g)
    timestep = torch.tensor([999.0, 312.5])
    context = torch.randn(batch, text_len, SMALL["text_embedding_dim"], generator=g)
    lyrics = torch.randint(0, SMALL["lyric_encoder_vocab_size"], (batch, lyric_len), generator=g)
    speaker = torch.randn(batch, SMALL["speaker_embedding_dim"], generator=g)
    text_mask = torch.ones(batch, text_len)
    text_mask[1, 3:] = 0
    lyric_mask = torch.ones(batch, lyric_len)
    lyric_mask[1, 4:] = 0

    def run(**kwargs: object) -> np.ndarray:
        args = {"speaker_embeds": torch.zeros(batch, SMALL["speaker_embedding_dim"]), **kwargs}
        with torch.no_grad():
            out = model(x, timestep, context=context, lyric_token_idx=lyrics, transformer_options={}, **args)
        return out.numpy()

    out = {
        "shapes": np.array(json.dumps(shapes)),
        "x": x.numpy(), "timestep": timestep.numpy(), "context": context.numpy(),
        "lyric_token_idx": lyrics.numpy(), "speaker_embeds": speaker.numpy(),
        "text_attention_mask": text_mask.numpy(), "lyric_mask": lyric_mask.numpy(),
        "out_plain": run(),
        "out_half": run(lyrics_strength=0.5, speaker_embeds=speaker),
        "out_lyric_mask": run(lyric_mask=lyric_mask),
        "out_masked": run(attention_mask=torch.ones(batch, length), text_attention_mask=text_mask,
                          lyric_mask=lyric_mask),
    }
    np.savez_compressed(HERE / "transformer_reference.npz", **out)
    print({k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    main()
