"""The model-folder registry (ComfyUI's ``folder_paths``) and data directories.

Folder names map to an ordered list of directories and a set of accepted
extensions. Listings are cached per folder and invalidated by directory
mtimes, exactly as ComfyUI does, so that ``/object_info`` can embed them
cheaply and still see new files. ``version`` increases whenever a listing or
the registry changes, which is what ``/object_info``'s cache watches.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .access import PRIVATE_KINDS, FileAccessDenied, current_owner
from .paths import UnsafePath, is_within, safe_join, split_annotation
from .remote import RemoteFiles, relative

log = logging.getLogger(__name__)

PT_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})
LEGACY_NAMES = {"unet": "diffusion_models", "clip": "text_encoders"}

DEFAULT_MODEL_FOLDERS: list[tuple[str, list[str], frozenset[str]]] = [
    ("checkpoints", ["checkpoints"], PT_EXTENSIONS),
    ("configs", ["configs"], frozenset({".yaml"})),
    ("loras", ["loras"], PT_EXTENSIONS),
    ("vae", ["vae"], PT_EXTENSIONS),
    ("text_encoders", ["text_encoders", "clip"], PT_EXTENSIONS),
    ("diffusion_models", ["unet", "diffusion_models"], PT_EXTENSIONS),
    ("clip_vision", ["clip_vision"], PT_EXTENSIONS),
    ("style_models", ["style_models"], PT_EXTENSIONS),
    ("embeddings", ["embeddings"], PT_EXTENSIONS),
    ("diffusers", ["diffusers"], frozenset({"folder"})),
    ("vae_approx", ["vae_approx"], PT_EXTENSIONS),
    ("controlnet", ["controlnet", "t2i_adapter"], PT_EXTENSIONS),
    ("gligen", ["gligen"], PT_EXTENSIONS),
    ("upscale_models", ["upscale_models"], PT_EXTENSIONS),
    ("custom_nodes", [], frozenset()),
    ("hypernetworks", ["hypernetworks"], PT_EXTENSIONS),
    ("photomaker", ["photomaker"], PT_EXTENSIONS),
    ("classifiers", ["classifiers"], frozenset({""})),
    ("model_patches", ["model_patches"], PT_EXTENSIONS),
    ("audio_encoders", ["audio_encoders"], PT_EXTENSIONS),
    ("latent_upscale_models", ["latent_upscale_models"], PT_EXTENSIONS),
    ("geometry_estimation", ["geometry_estimation"], PT_EXTENSIONS),
]
OUTPUT_MODEL_FOLDERS = [("checkpoints", "checkpoints"), ("text_encoders", "clip"), ("vae", "vae"),
                        ("diffusion_models", "diffusion_models"), ("loras", "loras")]


@dataclass
class Folder:
    paths: list[str]
    extensions: set[str] = field(default_factory=set)


@dataclass
class DataDirs:
    """The four data directories every request-facing file lives in."""

    base: str
    input: str
    output: str
    temp: str
    user: str
    models: str
    custom_nodes: str

    @classmethod
    def from_base(cls, base: str, *, input: str | None = None, output: str | None = None,
                  temp: str | None = None, user: str | None = None) -> DataDirs:
        base = os.path.abspath(base)
        return cls(
            base=base,
            input=os.path.abspath(input or os.path.join(base, "input")),
            output=os.path.abspath(output or os.path.join(base, "output")),
            temp=os.path.join(os.path.abspath(temp), "temp") if temp else os.path.join(base, "temp"),
            user=os.path.abspath(user or os.path.join(base, "user")),
            models=os.path.join(base, "models"),
            custom_nodes=os.path.join(base, "custom_nodes"),
        )

    def by_type(self, kind: str) -> str | None:
        """``input``/``output``/``temp`` to a directory; anything else to None."""
        return {"input": self.input, "output": self.output, "temp": self.temp}.get(kind)


class FolderRegistry:
    """Folder name -> directories + extensions, with cached recursive listings."""

    def __init__(self, dirs: DataDirs):
        self.dirs = dirs
        #: ``(owner, kind, real path) -> bool``: may that owner open this output/temp file?
        #: The kernel connects it to the ``ck_file_access`` hook.
        self.access_check: Callable[[str, str, str], bool] | None = None
        #: Input/output/temp files every machine sees (see :mod:`.remote`); None: the local folders only.
        self.remote: RemoteFiles | None = None
        self.folders: dict[str, Folder] = {}
        self._cache: dict[str, tuple[list[str], dict[str, float]]] = {}
        self._lock = threading.Lock()
        self.version = 0
        for name, subdirs, exts in DEFAULT_MODEL_FOLDERS:
            paths = [os.path.join(dirs.models, d) for d in subdirs]
            if name == "custom_nodes":
                paths = [dirs.custom_nodes]
            self.folders[name] = Folder(paths, set(exts))

    def add_output_folders(self) -> None:
        for name, sub in OUTPUT_MODEL_FOLDERS:
            self.add(name, os.path.join(self.dirs.output, sub))

    @staticmethod
    def canonical(name: str) -> str:
        return LEGACY_NAMES.get(name, name)

    def add(self, name: str, path: str, extensions: Iterable[str] | None = None,
            is_default: bool = False) -> None:
        """Add a directory to ``name`` following ComfyUI's ordering rules."""
        name = self.canonical(name)
        path = os.path.abspath(path)
        with self._lock:
            folder = self.folders.get(name)
            if folder is None:
                self.folders[name] = Folder([path], set(extensions or ()))
            else:
                if path in folder.paths:
                    if is_default and folder.paths[0] != path:
                        folder.paths.remove(path)
                        folder.paths.insert(0, path)
                elif is_default:
                    folder.paths.insert(0, path)
                else:
                    folder.paths.append(path)
                if extensions:
                    folder.extensions.update(extensions)
            self._cache.pop(name, None)
            self.version += 1

    def replace(self, name: str, paths: Iterable[str], extensions: Iterable[str]) -> None:
        """Set ``name`` to exactly these directories and extensions (ComfyUI packs assign
        ``folder_names_and_paths[name] = (paths, extensions)``)."""
        name = self.canonical(name)
        with self._lock:
            self.folders[name] = Folder([os.path.abspath(p) for p in paths], set(extensions))
            self._cache.pop(name, None)
            self.version += 1

    def remove(self, name: str) -> bool:
        """Forget folder ``name``; False if it did not exist."""
        name = self.canonical(name)
        with self._lock:
            found = self.folders.pop(name, None) is not None
            self._cache.pop(name, None)
            if found:
                self.version += 1
            return found

    def names(self) -> list[str]:
        return list(self.folders)

    def paths(self, name: str) -> list[str]:
        folder = self.folders.get(self.canonical(name))
        return list(folder.paths) if folder else []

    def list(self, name: str) -> list[str]:
        """Sorted relative paths of the folder's files (union of its dirs)."""
        name = self.canonical(name)
        folder = self.folders.get(name)
        if folder is None:
            return []
        cached = self._cache.get(name)
        if cached is not None and self._fresh(folder, cached[1]):
            return cached[0]
        files: set[str] = set()
        mtimes: dict[str, float] = {}
        for directory in folder.paths:
            if not os.path.isdir(directory):
                continue
            files.update(_walk(directory, mtimes))
        exts = folder.extensions
        if exts:
            files = {f for f in files if os.path.splitext(f)[1].lower() in exts}
        result = sorted(files)
        with self._lock:
            if cached is None or cached[0] != result:
                self.version += 1
            self._cache[name] = (result, mtimes)
        return result

    @staticmethod
    def _fresh(folder: Folder, mtimes: dict[str, float]) -> bool:
        for directory, mtime in mtimes.items():
            try:
                if os.path.getmtime(directory) != mtime:
                    return False
            except OSError:
                return False
        return all(d in mtimes for d in folder.paths if os.path.isdir(d))

    def full_path(self, name: str, filename: str) -> str | None:
        """Resolve ``filename`` in folder ``name``; ``..`` cannot climb out.

        Symlinks are followed wherever they lead, for files and folders alike:
        model folders belong to the operator, and linking one model store into
        several tools is the usual setup (as in ComfyUI). The realpath
        confinement stays for input, output, temp and userdata, which requests
        write to.
        """
        folder = self.folders.get(self.canonical(name))
        if folder is None or "\x00" in filename:
            return None
        rel = os.path.relpath(os.path.join(os.sep, filename), os.sep)
        for directory in folder.paths:
            candidate = os.path.join(directory, rel)
            if os.path.isfile(candidate):
                return candidate
            if os.path.islink(candidate) and not os.path.exists(candidate):
                log.warning("dangling symlink skipped: %s", candidate)
        return None

    def full_path_or_raise(self, name: str, filename: str) -> str:
        path = self.full_path(name, filename)
        if path is None:
            raise FileNotFoundError(f"Model in folder '{name}' with filename '{filename}' not found.")
        return path

    def annotated_path(self, name: str, default_dir: str | None = None) -> str:
        """Resolve ``"x.png [output]"`` style references, confined to their dir.

        Inside output and temp, the prompt's owner (see :mod:`.access`) must be
        allowed to open the file, exactly as ``/view`` would serve it to them;
        otherwise :class:`FileAccessDenied` (a "not found") is raised.
        """
        bare, kind = split_annotation(name)
        base = self.dirs.by_type(kind) if kind else (default_dir or self.dirs.input)
        path = safe_join(base, bare)
        self.check_access(path)
        if self.remote is not None and not os.path.exists(path):
            self.fetch_remote(path)
        return path

    def data_kind(self, path: str) -> tuple[str, str] | None:
        """``(kind, relative path)`` of a path inside input, output or temp; None elsewhere."""
        for kind in ("input", "output", "temp"):
            rel = relative(getattr(self.dirs, kind), path)
            if rel is not None:
                return kind, rel
        return None

    def fetch_remote(self, path: str) -> bool:
        """Copy a missing input/output/temp file from :attr:`remote`; False when it has none (blocking)."""
        where = self.data_kind(path) if self.remote is not None else None
        if where is None:
            return False
        assert self.remote is not None
        return self.remote.fetch(where[0], where[1], path)

    def put_remote(self, path: str) -> None:
        """Store a finished input/output/temp file in :attr:`remote`, if there is one (blocking)."""
        where = self.data_kind(path) if self.remote is not None else None
        if where is not None and os.path.isfile(path):
            assert self.remote is not None
            self.remote.put(where[0], where[1], path)

    def claim_remote(self, path: str) -> bool:
        """Reserve a new file's name in :attr:`remote`; False when another machine has it (blocking)."""
        where = self.data_kind(path) if self.remote is not None else None
        if where is None:
            return True
        assert self.remote is not None
        return self.remote.put_new(where[0], where[1])

    def remote_names(self, folder: str, stem: str) -> list[str]:
        """Names in :attr:`remote` of files in ``folder`` (an input/output/temp path) starting with ``stem``."""
        where = self.data_kind(os.path.join(folder, stem)) if self.remote is not None else None
        if where is None:
            return []
        assert self.remote is not None
        start = len(where[1]) - len(stem)
        return [name[start:] for name in self.remote.names(where[0], where[1]) if "/" not in name[start:]]

    def input_names(self) -> list[str]:
        """Regular files directly in the input directory, with the remote store's (unsorted)."""
        base = self.dirs.input
        try:
            names = {f for f in os.listdir(base) if os.path.isfile(os.path.join(base, f))}
        except OSError:
            names = set()
        if self.remote is not None:
            names.update(self.remote.top_level("input"))
        return list(names)

    def private_kind(self, path: str) -> str | None:
        """``output`` or ``temp`` when ``path`` (resolved) lies in that directory, else None."""
        for kind in PRIVATE_KINDS:
            base = self.dirs.by_type(kind)
            if base is not None and is_within(path, base):
                return kind
        return None

    def check_access(self, path: str) -> None:
        """Refuse a path in output or temp the current prompt's owner may not open."""
        owner, check = current_owner(), self.access_check
        if owner is None or check is None:
            return
        kind = self.private_kind(path)
        if kind is not None and not check(owner, kind, os.path.realpath(path)):
            raise FileAccessDenied(f"file not found: {os.path.basename(path)}")

    def load_extra_config(self, yaml_path: str) -> None:
        """Apply one ``extra_model_paths.yaml`` (ComfyUI's format)."""
        import yaml

        with open(yaml_path, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
        yaml_dir = os.path.dirname(os.path.abspath(yaml_path))
        for section in config.values():
            if not isinstance(section, dict):
                continue
            base_path = section.get("base_path")
            if base_path:
                base_path = os.path.expandvars(os.path.expanduser(str(base_path)))
                if not os.path.isabs(base_path):
                    base_path = os.path.join(yaml_dir, base_path)
            is_default = bool(section.get("is_default", False))
            for key, value in section.items():
                if key in ("base_path", "is_default") or value is None:
                    continue
                for line in str(value).split("\n"):
                    if not line:
                        continue
                    full = os.path.join(base_path, line) if base_path else os.path.join(yaml_dir, line)
                    self.add(key, os.path.normpath(full), is_default=is_default)


def _walk(directory: str, mtimes: dict[str, float]) -> list[str]:
    out: list[str] = []
    for root, subdirs, files in os.walk(directory, followlinks=True):
        subdirs[:] = [d for d in subdirs if d != ".git"]
        try:
            mtimes[root] = os.path.getmtime(root)
        except OSError:
            continue
        rel_root = os.path.relpath(root, directory)
        for f in files:
            out.append(f if rel_root == "." else os.path.join(rel_root, f))
    return out


_CATEGORY_CACHE: dict[str, str | None] = {}


def content_category(filename: str) -> str | None:
    """``image``/``video``/``audio``/``model`` from the extension, or None."""
    ext = os.path.splitext(filename)[1].lower()
    if ext in _CATEGORY_CACHE:
        return _CATEGORY_CACHE[ext]
    if ext == ".webp":
        cat: str | None = "image"
    elif ext == ".fbx":
        cat = "model"
    else:
        mime, _ = mimetypes.guess_type("x" + ext, strict=False)
        cat = mime.split("/")[0] if mime else None
        if cat not in ("image", "video", "audio", "model"):
            cat = None
    _CATEGORY_CACHE[ext] = cat
    return cat


__all__ = ["DataDirs", "FolderRegistry", "Folder", "PT_EXTENSIONS", "UnsafePath", "content_category"]
