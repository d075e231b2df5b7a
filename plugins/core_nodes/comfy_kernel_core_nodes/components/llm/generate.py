"""Text generation with a decoder LLM: the prompt once, then one token at a time from a key/value cache.

Token choice follows ComfyUI's ``TextGenerate``: greedy (argmax) when
sampling is off or the temperature is 0; otherwise the repetition penalty
(scores of tokens generated so far divided by it, or multiplied when
negative), the presence penalty (subtracted), the temperature, top-k, min-p
(tokens below ``min_p`` times the best probability dropped), top-p (the
smallest set of best tokens whose probability reaches ``top_p``, the best
one always kept), then one draw from a ``torch.Generator`` on the model's
device seeded with the node's seed. Generation stops after a stop token
(kept in the returned ids, as ComfyUI returns it) or ``max_new_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .decoder import DecoderLM

#: Qwen2.5 / Qwen3 chat models end a turn with <|im_end|> or <|endoftext|>.
QWEN_STOP_TOKENS = (151643, 151645)


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen (``do_sample`` False: always the most likely one)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    seed: int | None = None


def next_token(logits: torch.Tensor, sampling: Sampling, history: list[int],
               generator: torch.Generator | None) -> int:
    """The id chosen from one position's float32 scores [V]."""
    if not sampling.do_sample or sampling.temperature == 0.0:
        return int(torch.argmax(logits))
    logits = logits.clone()
    seen = torch.tensor(sorted(set(history)), dtype=torch.long, device=logits.device)
    if seen.numel() and sampling.repetition_penalty != 1.0:
        scores = logits[seen]
        logits[seen] = torch.where(scores < 0, scores * sampling.repetition_penalty,
                                   scores / sampling.repetition_penalty)
    if seen.numel() and sampling.presence_penalty:
        logits[seen] -= sampling.presence_penalty
    if sampling.temperature != 1.0:
        logits = logits / sampling.temperature
    lowest = torch.finfo(logits.dtype).min
    if sampling.top_k > 0:
        kth = torch.topk(logits, min(sampling.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, lowest)
    if sampling.min_p > 0.0:
        probs = torch.softmax(logits, dim=-1)
        logits = logits.masked_fill(probs < sampling.min_p * probs.max(), lowest)
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True)
        drop = torch.cumsum(torch.softmax(ordered, dim=-1), dim=-1) > sampling.top_p
        drop[0] = False
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), lowest)
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def reply(llm: DecoderLM, tokens: list[tuple], max_new_tokens: int, sampling: Sampling, vision: Any = None,
          stop_tokens: tuple[int, ...] = QWEN_STOP_TOKENS, **callbacks: Any) -> list[int]:
    """Ids generated after one tokenized prompt (a CLIP tokenizer's pairs; images through ``vision``)."""
    from .encoder import embed_prompt, mrope_positions

    with torch.no_grad():
        embeds, images = embed_prompt(llm, tokens, vision)
    positions = mrope_positions(images, embeds.shape[1], embeds.device)
    if positions is not None:
        positions = positions[:, None, :]
    return generate(llm, embeds, max_new_tokens, sampling, stop_tokens, positions=positions, **callbacks)


def generate(llm: DecoderLM, embeds: torch.Tensor, max_new_tokens: int, sampling: Sampling = Sampling(),
             stop_tokens: tuple[int, ...] = QWEN_STOP_TOKENS, positions: torch.Tensor | None = None,
             use_cache: bool = True, interrupt: Any = None, progress: Any = None) -> list[int]:
    """Token ids generated after the prompt ``embeds`` [1, L, D].

    ``positions`` are the prompt's rotary positions ([1, L], or [3, 1, L] for
    multimodal rotary); new tokens continue one after the largest. Without
    the cache every step runs the whole sequence again (kept to check the
    cache against). ``interrupt`` is called before each token and may raise;
    ``progress`` after each.
    """
    device = embeds.device
    generator = None
    if sampling.do_sample:
        generator = torch.Generator(device=device)
        generator.manual_seed(int(sampling.seed or 0))
    if positions is None:
        positions = torch.arange(embeds.shape[1], device=device)[None]
    positions = positions.to(device=device, dtype=torch.long)
    out: list[int] = []
    cache: list[list] | None = [[] for _ in llm.model.layers] if use_cache else None
    sequence, sequence_positions = embeds, positions
    step_embeds, step_positions = embeds, positions
    with torch.no_grad():
        for _ in range(max_new_tokens):
            if interrupt is not None:
                interrupt()
            if cache is not None:
                mask = torch.ones(1, sequence_positions.shape[-1], dtype=torch.long, device=device)
                hidden = llm.step(step_embeds, mask, cache, step_positions)
            else:
                hidden, _ = llm(sequence, positions=sequence_positions)
            token = next_token(llm.logits(hidden[0, -1]), sampling, out, generator)
            out.append(token)
            if progress is not None:
                progress()
            if token in stop_tokens:
                break
            step_embeds = llm.embed(torch.tensor([[token]], device=device))
            step_positions = sequence_positions[..., -1:] + 1 if sequence_positions.ndim == 2 \
                else sequence_positions.amax(dim=(0, 2), keepdim=True).expand(3, 1, 1) + 1
            if cache is None:
                sequence = torch.cat([sequence, step_embeds.to(sequence.dtype)], dim=1)
            sequence_positions = torch.cat([sequence_positions, step_positions], dim=-1)
    return out
