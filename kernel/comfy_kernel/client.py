"""A small Python client for a comfy-kernel server: queue, wait, stream, download.

Synchronous::

    from comfy_kernel.client import ComfyClient

    with ComfyClient("http://127.0.0.1:8188") as client:
        result = client.run(prompt)                  # queue and wait for the outputs
        for file in result.files:
            client.download(file, "out/")

    with ComfyClient(url) as client:                 # or follow it as it runs
        job = client.queue(prompt)
        for event in client.stream(job.prompt_id):
            print(event.type, event.data)
        result = client.wait(job.prompt_id)

Asynchronous: :class:`AsyncComfyClient` has the same methods as coroutines
(``stream`` is an async iterator).

Errors are typed: :class:`PromptValidationError` (the prompt was refused,
with ``node_errors``), :class:`JobFailed` / :class:`JobCancelled` (it ran and
did not succeed; ``.result`` holds what there is), :class:`WaitTimeout`,
:class:`NotFound`, :class:`AuthenticationError`, :class:`PermissionDenied`,
:class:`BadRequest`, :class:`ServerError` (all :class:`APIError`, with the
server's ``status``, ``type``, ``message`` and ``details``) and
:class:`ConnectionFailed`; every one is a :class:`ComfyError`.

The server side: ``POST /api/prompt?wait=``, ``GET /api/jobs/{id}/result``,
``GET /api/jobs/{id}/events`` (server-sent events, resumed with
``Last-Event-ID`` after a dropped connection) and ``/api/view``.
:func:`verify_webhook` checks a webhook request the server signed.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .webhooks.signing import WebhookVerificationError, verify

__all__ = ["ComfyClient", "AsyncComfyClient", "Job", "JobResult", "OutputFile", "Event", "ComfyError", "APIError",
           "BadRequest", "PromptValidationError", "AuthenticationError", "PermissionDenied", "NotFound",
           "ServerError", "ConnectionFailed", "JobFailed", "JobCancelled", "WaitTimeout", "verify_webhook",
           "WebhookVerificationError"]

DEFAULT_URL = "http://127.0.0.1:8188"
WAIT_CHUNK_S = 300.0
RECONNECTS = 5


# -- errors ---------------------------------------------------------------------------------------------


class ComfyError(Exception):
    """Anything this client raises."""


class ConnectionFailed(ComfyError):
    """The server could not be reached (or the connection dropped for good)."""


class APIError(ComfyError):
    """The server answered with an error status."""

    def __init__(self, status: int, message: str, type: str = "error", details: Any = "", body: Any = None):
        super().__init__(f"{status} {type}: {message}")
        self.status = status
        self.type = type
        self.message = message
        self.details = details
        self.body = body


class BadRequest(APIError):
    """400: the request is malformed."""


class PromptValidationError(BadRequest):
    """400 from ``POST /prompt``: the prompt did not validate; ``node_errors`` says where."""

    def __init__(self, status: int, message: str, type: str = "error", details: Any = "", body: Any = None):
        super().__init__(status, message, type, details, body)
        self.node_errors: dict[str, Any] = (body or {}).get("node_errors") or {}


class AuthenticationError(APIError):
    """401: no or bad credentials."""


class PermissionDenied(APIError):
    """403: the caller may not do this."""


class NotFound(APIError):
    """404: no such job, file or route (or not the caller's)."""


class ServerError(APIError):
    """5xx."""


class JobFailed(ComfyError):
    """The job ran and failed; ``result.execution_error`` says how."""

    def __init__(self, result: JobResult):
        error = result.execution_error or {}
        where = f" in node {error.get('node_id')} ({error.get('node_type')})" if error.get("node_id") else ""
        super().__init__(f"job {result.prompt_id} failed{where}: "
                         f"{str(error.get('exception_message', '')).strip() or 'unknown error'}")
        self.result = result


class JobCancelled(ComfyError):
    """The job was interrupted or removed from the queue."""

    def __init__(self, result: JobResult):
        super().__init__(f"job {result.prompt_id} was cancelled")
        self.result = result


class WaitTimeout(ComfyError):
    """The job did not end within the time given."""

    def __init__(self, prompt_id: str, status: str):
        super().__init__(f"job {prompt_id} is still {status}")
        self.prompt_id = prompt_id
        self.status = status


def verify_webhook(secret: str, headers: Any, body: bytes, tolerance: float = 300) -> str:
    """Check a webhook request signed by the server; return its ``webhook-id`` (see :mod:`..webhooks.signing`)."""
    return verify(secret, headers, body, tolerance=tolerance)


# -- values ---------------------------------------------------------------------------------------------


@dataclass
class Job:
    """A queued prompt."""

    prompt_id: str
    number: float | None = None
    node_errors: dict[str, Any] = field(default_factory=dict)


@dataclass
class OutputFile:
    """One file a node produced (an image, video, audio...)."""

    node_id: str
    kind: str
    filename: str
    subfolder: str = ""
    type: str = "output"
    url: str | None = None

    def params(self) -> dict[str, str]:
        return {"filename": self.filename, "subfolder": self.subfolder, "type": self.type}


@dataclass
class JobResult:
    """What ``/api/jobs/{id}/result`` says about an ended job."""

    prompt_id: str
    status: str
    outputs: dict[str, Any]
    timings: dict[str, Any] = field(default_factory=dict)
    execution_error: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @property
    def files(self) -> list[OutputFile]:
        """Every file output, in node order."""
        out = []
        for node_id, node_out in self.outputs.items():
            if not isinstance(node_out, dict):
                continue
            for kind, items in node_out.items():
                for item in items if isinstance(items, list) else []:
                    if isinstance(item, dict) and isinstance(item.get("filename"), str):
                        out.append(OutputFile(str(node_id), kind, item["filename"], item.get("subfolder") or "",
                                              item.get("type") or "output", item.get("url")))
        return out

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> JobResult:
        return cls(prompt_id=body["prompt_id"], status=body["status"], outputs=body.get("outputs") or {},
                   timings=body.get("timings") or {}, execution_error=body.get("execution_error"), raw=body)


@dataclass
class Event:
    """One server-sent event of a job: its id, the WebSocket message type, and the message's data."""

    id: int
    type: str
    data: Any

    @property
    def final(self) -> bool:
        """The last message of a job (``executing`` with ``node: None``)."""
        return self.type == "executing" and isinstance(self.data, dict) and self.data.get("node") is None


# -- what both clients share -------------------------------------------------------------------------------


def _headers(api_key: str | None, token: str | None, extra: dict[str, str] | None) -> dict[str, str]:
    headers = dict(extra or {})
    if api_key:
        headers["X-API-Key"] = api_key
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _raise_for(response: httpx.Response, prompt: bool = False) -> Any:
    """The JSON body of a 2xx answer; the matching :class:`APIError` otherwise."""
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = None
    if response.status_code < 400:
        return body
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message, kind, details = str(error.get("message", "")), str(error.get("type", "error")), error.get("details")
    else:
        message, kind, details = (str(error) if error else response.text[:500]), "error", ""
    status = response.status_code
    if status == 400 and prompt and isinstance(body, dict) and "node_errors" in body:
        cls: type[APIError] = PromptValidationError
    else:
        cls = {400: BadRequest, 401: AuthenticationError, 403: PermissionDenied, 404: NotFound}.get(
            status, ServerError if status >= 500 else APIError)
    raise cls(status, message or response.reason_phrase, kind, details, body)


def _prompt_body(prompt: dict[str, Any], extra_data: dict[str, Any] | None, client_id: str | None,
                 prompt_id: str | None, front: bool, number: float | None, webhook: Any,
                 partial_execution_targets: list[str] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": prompt}
    extra = dict(extra_data or {})
    if webhook is not None:
        extra["webhook"] = webhook
    if extra:
        body["extra_data"] = extra
    if client_id:
        body["client_id"] = client_id
    if prompt_id:
        body["prompt_id"] = prompt_id
    if front:
        body["front"] = True
    if number is not None:
        body["number"] = number
    if partial_execution_targets is not None:
        body["partial_execution_targets"] = partial_execution_targets
    return body


def _finish(result: JobResult, raise_on_error: bool) -> JobResult:
    if raise_on_error and result.status == "failed":
        raise JobFailed(result)
    if raise_on_error and result.status == "cancelled":
        raise JobCancelled(result)
    return result


def _chunk(deadline: float | None) -> float:
    if deadline is None:
        return WAIT_CHUNK_S
    return max(min(deadline - time.monotonic(), WAIT_CHUNK_S), 0.0)


class _SSE:
    """Incremental ``text/event-stream`` parser."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.data: list[str] = []

    def feed(self, line: str) -> Event | None:
        if line == "":
            event = None
            if self.data:
                payload = json.loads("\n".join(self.data))
                kind = self.fields.get("event") or (payload.get("type") if isinstance(payload, dict) else "message")
                data = payload.get("data") if isinstance(payload, dict) and "type" in payload else payload
                event = Event(int(self.fields.get("id") or 0), kind, data)
            self.fields, self.data = {}, []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self.data.append(value)
        elif name in ("id", "event"):
            self.fields[name] = value
        return None


def _target(directory: str | os.PathLike[str], file: OutputFile) -> Path:
    base = Path(directory)
    parts = [p for p in file.subfolder.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    name = os.path.basename(file.filename.replace("\\", "/"))
    return base.joinpath(*parts, name)


def _as_file(file: OutputFile | dict[str, Any]) -> OutputFile:
    if isinstance(file, OutputFile):
        return file
    return OutputFile(str(file.get("node_id", "")), str(file.get("kind", "")), file["filename"],
                      file.get("subfolder") or "", file.get("type") or "output", file.get("url"))


# -- the synchronous client -------------------------------------------------------------------------------


class ComfyClient:
    """Blocking client; see the module docstring. ``api_key`` / ``token`` authenticate with ``--auth``."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None, token: str | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.http = httpx.Client(base_url=self.base_url, headers=_headers(api_key, token, headers),
                                 timeout=timeout, transport=transport)

    def __enter__(self) -> ComfyClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, path: str, prompt: bool = False, **kw: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"{method} {self.base_url}{path}: {exc}") from exc
        _raise_for(response, prompt)
        return response

    def object_info(self) -> dict[str, Any]:
        return self._request("GET", "/api/object_info").json()

    def queue(self, prompt: dict[str, Any], *, extra_data: dict[str, Any] | None = None,
              client_id: str | None = None, prompt_id: str | None = None, front: bool = False,
              number: float | None = None, webhook: Any = None,
              partial_execution_targets: list[str] | None = None) -> Job:
        """Queue an API-format prompt; raise :class:`PromptValidationError` if it does not validate."""
        body = _prompt_body(prompt, extra_data, client_id, prompt_id, front, number, webhook,
                            partial_execution_targets)
        answer = self._request("POST", "/api/prompt", prompt=True, json=body).json()
        return Job(answer["prompt_id"], answer.get("number"), answer.get("node_errors") or {})

    def run(self, prompt: dict[str, Any], *, timeout: float | None = None, raise_on_error: bool = True,
            **queue_options: Any) -> JobResult:
        """Queue and wait for the result (``timeout`` None: as long as it takes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        body = _prompt_body(prompt, queue_options.pop("extra_data", None), queue_options.pop("client_id", None),
                            queue_options.pop("prompt_id", None) or str(uuid.uuid4()),
                            queue_options.pop("front", False), queue_options.pop("number", None),
                            queue_options.pop("webhook", None), queue_options.pop("partial_execution_targets", None))
        if queue_options:
            raise TypeError(f"unknown options: {', '.join(queue_options)}")
        wait = _chunk(deadline)
        response = self._request("POST", "/api/prompt", prompt=True, json=body, params={"wait": wait},
                                 timeout=self.timeout + wait)
        answer = response.json()
        if response.status_code == 200 and "status" in answer:
            return _finish(JobResult.from_json(answer), raise_on_error)
        return self._wait(answer["prompt_id"], deadline, raise_on_error, answer.get("status", "pending"))

    def wait(self, prompt_id: str, timeout: float | None = None, raise_on_error: bool = True) -> JobResult:
        """Wait for a queued job to end and return its result."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._wait(prompt_id, deadline, raise_on_error, "pending")

    def _wait(self, prompt_id: str, deadline: float | None, raise_on_error: bool, status: str) -> JobResult:
        while True:
            wait = _chunk(deadline)
            response = self._request("GET", f"/api/jobs/{prompt_id}/result", params={"wait": wait},
                                     timeout=self.timeout + wait)
            body = response.json()
            if response.status_code == 200:
                return _finish(JobResult.from_json(body), raise_on_error)
            status = body.get("status", status)
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(prompt_id, status)

    def result(self, prompt_id: str) -> JobResult | None:
        """The result if the job has ended, else None (never waits, never raises for a failed job)."""
        response = self._request("GET", f"/api/jobs/{prompt_id}/result")
        return JobResult.from_json(response.json()) if response.status_code == 200 else None

    def stream(self, prompt_id: str, last_event_id: int = 0) -> Iterator[Event]:
        """The job's messages as they happen, up to its final one; reconnects where it left off."""
        attempts = 0
        while True:
            headers = {"Last-Event-ID": str(last_event_id)} if last_event_id else {}
            try:
                with self.http.stream("GET", f"/api/jobs/{prompt_id}/events", headers=headers,
                                      timeout=httpx.Timeout(self.timeout, read=None)) as response:
                    if response.status_code == 204:
                        return
                    if response.status_code >= 400:
                        response.read()
                        _raise_for(response)
                    parser = _SSE()
                    for line in response.iter_lines():
                        event = parser.feed(line)
                        if event is None:
                            continue
                        attempts = 0
                        last_event_id = event.id or last_event_id
                        yield event
                        if event.final:
                            return
            except httpx.TransportError as exc:
                attempts += 1
                if attempts > RECONNECTS:
                    raise ConnectionFailed(f"the event stream of job {prompt_id} dropped: {exc}") from exc
                time.sleep(min(0.2 * 2 ** attempts, 5.0))
                continue
            # The stream ended without the final message (a proxy cut it): resume.
            attempts += 1
            if attempts > RECONNECTS:
                raise ConnectionFailed(f"the event stream of job {prompt_id} keeps ending early")

    def download(self, file: OutputFile | dict[str, Any], directory: str | os.PathLike[str] | None = None
                 ) -> bytes | Path:
        """A file's bytes, or (with ``directory``) the path it was written to (keeping its subfolder)."""
        item = _as_file(file)
        content = self._request("GET", "/api/view", params=item.params()).content
        if directory is None:
            return content
        target = _target(directory, item)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        return target

    def cancel(self, prompt_id: str) -> bool:
        """Cancel a pending or running job; False if it had already ended."""
        return bool(self._request("POST", f"/api/jobs/{prompt_id}/cancel").json().get("cancelled"))

    def upload_image(self, data: bytes | str | os.PathLike[str], name: str | None = None, *, subfolder: str = "",
                     type: str = "input", overwrite: bool = False) -> dict[str, Any]:
        """Upload an image for ``LoadImage``; returns ``{"name", "subfolder", "type"}``."""
        if not isinstance(data, bytes):
            name = name or os.path.basename(str(data))
            data = Path(data).read_bytes()
        files = {"image": (name or "image.png", data)}
        form = {"subfolder": subfolder, "type": type, "overwrite": "true" if overwrite else "false"}
        return self._request("POST", "/api/upload/image", files=files, data=form).json()


# -- the asynchronous client -------------------------------------------------------------------------------


class AsyncComfyClient:
    """The same client for asyncio (``async with AsyncComfyClient(url) as client``)."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None, token: str | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=_headers(api_key, token, headers),
                                      timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncComfyClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def _request(self, method: str, path: str, prompt: bool = False, **kw: Any) -> httpx.Response:
        try:
            response = await self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"{method} {self.base_url}{path}: {exc}") from exc
        _raise_for(response, prompt)
        return response

    async def object_info(self) -> dict[str, Any]:
        return (await self._request("GET", "/api/object_info")).json()

    async def queue(self, prompt: dict[str, Any], *, extra_data: dict[str, Any] | None = None,
                    client_id: str | None = None, prompt_id: str | None = None, front: bool = False,
                    number: float | None = None, webhook: Any = None,
                    partial_execution_targets: list[str] | None = None) -> Job:
        body = _prompt_body(prompt, extra_data, client_id, prompt_id, front, number, webhook,
                            partial_execution_targets)
        answer = (await self._request("POST", "/api/prompt", prompt=True, json=body)).json()
        return Job(answer["prompt_id"], answer.get("number"), answer.get("node_errors") or {})

    async def run(self, prompt: dict[str, Any], *, timeout: float | None = None, raise_on_error: bool = True,
                  **queue_options: Any) -> JobResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        body = _prompt_body(prompt, queue_options.pop("extra_data", None), queue_options.pop("client_id", None),
                            queue_options.pop("prompt_id", None) or str(uuid.uuid4()),
                            queue_options.pop("front", False), queue_options.pop("number", None),
                            queue_options.pop("webhook", None), queue_options.pop("partial_execution_targets", None))
        if queue_options:
            raise TypeError(f"unknown options: {', '.join(queue_options)}")
        wait = _chunk(deadline)
        response = await self._request("POST", "/api/prompt", prompt=True, json=body, params={"wait": wait},
                                       timeout=self.timeout + wait)
        answer = response.json()
        if response.status_code == 200 and "status" in answer:
            return _finish(JobResult.from_json(answer), raise_on_error)
        return await self._wait(answer["prompt_id"], deadline, raise_on_error, answer.get("status", "pending"))

    async def wait(self, prompt_id: str, timeout: float | None = None, raise_on_error: bool = True) -> JobResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        return await self._wait(prompt_id, deadline, raise_on_error, "pending")

    async def _wait(self, prompt_id: str, deadline: float | None, raise_on_error: bool, status: str) -> JobResult:
        while True:
            wait = _chunk(deadline)
            response = await self._request("GET", f"/api/jobs/{prompt_id}/result", params={"wait": wait},
                                           timeout=self.timeout + wait)
            body = response.json()
            if response.status_code == 200:
                return _finish(JobResult.from_json(body), raise_on_error)
            status = body.get("status", status)
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(prompt_id, status)

    async def result(self, prompt_id: str) -> JobResult | None:
        response = await self._request("GET", f"/api/jobs/{prompt_id}/result")
        return JobResult.from_json(response.json()) if response.status_code == 200 else None

    async def stream(self, prompt_id: str, last_event_id: int = 0) -> AsyncIterator[Event]:
        import asyncio

        attempts = 0
        while True:
            headers = {"Last-Event-ID": str(last_event_id)} if last_event_id else {}
            try:
                async with self.http.stream("GET", f"/api/jobs/{prompt_id}/events", headers=headers,
                                            timeout=httpx.Timeout(self.timeout, read=None)) as response:
                    if response.status_code == 204:
                        return
                    if response.status_code >= 400:
                        await response.aread()
                        _raise_for(response)
                    parser = _SSE()
                    async for line in response.aiter_lines():
                        event = parser.feed(line)
                        if event is None:
                            continue
                        attempts = 0
                        last_event_id = event.id or last_event_id
                        yield event
                        if event.final:
                            return
            except httpx.TransportError as exc:
                attempts += 1
                if attempts > RECONNECTS:
                    raise ConnectionFailed(f"the event stream of job {prompt_id} dropped: {exc}") from exc
                await asyncio.sleep(min(0.2 * 2 ** attempts, 5.0))
                continue
            attempts += 1
            if attempts > RECONNECTS:
                raise ConnectionFailed(f"the event stream of job {prompt_id} keeps ending early")

    async def download(self, file: OutputFile | dict[str, Any], directory: str | os.PathLike[str] | None = None
                       ) -> bytes | Path:
        item = _as_file(file)
        content = (await self._request("GET", "/api/view", params=item.params())).content
        if directory is None:
            return content
        target = _target(directory, item)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        return target

    async def cancel(self, prompt_id: str) -> bool:
        return bool((await self._request("POST", f"/api/jobs/{prompt_id}/cancel")).json().get("cancelled"))

    async def upload_image(self, data: bytes | str | os.PathLike[str], name: str | None = None, *,
                           subfolder: str = "", type: str = "input", overwrite: bool = False) -> dict[str, Any]:
        if not isinstance(data, bytes):
            name = name or os.path.basename(str(data))
            data = Path(data).read_bytes()
        files = {"image": (name or "image.png", data)}
        form = {"subfolder": subfolder, "type": type, "overwrite": "true" if overwrite else "false"}
        return (await self._request("POST", "/api/upload/image", files=files, data=form)).json()
