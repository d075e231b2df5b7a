"""Parsing of client input into clean values, or a clear 4xx error.

Errors carry both error shapes in one body: the cloud spec's
``{"code", "message"}`` and the kernel's ``{"error": {...}}``, so a client
written against either finds the fields it expects.
"""

from __future__ import annotations

import os
import re
import uuid
from typing import Any

import orjson

from comfy_kernel.http import HTTPError, JSONTooDeep, check_depth

MAX_TAGS = 64
MAX_TAG_LEN = 128
MAX_NAME_LEN = 512
MAX_METADATA_BYTES = 64 * 1024
MAX_FILTER_BYTES = 8 * 1024
MAX_FILTER_KEYS = 32
MIME_RE = re.compile(r"^[\w.+-]{1,127}/[\w.+-]{1,127}$")


def fail(status: int, code: str, message: str) -> HTTPError:
    """An HTTPError whose body satisfies both seed specs' error schemas."""
    body = {"code": code, "message": message, "error": {"type": code, "message": message, "details": ""}}
    return HTTPError(status, message, type=code, body=body)


def parse_bool(value: str | None, name: str, default: bool) -> bool:
    if value is None or value == "":
        return default
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise fail(400, "INVALID_QUERY", f"{name} must be a boolean")


def parse_int(value: str | None, name: str, default: int, lo: int, hi: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise fail(400, "INVALID_QUERY", f"{name} must be an integer") from None
    if not lo <= number <= hi:
        raise fail(400, "INVALID_QUERY", f"{name} must be between {lo} and {hi}")
    return number


def parse_uuid(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise fail(400, "INVALID_BODY", f"{name} must be a UUID string")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise fail(400, "INVALID_BODY", f"{name} must be a UUID") from None


def clean_name(value: Any, field: str = "name") -> str:
    """A display name: the last path component, no control characters.

    Names never touch the filesystem (blobs are named by hash), but they do
    become ZIP entry names on export and download file names, so separators
    and ``..`` are stripped here once.
    """
    if not isinstance(value, str):
        raise fail(400, "INVALID_BODY", f"{field} must be a string")
    name = value.replace("\\", "/").split("/")[-1].strip()
    name = "".join(ch for ch in name if ch >= " " and ch != "\x7f")
    if name in ("", ".", ".."):
        raise fail(400, "INVALID_BODY", f"{field} must be a non-empty file name")
    if len(name) > MAX_NAME_LEN:
        raise fail(400, "INVALID_BODY", f"{field} is longer than {MAX_NAME_LEN} characters")
    return name


def clean_tags(values: Any, field: str = "tags") -> list[str]:
    """Normalise tags (trimmed, lower-case, de-duplicated, order kept)."""
    if values is None:
        return []
    if not isinstance(values, list):
        raise fail(400, "INVALID_BODY", f"{field} must be a list of strings")
    out: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise fail(400, "INVALID_BODY", f"{field} must be a list of strings")
        tag = value.strip().lower()
        if not tag:
            continue
        if len(tag) > MAX_TAG_LEN or any(ch < " " for ch in tag):
            raise fail(400, "INVALID_BODY", f"invalid tag {value[:40]!r}")
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise fail(400, "INVALID_BODY", f"at most {MAX_TAGS} tags are allowed")
    return out


def split_tag_params(values: list[str]) -> list[str]:
    """Query tags arrive repeated (``?t=a&t=b``), comma-separated, or both."""
    return clean_tags([part for value in values for part in value.split(",")], "tags")


def form_tags(values: list[str]) -> list[str]:
    """Multipart ``tags``: a JSON array, a comma-separated string, or repeated fields."""
    tags: list[str] = []
    for value in values:
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = orjson.loads(text)
            except orjson.JSONDecodeError:
                raise fail(400, "INVALID_BODY", "tags is not a valid JSON array") from None
            tags.extend(clean_tags(parsed))
        else:
            tags.extend(text.split(","))
    return clean_tags(tags)


def clean_metadata(value: Any, field: str = "user_metadata") -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        if len(value) > MAX_METADATA_BYTES:
            raise fail(413, "PAYLOAD_TOO_LARGE", f"{field} is larger than {MAX_METADATA_BYTES} bytes")
        if not value.strip():
            return {}
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise fail(400, "INVALID_BODY", f"{field} is not valid JSON") from None
    if not isinstance(value, dict):
        raise fail(400, "INVALID_BODY", f"{field} must be a JSON object")
    try:
        check_depth(value)
    except JSONTooDeep as exc:
        raise fail(400, "INVALID_BODY", f"{field}: {exc}") from None
    if len(orjson.dumps(value)) > MAX_METADATA_BYTES:
        raise fail(413, "PAYLOAD_TOO_LARGE", f"{field} is larger than {MAX_METADATA_BYTES} bytes")
    return value


def metadata_filter(text: str | None) -> dict[str, Any]:
    """``metadata_filter``: a JSON object of key -> scalar or list of scalars (any-of)."""
    if not text:
        return {}
    if len(text) > MAX_FILTER_BYTES:
        raise fail(400, "INVALID_QUERY", f"metadata_filter is longer than {MAX_FILTER_BYTES} bytes")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise fail(400, "INVALID_QUERY", "metadata_filter is not valid JSON") from None
    if not isinstance(value, dict):
        raise fail(400, "INVALID_QUERY", "metadata_filter must be a JSON object")
    if len(value) > MAX_FILTER_KEYS:
        raise fail(400, "INVALID_QUERY", f"metadata_filter may have at most {MAX_FILTER_KEYS} keys")
    for key, wanted in value.items():
        if not key or len(key) > 128 or any(ch in key for ch in '"\\') or any(ch < " " for ch in key):
            raise fail(400, "INVALID_QUERY", f"invalid metadata_filter key {key[:40]!r}")
        options = wanted if isinstance(wanted, list) else [wanted]
        if len(options) > 64 or not all(v is None or isinstance(v, (bool, int, float, str)) for v in options):
            raise fail(400, "INVALID_QUERY", f"metadata_filter value for {key[:40]!r} must be scalars")
        if any(isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 2**63 for v in options):
            raise fail(400, "INVALID_QUERY", "metadata_filter number out of range")
    return value


def clean_mime(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not MIME_RE.match(value.strip()):
        raise fail(400, "INVALID_BODY", "mime_type must look like 'type/subtype'")
    return value.strip().lower()


def guess_mime(name: str) -> str:
    import mimetypes

    ext = os.path.splitext(name)[1].lower()
    extra = {".safetensors": "application/octet-stream", ".sft": "application/octet-stream",
             ".ckpt": "application/octet-stream", ".webp": "image/webp", ".json": "application/json"}
    return extra.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"
