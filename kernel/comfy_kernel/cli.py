"""``comfy-kernel``: ``serve`` starts the server, ``plugins`` lists what loaded, ``run`` runs a workflow."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from . import __version__
from .config import add_server_arguments, apply_layered_defaults, normalise
from .plugins import PluginHost


def build_parser(host: PluginHost) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="comfy-kernel", description="A server that speaks the ComfyUI API.")
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


def cmd_serve(args: argparse.Namespace, host: PluginHost) -> int:
    from .server import run

    setup_logging(args.verbose, args.log_stdout)
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
    if not argv:
        argv = ["serve"]
    sub_parsers = parser._subparsers._group_actions[0].choices if parser._subparsers else {}
    if argv[0] in sub_parsers:
        apply_layered_defaults(sub_parsers[argv[0]], argv[1:])
    args = parser.parse_args(argv)
    if hasattr(args, "max_upload_size"):
        normalise(args)
    func: Any = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args, host) or 0) if func in (cmd_serve, cmd_plugins, cmd_run) else int(func(args) or 0)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
