"""The asset library: store + content files + the operations several entry points share.

Uploads, URL downloads, prompt outputs and imports all end in "these bytes
(already hashed in a temp file) become an asset of this owner", and all
content deletion goes through reference counting; both live here so every
entry point gets the same dedup and the same safety.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from typing import TYPE_CHECKING, Any

from .content import ContentStore
from .store import PUBLIC, AssetStore

if TYPE_CHECKING:  # pragma: no cover
    from comfy_kernel.kernel import Kernel


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


class AssetLibrary:
    def __init__(self, kernel: Kernel):
        self.kernel = kernel
        self.root = os.path.join(kernel.dirs.user, "assets")
        self.content = ContentStore(self.root)
        self.exports_dir = os.path.join(self.root, "exports")
        os.makedirs(self.exports_dir, exist_ok=True)
        self.store = AssetStore(kernel.database)
        self.background: set[asyncio.Task] = set()

    async def open(self) -> None:
        self.content.clean_temp()
        await self.store.open()

    async def close(self) -> None:
        for task in list(self.background):
            task.cancel()
        if self.background:
            await asyncio.gather(*self.background, return_exceptions=True)
        await self.store.close()

    def spawn(self, coro: Any) -> asyncio.Task:
        """Run ``coro`` in the background, keeping a reference so it is not collected."""
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def create_from_temp(self, *, owner: str, tmp: str, content_hash: str, size: int, name: str,
                               mime_type: str | None, tags: list[str], user_metadata: dict[str, Any],
                               preview_id: str | None = None, job_id: str | None = None,
                               source: str | None = None, asset_id: str | None = None
                               ) -> tuple[str, bool]:
        """Store hashed temp bytes (once per hash) and add an asset; return ``(id, created_new)``.

        The blob is moved into place first: if recording the asset then fails,
        the blob stays without a content row, which the next upload of the same
        bytes simply adopts.
        """
        store = self.store
        async with store.lock:
            try:
                await asyncio.to_thread(self.content.commit, tmp, content_hash)
            except BaseException:
                self.content.discard(tmp)
                raise
            return await store.insert_asset(owner=owner, name=name, content_hash=content_hash, size=size,
                                            mime_type=mime_type, tags=tags, user_metadata=user_metadata,
                                            preview_id=preview_id, job_id=job_id, source=source,
                                            asset_id=asset_id, record_content=True, blob=True)

    async def create_reference(self, *, owner: str, content_hash: str, name: str, mime_type: str | None,
                               tags: list[str], user_metadata: dict[str, Any], preview_id: str | None = None,
                               job_id: str | None = None, source: str | None = None) -> str | None:
        """A new asset for content the store already has; None when the content is unknown."""
        async with self.store.lock:
            content = await self.store.content(content_hash)
            if content is None:
                return None
            asset_id, _ = await self.store.insert_asset(
                owner=owner, name=name, content_hash=content_hash, size=content["size"],
                mime_type=mime_type or content["mime_type"], tags=tags, user_metadata=user_metadata,
                preview_id=preview_id, job_id=job_id, source=source)
            return asset_id

    async def delete(self, record: dict[str, Any], delete_content: bool) -> bool:
        """Delete an asset; with ``delete_content`` also its blob, if nothing else refers to it."""
        async with self.store.lock:
            removed = await self.store.delete(record["id"], record["hash"] if delete_content else None)
            if removed:
                await asyncio.to_thread(self.content.remove, record["hash"])
        return removed

    async def file_for(self, record: dict[str, Any]) -> str | None:
        """Where the bytes of ``record`` can be read: its blob, its own file, or a twin's file."""
        blob = self.content.blob_path(record["hash"])
        if os.path.isfile(blob):
            return blob
        candidates = ([record["file_path"]] if record.get("file_path") else [])
        candidates += await self.store.any_file_for_hash(record["hash"])
        for path in candidates:
            if path and os.path.isfile(path):
                return path
        return None

    def to_json(self, record: dict[str, Any], base_url: str = "") -> dict[str, Any]:
        """The Asset object of both seeds (union of their fields; absent values omitted).

        ``base_url`` (``scheme://host`` the request came to) makes ``preview_url``
        the absolute URI both seeds type it as.
        """
        import orjson

        meta = record.get("user_metadata")
        user_metadata = orjson.loads(meta) if isinstance(meta, str) else (meta or {})
        out: dict[str, Any] = {
            "id": record["id"],
            "name": record["name"],
            "display_name": record["name"],
            "asset_hash": record["hash"],
            "hash": record["hash"],
            "size": record["size"],
            "mime_type": record.get("mime_type") or "application/octet-stream",
            "tags": record.get("tags", []),
            "user_metadata": user_metadata,
            "metadata": {k: v for k, v in (("source", record.get("source")),) if v},
            "created_at": iso(record["created_at"]),
            "updated_at": iso(record["updated_at"]),
            "last_access_time": iso(record["last_access"]),
            "is_immutable": record["owner"] == PUBLIC,
        }
        if record.get("preview_id"):
            out["preview_id"] = record["preview_id"]
            out["preview_url"] = f"{base_url}/api/assets/{record['preview_id']}/content"
        elif (record.get("mime_type") or "").startswith("image/"):
            out["preview_url"] = f"{base_url}/api/assets/{record['id']}/content"
        if record.get("job_id"):
            out["job_id"] = record["job_id"]
            out["prompt_id"] = record["job_id"]
        return out
