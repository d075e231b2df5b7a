"""Random-weight upscale model files in the key layouts real checkpoints use.

- ESRGAN (the original release): ``model.0`` first conv, ``model.1.sub.<i>.RDB<k>.conv<j>.0``
  residual-in-residual dense blocks, ``model.1.sub.<nb>`` trunk conv, then upsampling convs at
  ``model.3``/``model.6`` (4x), ``model.8`` high-resolution conv, ``model.10`` last conv; a plain
  state dict in a .pth.
- Real-ESRGAN (BasicSR's RRDBNet): ``conv_first``, ``body.<i>.rdb<k>.conv<j>``, ``conv_body``,
  ``conv_up1``/``conv_up2``, ``conv_hr``, ``conv_last``, stored under ``params_ema`` in a .pth.
- Compact (SRVGGNetCompact): ``body.<2k>`` convs and ``body.<2k+1>`` PReLU slopes, the last conv
  producing ``3 * scale**2`` channels for the pixel shuffle; .safetensors.
- SwinIR: the official network's own state dict (spandrel's SwinIR class is that network), at a
  tiny size, saved the way DataParallel training saves it (``module.`` prefix, under ``params``).

Widths are small (8 filters, 1 block) so the files are tens of kilobytes and run fast on a CPU;
the dense blocks keep ESRGAN's fixed growth of 32 channels, which is what detection assumes.
"""

from __future__ import annotations

from pathlib import Path

import torch

GROWTH = 32


def _conv(sd: dict, key: str, out_ch: int, in_ch: int, gen: torch.Generator, k: int = 3, bias: float = 0.0) -> None:
    fan_in = in_ch * k * k
    sd[f"{key}.weight"] = torch.randn(out_ch, in_ch, k, k, generator=gen) * (0.8 / fan_in ** 0.5)
    sd[f"{key}.bias"] = torch.randn(out_ch, generator=gen) * 0.01 + bias


def _dense_block(sd: dict, prefix: str, nf: int, gen: torch.Generator, naming: str) -> None:
    for rdb in (1, 2, 3):
        for j in range(1, 6):
            out_ch = nf if j == 5 else GROWTH
            name = f"{prefix}.RDB{rdb}.conv{j}.0" if naming == "old" else f"{prefix}.rdb{rdb}.conv{j}"
            _conv(sd, name, out_ch, nf + (j - 1) * GROWTH, gen)


def esrgan(nf: int = 8, blocks: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """Original ESRGAN layout, 4x."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    _conv(sd, "model.0", nf, 3, gen)
    for i in range(blocks):
        _dense_block(sd, f"model.1.sub.{i}", nf, gen, "old")
    _conv(sd, f"model.1.sub.{blocks}", nf, nf, gen)
    for index in (3, 6, 8):
        _conv(sd, f"model.{index}", nf, nf, gen)
    _conv(sd, "model.10", 3, nf, gen, bias=0.5)  # outputs around mid-grey rather than clamped at 0
    return sd


def real_esrgan(nf: int = 8, blocks: int = 1, seed: int = 1) -> dict[str, torch.Tensor]:
    """BasicSR RRDBNet layout, 4x."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    _conv(sd, "conv_first", nf, 3, gen)
    for i in range(blocks):
        _dense_block(sd, f"body.{i}", nf, gen, "new")
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        _conv(sd, name, nf, nf, gen)
    _conv(sd, "conv_last", 3, nf, gen, bias=0.5)
    return sd


def compact(scale: int = 2, nf: int = 8, convs: int = 2, seed: int = 2) -> dict[str, torch.Tensor]:
    """SRVGGNetCompact layout."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    _conv(sd, "body.0", nf, 3, gen)
    for k in range(convs + 1):
        sd[f"body.{2 * k + 1}.weight"] = torch.full((nf,), 0.2) + 0.05 * torch.randn(nf, generator=gen)
        if k < convs:
            _conv(sd, f"body.{2 * k + 2}", nf, nf, gen)
    _conv(sd, f"body.{2 * convs + 2}", 3 * scale * scale, nf, gen)
    return sd


def swinir(seed: int = 3) -> dict[str, torch.Tensor]:
    """A tiny 2x SwinIR (12-wide embedding, one stage of two blocks, 4-pixel windows)."""
    from comfy_kernel_core_nodes.upscale.spandrel_import import import_spandrel

    import_spandrel()  # spandrel needs a torchvision stand-in here
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(seed)
    net = SwinIR(img_size=16, in_chans=3, embed_dim=12, depths=[2], num_heads=[2], window_size=4, mlp_ratio=2.0,
                 upscale=2, upsampler="pixelshuffledirect", resi_connection="1conv")
    return {k: v.clone() for k, v in net.state_dict().items()}


def write_all(folder: Path) -> dict[str, Path]:
    """Every model above as a file in ``folder``; returns {kind: path}."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "esrgan": folder / "esrgan-4x.pth",
        "real_esrgan": folder / "realesrgan-4x.pth",
        "compact": folder / "compact-2x.safetensors",
        "swinir": folder / "swinir-2x.pth",
    }
    torch.save(esrgan(), files["esrgan"])
    torch.save({"params_ema": real_esrgan()}, files["real_esrgan"])
    save_file(compact(), str(files["compact"]))
    torch.save({"params": {f"module.{k}": v for k, v in swinir().items()}}, files["swinir"])
    return files
