"""Path confinement: every file a request names must stay inside its base.

ComfyUI checks ``abspath`` prefixes only; here paths are also resolved with
``realpath`` so a symlink inside a data directory cannot lead outside it, and
names with NUL bytes, encoded separators or ``..`` components are refused.
"""

from __future__ import annotations

import os
import re

ANNOTATION = re.compile(r"^(?P<name>.*) \[(?P<type>input|output|temp)\]$")
#: Longest file or folder name file systems accept, in bytes (NAME_MAX), and longest path (PATH_MAX).
NAME_MAX = 255
PATH_MAX = 4096


class UnsafePath(ValueError):
    """A requested path would leave its base directory or is malformed."""


class NameTooLong(UnsafePath):
    """A file or folder name the file system would refuse (ENAMETOOLONG): a client error, not an escape."""


def is_within(path: str, base: str) -> bool:
    """True when ``path`` (after resolving symlinks) lies inside ``base``."""
    real_base = os.path.realpath(base)
    real = os.path.realpath(path)
    return real == real_base or real.startswith(real_base.rstrip(os.sep) + os.sep)


def check_component(name: str) -> str:
    """Validate one file name (no separators, NUL, or dot-dot)."""
    if not name or not name.strip():
        raise UnsafePath("empty file name")
    if "\x00" in name or "/" in name or "\\" in name:
        raise UnsafePath(f"invalid character in file name: {name!r}")
    if name in (".", ".."):
        raise UnsafePath(f"invalid file name: {name!r}")
    check_lengths(name)
    return name


def check_lengths(path: str) -> str:
    """Refuse names the file system would refuse with ENAMETOOLONG (a component over 255 bytes)."""
    encoded = path.encode("utf-8", "surrogatepass")
    if len(encoded) > PATH_MAX:
        raise NameTooLong(f"path longer than {PATH_MAX} bytes")
    if any(len(part) > NAME_MAX for part in encoded.replace(b"\\", b"/").split(b"/")):
        raise NameTooLong(f"file or folder name longer than {NAME_MAX} bytes")
    return path


def safe_join(base: str, *parts: str, follow_links: bool = False) -> str:
    """Join relative ``parts`` under ``base`` and refuse anything that escapes.

    Absolute parts, ``..`` that climbs out, NUL bytes and symlinks pointing
    outside raise :class:`UnsafePath`. ``a/../b`` inside the base is allowed.
    ``follow_links`` lets symlinks lead anywhere (model folders, which the
    operator owns); the name itself still cannot climb out.
    """
    for part in parts:
        if "\x00" in part:
            raise UnsafePath("NUL byte in path")
        if os.path.isabs(part) or part.startswith(("/", "\\")):
            raise UnsafePath(f"absolute path not allowed: {part!r}")
        check_lengths(part)
    joined = os.path.normpath(os.path.join(base, *parts)) if parts else os.path.normpath(base)
    base_abs = os.path.abspath(base)
    if not (joined == base_abs or joined.startswith(base_abs.rstrip(os.sep) + os.sep)):
        raise UnsafePath("path escapes its directory")
    if not follow_links and not is_within(joined, base_abs):
        raise UnsafePath("path resolves outside its directory")
    return joined


def split_annotation(name: str) -> tuple[str, str | None]:
    """``"a.png [output]"`` -> ``("a.png", "output")``; the space is required."""
    m = ANNOTATION.match(name)
    if m:
        return m.group("name"), m.group("type")
    return name, None
