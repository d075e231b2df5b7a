"""Record ``lyrics_reference.json``: ACE-Step 1.0's lyrics and tag tokenization as ComfyUI 0.3.64 does it.

Run with ComfyUI's environment (torch, tokenizers, sentencepiece), its
checkout importable:

    PYTHONPATH=COMFYUI python plugins/core_nodes/tests/data/ace_step_v1/record_text.py

Recorded: ``VoiceBpeTokenizer`` ids of lyrics in several languages (numbers,
amounts, abbreviations, symbols, structure tags, blank lines, kana);
``LyricsTokenizer.tokenize_with_weights`` of lyrics with weight syntax; and
``AceT5Tokenizer.tokenize_with_weights`` (both lists, with and without word
ids and tokenizer options) with the small SentencePiece model of
``tests/_files_ace_step_v1_text.py``, stored here too so the comparison does
not depend on training it again.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent))

from _files_ace_step_v1_text import spiece_model  # noqa: E402

LYRICS = [
    "",
    "\n\n",
    "[verse]\nWalking down the empty street\nHeart is beating to the beat\n\n[chorus]\nOh, we're alive tonight!",
    "[Verse 2]\nI was born on July 4th, 1776, at 10:30 pm\nWe paid $5, then £3.50 and 20€ for 3.14 pies",
    "It cost $1,000,000 and 1,234.56 more; 99.9% of 2nd-rate dreams\n0.5 degrees, 0 regrets, 007 agents",
    "Dr. Smith met Mr. and Mrs. Jones on St. James St. with Capt. Hook, Jr.\nLt. Col. Sgt. Gen. Maj. Rev. Ft. Ltd. Co.",
    "Rock & roll @ midnight, #1 hit, 100° hot\n\"Quoted words\" here... and — dashes! Right? (oh) yeah: yes;",
    "  spaces   and\ttabs   everywhere  \n   \n[bridge]",
    "[de]Ich habe 3 Katzen und 1.000 Träume\n[fr]J'ai 2 chats, 1,5 kilo & 10% de chance\n[es]Tengo 25 años, Dr. López",
    "[ru]Я помню 5 чудных мгновений\n[RU]Привет, мир!\n[tr]İstanbul'da 3 gün\n[it]Ciao 4 amici",
    "[ja]さくらさくら やよいのそらは\nきょうはいいてんきですね。\nカタカナ、ラッキー、ちょっと、ヴァイオリン",
    "あっあ、ほっとけ っん ッヴ ゃっゃ ヂャ ぢゅ ファン ウィ ぁぃ ゐゑ ラーメン まっ\nっ\n[fr]ちょっと 2 fois",
    "[zh]我爱你 3 次\n[zh]你好。世界\n[ko]사랑해 7\n[hi]नमस्ते 9",
    "[xx]unknown tag\n[en] leading space\n[EN]shouting\n[chorus] [de]hallo\n[pre-chorus]\n[outro]",
    "Numbers: 1e5, 12,345,678,901, 1,5, 1.2.3, $1.2.3, $.5, 3rd, 21st, 1000000000000\nx 99999999999999999999.5",
    "tiny 0.00000001 bits\nlast line without newline",
    "[inst]\n[verse]\nHello (darling)\n[solo]\n\r\nwindows\r\nline ends\r\n",
]

LYRICS_WEIGHTED = [
    ("hello (oh yeah) world\nnext line", {}),
    ("[verse]\n(whoa:1.3) we go\n((double)) \\(escaped\\)", {}),
    ("(oh yeah) world", {"disable_weights": True}),
    ("\\(kept\\) words", {"disable_weights": True}),
    ("short", {"tokenizer_options": {"lyrics_min_length": 8}}),
    ("padded", {"tokenizer_options": {"lyrics_min_padding": 3}}),
]

TAGS = [
    ("rock, electric guitar, drums", "[verse]\nhello world", False, {}),
    ("", "", False, {}),
    ("pop, (female vocal:1.3), synth", "(la la) la\n[chorus]\nsing", True, {}),
    ("jazz (piano) trio", "", False, {"tokenizer_options": {"umt5base_min_padding": 4, "umt5base_min_length": 12}}),
    ("hip hop, (808 bass)", "yo (yo)", False, {"disable_weights": True}),
    ("ambient, calm", "quiet", False, {"tokenizer_options": {"umt5base_min_length": 9}}),
]


def _plain(value):
    """Token lists as JSON (tuples to lists)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def main() -> None:
    import torch
    from comfy.cli_args import args

    args.cpu = True
    from comfy.text_encoders.ace import AceT5Tokenizer, LyricsTokenizer, VoiceBpeTokenizer

    voice = VoiceBpeTokenizer()
    lyrics = LyricsTokenizer()
    proto = spiece_model()
    ace = AceT5Tokenizer(tokenizer_data={"spiece_model": torch.frombuffer(bytearray(proto), dtype=torch.uint8)})
    out = {
        "spiece_model": base64.b64encode(proto).decode("ascii"),
        "voicebpe": [{"text": text, "ids": voice(text)["input_ids"]} for text in LYRICS],
        "lyrics_tokenizer": [{"text": text, "kwargs": kwargs, "tokens": _plain(lyrics.tokenize_with_weights(text, **kwargs))}
                             for text, kwargs in LYRICS_WEIGHTED],
        "ace_tokenizer": [{"tags": tags, "lyrics": text, "return_word_ids": word_ids, "kwargs": kwargs,
                           "tokens": _plain(ace.tokenize_with_weights(tags, word_ids, lyrics=text, **kwargs))}
                          for tags, text, word_ids, kwargs in TAGS],
    }
    target = HERE / "lyrics_reference.json"
    sections = []
    for key, value in out.items():
        body = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else \
            "[\n" + ",\n".join(json.dumps(entry, ensure_ascii=False) for entry in value) + "\n]"
        sections.append(f"{json.dumps(key)}: {body}")
    target.write_text("{\n" + ",\n".join(sections) + "\n}\n", encoding="utf-8")  # one entry a line
    print(f"{target.name}: {len(out['voicebpe'])} lyrics, {len(out['lyrics_tokenizer'])} weighted, "
          f"{len(out['ace_tokenizer'])} tag prompts")


if __name__ == "__main__":
    main()
