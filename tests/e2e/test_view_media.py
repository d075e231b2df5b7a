"""``/view`` serving video and audio over real HTTP: media types, byte ranges, conditional requests.

Browsers play ``<video>``/``<audio>`` sources by fetching byte ranges (and seek
by asking for later ones), so the answers must be exact: ``206`` with the
requested bytes and ``Content-Range``, ``416`` for ranges past the end, and a
full ``200`` when ``If-Range`` no longer matches.
"""

from __future__ import annotations

import os

import pytest

from comfy_kernel.testing import ServerProcess
from tests.conftest import KERNEL_ONLY

MEDIA = {
    "clip.mp4": "video/mp4", "clip.webm": "video/webm", "clip.mkv": "video/x-matroska",
    "clip.mov": "video/quicktime", "clip.m4v": "video/mp4", "clip.avi": "video/x-msvideo",
    "sound.flac": "audio/flac", "sound.mp3": "audio/mpeg", "sound.opus": "audio/ogg", "sound.ogg": "audio/ogg",
    "sound.wav": "audio/wav", "sound.m4a": "audio/mp4", "sound.aac": "audio/aac",
}
BODY = os.urandom(100_000)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    base = tmp_path_factory.mktemp("view") / "base"
    (base / "output" / "video").mkdir(parents=True)
    for name in MEDIA:
        (base / "output" / "video" / name).write_bytes(BODY)
    with ServerProcess(base, *KERNEL_ONLY) as server:
        yield server


def _view(srv, name: str = "clip.mp4", method: str = "GET", **headers: str):
    return srv.client.request(method, "/view", params={"filename": name, "type": "output", "subfolder": "video"},
                              headers=headers)


@pytest.mark.parametrize("name,media_type", sorted(MEDIA.items()))
def test_media_types_and_inline_playback(srv, name, media_type):
    r = _view(srv, name)
    assert r.status_code == 200 and r.content == BODY
    assert r.headers["content-type"] == media_type
    assert r.headers["content-disposition"].startswith("inline")
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["x-content-type-options"] == "nosniff"


def test_byte_ranges(srv):
    first = _view(srv, Range="bytes=0-1023")
    assert first.status_code == 206 and first.content == BODY[:1024]
    assert first.headers["content-range"] == f"bytes 0-1023/{len(BODY)}"
    assert first.headers["content-length"] == "1024" and first.headers["content-type"] == "video/mp4"
    tail = _view(srv, Range="bytes=-500")
    assert tail.status_code == 206 and tail.content == BODY[-500:]
    assert tail.headers["content-range"] == f"bytes {len(BODY) - 500}-{len(BODY) - 1}/{len(BODY)}"
    rest = _view(srv, "sound.flac", Range="bytes=99000-")
    assert rest.status_code == 206 and rest.content == BODY[99000:] and rest.headers["content-type"] == "audio/flac"
    clamped = _view(srv, Range="bytes=99990-200000")
    assert clamped.status_code == 206 and clamped.content == BODY[99990:]
    assert clamped.headers["content-range"] == f"bytes 99990-{len(BODY) - 1}/{len(BODY)}"


def test_several_ranges_come_as_multipart(srv):
    r = _view(srv, Range="bytes=0-9, 50-59")
    assert r.status_code == 206
    assert r.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert BODY[:10] in r.content and BODY[50:60] in r.content
    assert b"Content-Range: bytes 50-59/100000" in r.content or b"content-range: bytes 50-59/100000" in r.content


def test_unsatisfiable_and_malformed_ranges(srv):
    r = _view(srv, Range=f"bytes={len(BODY)}-")
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(BODY)}"
    for bad in ("bytes=abc", "items=0-1", "bytes=5-1"):
        r = _view(srv, Range=bad)
        assert r.status_code in (200, 400, 416), bad
        if r.status_code == 200:
            assert r.content == BODY


def test_conditional_and_head_requests(srv):
    full = _view(srv)
    etag, modified = full.headers["etag"], full.headers["last-modified"]
    assert _view(srv, **{"If-None-Match": etag}).status_code == 304
    assert _view(srv, **{"If-None-Match": '"other"'}).status_code == 200
    assert _view(srv, **{"If-Modified-Since": modified}).status_code == 304
    assert _view(srv, **{"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"}).status_code == 200
    matching = _view(srv, Range="bytes=0-9", **{"If-Range": etag})
    assert matching.status_code == 206 and matching.content == BODY[:10]
    stale = _view(srv, Range="bytes=0-9", **{"If-Range": '"not-the-etag"'})
    assert stale.status_code == 200 and stale.content == BODY
    by_date = _view(srv, Range="bytes=0-9", **{"If-Range": modified})
    assert by_date.status_code == 206
    head = _view(srv, method="HEAD")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(BODY)) and head.headers["content-type"] == "video/mp4"
    ranged_head = _view(srv, method="HEAD", Range="bytes=0-9")
    assert ranged_head.status_code == 206 and ranged_head.headers["content-length"] == "10"
