"""AUDIO nodes (ComfyUI's ``comfy_extras.nodes_audio``) that need no audio model.

AUDIO is ``{"waveform": float32 [B, C, T], "sample_rate": int}``. Files are
read and written with PyAV (:mod:`..media.audio`); saved files are reported as
``{"audio": [{"filename", "subfolder", "type"}]}``, which the frontend's audio
player reads. The nodes that exist in ComfyUI 0.3.64 keep that release's
contract (its ``/object_info`` could not list them: they failed to import
there without torchaudio); SaveAudioAdvanced, JoinAudioChannels,
AudioDuration and AudioEqualizer3Band follow current ComfyUI.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from typing import Any

from comfy_kernel.nodes import io

from . import context
from .common import NodeDef
from .save import PREVIEW_ALPHABET, next_counter, reserve, split_prefix

MODULE = "comfy_extras.nodes_audio"
AUDIO_FORMATS = ("flac", "mp3", "opus")


def _require(audio: Any, node: str) -> Any:
    if audio is None:
        raise ValueError(f"{node}: input audio is None (the source video may have no audio track).")
    return audio


def save_audio(audio: Any, prefix: str, base: str, kind: str, fmt: str, quality: str | None, prompt: Any,
               extra_pnginfo: Any) -> list[dict[str, str]]:
    """Each clip of the batch as ``<prefix>_<counter>_.<fmt>``; ``%batch_num%`` becomes the clip index."""
    from ..media.audio import encode

    if fmt not in AUDIO_FORMATS:
        raise ValueError(f"Unsupported audio format: {fmt}")
    folder, filename, subfolder = split_prefix(prefix, base, 0, 0)
    metadata: dict[str, str] = {}
    if not context.option("disable_metadata", False):
        if prompt is not None:
            metadata["prompt"] = json.dumps(prompt)
        if isinstance(extra_pnginfo, dict):
            for key, value in extra_pnginfo.items():
                metadata[key] = json.dumps(value)
    counters: dict[str, int] = {}
    results = []
    for index, waveform in enumerate(audio["waveform"].cpu()):
        name = filename.replace("%batch_num%", str(index))
        data = encode(waveform, int(audio["sample_rate"]), fmt, quality, metadata)
        handle, file, counter = reserve(folder, name, counters.get(name) or next_counter(folder, name), fmt)
        with handle:
            handle.write(data)
        counters[name] = counter + 1
        results.append({"filename": file, "subfolder": subfolder, "type": kind})
    return results


def input_media() -> list[str]:
    """Audio and video files directly in ``<input>`` (LoadAudio reads the sound of videos too)."""
    from comfy_kernel.files.folders import content_category

    return sorted(f for f in context.input_files() if content_category(f) in ("audio", "video"))


def load_audio_file(name: str) -> dict[str, Any]:
    from ..media.audio import audio_value, decode

    waveform, rate = decode(context.annotated_input_path(name))
    return audio_value(waveform.unsqueeze(0), rate)


def _existing_input(name: str) -> str | None:
    try:
        path = context.annotated_input_path(name)
    except (ValueError, RuntimeError):
        return None
    return path if os.path.isfile(path) else None


# --- saving and previewing ---------------------------------------------------------------

class SaveAudio:
    DESCRIPTION = "Saves audio as FLAC files in the output directory."
    CATEGORY = "audio"
    RETURN_TYPES = ()
    FUNCTION = "save_flac"
    OUTPUT_NODE = True
    FORMAT = "flac"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"audio": ("AUDIO",), "filename_prefix": ("STRING", {"default": "audio/ComfyUI"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save(self, audio: Any, filename_prefix: str, quality: str | None, prompt: Any,
             extra_pnginfo: Any) -> dict[str, Any]:
        _require(audio, type(self).__name__)
        results = save_audio(audio, filename_prefix, context.output_dir(), "output", self.FORMAT, quality, prompt,
                             extra_pnginfo)
        return {"ui": {"audio": results}}

    def save_flac(self, audio: Any, filename_prefix: str = "ComfyUI", prompt: Any = None,
                  extra_pnginfo: Any = None) -> dict[str, Any]:
        return self.save(audio, filename_prefix, None, prompt, extra_pnginfo)


class SaveAudioMP3(SaveAudio):
    DESCRIPTION = "Saves audio as MP3 files in the output directory."
    FUNCTION = "save_mp3"
    FORMAT = "mp3"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        types = super().INPUT_TYPES()
        types["required"]["quality"] = (["V0", "128k", "320k"], {"default": "V0"})
        return types

    def save_mp3(self, audio: Any, filename_prefix: str = "ComfyUI", quality: str = "128k", prompt: Any = None,
                 extra_pnginfo: Any = None) -> dict[str, Any]:
        return self.save(audio, filename_prefix, quality, prompt, extra_pnginfo)


class SaveAudioOpus(SaveAudio):
    DESCRIPTION = "Saves audio as Opus files in the output directory (resampled to a rate Opus supports)."
    FUNCTION = "save_opus"
    FORMAT = "opus"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        types = super().INPUT_TYPES()
        types["required"]["quality"] = (["64k", "96k", "128k", "192k", "320k"], {"default": "128k"})
        return types

    def save_opus(self, audio: Any, filename_prefix: str = "ComfyUI", quality: str = "V3", prompt: Any = None,
                  extra_pnginfo: Any = None) -> dict[str, Any]:
        return self.save(audio, filename_prefix, quality, prompt, extra_pnginfo)


class PreviewAudio(SaveAudio):
    DESCRIPTION = "Plays audio in the UI, saved as a temporary FLAC file."

    def __init__(self) -> None:
        self.prefix_append = "_temp_" + "".join(random.choice(PREVIEW_ALPHABET) for _ in range(5))

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"audio": ("AUDIO",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save_flac(self, audio: Any, filename_prefix: str = "ComfyUI", prompt: Any = None,
                  extra_pnginfo: Any = None) -> dict[str, Any]:
        _require(audio, "PreviewAudio")
        results = save_audio(audio, filename_prefix + self.prefix_append, context.temp_dir(), "temp", "flac", None,
                             prompt, extra_pnginfo)
        return {"ui": {"audio": results}}


class SaveAudioAdvanced(io.ComfyNode):
    """Newer than ComfyUI 0.3.64: one save node whose format choice brings its own quality input."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SaveAudioAdvanced", display_name="Save Audio (Advanced)", category="audio",
            description="Saves the input audio to your ComfyUI output directory.",
            search_aliases=["save audio", "export audio", "output audio", "write audio", "flac", "mp3", "opus"],
            inputs=[
                io.Audio.Input("audio", tooltip="The audio to save."),
                io.String.Input("filename_prefix", default="audio/ComfyUI",
                                tooltip="File name prefix; may contain a subfolder."),
                io.DynamicCombo.Input("format", tooltip="The file format.", options=[
                    io.DynamicCombo.Option("flac", []),
                    io.DynamicCombo.Option("mp3", [
                        io.Combo.Input("quality", options=["V0", "128k", "320k"], default="V0")]),
                    io.DynamicCombo.Option("opus", [
                        io.Combo.Input("quality", options=["64k", "96k", "128k", "192k", "320k"], default="128k")]),
                ]),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo], is_output_node=True,
            outputs=[io.Audio.Output("audio", display_name="audio")])

    @classmethod
    def execute(cls, audio: Any, filename_prefix: str, format: Any) -> io.NodeOutput:
        _require(audio, "SaveAudioAdvanced")
        fmt = format.get("format") if isinstance(format, dict) else format
        quality = format.get("quality") if isinstance(format, dict) else None
        results = save_audio(audio, filename_prefix, context.output_dir(), "output", fmt, quality or "128k",
                             cls.hidden.prompt, cls.hidden.extra_pnginfo)
        return io.NodeOutput(audio, ui={"audio": results})


# --- loading --------------------------------------------------------------------------------

class LoadAudio:
    DESCRIPTION = "Loads the sound of an audio or video file from the input directory."
    CATEGORY = "audio"
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"audio": (input_media(), {"audio_upload": True})}}

    def load(self, audio: str) -> tuple[dict[str, Any]]:
        return (load_audio_file(audio),)

    @classmethod
    def IS_CHANGED(cls, audio: str) -> str:
        digest = hashlib.sha256()
        with open(context.annotated_input_path(audio), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    @classmethod
    def VALIDATE_INPUTS(cls, audio: str) -> bool | str:
        return True if _existing_input(audio) else f"Invalid audio file: {audio}"


class RecordAudio:
    DESCRIPTION = "Audio recorded in the browser (uploaded to the temp directory by the frontend)."
    CATEGORY = "audio"
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"audio": ("AUDIO_RECORD", {})}}

    def load(self, audio: str) -> tuple[dict[str, Any]]:
        if not isinstance(audio, str) or _existing_input(audio) is None:
            raise ValueError(f"Invalid recorded audio file: {audio}")
        return (load_audio_file(audio),)


# --- editing --------------------------------------------------------------------------------

class TrimAudioDuration:
    DESCRIPTION = "Trim audio tensor into chosen time range."
    CATEGORY = "audio"
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "trim"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "audio": ("AUDIO",),
            "start_index": ("FLOAT", {"default": 0.0, "min": -0xFFFFFFFFFFFFFFFF, "max": 0xFFFFFFFFFFFFFFFF,
                                      "step": 0.01, "tooltip": "Start in seconds; negative counts from the end."}),
            "duration": ("FLOAT", {"default": 60.0, "min": 0.0, "step": 0.01, "tooltip": "Length in seconds."}),
        }}

    def trim(self, audio: Any, start_index: float, duration: float) -> tuple[dict[str, Any]]:
        waveform, rate = audio["waveform"], audio["sample_rate"]
        length = waveform.shape[-1]
        start = int(round(start_index * rate))
        if start_index < 0:
            start += length
        start = max(0, min(start, length - 1))
        end = max(0, min(start + int(round(duration * rate)), length))
        if start >= end:
            raise ValueError("AudioTrim: Start time must be less than end time and be within the audio length.")
        return ({"waveform": waveform[..., start:end], "sample_rate": rate},)


class SplitAudioChannels:
    DESCRIPTION = "Separates the audio into left and right channels."
    CATEGORY = "audio"
    RETURN_TYPES = ("AUDIO", "AUDIO")
    RETURN_NAMES = ("left", "right")
    FUNCTION = "separate"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"audio": ("AUDIO",)}}

    def separate(self, audio: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        waveform, rate = audio["waveform"], audio["sample_rate"]
        if waveform.shape[1] != 2:
            raise ValueError(f"AudioSplit: Input audio must be stereo (2 channels), got {waveform.shape[1]}.")
        return ({"waveform": waveform[..., 0:1, :], "sample_rate": rate},
                {"waveform": waveform[..., 1:2, :], "sample_rate": rate})


def _stereo(waveform: Any) -> Any:
    return waveform.repeat(1, 2, 1) if waveform.shape[1] == 1 else waveform


class AudioConcat:
    DESCRIPTION = "Concatenates the audio1 to audio2 in the specified direction."
    CATEGORY = "audio"
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "concat"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"audio1": ("AUDIO",), "audio2": ("AUDIO",),
                             "direction": (["after", "before"], {"default": "after", "tooltip": (
                                 "Whether audio2 goes after or before audio1.")})}}

    def concat(self, audio1: Any, audio2: Any, direction: str) -> tuple[dict[str, Any]]:
        import torch

        from ..media.audio import match_rates

        first, second, rate = match_rates(_stereo(audio1["waveform"]), audio1["sample_rate"],
                                          _stereo(audio2["waveform"]), audio2["sample_rate"])
        parts = (first, second) if direction == "after" else (second, first)
        return ({"waveform": torch.cat(parts, dim=2), "sample_rate": rate},)


class AudioMerge:
    DESCRIPTION = "Combine two audio tracks by overlaying their waveforms."
    CATEGORY = "audio"
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "merge"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"audio1": ("AUDIO",), "audio2": ("AUDIO",),
                             "merge_method": (["add", "mean", "subtract", "multiply"],
                                              {"tooltip": "How the two waveforms are combined."})}}

    def merge(self, audio1: Any, audio2: Any, merge_method: str) -> tuple[dict[str, Any]]:
        import torch

        from ..media.audio import match_rates

        first, second, rate = match_rates(audio1["waveform"], audio1["sample_rate"], audio2["waveform"],
                                          audio2["sample_rate"])
        length = first.shape[-1]
        if second.shape[-1] > length:
            second = second[..., :length]
        elif second.shape[-1] < length:
            pad = torch.zeros((*second.shape[:-1], length - second.shape[-1]), dtype=second.dtype, device=second.device)
            second = torch.cat((second, pad), dim=-1)
        combine = {"add": lambda a, b: a + b, "subtract": lambda a, b: a - b, "multiply": lambda a, b: a * b,
                   "mean": lambda a, b: (a + b) / 2}
        if merge_method not in combine:
            raise ValueError(f"Unknown merge method: {merge_method}")
        waveform = combine[merge_method](first, second)
        peak = waveform.abs().max()
        if peak > 1.0:
            waveform = waveform / peak
        return ({"waveform": waveform, "sample_rate": rate},)


class AudioAdjustVolume:
    DESCRIPTION = "Changes the loudness by a number of decibels."
    CATEGORY = "audio"
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "adjust_volume"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"audio": ("AUDIO",),
                             "volume": ("INT", {"default": 1.0, "min": -100, "max": 100,
                                                "tooltip": "Gain in dB: 0 leaves it, +6 doubles, -6 halves."})}}

    def adjust_volume(self, audio: Any, volume: int) -> tuple[dict[str, Any]]:
        if volume == 0:
            return (audio,)
        return ({"waveform": audio["waveform"] * (10 ** (volume / 20)), "sample_rate": audio["sample_rate"]},)


class EmptyAudio:
    DESCRIPTION = "Silence of a given length."
    CATEGORY = "audio"
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "create_empty_audio"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "duration": ("FLOAT", {"default": 60.0, "min": 0.0, "max": 0xFFFFFFFFFFFFFFFF, "step": 0.01,
                                   "tooltip": "Length in seconds."}),
            "sample_rate": ("INT", {"default": 44100, "tooltip": "Samples per second."}),
            "channels": ("INT", {"default": 2, "min": 1, "max": 2, "tooltip": "1 for mono, 2 for stereo."}),
        }}

    def create_empty_audio(self, duration: float, sample_rate: int, channels: int) -> tuple[dict[str, Any]]:
        import torch

        if sample_rate <= 0:
            raise ValueError(f"EmptyAudio: sample_rate must be positive, got {sample_rate}")
        samples = int(round(duration * sample_rate))
        return ({"waveform": torch.zeros((1, channels, samples), dtype=torch.float32), "sample_rate": sample_rate},)


class EmptyLatentAudio:
    DESCRIPTION = "An all-zero audio latent (64 channels, 44.1 kHz / 2048 frames per latent step)."
    CATEGORY = "latent/audio"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "seconds": ("FLOAT", {"default": 47.6, "min": 1.0, "max": 1000.0, "step": 0.1}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096, "tooltip": "Latents in the batch."}),
        }}

    def generate(self, seconds: float, batch_size: int) -> tuple[dict[str, Any]]:
        import torch

        length = round((seconds * 44100 / 2048) / 2) * 2
        return ({"samples": torch.zeros([batch_size, 64, length]), "type": "audio"},)


class VAEEncodeAudio:
    """Audio -> latents with an audio VAE, resampled first to the VAE's rate (ACE-Step 1.5: 48 kHz)."""

    CATEGORY = "latent/audio"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"audio": ("AUDIO",), "vae": ("VAE",)}}

    def encode(self, audio: Any, vae: Any) -> tuple[dict[str, Any]]:
        from ..media.audio import resample

        _require(audio, "VAEEncodeAudio")
        rate = getattr(vae, "audio_sample_rate", 44100)
        waveform = audio["waveform"]
        if int(audio["sample_rate"]) != rate:
            waveform = resample(waveform, int(audio["sample_rate"]), rate)
        return ({"samples": vae.encode(waveform.movedim(1, -1))},)


class VAEDecodeAudio:
    """Latents -> audio at the VAE's rate; loud results are scaled down (std capped at 1/5, as ComfyUI does)."""

    CATEGORY = "latent/audio"
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT",), "vae": ("VAE",)}}

    def decode(self, vae: Any, samples: dict[str, Any]) -> tuple[dict[str, Any]]:
        import torch

        audio = vae.decode(samples["samples"]).movedim(-1, 1)
        std = torch.std(audio, dim=[1, 2], keepdim=True) * 5.0
        audio = audio / std.clamp(min=1.0)
        rate = samples.get("sample_rate", getattr(vae, "audio_sample_rate", 44100))
        return ({"waveform": audio, "sample_rate": rate},)


class ConditioningStableAudio:
    DESCRIPTION = "Sets Stable Audio's start and total seconds on both conditionings."
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
            "seconds_start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1000.0, "step": 0.1}),
            "seconds_total": ("FLOAT", {"default": 47.0, "min": 0.0, "max": 1000.0, "step": 0.1}),
        }}

    def append(self, positive: Any, negative: Any, seconds_start: float, seconds_total: float) -> tuple[Any, Any]:
        values = {"seconds_start": seconds_start, "seconds_total": seconds_total}
        return ([[t, {**d, **values}] for t, d in positive], [[t, {**d, **values}] for t, d in negative])


# --- newer than ComfyUI 0.3.64 --------------------------------------------------------------

class JoinAudioChannels(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="JoinAudioChannels", display_name="Join Audio Channels", category="audio",
            description="Joins left and right mono audio channels into a stereo audio.",
            inputs=[io.Audio.Input("audio_left"), io.Audio.Input("audio_right")],
            outputs=[io.Audio.Output(display_name="audio")])

    @classmethod
    def execute(cls, audio_left: Any, audio_right: Any) -> io.NodeOutput:
        import torch

        from ..media.audio import match_rates

        if audio_left is None or audio_right is None:
            return io.NodeOutput(audio_right if audio_left is None else audio_left)
        left, right = audio_left["waveform"], audio_right["waveform"]
        if left.shape[1] != 1 or right.shape[1] != 1:
            raise ValueError("AudioJoin: Both input audios must be mono.")
        left, right, rate = match_rates(left, audio_left["sample_rate"], right, audio_right["sample_rate"])
        length = min(left.shape[-1], right.shape[-1])
        return io.NodeOutput({"waveform": torch.cat([left[..., :length], right[..., :length]], dim=1),
                              "sample_rate": rate})


class AudioDuration(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AudioDuration", display_name="Audio Duration", category="audio",
            description="Returns the length of the audio in seconds and its sample rate.",
            search_aliases=["audio length", "audio duration", "audio seconds"],
            inputs=[io.Audio.Input("audio")],
            outputs=[io.Float.Output(display_name="duration", tooltip="Length in seconds."),
                     io.Int.Output(display_name="sample_rate", tooltip="Samples per second.")])

    @classmethod
    def execute(cls, audio: Any) -> io.NodeOutput:
        if audio is None:
            return io.NodeOutput(0.0, 0)
        rate = audio["sample_rate"]
        return io.NodeOutput(audio["waveform"].shape[-1] / float(rate) if rate > 0 else 0.0, rate)


class AudioEqualizer3Band(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AudioEqualizer3Band", display_name="Audio Equalizer (3-Band)", category="audio",
            is_experimental=True, search_aliases=["eq", "bass boost", "treble boost", "equalizer"],
            inputs=[
                io.Audio.Input("audio"),
                io.Float.Input("low_gain_dB", default=0.0, min=-24.0, max=24.0, step=0.1, tooltip="Bass gain."),
                io.Int.Input("low_freq", default=100, min=20, max=500, tooltip="Low shelf corner frequency."),
                io.Float.Input("mid_gain_dB", default=0.0, min=-24.0, max=24.0, step=0.1, tooltip="Mid gain."),
                io.Int.Input("mid_freq", default=1000, min=200, max=4000, tooltip="Mid band centre frequency."),
                io.Float.Input("mid_q", default=0.707, min=0.1, max=10.0, step=0.1, tooltip="Mid band Q."),
                io.Float.Input("high_gain_dB", default=0.0, min=-24.0, max=24.0, step=0.1, tooltip="Treble gain."),
                io.Int.Input("high_freq", default=5000, min=1000, max=15000, tooltip="High shelf corner frequency."),
            ],
            outputs=[io.Audio.Output()])

    @classmethod
    def execute(cls, audio: Any, low_gain_dB: float, low_freq: int, mid_gain_dB: float, mid_freq: int,
                mid_q: float, high_gain_dB: float, high_freq: int) -> io.NodeOutput:
        from ..media.audio import high_shelf, low_shelf, peaking

        if audio is None:
            return io.NodeOutput(None)
        waveform, rate = audio["waveform"], audio["sample_rate"]
        if waveform.shape[-1] == 0:
            return io.NodeOutput(audio)
        out = waveform.clone()
        if low_gain_dB != 0:
            out = low_shelf(out, rate, low_gain_dB, float(low_freq))
        if mid_gain_dB != 0:
            out = peaking(out, rate, mid_gain_dB, float(mid_freq), mid_q)
        if high_gain_dB != 0:
            out = high_shelf(out, rate, high_gain_dB, float(high_freq))
        return io.NodeOutput({"waveform": out, "sample_rate": rate})


NODES = [
    NodeDef("SaveAudio", SaveAudio, "Save Audio (FLAC)", MODULE),
    NodeDef("SaveAudioMP3", SaveAudioMP3, "Save Audio (MP3)", MODULE),
    NodeDef("SaveAudioOpus", SaveAudioOpus, "Save Audio (Opus)", MODULE),
    NodeDef("SaveAudioAdvanced", SaveAudioAdvanced, "Save Audio (Advanced)", MODULE),
    NodeDef("PreviewAudio", PreviewAudio, "Preview Audio", MODULE),
    NodeDef("LoadAudio", LoadAudio, "Load Audio", MODULE),
    NodeDef("RecordAudio", RecordAudio, "Record Audio", MODULE),
    NodeDef("TrimAudioDuration", TrimAudioDuration, "Trim Audio Duration", MODULE),
    NodeDef("SplitAudioChannels", SplitAudioChannels, "Split Audio Channels", MODULE),
    NodeDef("JoinAudioChannels", JoinAudioChannels, "Join Audio Channels", MODULE),
    NodeDef("AudioConcat", AudioConcat, "Audio Concat", MODULE),
    NodeDef("AudioMerge", AudioMerge, "Audio Merge", MODULE),
    NodeDef("AudioAdjustVolume", AudioAdjustVolume, "Audio Adjust Volume", MODULE),
    NodeDef("AudioDuration", AudioDuration, "Audio Duration", MODULE),
    NodeDef("AudioEqualizer3Band", AudioEqualizer3Band, "Audio Equalizer (3-Band)", MODULE),
    NodeDef("EmptyAudio", EmptyAudio, "Empty Audio", MODULE),
    NodeDef("EmptyLatentAudio", EmptyLatentAudio, "Empty Latent Audio", MODULE),
    NodeDef("ConditioningStableAudio", ConditioningStableAudio, "ConditioningStableAudio", MODULE),
    NodeDef("VAEEncodeAudio", VAEEncodeAudio, "VAE Encode Audio", MODULE),
    NodeDef("VAEDecodeAudio", VAEDecodeAudio, "VAE Decode Audio", MODULE),
]
