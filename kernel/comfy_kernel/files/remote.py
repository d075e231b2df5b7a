"""Input, output and temp files that every machine of a cluster sees, behind the local folders.

A cluster whose machines share no directory still has to let a client upload
an image through one front-end, run the prompt on any worker, and view the
result through another front-end. A plugin (the cluster plugin's object store)
sets :attr:`FolderRegistry.remote <comfy_kernel.files.folders.FolderRegistry.remote>`
to an object with this interface; the local input, output and temp
directories then act as a cache of the remote store:

* a file a node or ``/view`` names that is missing locally is fetched first
  (:meth:`RemoteFiles.fetch`);
* uploads claim their name in the store, so two front-ends never hand out one
  name for different bytes (:meth:`RemoteFiles.put_new`);
* savers claim each new output name in the store (:meth:`RemoteFiles.put_new`
  with no bytes), so workers with separate output directories never overwrite
  each other's files, and the finished files are put before the node's
  ``executed`` event leaves the worker (:meth:`RemoteFiles.put`);
* input listings (LoadImage's choices) include the store's files.

Every method is blocking (it talks to the network): call it on a thread, as
the file routes and node code already run.
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable


@runtime_checkable
class RemoteFiles(Protocol):
    """Files of kind ``input``, ``output`` or ``temp`` by their path relative to that directory (``/``-separated)."""

    #: Increases whenever :meth:`top_level` returns a different listing (``/object_info`` re-lists its combos).
    version: int

    def fetch(self, kind: str, rel: str, dest: str) -> bool:
        """Copy the stored file to ``dest``; False when the store has no such file."""

    def put(self, kind: str, rel: str, src: str) -> None:
        """Store the local file ``src`` (replacing what was there)."""

    def put_new(self, kind: str, rel: str, data: bytes = b"") -> bool:
        """Store ``data`` only if nothing has that name yet (atomically); False when the name is taken."""

    def holds(self, kind: str, rel: str, data: bytes) -> bool:
        """True when the stored file of that name has exactly these bytes."""

    def names(self, kind: str, prefix: str = "") -> list[str]:
        """Every stored path of ``kind`` that starts with ``prefix``."""

    def top_level(self, kind: str) -> list[str]:
        """The file names directly in ``kind``'s root (cached for a moment: listings are network calls)."""


def relative(base: str, path: str) -> str | None:
    """``path`` relative to ``base`` with ``/`` separators, or None when it lies outside."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(base))
    if rel == "." or rel.startswith(".." + os.sep) or rel == "..":
        return None
    return rel.replace(os.sep, "/")


__all__ = ["RemoteFiles", "relative"]
