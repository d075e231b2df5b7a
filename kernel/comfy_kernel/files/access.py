"""Whose files a node may open: the owner of the prompt being validated or run.

With an auth plugin, output and temp files belong to whoever produced them and
``/view`` serves them to their owners only. A node that opens a file by name
(``LoadImage`` with ``"x.png [output]"``, a pack calling
``folder_paths.get_annotated_filepath``) must follow the same rule, or it would
hand one user's images to another. So the executor records here the owner of
the prompt it validates or runs (a context variable: it follows the prompt into
its tasks and the threads its nodes start), and
:meth:`FolderRegistry.annotated_path` asks the ``ck_file_access`` hook before it
returns a path inside output or temp. Without an owner (single-user servers,
nodes called directly) nothing is checked.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from .paths import UnsafePath

_owner: contextvars.ContextVar[str | None] = contextvars.ContextVar("comfy_kernel_file_owner", default=None)

#: Kinds of directory whose files belong to someone (``input`` is shared, as in ComfyUI).
PRIVATE_KINDS = ("output", "temp")


class FileAccessDenied(UnsafePath, FileNotFoundError):
    """The prompt's owner may not open this file; reads like a missing file, so existence does not leak."""


def current_owner() -> str | None:
    """The identity key files are opened for in this context, or None."""
    return _owner.get()


@contextlib.contextmanager
def opening_files_for(owner: str | None) -> Iterator[None]:
    """``with opening_files_for(key):`` scopes every annotated path resolved inside to ``key``."""
    token = _owner.set(owner)
    try:
        yield
    finally:
        _owner.reset(token)


def set_owner(owner: str | None) -> contextvars.Token:
    """Set the owner for the rest of this context (threads that own their context); see :func:`reset_owner`."""
    return _owner.set(owner)


def reset_owner(token: contextvars.Token) -> None:
    _owner.reset(token)
