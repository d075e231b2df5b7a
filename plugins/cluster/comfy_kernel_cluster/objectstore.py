"""An S3-compatible bucket as the cluster's input, output and temp files (``--object-store s3://bucket/prefix``).

Machines that share no directory keep their local folders as a cache and the
bucket as the truth (see :mod:`comfy_kernel.files.remote` for what the kernel
asks of it). Objects are named ``<prefix>/<kind>/<path>``. The client speaks
the S3 REST protocol with Signature Version 4 over the standard library's
HTTP client: five operations (GET, PUT, conditional PUT, HEAD, ListObjectsV2)
do not justify an SDK. Any S3-compatible service works: AWS S3, MinIO, Ceph,
Garage, R2; ``--object-store-endpoint`` names one that is not AWS.

Credentials come from the environment as for every S3 tool:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``
(optional) and ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import logging
import os
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

log = logging.getLogger(__name__)

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
#: Bytes read or written at a time when a file is sent or received.
BLOCK = 1 << 20
#: How many stored files a process remembers, so that it does not send an unchanged one again.
PUT_MEMORY = 10_000
#: Metadata of the empty object that reserves an output name until the file itself is put.
CLAIM_HEADER = "x-amz-meta-ck-claim"


class ObjectStoreError(RuntimeError):
    """The store answered with an error (its code and message), or could not be reached."""

    def __init__(self, status: int, message: str):
        super().__init__(f"object store: HTTP {status}: {message}")
        self.status = status


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def _uri_encode(text: str, slash: bool = True) -> str:
    return quote(text, safe="/-_.~" if slash else "-_.~")


@dataclass
class Credentials:
    access_key: str
    secret_key: str
    session_token: str | None = None

    @classmethod
    def from_environment(cls) -> Credentials:
        access, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not access or not secret:
            raise SystemExit("--object-store needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment")
        return cls(access, secret, os.environ.get("AWS_SESSION_TOKEN") or None)


def sign(method: str, host: str, path: str, query: dict[str, str], headers: dict[str, str], payload_hash: str,
         credentials: Credentials, region: str, when: datetime.datetime, service: str = "s3") -> dict[str, str]:
    """The headers of a request signed with AWS Signature Version 4 (``headers`` plus date, hash, Authorization).

    ``path`` is the URI path before encoding; S3 encodes it once (not twice, as
    other services do).
    """
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    out = {**headers, "host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
    if credentials.session_token:
        out["x-amz-security-token"] = credentials.session_token
    lowered = {k.lower(): " ".join(str(v).split()) for k, v in out.items()}
    names = sorted(lowered)
    canonical = "\n".join([
        method,
        _uri_encode(path),
        "&".join(f"{_uri_encode(k, False)}={_uri_encode(v, False)}" for k, v in sorted(query.items())),
        "".join(f"{n}:{lowered[n]}\n" for n in names),
        ";".join(names),
        payload_hash,
    ])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + credentials.secret_key).encode("utf-8"), day), region), service),
                "aws4_request")
    signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    out["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
                            f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return out


class S3Client:
    """The handful of S3 operations the store needs, one HTTP connection per thread."""

    def __init__(self, bucket: str, credentials: Credentials, region: str = "us-east-1",
                 endpoint: str | None = None, path_style: bool | None = None, timeout: float = 60.0):
        self.bucket = bucket
        self.credentials = credentials
        self.region = region
        url = urlsplit(endpoint or f"https://s3.{region}.amazonaws.com")
        self.secure = url.scheme == "https"
        self.path_style = endpoint is not None if path_style is None else path_style
        self.host = url.netloc if self.path_style else f"{bucket}.{url.netloc}"
        self.timeout = timeout
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.secure else http.client.HTTPConnection
            conn = self._local.conn = cls(self.host, timeout=self.timeout)
        return conn

    def request(self, method: str, key: str | None, query: dict[str, str] | None = None, body: bytes = b"",
                headers: dict[str, str] | None = None, ok: tuple[int, ...] = (200,), upload: str | None = None,
                download: BinaryIO | None = None) -> tuple[int, dict[str, str], bytes]:
        """One signed request; answers ``(status, headers, body)`` for a status in ``ok``, raises otherwise.

        ``upload`` sends a file's bytes instead of ``body`` and ``download`` receives a 200 answer's
        body, both in blocks, so files of any size pass without being held in memory.
        """
        if self.path_style:
            path = f"/{self.bucket}" + (f"/{key}" if key is not None else "")
        else:
            path = "/" + (key or "")
        query = query or {}
        headers = dict(headers or {})
        if upload is not None:
            payload, md5, size = _file_digests(upload)
            headers.update({"content-md5": md5, "content-length": str(size)})
        else:
            payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        signed = sign(method, self.host, path, query, headers, payload, self.credentials, self.region,
                      datetime.datetime.now(datetime.UTC))
        target = _uri_encode(path) + ("?" + "&".join(f"{_uri_encode(k, False)}={_uri_encode(v, False)}"
                                                     for k, v in sorted(query.items())) if query else "")
        for attempt in (0, 1):  # a kept-alive connection the server closed: once more on a new one
            conn = self._connection()
            source = open(upload, "rb") if upload is not None else None  # noqa: SIM115 - closed below
            try:
                conn.request(method, target, body=source if source is not None else (body or None), headers=signed)
                response = conn.getresponse()
                if download is not None and response.status == 200:
                    while block := response.read(BLOCK):
                        download.write(block)
                    data = b""
                else:
                    data = response.read()
                break
            except (http.client.HTTPException, ConnectionError, OSError) as exc:
                conn.close()
                self._local.conn = None
                if attempt or download is not None:  # a half-written download is not retried here
                    raise ObjectStoreError(0, f"{method} {key}: {exc}") from None
            finally:
                if source is not None:
                    source.close()
        answer = {k.lower(): v for k, v in response.getheaders()}
        if response.status not in ok:
            raise ObjectStoreError(response.status, _error_message(data) or response.reason)
        return response.status, answer, data

    def get_file(self, key: str, sink: BinaryIO) -> dict[str, str] | None:
        """Write the object's bytes to ``sink``; its headers, or None when there is no such object."""
        status, headers, _ = self.request("GET", key, ok=(200, 404), download=sink)
        return headers if status == 200 else None

    def put(self, key: str, data: bytes, headers: dict[str, str] | None = None, only_new: bool = False) -> bool:
        """False when ``only_new`` and the key exists (``If-None-Match: *``, atomic in the store)."""
        extra = {"content-md5": _md5_base64(data), **(headers or {})}
        if only_new:
            extra["if-none-match"] = "*"
        status, _, _ = self.request("PUT", key, body=data, headers=extra, ok=(200, 412, 409))
        return status == 200

    def put_file(self, key: str, path: str) -> None:
        """Store a file's bytes under ``key`` (read twice in blocks: once for the signature's hash, once to send)."""
        self.request("PUT", key, upload=path)

    def head(self, key: str) -> dict[str, str] | None:
        status, headers, _ = self.request("HEAD", key, ok=(200, 404))
        return headers if status == 200 else None

    def list(self, prefix: str, delimiter: str | None = None, page_size: int | None = None) -> list[str]:
        """Every key starting with ``prefix`` (ListObjectsV2, all pages); with ``delimiter``, one level only."""
        keys: list[str] = []
        token: str | None = None
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if delimiter:
                query["delimiter"] = delimiter
            if page_size:
                query["max-keys"] = str(page_size)
            if token:
                query["continuation-token"] = token
            _, _, data = self.request("GET", None, query=query)
            root = ET.fromstring(data)
            keys.extend(el.text or "" for el in root.iter(f"{NS}Key"))
            token = root.findtext(f"{NS}NextContinuationToken")
            if root.findtext(f"{NS}IsTruncated") != "true" or not token:
                return keys

    def create_bucket(self) -> None:
        """Create the bucket (tests and first setups); an existing one of ours is fine."""
        body = b""
        if self.region != "us-east-1":
            body = (f'<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                    f"<LocationConstraint>{self.region}</LocationConstraint></CreateBucketConfiguration>").encode()
        self.request("PUT", None, body=body, ok=(200, 409))


def _file_digests(path: str) -> tuple[str, str, int]:
    """A file's SHA-256 (hex, for the signature), MD5 (base64, for Content-MD5) and size, read in blocks."""
    import base64

    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            sha.update(block)
            md5.update(block)
            size += len(block)
    return sha.hexdigest(), base64.b64encode(md5.digest()).decode(), size


def _md5_base64(data: bytes) -> str:
    import base64

    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _error_message(data: bytes) -> str:
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return data[:200].decode("utf-8", "replace")
    return f"{root.findtext('Code') or ''}: {root.findtext('Message') or ''}".strip(": ")


class ObjectStore:
    """:class:`comfy_kernel.files.remote.RemoteFiles` on an S3 bucket.

    The input folder's top-level listing (LoadImage's choices) is refreshed by
    a daemon thread every ``refresh`` seconds, so ``/object_info`` never waits
    on the network and still shows what another front-end received.
    """

    def __init__(self, client: S3Client, prefix: str = "", refresh: float = 2.0):
        self.client = client
        self.prefix = prefix.strip("/")
        self.refresh = refresh
        self.version = 0
        self._top: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._put: dict[str, tuple[int, int]] = {}  # key -> (mtime, size) of the local file last stored there
        self._thread: threading.Thread | None = None

    @classmethod
    def from_url(cls, url: str, endpoint: str | None = None, region: str | None = None) -> ObjectStore:
        """``s3://bucket/prefix`` with credentials and region from the environment."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise SystemExit(f"--object-store must look like s3://bucket/prefix, not {url!r}")
        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        client = S3Client(parts.netloc, Credentials.from_environment(), region, endpoint)
        return cls(client, parts.path)

    def key(self, kind: str, rel: str = "") -> str:
        return "/".join(p for p in (self.prefix, kind, rel) if p) + ("/" if not rel else "")

    # -- RemoteFiles -----------------------------------------------------------------------------

    def fetch(self, kind: str, rel: str, dest: str) -> bool:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = f"{dest}.part-{os.getpid()}-{threading.get_ident()}"
        try:
            with open(tmp, "wb") as f:
                headers = self.client.get_file(self.key(kind, rel), f)
            if headers is None or headers.get(CLAIM_HEADER):  # a name claimed, its file not put yet
                return False
            os.replace(tmp, dest)
            return True
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def put(self, kind: str, rel: str, src: str) -> None:
        """Store ``src``; a file this process already stored unchanged (a cached node's ``executed`` names
        its files again) is not sent twice."""
        st = os.stat(src)
        key, version = self.key(kind, rel), (st.st_mtime_ns, st.st_size)
        with self._lock:
            if self._put.get(key) == version:
                return
        self.client.put_file(key, src)
        with self._lock:
            self._put[key] = version
            if len(self._put) > PUT_MEMORY:
                del self._put[next(iter(self._put))]

    def put_new(self, kind: str, rel: str, data: bytes = b"") -> bool:
        headers = {CLAIM_HEADER: "1"} if not data else None
        return self.client.put(self.key(kind, rel), data, headers, only_new=True)

    def holds(self, kind: str, rel: str, data: bytes) -> bool:
        headers = self.client.head(self.key(kind, rel))
        if headers is None:
            return False
        etag = headers.get("etag", "").strip('"')
        return etag == hashlib.md5(data, usedforsecurity=False).hexdigest()

    def names(self, kind: str, prefix: str = "") -> list[str]:
        root = self.key(kind)
        return [k[len(root):] for k in self.client.list(root + prefix)]

    def top_level(self, kind: str) -> list[str]:
        with self._lock:
            cached = self._top.get(kind)
        return cached if cached is not None else self._list_top(kind)

    # -- the listing refresher ----------------------------------------------------------------

    def _list_top(self, kind: str) -> list[str]:
        root = self.key(kind)
        names = sorted(k[len(root):] for k in self.client.list(root, delimiter="/") if not k.endswith("/"))
        with self._lock:
            if self._top.get(kind) != names:
                self._top[kind] = names
                self.version += 1
        return names

    def start(self) -> None:
        """List the bucket once (it must be reachable and ours), then keep the input listing fresh."""
        self._list_top("input")
        self._thread = threading.Thread(target=self._refresh_loop, name="ck-object-store", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh):
            try:
                self._list_top("input")
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("object store: listing the inputs failed: %s", exc)


def outputs_of(event_output: Any) -> list[tuple[str, str]]:
    """``(kind, relative path)`` of the files an ``executed`` event's ``output`` lists."""
    found = []
    if not isinstance(event_output, dict):
        return found
    for items in event_output.values():
        if not isinstance(items, list):
            continue
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("filename"), str) \
                    and item.get("type") in ("output", "temp"):
                sub = item.get("subfolder") or ""
                found.append((item["type"], f"{sub}/{item['filename']}" if sub else item["filename"]))
    return found


def put_outputs(kernel: Any, event_output: Any) -> None:
    """Put the files an ``executed`` event names into the store (before the event leaves the worker)."""
    folders = kernel.folders
    if folders.remote is None:
        return
    for kind, rel in outputs_of(event_output):
        base = kernel.dirs.by_type(kind)
        path = os.path.join(base, *rel.split("/"))
        started = time.monotonic()
        try:
            folders.put_remote(path)
        except Exception as exc:  # noqa: BLE001 - the prompt's result stands; its file stays on this machine
            log.error("object store: could not store %s/%s: %s", kind, rel, exc)
        else:
            log.debug("object store: put %s/%s in %.3f s", kind, rel, time.monotonic() - started)


__all__ = ["CLAIM_HEADER", "Credentials", "ObjectStore", "ObjectStoreError", "S3Client", "outputs_of",
           "put_outputs", "sign"]
