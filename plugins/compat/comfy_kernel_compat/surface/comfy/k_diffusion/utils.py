"""ComfyUI's ``comfy.k_diffusion.utils``: the tensor helpers and ``FolderOfImages`` packs import."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from comfy_kernel_compat.reexport import reexport


class FolderOfImages:
    """The image files under a folder (recursively), loaded as RGB and transformed on access."""

    IMG_EXTENSIONS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}

    def __init__(self, root: str, transform: Any = None):
        self.root = Path(root)
        self.transform = transform if transform is not None else (lambda x: x)
        self.paths = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in self.IMG_EXTENSIONS)

    def __repr__(self) -> str:
        return f"FolderOfImages(root=\"{self.root}\", len: {len(self)})"

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int) -> tuple[Any]:
        from PIL import Image

        with Image.open(self.paths[key]) as image:
            return (self.transform(image.convert("RGB")),)


reexport(globals(), ["sampling._common"])
