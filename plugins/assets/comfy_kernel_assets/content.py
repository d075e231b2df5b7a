"""Content files, stored once per blake3 hash.

Bytes are hashed while they are written to a private temporary file, and the
file is then moved into place with :func:`os.replace`, so a reader never sees a
half-written blob and two writers of the same bytes end with one file. Blob
names derive only from the hash, never from anything a client sent, which is
what keeps uploaded "file names" from reaching the filesystem.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from typing import BinaryIO

import blake3

CHUNK = 1024 * 1024
HASH_RE = re.compile(r"^blake3:[0-9a-f]{64}$")
ANY_HASH_RE = re.compile(r"^(blake3|sha256):[0-9a-f]{64}$")


class BadHash(ValueError):
    """A hash string that is not ``blake3:<64 lowercase hex>``."""


def normalize_hash(value: str, *, allow_sha256: bool = False) -> str:
    """Lower-case and validate a hash string; raise :class:`BadHash` when malformed.

    ``sha256:`` is accepted only where the cloud spec allows it (look-ups);
    such a hash never matches anything here, since content is keyed by blake3.
    """
    if not isinstance(value, str):
        raise BadHash("hash must be a string")
    text = value.strip().lower()
    pattern = ANY_HASH_RE if allow_sha256 else HASH_RE
    if not pattern.match(text):
        raise BadHash("hash must look like 'blake3:<64 hex digits>'")
    return text


def hash_file(path: str, *, max_threads: int = 1) -> tuple[str, int]:
    """Hash a file on disk with blake3; return ``(hash, size)``.

    Runs in worker threads (the blake3 extension releases the GIL while it
    hashes), so seeding can use a pool without blocking the event loop.
    """
    hasher = blake3.blake3(max_threads=max_threads)
    size = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            hasher.update(chunk)
            size += len(chunk)
    return "blake3:" + hasher.hexdigest(), size


class ContentStore:
    """Blobs under ``root/blobs/<2 hex>/<64 hex>``, temp files under ``root/tmp``."""

    def __init__(self, root: str):
        self.root = root
        self.blobs = os.path.join(root, "blobs")
        self.tmp = os.path.join(root, "tmp")
        os.makedirs(self.blobs, exist_ok=True)
        os.makedirs(self.tmp, exist_ok=True)

    def blob_path(self, content_hash: str) -> str:
        hexdigest = normalize_hash(content_hash).split(":", 1)[1]
        return os.path.join(self.blobs, hexdigest[:2], hexdigest)

    def has_blob(self, content_hash: str) -> bool:
        return os.path.isfile(self.blob_path(content_hash))

    def write_temp(self, source: BinaryIO | Iterable[bytes], limit: int | float | None = None) -> tuple[str, str, int]:
        """Copy ``source`` into a temp file while hashing; return ``(tmp path, hash, size)``.

        ``limit`` caps the size; going over it removes the temp file and raises
        :class:`OverflowError`. Blocking: call through ``asyncio.to_thread``.
        """
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="up-")
        hasher = blake3.blake3()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                chunks = iter(lambda: source.read(CHUNK), b"") if hasattr(source, "read") else source
                for chunk in chunks:
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise OverflowError("content is larger than the upload limit")
                    hasher.update(chunk)
                    out.write(chunk)
        except BaseException:
            self.discard(tmp)
            raise
        return tmp, "blake3:" + hasher.hexdigest(), size

    def commit(self, tmp: str, content_hash: str) -> bool:
        """Move a temp file to its blob path; False (and the temp file removed) if one exists."""
        final = self.blob_path(content_hash)
        if os.path.isfile(final):
            self.discard(tmp)
            return False
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.replace(tmp, final)
        return True

    def remove(self, content_hash: str) -> bool:
        try:
            os.unlink(self.blob_path(content_hash))
            return True
        except FileNotFoundError:
            return False

    @staticmethod
    def discard(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def clean_temp(self) -> None:
        """Remove temp files a crash left behind (called at start-up)."""
        for name in os.listdir(self.tmp):
            self.discard(os.path.join(self.tmp, name))
