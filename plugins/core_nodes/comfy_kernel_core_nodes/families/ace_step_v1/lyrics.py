"""ACE-Step 1.0's lyrics tokenizer: each line cleaned for its language and cut into byte-pair tokens.

The DiT's lyric encoder was trained on these ids, so they must be exactly
ComfyUI's (``VoiceBpeTokenizer`` and its ``multilingual_cleaners``). Lyrics
start with ``[START]`` (261); every line is read on its own: a leading
``[xx]`` names its language (default English), kana are romanised (the line
then counts as Japanese), a line that opens with a structure tag such as
``[verse]`` is cleaned as English, the cleaned text gets its ``[xx]`` token
(``[zh-cn]`` for Chinese), spaces become ``[SPACE]`` and ``[SPACE]`` (2)
also ends the line; a blank line is that 2 alone.

The cleaning rules are ComfyUI's, quirks included, because they decide the
ids: only English expands numbers ("1st" -> "one", "$5" -> "five point
zero", "3.14" -> "three point one four"), abbreviations ("dr." -> "doctor")
and symbols ("&" -> "and"); every language is lower-cased, loses its double
quotes and has its whitespace collapsed. ComfyUI's other languages fail
inside its number expansion and keep their digits; they do here as well.
Everything runs in pure Python (ComfyUI's romanisation is a kana table, no
Japanese or Chinese packages are involved). The vocabulary is ACE-Step's,
shipped beside this module.
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path
from typing import Any

VOCAB_FILE = Path(__file__).with_name("lyrics_vocab.json")
START_TOKEN = 261
LINE_END = 2  # [SPACE]: also what a line ends with and what a blank line is
PAD_TOKEN = 2

#: languages a leading ``[xx]`` may name (each has an ``[xx]`` token in the vocabulary)
LANGUAGES = frozenset({"en", "de", "fr", "es", "it", "pt", "pl", "tr", "ru", "cs", "nl", "ar", "zh", "ja", "hu",
                       "ko", "hi"})

log = logging.getLogger(__name__)

_STRUCTURE_TAG = re.compile(r"\[.*?\]")
_WHITESPACE = re.compile(r"\s+")


@functools.lru_cache(maxsize=1)
def _bpe() -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(VOCAB_FILE))


# --- kana -------------------------------------------------------------------------------------------------

_GOJUON = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん"
_GOJUON_ROMAJI = ("a i u e o ka ki ku ke ko sa shi su se so ta chi tsu te to na ni nu ne no ha hi fu he ho "
                  "ma mi mu me mo ya yu yo ra ri ru re ro wa wo n").split()
_VOICED = "がぎぐげござじずぜぞだぢづでどばびぶべぼぱぴぷぺぽ"
_VOICED_ROMAJI = "ga gi gu ge go za ji zu ze zo da ji zu de do ba bi bu be bo pa pi pu pe po".split()
_SMALL_Y = "ゃゅょ"
_SMALL_TSU = "っッ"
_KATAKANA_OFFSET = ord("ア") - ord("あ")


@functools.lru_cache(maxsize=1)
def _kana_table() -> dict[str, str]:
    """Hepburn readings of the kana ComfyUI knows: the gojūon and its voiced rows, the yōon pairs (きゃ ...),
    small ya/yu/yo on their own, small tsu (read through the next kana), ヴ, and three Japanese punctuation
    marks; hiragana and katakana alike. Small vowels, ゐ/ゑ and the long-vowel mark are not in it."""
    table = dict(zip(_GOJUON + _VOICED, _GOJUON_ROMAJI + _VOICED_ROMAJI, strict=True))
    table.update({"っ": "", "ゃ": "ya", "ゅ": "yu", "ょ": "yo"})
    for kana in "きしちにひみりぎじびぴ":
        stem = table[kana][:-1]
        glide = "" if stem in ("sh", "ch", "j") else "y"
        for small, vowel in zip(_SMALL_Y, "auo", strict=True):
            table[kana + small] = stem + glide + vowel
    table.update({"".join(chr(ord(c) + _KATAKANA_OFFSET) for c in kana): reading for kana, reading in table.items()})
    table.update({"ヴ": "vu", "\u3000": " ", "、": ", ", "。": ". "})
    return table


def kana_to_romaji(text: str) -> str:
    """``text`` with its kana read in Latin letters; everything else (kanji, Latin, digits) is kept.

    A small tsu doubles the consonant of the kana after it (nothing before a
    vowel, n or a non-kana); small ya/yu/yo join the kana before them where
    that pair has a reading.
    """
    table = _kana_table()
    small_y = _SMALL_Y + "".join(chr(ord(c) + _KATAKANA_OFFSET) for c in _SMALL_Y)
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        following = text[i + 1] if i + 1 < len(text) else ""
        if char in _SMALL_TSU and following:
            reading = table.get(following, "")
            if reading and reading[0] not in "aiueon":
                out.append(reading[0])
            i += 1
            continue
        if following and following in small_y and char + following in table:
            out.append(table[char + following])
            i += 2
            continue
        out.append(table.get(char, char))
        i += 1
    return "".join(out)


# --- English numbers ---------------------------------------------------------------------------------------

_ONES = ("", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_DIGITS = ("zero",) + _ONES[1:10]
_SCALES = ((1_000_000_000, "billion"), (1_000_000, "million"), (1000, "thousand"))


def _cardinal(n: int) -> str:
    """Words of ``n >= 0``; empty for 0 (a whole part of 0 before "point" is left unsaid, as in ComfyUI).
    Past the billions the scale word repeats ("one billion billion")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + (" " + _ONES[n % 10] if n % 10 else "")
    if n < 1000:
        return _ONES[n // 100] + " hundred" + (" " + _cardinal(n % 100) if n % 100 else "")
    for size, name in _SCALES:
        if n >= size:
            rest = n % size
            return _cardinal(n // size) + " " + name + (" " + _cardinal(rest) if rest else "")
    raise AssertionError("unreachable")


def number_words(value: int | float) -> str:
    """English words of a non-negative number; a float's digits after the point are read one by one.

    A float whose ``repr`` has an exponent (``1e+16``) raises ValueError: in
    ComfyUI such a number makes the whole number expansion of the line give up.
    """
    if value == 0:
        return "zero"
    if isinstance(value, float):
        shown = repr(value)
        if "." not in shown or "e" in shown:
            raise ValueError(f"{shown} has no plain decimal form")
        whole = _cardinal(int(value))
        return whole + " point " + " ".join(_DIGITS[int(d)] for d in shown.split(".", 1)[1])
    return _cardinal(value)


_GROUPED_NUMBER = re.compile(r"\b\d{1,3}(?:,\d{3})*(?:\.\d+)?\b")
_CURRENCIES = (  # pounds, dollars, euros: in this order, with the sign before or after the amount
    re.compile(r"£[0-9.,]*[0-9]+|[0-9.,]*[0-9]+£"),
    re.compile(r"\$[0-9.,]*[0-9]+|[0-9.,]*[0-9]+\$"),
    re.compile(r"[0-9.,]*[0-9]+€|€[0-9.,]*[0-9]+"),
)
_NOT_AMOUNT = re.compile(r"[^\d.]")
_DECIMAL = re.compile(r"[0-9]+[.,][0-9]+")
_ORDINAL = re.compile(r"([0-9]+)(?:st|nd|rd|th)")
_INTEGER = re.compile(r"[0-9]+")


def _amount_words(match: re.Match[str]) -> str:
    """The amount as a float, read without its currency ("$5" -> "five point zero", commas read as points)."""
    return number_words(float(_NOT_AMOUNT.sub("", match.group(0).replace(",", "."))))


def _expand_numbers(text: str) -> str:
    """Digits to English words (raises where ComfyUI's expansion fails: the caller then keeps the text)."""
    text = _GROUPED_NUMBER.sub(lambda m: m.group(0).replace(",", ""), text)
    try:  # an amount that does not read as a float stops this and the remaining currencies, nothing else
        for currency in _CURRENCIES:
            text = currency.sub(_amount_words, text)
    except Exception:
        pass
    text = _DECIMAL.sub(lambda m: number_words(float(m.group(0).replace(",", "."))), text)
    text = _ORDINAL.sub(lambda m: number_words(int(m.group(1))), text)
    return _INTEGER.sub(lambda m: number_words(int(m.group(0))), text)


_ABBREVIATIONS = tuple((re.compile(rf"\b{short}\.", re.IGNORECASE), long) for short, long in (
    ("mrs", "misess"), ("mr", "mister"), ("dr", "doctor"), ("st", "saint"), ("co", "company"), ("jr", "junior"),
    ("maj", "major"), ("gen", "general"), ("drs", "doctors"), ("rev", "reverend"), ("lt", "lieutenant"),
    ("hon", "honorable"), ("sgt", "sergeant"), ("capt", "captain"), ("esq", "esquire"), ("ltd", "limited"),
    ("col", "colonel"), ("ft", "fort")))
_SYMBOLS = (("&", "and"), ("@", "at"), ("%", "percent"), ("#", "hash"), ("$", "dollar"), ("£", "pound"),
            ("°", "degree"))


def clean_text(text: str, lang: str) -> str:
    """One lyrics line as ACE-Step's tokenizer expects it in language ``lang`` (ComfyUI's cleaning)."""
    text = text.replace('"', "")
    if lang == "tr":
        text = text.replace("İ", "i").replace("Ö", "ö").replace("Ü", "ü")
    text = text.lower()
    if lang == "en":
        try:
            text = _expand_numbers(text)
        except Exception:
            pass
        for pattern, long in _ABBREVIATIONS:
            text = pattern.sub(long, text)
        for symbol, word in _SYMBOLS:
            text = text.replace(symbol, f" {word} ").replace("  ", " ")
        text = text.strip()
    return _WHITESPACE.sub(" ", text)


# --- lines ---------------------------------------------------------------------------------------------------

def line_language(line: str) -> tuple[str, str]:
    """(language, rest of the line) of a line that opens with ``[xx]`` naming a known language, else English."""
    if line.startswith("[") and line[3:4] == "]" and line[1:3].lower() in LANGUAGES:
        return line[1:3].lower(), line[4:]
    return "en", line


def encode_line(text: str, lang: str) -> list[int]:
    """Byte-pair ids of one line: its language token, then the cleaned text with ``[SPACE]`` for spaces."""
    tag = "zh-cn" if lang == "zh" else lang
    marked = f"[{tag}]{clean_text(text, lang)}".replace(" ", "[SPACE]")
    return list(_bpe().encode(marked).ids)


def lyrics_tokens(text: str) -> list[int]:
    """ComfyUI's ``VoiceBpeTokenizer`` ids of ``text``: the start token, then every line's ids and a 2."""
    ids = [START_TOKEN]
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            ids.append(LINE_END)
            continue
        lang, line = line_language(line)
        romanised = kana_to_romaji(line)
        if romanised != line:
            lang, line = "ja", romanised
        try:
            ids += encode_line(line, "en" if _STRUCTURE_TAG.match(line) else lang) + [LINE_END]
        except Exception as exc:  # ComfyUI drops a line it cannot encode
            log.warning("lyrics line %r (%s) could not be tokenized: %s", line, lang, exc)
    return ids
