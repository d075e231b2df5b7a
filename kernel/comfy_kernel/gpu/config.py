"""GPU scheduler settings: ComfyUI's device, VRAM and dtype flags.

The flag names are ComfyUI's, so a command line written for ComfyUI keeps its
meaning. :func:`add_arguments` puts them on the server's parser and
:func:`GpuConfig.from_args` turns the parsed namespace into a small frozen
value the scheduler passes around (tests build one directly).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

#: VRAM modes, most generous first (ComfyUI's --gpu-only ... --novram).
VRAM_MODES = ("gpu-only", "high", "normal", "low", "no")

#: Model parts that get their own dtype policy.
PARTS = ("unet", "text_encoder", "vae")

_PART_FLAGS = {"unet": "unet", "text_encoder": "text_enc", "vae": "vae"}
_PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class GpuConfig:
    """What the scheduler needs from the command line.

    ``cuda_devices`` is None for "all visible"; ``workers`` is None for one
    worker per device. ``part_dtypes`` maps a part ("unet", "text_encoder",
    "vae") to a forced precision ("fp32", "fp16", "bf16").
    """

    cpu: bool = False
    cuda_devices: tuple[int, ...] | None = None
    vram_mode: str = "normal"
    reserve_vram_gb: float | None = None
    force_precision: str | None = None
    part_dtypes: tuple[tuple[str, str], ...] = ()
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.vram_mode not in VRAM_MODES:
            raise ValueError(f"vram_mode must be one of {VRAM_MODES}, not {self.vram_mode!r}")
        if self.force_precision not in (None, "fp32", "fp16"):
            raise ValueError(f"force_precision must be fp32, fp16 or None, not {self.force_precision!r}")
        for part, precision in self.part_dtypes:
            if part not in PARTS or precision not in _PRECISIONS:
                raise ValueError(f"bad part dtype {part}={precision}")
        if self.workers is not None and self.workers < 1:
            raise ValueError("workers must be at least 1")

    def part_dtype(self, part: str) -> str | None:
        """The precision forced for ``part`` by a per-part flag, or None."""
        return dict(self.part_dtypes).get(part)

    @property
    def reserve_bytes(self) -> int | None:
        """--reserve-vram in bytes (None: the automatic reserve)."""
        return None if self.reserve_vram_gb is None else int(self.reserve_vram_gb * 1024**3)

    @classmethod
    def from_args(cls, args: argparse.Namespace | Any) -> GpuConfig:
        """Build from a namespace parsed with :func:`add_arguments` (missing attributes = defaults)."""
        get = lambda name, default=None: getattr(args, name, default)  # noqa: E731
        vram_mode = "normal"
        for flag, mode in (("gpu_only", "gpu-only"), ("highvram", "high"), ("lowvram", "low"), ("novram", "no")):
            if get(flag, False):
                vram_mode = mode
        force = "fp32" if get("force_fp32", False) else "fp16" if get("force_fp16", False) else None
        parts = []
        for part, suffix in _PART_FLAGS.items():
            for precision in _PRECISIONS:
                if get(f"{precision}_{suffix}", False):
                    parts.append((part, precision))
        cuda = get("cuda_device")
        if isinstance(cuda, str):
            cuda = tuple(int(x) for x in cuda.split(",") if x.strip())
        elif isinstance(cuda, int):
            cuda = (cuda,)
        return cls(cpu=bool(get("cpu", False)), cuda_devices=cuda or None, vram_mode=vram_mode,
                   reserve_vram_gb=get("reserve_vram"), force_precision=force,
                   part_dtypes=tuple(parts), workers=get("workers"))


def _has(parser: argparse.ArgumentParser, flag: str) -> bool:
    return flag in parser._option_string_actions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the scheduler's flags (ComfyUI's names) to ``parser``.

    Flags already present on the parser are left alone, so calling this twice
    or after another component added ``--cpu`` is harmless.
    """
    group = parser.add_argument_group("devices and memory")

    def add(target: Any, flag: str, **kw: Any) -> None:
        if not _has(parser, flag):
            target.add_argument(flag, **kw)

    add(group, "--cpu", action="store_true", help="run everything on the CPU (slow)")
    add(group, "--cuda-device", default=None, metavar="IDS",
        help="CUDA device index (or comma-separated indices) to use; default: all visible")
    add(group, "--workers", type=int, default=None, metavar="N",
        help="number of execution workers; default: one per device")
    add(group, "--reserve-vram", type=float, default=None, metavar="GB",
        help="VRAM in GB left for the OS and other programs")
    if not any(_has(parser, f) for f in ("--gpu-only", "--highvram", "--normalvram", "--lowvram", "--novram")):
        vram = group.add_mutually_exclusive_group()
        vram.add_argument("--gpu-only", action="store_true",
                          help="keep everything, text encoders and intermediates included, on the GPU")
        vram.add_argument("--highvram", action="store_true", help="keep models in VRAM after use")
        vram.add_argument("--normalvram", action="store_true", help="load and offload by memory budget")
        vram.add_argument("--lowvram", action="store_true",
                          help="stream the weights of models that do not fit, layer by layer")
        vram.add_argument("--novram", action="store_true", help="always stream weights from CPU memory")
    if not _has(parser, "--force-fp32"):
        force = group.add_mutually_exclusive_group()
        force.add_argument("--force-fp32", action="store_true", help="store and compute every model in fp32")
        force.add_argument("--force-fp16", action="store_true", help="store and compute models in fp16")
    for suffix, label in (("unet", "diffusion model"), ("vae", "VAE"), ("text-enc", "text encoder")):
        if _has(parser, f"--fp32-{suffix}"):
            continue
        part = group.add_mutually_exclusive_group()
        for precision in _PRECISIONS:
            part.add_argument(f"--{precision}-{suffix}", action="store_true",
                              help=f"store the {label} in {precision}")
