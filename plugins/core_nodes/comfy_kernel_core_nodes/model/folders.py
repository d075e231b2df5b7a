"""Component folders as one weights file: how diffusers and transformers save a model (``save_pretrained``).

A folder such as a diffusers pipeline's ``unet/`` or ``text_encoder/`` holds one
weights file (``diffusion_pytorch_model.safetensors``, ``model.safetensors``,
their ``.fp16`` variants, or ``.bin``) or shards listed by an index
(``*.safetensors.index.json``). :mod:`.files` reads such a folder wherever a
weights file path is accepted, so every loader (and detection) sees one table of
tensors.

Families register *key layouts* (:data:`.detection.KEY_LAYOUTS`) for networks the
other library names differently (the diffusers UNet and VAE): the folder is then
read under this package's names, so it is detected and loaded exactly as the
single-file checkpoint of the same weights. A single file in such a layout (a
diffusers UNet or VAE file put in ``diffusion_models`` or ``vae``) is read the
same way, as ComfyUI's UNETLoader and VAELoader accept those.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)

#: weights file stems, in the order they are preferred (fp16 variants first, as ComfyUI picks them)
_STEMS = {".safetensors": ("diffusion_pytorch_model", "model"), ".bin": ("diffusion_pytorch_model", "pytorch_model")}


@dataclass(frozen=True)
class KeyLayout:
    """A renaming from another library's key names to this package's.

    ``names`` maps their key to ours (keys it does not name are dropped);
    ``shapes`` gives the shape a tensor takes under our name when it differs
    (diffusers' VAE attention stores 1x1 convolutions as linear weights).
    """

    names: dict[str, str]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: our key -> their keys concatenated along the first dimension (diffusers splits fused q, k, v)
    joined: dict[str, list[str]] = field(default_factory=dict)
    #: our key -> a function applied to the tensor once read (an order of chunks that differs)
    transforms: dict[str, Callable[[torch.Tensor], torch.Tensor]] = field(default_factory=dict)


def weights_files(folder: str) -> list[str]:
    """The files holding a component folder's weights (one, or the shards its index lists); [] if none."""
    for ext in (".safetensors", ".bin"):
        for stem in _STEMS[ext]:
            for variant in (".fp16", ""):
                single = os.path.join(folder, f"{stem}{variant}{ext}")
                if os.path.isfile(single):
                    return [single]
                index = os.path.join(folder, f"{stem}{ext}.index{variant}.json")
                if os.path.isfile(index):
                    with open(index, encoding="utf-8") as f:
                        shards = sorted(set(json.load(f)["weight_map"].values()))
                    return [os.path.join(folder, name) for name in shards]
    return []


def is_weights_folder(path: str | os.PathLike[str]) -> bool:
    return os.path.isdir(path) and bool(weights_files(os.fspath(path)))


class WeightsFolder:
    """The tensors of a component folder's files (or of one file) under this package's names.

    ``layout``: the key layout to apply; by default the one the registered layouts
    recognise, if any (else the names stay as they are).
    """

    def __init__(self, files: list[str], label: str, layout: KeyLayout | None = None) -> None:
        from .files import raw_tensor_shapes

        if not files:
            raise FileNotFoundError(f"{label}: no weights file (diffusion_pytorch_model / model "
                                    ".safetensors or .bin, or a sharded index)")
        self.files = files
        self.raw_shapes: dict[str, tuple[int, ...]] = {}
        self.file_of: dict[str, str] = {}
        for path in files:
            for key, shape in raw_tensor_shapes(path).items():
                self.raw_shapes[key] = shape
                self.file_of[key] = path
        self.layout = layout if layout is not None else _layout_for(self.raw_shapes)
        if self.layout is None:
            self.shapes = dict(self.raw_shapes)
            self.source = {k: k for k in self.raw_shapes}
        else:
            self.source = {ours: theirs for theirs, ours in self.layout.names.items() if theirs in self.raw_shapes}
            self.shapes = {ours: self.layout.shapes.get(ours, self.raw_shapes[theirs])
                           for ours, theirs in self.source.items()}
            for ours, parts in self.layout.joined.items():
                if all(p in self.raw_shapes for p in parts):
                    self.source[ours] = parts
                    first = self.raw_shapes[parts[0]]
                    self.shapes[ours] = (sum(self.raw_shapes[p][0] for p in parts),) + tuple(first[1:])
            used = {t for theirs in self.source.values() for t in ([theirs] if isinstance(theirs, str) else theirs)}
            left = len(self.raw_shapes) - len(used)
            if left:
                log.info("%s: %d tensors not used by the model", label, left)

    def identity(self) -> str:
        from .files import single_file_identity

        return "+".join(single_file_identity(p) for p in self.files)

    def read(self, device: str, prefix: str = "", dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Tensors whose (our) name starts with ``prefix``, prefix removed, floats in ``dtype``."""
        selected = {ours: theirs for ours, theirs in self.source.items() if ours.startswith(prefix)}
        wanted: dict[str, set[str]] = {}
        for theirs in selected.values():
            for name in [theirs] if isinstance(theirs, str) else theirs:
                wanted.setdefault(self.file_of[name], set()).add(name)
        tensors: dict[str, torch.Tensor] = {}
        for path, names in wanted.items():
            tensors.update(_read_file(path, device, names))
        transforms = self.layout.transforms if self.layout is not None else {}
        out: dict[str, torch.Tensor] = {}
        for ours, theirs in selected.items():
            tensor = tensors[theirs] if isinstance(theirs, str) else torch.cat([tensors[t] for t in theirs])
            if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
                tensor = tensor.to(dtype)
            shape = self.shapes[ours]
            if tuple(tensor.shape) != tuple(shape):
                tensor = tensor.reshape(shape)
            if ours in transforms:
                tensor = transforms[ours](tensor)
            out[ours[len(prefix):]] = tensor
        return out

    def size(self, prefix: str, dtype: torch.dtype | None) -> int:
        total = 0
        for ours, shape in self.shapes.items():
            if ours.startswith(prefix):
                count = 1
                for d in shape:
                    count *= d
                total += count * (dtype.itemsize if dtype is not None else 4)
        return total


def _read_file(path: str, device: str, keys: set[str]) -> dict[str, torch.Tensor]:
    from .files import is_safetensors, raw_state_dict

    if is_safetensors(path):
        from safetensors import safe_open

        with safe_open(path, framework="pt", device=str(device)) as f:
            return {k: f.get_tensor(k) for k in keys}
    return {k: v.to(device) for k, v in raw_state_dict(path).items() if k in keys}


def _layout_for(shapes: dict[str, tuple[int, ...]]) -> KeyLayout | None:
    from . import detection

    detection.load_families()
    for recognise in detection.KEY_LAYOUTS:
        try:
            layout = recognise(shapes)
        except Exception as exc:  # an odd variant of a known layout: read the names as they are
            log.warning("key layout %s failed: %s", getattr(recognise, "__name__", recognise), exc)
            continue
        if layout is not None:
            return layout
    return None


_FOLDERS: dict[str, WeightsFolder] = {}
_FILES: dict[str, WeightsFolder | None] = {}


def weights_folder(path: str | os.PathLike[str]) -> WeightsFolder:
    """The folder's :class:`WeightsFolder`, cached per version of its files."""
    from .files import single_file_identity

    folder = os.path.realpath(os.fspath(path))
    files = weights_files(folder)
    key = folder + "|" + "+".join(single_file_identity(p) for p in files)
    found = _FOLDERS.get(key)
    if found is None:
        found = _FOLDERS[key] = WeightsFolder(files, folder)
    return found


def renamed_source(path: str | os.PathLike[str]) -> WeightsFolder | None:
    """How :mod:`.files` reads ``path`` when not as it is: a folder, or a file in a registered key layout."""
    if os.path.isdir(path):
        return weights_folder(path)
    from .files import raw_tensor_shapes, single_file_identity

    key = single_file_identity(path)
    if key not in _FILES:
        layout = _layout_for(raw_tensor_shapes(path))
        _FILES[key] = WeightsFolder([os.fspath(path)], os.path.basename(path), layout) if layout else None
    return _FILES[key]
