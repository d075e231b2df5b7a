"""``comfy-kernel run WORKFLOW.json``: run one workflow and write its outputs.

The workflow may be in API format (``{"5": {"class_type", "inputs"}}``) or
UI format (what the frontend saves: ``nodes`` and ``links``), which is
converted first with :mod:`comfy_kernel.convert` and the node definitions of
whoever runs it; the UI workflow then goes into the outputs' metadata, as the
frontend does.

* ``--set NODE.INPUT=VALUE`` (repeatable) changes an input first. ``NODE`` is
  a node id or a node's title; ``VALUE`` is read as JSON when it parses
  (``42``, ``1.5``, ``true``, ``"text"``), else taken as text.
* ``--server URL`` runs it on a running server (``--api-key`` / ``--token``
  with ``--auth``); without it the workflow runs in this process, with the
  same options as ``serve`` (``--base-directory``, ``--cpu``,
  ``--extra-model-paths-config``, ...), its own throwaway queue database and
  temp folder, and no network port.
* Progress goes to stderr, one line per node and a bar per step. The files
  the outputs list are written under ``--out`` (default ``output``, keeping
  their subfolders; previews only with ``--previews``), and their paths
  printed on stdout (or the whole result with ``--json``).

Exit status: 0 when the workflow succeeded, 1 when it failed or was
cancelled, 2 when it could not be run (bad file, ``--set`` or prompt).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .convert import ConversionError, convert_workflow, is_api_format

if TYPE_CHECKING:  # the client (httpx) is imported when a workflow runs, not by every `comfy-kernel` command
    from .client import JobResult, OutputFile, PromptValidationError


class UsageError(Exception):
    """The workflow cannot be run as asked (exit status 2)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("workflow", help="workflow JSON file (API or UI format), or - for stdin")
    add("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE",
        help="set an input before running (NODE is a node id or title; VALUE is JSON or text); repeatable")
    add("--out", default="output", metavar="DIR", help="where to write the output files (default: ./output)")
    add("--server", default=None, metavar="URL", help="run on this server instead of in this process")
    add("--api-key", default=os.environ.get("COMFY_KERNEL_API_KEY"), help="API key for --server with --auth")
    add("--token", default=None, help="bearer token for --server with --auth")
    add("--timeout", type=float, default=None, metavar="SECONDS", help="give up waiting after this long")
    add("--previews", action="store_true", help="also write preview (temp) files")
    add("--json", dest="as_json", action="store_true", help="print the result as JSON instead of file paths")
    add("--quiet", action="store_true", help="no progress display")


# -- preparing the prompt ------------------------------------------------------------------------------


def load_workflow(source: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        workflow = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source} is not JSON: {exc}") from None
    if isinstance(workflow, dict) and isinstance(workflow.get("prompt"), dict) and "nodes" not in workflow:
        workflow = workflow["prompt"]  # a saved POST /prompt body
    if not isinstance(workflow, dict) or not workflow:
        raise UsageError(f"{source} is not a workflow")
    return workflow


def to_prompt(workflow: dict[str, Any], object_info: dict[str, Any] | None) -> tuple[dict[str, Any], dict]:
    """The API-format prompt and the ``extra_data`` to send with it."""
    if is_api_format(workflow):
        return workflow, {}
    try:
        result = convert_workflow(workflow, object_info or {})
    except ConversionError as exc:
        raise UsageError(str(exc)) from None
    if result.missing_nodes:
        raise UsageError(f"nodes not installed: {', '.join(result.missing_nodes)}")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return result.prompt, {"extra_pnginfo": {"workflow": workflow}}


def apply_overrides(prompt: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    prompt = {k: {**v, "inputs": dict(v.get("inputs") or {})} for k, v in prompt.items()}
    for item in overrides:
        target, sep, raw = item.partition("=")
        node, dot, name = target.partition(".")
        if not sep or not dot or not node or not name:
            raise UsageError(f"--set {item!r}: expected NODE.INPUT=VALUE")
        node_id = node if node in prompt else _by_title(prompt, node)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        prompt[node_id]["inputs"][name] = value
    return prompt


def _by_title(prompt: dict[str, Any], title: str) -> str:
    found = [k for k, v in prompt.items() if (v.get("_meta") or {}).get("title") == title]
    if len(found) != 1:
        known = ", ".join(sorted(prompt, key=lambda k: (len(k), k)))
        raise UsageError(f"--set: no node {'titled' if not found else 'uniquely titled'} {title!r} "
                         f"(node ids: {known})")
    return found[0]


# -- progress ----------------------------------------------------------------------------------------------


class Progress:
    """One line per node, a bar per step; redrawn in place on a terminal."""

    BAR = 24

    def __init__(self, prompt: dict[str, Any], stream: TextIO, quiet: bool = False):
        self.prompt = prompt
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty()
        self.total = len(prompt)
        self.done: set[str] = set()
        self.node: str | None = None
        self.open_line = False

    def name(self, node: str) -> str:
        info = self.prompt.get(node) or {}
        title = (info.get("_meta") or {}).get("title")
        kind = info.get("class_type", "?")
        return f"{kind} #{node}" + (f" ({title})" if title and title != kind else "")

    def _write(self, text: str, final: bool) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
            self.open_line = not final
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _close_line(self) -> None:
        if self.open_line and not self.quiet:
            self.stream.write("\n")
            self.open_line = False

    def event(self, kind: str, data: Any) -> None:
        data = data if isinstance(data, dict) else {}
        if kind == "execution_cached":
            cached = [str(n) for n in data.get("nodes") or []]
            self.done.update(cached)
            if cached:
                self._write(f"{len(cached)} of {self.total} nodes cached", True)
        elif kind == "executing" and data.get("node") is not None:
            node = str(data["node"])
            if self.node is not None and self.node != node:
                self.done.add(self.node)
            self.node = node
            self._close_line()
            self._write(f"[{len(self.done) + 1}/{self.total}] {self.name(node)}", not self.tty)
        elif kind == "progress":
            node = str(data.get("node") or self.node or "?")
            value, top = float(data.get("value") or 0), float(data.get("max") or 1) or 1.0
            filled = int(self.BAR * min(value / top, 1.0))
            bar = "█" * filled + "░" * (self.BAR - filled)
            line = f"[{len(self.done) + 1}/{self.total}] {self.name(node)} {bar} {value:g}/{top:g}"
            self._write(line, not self.tty and value >= top)
        elif kind == "execution_error":
            self._close_line()
            self._write(f"error in {self.name(str(data.get('node_id')))}: "
                        f"{str(data.get('exception_message', '')).strip()}", True)
        elif kind == "execution_interrupted":
            self._close_line()
            self._write("interrupted", True)
        elif kind == "execution_success":
            if self.node is not None:
                self.done.add(self.node)
            self._close_line()


# -- writing outputs ----------------------------------------------------------------------------------------


def wanted(result: JobResult, previews: bool) -> list[OutputFile]:
    return [f for f in result.files if previews or f.type != "temp"]


def report(result: JobResult, written: list[Path], as_json: bool) -> int:
    if as_json:
        print(json.dumps({**result.raw, "written": [str(p) for p in written]}, indent=2))
    else:
        for path in written:
            print(path)
    if result.status == "completed":
        return 0
    error = result.execution_error or {}
    message = str(error.get("exception_message", "")).strip()
    print(f"the workflow {result.status}" + (f": {message}" if message else ""), file=sys.stderr)
    return 1


def _validation_message(exc: PromptValidationError) -> str:
    lines = [f"the prompt was refused: {exc.message}"]
    for node, info in (exc.node_errors or {}).items():
        for error in info.get("errors") or []:
            lines.append(f"  node {node} ({info.get('class_type')}): {error.get('message')}: {error.get('details')}")
    return "\n".join(lines)


# -- the two ways to run ------------------------------------------------------------------------------------


def run_on_server(args: argparse.Namespace, workflow: dict[str, Any]) -> int:
    from .client import ComfyClient

    with ComfyClient(args.server, api_key=args.api_key, token=args.token) as client:
        info = None if is_api_format(workflow) else client.object_info()
        prompt, extra_data = to_prompt(workflow, info)
        prompt = apply_overrides(prompt, args.overrides)
        job = client.queue(prompt, extra_data=extra_data or None)
        progress = Progress(prompt, sys.stderr, args.quiet)
        for event in client.stream(job.prompt_id):
            progress.event(event.type, event.data)
        result = client.wait(job.prompt_id, timeout=args.timeout, raise_on_error=False)
        written = [client.download(f, args.out) for f in wanted(result, args.previews)]
    return report(result, [p for p in written if isinstance(p, Path)], args.as_json)


async def run_in_process(args: argparse.Namespace, workflow: dict[str, Any], host: Any) -> int:
    import httpx

    from .app import build_app
    from .client import AsyncComfyClient
    from .server import create_kernel

    scratch = tempfile.TemporaryDirectory(prefix="comfy-kernel-run-")
    # A private queue and temp folder: a server on the same base directory keeps its own.
    if not args.database:
        args.database = os.path.join(scratch.name, "run.db")
    if not args.temp_directory:
        args.temp_directory = scratch.name
    kernel = create_kernel(args, host)
    app = build_app(kernel)
    await kernel.startup()
    try:
        transport = httpx.ASGITransport(app=app)
        async with AsyncComfyClient("http://127.0.0.1", transport=transport, timeout=60.0) as client:
            info = None if is_api_format(workflow) else await client.object_info()
            prompt, extra_data = to_prompt(workflow, info)
            prompt = apply_overrides(prompt, args.overrides)
            job = await client.queue(prompt, extra_data=extra_data or None)
            progress = Progress(prompt, sys.stderr, args.quiet)
            feed = kernel.executor.jobs
            log = feed.open(job.prompt_id, None)
            follow = feed.follow(log, 0)
            try:
                async with asyncio.timeout(args.timeout):
                    async for item in follow:
                        if item is not None:
                            progress.event(item[1], item[2])
            except TimeoutError:
                print(f"gave up waiting after {args.timeout:g} s", file=sys.stderr)
                await client.cancel(job.prompt_id)
            finally:
                await follow.aclose()
            result = await client.wait(job.prompt_id, raise_on_error=False)
            written = []
            for file in wanted(result, args.previews):
                source = Path(kernel.dirs.output if file.type == "output" else
                              kernel.dirs.temp if file.type == "temp" else kernel.dirs.input,
                              file.subfolder, file.filename)
                target = Path(args.out, file.subfolder, os.path.basename(file.filename))
                if target.exists() and source.exists() and os.path.samefile(source, target):
                    written.append(target)  # the kernel wrote it right there already
                    continue
                written.append(Path(await client.download(file, args.out)))
        return report(result, written, args.as_json)
    finally:
        await kernel.shutdown()
        scratch.cleanup()


def main(args: argparse.Namespace, host: Any) -> int:
    """The ``run`` command."""
    import logging

    from .client import ComfyError, PromptValidationError

    if not getattr(args, "log_stdout", False):
        logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    try:
        workflow = load_workflow(args.workflow)
        if args.server:
            return run_on_server(args, workflow)
        return asyncio.run(run_in_process(args, workflow, host))
    except UsageError as exc:
        print(f"comfy-kernel run: {exc}", file=sys.stderr)
        return 2
    except PromptValidationError as exc:
        print(_validation_message(exc), file=sys.stderr)
        return 2
    except ComfyError as exc:
        print(f"comfy-kernel run: {exc}", file=sys.stderr)
        return 1

