"""File transfer: ``/view``, ``/upload/image``, ``/upload/mask``.

Hardened beyond ComfyUI: symlinks are resolved before serving, upload names
with separators are refused, files are created exclusively (concurrent
uploads never clobber each other), every file response carries ``nosniff``
and active content types are served as attachments.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import hashlib
import io
import mimetypes
import os
from urllib.parse import quote

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from ..files.folders import FolderRegistry
from ..files.paths import NameTooLong, UnsafePath, check_component, is_within, safe_join, split_annotation
from ..http import HTTPError, json_response
from ..kernel import Kernel
from ..routing import RouteTable

INLINE_MAJOR = ("image/", "audio/", "video/")
INLINE_TYPES = {"text/plain", "application/json", "application/octet-stream", "application/pdf"}
FORCED_BINARY = {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css",
                 "application/javascript", "image/svg+xml", "text/xml", "application/xml"}
MAX_PREVIEW_PIXELS = 100_000_000
mimetypes.add_type("image/webp", ".webp")
#: Video and audio types the browser players need, fixed here because hosts without a system
#: mime.types table would otherwise serve some of them as attachments.
MEDIA_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska",
               ".mov": "video/quicktime", ".avi": "video/x-msvideo", ".flac": "audio/flac", ".mp3": "audio/mpeg",
               ".opus": "audio/ogg", ".ogg": "audio/ogg", ".oga": "audio/ogg", ".wav": "audio/wav",
               ".m4a": "audio/mp4", ".aac": "audio/aac"}
for _ext, _type in MEDIA_TYPES.items():
    mimetypes.add_type(_type, _ext)


def content_disposition(filename: str, attachment: bool) -> str:
    kind = "attachment" if attachment else "inline"
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


def file_headers(filename: str, media_type: str) -> tuple[str, dict[str, str]]:
    """Safe type and headers for a user-writable file."""
    attachment = False
    if media_type in FORCED_BINARY:
        media_type, attachment = "application/octet-stream", True
    elif not (media_type.startswith(INLINE_MAJOR) or media_type in INLINE_TYPES):
        attachment = True
    return media_type, {"Content-Disposition": content_disposition(filename, attachment),
                        "X-Content-Type-Options": "nosniff"}


def not_modified(request: Request, etag: str, last_modified: str) -> bool:
    """True when the client's cached copy is current (If-None-Match, else If-Modified-Since)."""
    match = request.headers.get("if-none-match")
    if match is not None:
        tags = {tag.strip().removeprefix("W/") for tag in match.split(",")}
        return "*" in tags or etag.removeprefix("W/") in tags
    since = request.headers.get("if-modified-since")
    if since:
        try:
            return email.utils.parsedate_to_datetime(last_modified) <= email.utils.parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
    return False


def resolve_view_path(kernel: Kernel, filename: str, kind: str, subfolder: str | None,
                      must_exist: bool = True) -> str:
    bare, annotated = split_annotation(filename)
    if bare.startswith("/") or ".." in bare or "\x00" in bare:
        raise HTTPError(400, "Invalid filename")
    base = kernel.dirs.by_type(annotated or kind)
    if base is None:
        raise HTTPError(400, f"Invalid type: {kind}")
    directory = base
    if subfolder is not None:
        try:
            directory = safe_join(base, subfolder)
        except NameTooLong as exc:
            raise HTTPError(400, f"Invalid subfolder: {exc}") from None
        except UnsafePath:
            raise HTTPError(403, "Subfolder is outside its directory") from None
    path = os.path.join(directory, os.path.basename(bare))
    if not is_within(path, base):
        raise HTTPError(403, "File resolves outside its directory")
    if must_exist and not os.path.isfile(path):
        raise HTTPError(404, "File not found")
    return path


async def find_view_path(kernel: Kernel, filename: str, kind: str, subfolder: str | None) -> str:
    """:func:`resolve_view_path`, fetching the file from the remote store first when it is missing here."""
    path = resolve_view_path(kernel, filename, kind, subfolder, must_exist=False)
    if not os.path.isfile(path) and kernel.folders.remote is not None:
        await asyncio.to_thread(kernel.folders.fetch_remote, path)
    if not os.path.isfile(path):
        raise HTTPError(404, "File not found")
    return path


def _preview(path: str, fmt: str, quality: int, channel: str | None) -> tuple[bytes, str]:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PREVIEW_PIXELS
    with Image.open(path) as img:
        img.seek(0)
        if fmt == "jpeg" or channel == "rgb":
            img = img.convert("RGB")
        out = io.BytesIO()
        if fmt == "jpeg":
            img.save(out, "JPEG", quality=quality)
            return out.getvalue(), "image/jpeg"
        img.save(out, "WEBP", quality=quality)
        return out.getvalue(), "image/webp"


def _channel(path: str, channel: str) -> bytes:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PREVIEW_PIXELS
    with Image.open(path) as img:
        img.seek(0)
        out = io.BytesIO()
        if channel == "rgb":
            img.convert("RGB").save(out, "PNG")
        else:
            if img.mode == "RGBA":
                alpha = img.getchannel("A")
            else:
                alpha = Image.new("L", img.size, 255)
            result = Image.new("RGBA", img.size, (0, 0, 0, 0))
            result.putalpha(alpha)
            result.save(out, "PNG")
        return out.getvalue()


def _file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _split_name(name: str) -> tuple[str, str]:
    stem, ext = os.path.splitext(name)
    if not stem and ext:  # ".hidden"
        return ext, ""
    return stem, ext


def write_upload(directory: str, filename: str, data: bytes, overwrite: bool) -> str:
    """Write ``data`` as ``filename`` in ``directory`` with ComfyUI's dedup/rename rules.

    Returns the final name. Creation is exclusive, so two concurrent uploads
    of different bytes under one name end up as ``a.png`` and ``a (1).png``.
    """
    os.makedirs(directory, exist_ok=True)
    if overwrite:
        path = os.path.join(directory, filename)
        tmp = path + f".part-{os.getpid()}-{id(data)}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return filename
    digest = hashlib.sha256(data).hexdigest()
    stem, ext = _split_name(filename)
    candidate, i = filename, 0
    while True:
        path = os.path.join(directory, candidate)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if os.path.isfile(path) and _file_hash(path) == digest:
                return candidate
            i += 1
            candidate = f"{stem} ({i}){ext}"
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return candidate


async def _upload_target(kernel: Kernel, form) -> tuple[UploadFile, str, str, str, bool]:
    image = form.get("image")
    if image is None:
        raise HTTPError(400, "Missing 'image' file part")
    if not isinstance(image, UploadFile):
        raise HTTPError(400, "'image' must be a file part")
    filename = image.filename or ""
    try:
        check_component(filename)
    except UnsafePath as exc:
        raise HTTPError(400, f"Invalid filename: {exc}") from None
    kind = form.get("type") or "input"
    if not isinstance(kind, str) or kind not in ("input", "temp", "output"):
        raise HTTPError(400, f"Invalid type: {kind}")
    subfolder = form.get("subfolder") or ""
    if not isinstance(subfolder, str):
        raise HTTPError(400, "Invalid subfolder")
    base = kernel.dirs.by_type(kind)
    assert base is not None
    try:
        directory = safe_join(base, os.path.normpath(subfolder)) if subfolder else base
        safe_join(directory, filename)
    except UnsafePath as exc:
        raise HTTPError(400, f"Invalid upload path: {exc}") from None
    overwrite = form.get("overwrite") in ("true", "1")
    return image, directory, subfolder, kind, overwrite


def register(routes: RouteTable, kernel: Kernel) -> None:
    @routes.get("/view")
    async def view(request: Request) -> Response:
        q = request.query_params
        if "filename" not in q:
            raise HTTPError(404, "filename is required")
        filename = q["filename"]
        if not filename:
            raise HTTPError(400, "filename is empty")
        path = await find_view_path(kernel, filename, q.get("type", "output"), q.get("subfolder"))
        name = os.path.basename(path)
        channel = q.get("channel")
        preview = q.get("preview")
        if preview:
            parts = preview.split(";")
            fmt = parts[0] if parts[0] in ("webp", "jpeg") else "webp"
            if channel and "a" in channel:
                fmt = "webp"
            quality = int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 90
            try:
                data, media = await asyncio.to_thread(_preview, path, fmt, min(quality, 100), channel)
            except Exception:
                raise HTTPError(415, "File is not an image that can be previewed") from None
            return Response(data, media_type=media, headers={"Content-Disposition": content_disposition(name, False),
                                                             "X-Content-Type-Options": "nosniff"})
        if channel in ("rgb", "a"):
            try:
                data = await asyncio.to_thread(_channel, path, channel)
            except Exception:
                raise HTTPError(415, "File is not an image") from None
            return Response(data, media_type="image/png",
                            headers={"Content-Disposition": content_disposition(name, False),
                                     "X-Content-Type-Options": "nosniff"})
        guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
        media, headers = file_headers(name, guessed)
        # Starlette answers Range (206, multipart for several, 416 past the end) and If-Range itself.
        response = FileResponse(path, media_type=media, headers=headers, content_disposition_type="inline",
                                filename=None, stat_result=os.stat(path))
        if not_modified(request, response.headers["etag"], response.headers["last-modified"]):
            kept = {k: v for k, v in response.headers.items() if k in ("etag", "last-modified", "x-content-type-options")}
            return Response(status_code=304, headers=kept)
        return response

    @routes.post("/upload/image")
    async def upload_image(request: Request) -> Response:
        form = await _form(request)
        image, directory, subfolder, kind, overwrite = await _upload_target(kernel, form)
        data = await image.read()
        name = await _write(kernel, directory, image.filename, data, overwrite)
        return json_response({"name": name, "subfolder": subfolder, "type": kind})

    @routes.post("/upload/mask")
    async def upload_mask(request: Request) -> Response:
        import orjson

        form = await _form(request)
        image, directory, subfolder, kind, overwrite = await _upload_target(kernel, form)
        raw_ref = form.get("original_ref")
        if not isinstance(raw_ref, str):
            raise HTTPError(400, "original_ref (a JSON string) is required")
        try:
            ref = orjson.loads(raw_ref)
        except orjson.JSONDecodeError:
            raise HTTPError(400, "original_ref is not valid JSON") from None
        if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str) or not ref["filename"]:
            raise HTTPError(400, "original_ref must be an object with a filename")
        sub = ref.get("subfolder") or None
        original = await find_view_path(kernel, ref["filename"], str(ref.get("type") or "output"),
                                        sub if isinstance(sub, str) else None)
        mask_bytes = await image.read()

        def composite() -> bytes:
            from PIL import Image, PngImagePlugin

            with Image.open(original) as orig:
                info = PngImagePlugin.PngInfo()
                for key, value in (getattr(orig, "text", {}) or {}).items():
                    info.add_text(key, value)
                rgba = orig.convert("RGBA")
            with Image.open(io.BytesIO(mask_bytes)) as mask:
                alpha = mask.convert("RGBA").getchannel("A")
            if alpha.size != rgba.size:
                raise HTTPError(400, f"Mask size {alpha.size} differs from image size {rgba.size}")
            rgba.putalpha(alpha)
            out = io.BytesIO()
            rgba.save(out, "PNG", pnginfo=info, compress_level=4)
            return out.getvalue()

        try:
            data = await asyncio.to_thread(composite)
        except HTTPError:
            raise
        except Exception:
            raise HTTPError(400, "Mask or original image could not be read") from None
        name = await _write(kernel, directory, image.filename, data, overwrite)
        return json_response({"name": name, "subfolder": subfolder, "type": kind})


async def _write(kernel: Kernel, directory: str, filename: str, data: bytes, overwrite: bool) -> str:
    """:func:`write_upload` (or :func:`write_shared_upload`) on a thread; a name the file system refuses
    is the client's error (400)."""
    remote = kernel.folders.remote
    try:
        if remote is None:
            return await asyncio.to_thread(write_upload, directory, filename, data, overwrite)
        return await asyncio.to_thread(write_shared_upload, kernel.folders, directory, filename, data, overwrite)
    except OSError as exc:
        if exc.errno in (errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ):
            raise HTTPError(400, f"Invalid upload name: {exc.strerror}") from None
        raise


def write_shared_upload(folders: FolderRegistry, directory: str, filename: str, data: bytes, overwrite: bool) -> str:
    """:func:`write_upload`'s naming rules with the remote store as the judge of which names are taken.

    The store creates a name atomically (``put_new``), so uploads of different
    bytes under one name through two front-ends end up as ``a.png`` and
    ``a (1).png``, as they do through one; the same bytes again keep the name.
    The local directory gets a copy (the cache the nodes read).
    """
    remote = folders.remote
    assert remote is not None
    where = folders.data_kind(os.path.join(directory, filename))
    if where is None:
        return write_upload(directory, filename, data, overwrite)
    kind, rel = where
    folder = rel.rpartition("/")[0]
    stem, ext = _split_name(filename)
    candidate, i = filename, 0
    while True:
        key = f"{folder}/{candidate}" if folder else candidate
        if overwrite:
            write_upload(directory, candidate, data, True)
            remote.put(kind, key, os.path.join(directory, candidate))
            return candidate
        if remote.put_new(kind, key, data) or remote.holds(kind, key, data):
            return write_upload(directory, candidate, data, True)
        i += 1
        candidate = f"{stem} ({i}){ext}"


async def _form(request: Request):
    ctype = request.headers.get("content-type", "")
    if "multipart/form-data" not in ctype and "application/x-www-form-urlencoded" not in ctype:
        raise HTTPError(400, "Expected a multipart/form-data body")
    try:
        return await request.form(max_part_size=1 << 40)
    except HTTPError:
        raise
    except Exception as exc:
        if type(exc).__name__ == "BodyTooLarge":
            raise
        raise HTTPError(400, f"Malformed multipart body: {exc}") from None
