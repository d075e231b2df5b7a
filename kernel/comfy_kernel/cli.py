"""``comfy-kernel``: ``serve`` starts the server (also without a command), ``plugins`` lists what
loaded, ``run`` runs a workflow.

Mistakes in the command line or settings the server cannot start with (a bad
``--port``, a base directory that cannot be used, a port already taken) are
one line on stderr and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, NoReturn

from . import __version__
from .config import (
    StartupError,
    add_server_arguments,
    apply_layered_defaults,
    mark_secret_options,
    normalise,
    remember_secret_values,
    secrets_on_command_line,
)
from .plugins import PluginHost


class CliParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the ``serve`` usage alone is dozens of lines)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(host: PluginHost) -> argparse.ArgumentParser:
    parser = CliParser(prog="comfy-kernel", description=(
        "A server that speaks the ComfyUI API. Without a command it starts the server: a bare "
        "`comfy-kernel` (or `comfy-kernel --port 8189 ...`) is `comfy-kernel serve` with those options; "
        "`comfy-kernel serve --help` lists them."))
    parser.add_argument("--version", action="version", version=f"comfy-kernel {__version__}")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="start the server")
    add_server_arguments(serve)
    host.call_each("ck_add_arguments", parser=serve)
    serve.set_defaults(func=cmd_serve)
    plugins = sub.add_parser("plugins", help="list plugins and node packs with version and status")
    add_server_arguments(plugins)
    host.call_each("ck_add_arguments", parser=plugins)
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.add_argument("--check", action="store_true", help="exit 1 if any plugin failed")
    plugins.set_defaults(func=cmd_plugins)
    run = sub.add_parser("run", help="run a workflow (API or UI format) here or on a server, and write its outputs",
                         description="Run a workflow and write its outputs; see comfy_kernel.run.")
    from .run import add_arguments as add_run_arguments

    add_run_arguments(run)
    add_server_arguments(run)
    host.call_each("ck_add_arguments", parser=run)
    run.set_defaults(func=cmd_run)
    host.call_each("ck_add_commands", subparsers=sub)
    return parser


def setup_logging(level: str, to_stdout: bool = False) -> None:
    from .logs import LogCapture

    LogCapture.instance().install()
    handler = logging.StreamHandler(sys.stdout if to_stdout else sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, str(level).upper(), logging.INFO))
    logging.getLogger("uvicorn.access").disabled = True
    # The format shows the message only, so the record fields it never shows are not
    # gathered (the logging HOWTO's "Optimization" section): no caller-frame walk, no
    # thread or process names. Every prompt logs a line; this is most of its cost.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def cmd_serve(args: argparse.Namespace, host: PluginHost, argv: list[str] | None = None) -> int:
    from .server import run

    setup_logging(args.verbose, args.log_stdout)
    for flag in secrets_on_command_line(argv if argv is not None else sys.argv[1:]):
        logging.getLogger(__name__).warning(
            "warning: %s was given on the command line, where every local user can read it (ps, /proc); "
            "set it in the environment (COMFY_KERNEL_<OPTION>) or in comfy-kernel.toml instead", flag)
    return run(args, host)


def cmd_plugins(args: argparse.Namespace, host: PluginHost) -> int:
    from .kernel import Kernel

    logging.basicConfig(level=logging.CRITICAL)
    kernel = Kernel(args, host=host)
    kernel.load()
    records = host.as_list()
    if args.json:
        from .http import dumps

        print(dumps(records).decode())
    else:
        width = max([len(r["name"]) for r in records] + [4])
        print(f"{'NAME':<{width}}  {'KIND':<9}  {'VERSION':<10}  {'STATUS':<8}  NODES")
        for r in records:
            print(f"{r['name']:<{width}}  {r['kind']:<9}  {str(r['version'] or '-'):<10}  "
                  f"{r['status']:<8}  {len(r['nodes'])}")
            if r["error"]:
                print(f"{'':<{width}}  error: {r['error']}")
    return 1 if args.check and host.failed() else 0


def cmd_run(args: argparse.Namespace, host: PluginHost) -> int:
    from .run import main as run_main

    return run_main(args, host)


def apply_command_defaults(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Give the command ``argv`` chooses, nested ones included, its defaults from the config file and the
    environment (so `comfy-kernel billing credit ...` reads COMFY_KERNEL_DATABASE as `serve` does)."""
    chosen, rest = parser, argv
    while rest and chosen._subparsers is not None:
        choices = chosen._subparsers._group_actions[0].choices
        if rest[0] not in choices:
            break
        chosen, rest = choices[rest[0]], rest[1:]
        apply_layered_defaults(chosen, rest)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    host = PluginHost()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--disable-plugins", default="")
    known, _ = pre.parse_known_args(argv)
    import os

    disabled = (known.disable_plugins or os.environ.get("COMFY_KERNEL_DISABLE_PLUGINS", "")).split(",")
    host.disabled = {d.strip() for d in disabled if d.strip()}
    try:
        from .config import read_config_file

        file_disabled = read_config_file(None).get("disable_plugins") or []
        if isinstance(file_disabled, str):
            file_disabled = file_disabled.split(",")
        host.disabled |= {d.strip() for d in file_disabled if d.strip()}
    except Exception:
        pass
    host.discover()
    parser = build_parser(host)
    mark_secret_options(parser)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["serve", *argv]  # `comfy-kernel [serve options]` serves, as ComfyUI's main.py does
    apply_command_defaults(parser, argv)
    args = parser.parse_args(argv)
    if hasattr(args, "max_upload_size"):
        normalise(args)
    remember_secret_values(args, parser)
    func: Any = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        if func is cmd_serve:
            return int(cmd_serve(args, host, argv) or 0)
        return int(func(args, host) or 0) if func in (cmd_plugins, cmd_run) else int(func(args) or 0)
    except StartupError as exc:
        print(f"comfy-kernel: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
