"""Crash-safe file writes shared by userdata files, settings and users.json.

A reader must never see half a file, and a crash must never leave a truncated
one behind, so every write goes to a hidden temporary file in the target's
directory (same filesystem) and is renamed over the target in one step.
Temporary names start with ``.`` so listings, which hide dotfiles, never
show them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


def write_atomic(path: str, data: bytes, *, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically.

    With ``overwrite=False`` an existing target raises :class:`FileExistsError`
    and is left untouched; the check and the write are one step (a hard link),
    so two racing writers cannot both succeed.
    """
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path)[:64] + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        if overwrite:
            os.replace(tmp, path)
            tmp = ""
        else:
            link_no_clobber(tmp, path)
    finally:
        if tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def link_no_clobber(src: str, dest: str) -> None:
    """Give ``src``'s file the name ``dest`` unless ``dest`` exists (``FileExistsError``).

    Uses a hard link where the filesystem allows it, which makes the existence
    check atomic; otherwise falls back to check-then-rename.
    """
    try:
        os.link(src, dest)
    except FileExistsError:
        raise
    except OSError:
        if os.path.lexists(dest):
            raise FileExistsError(dest) from None
        os.rename(src, dest)
