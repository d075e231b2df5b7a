"""Server settings: CLI flags, environment variables and a config file.

Flags keep ComfyUI's names where they exist. Each flag can also come from
the environment as ``COMFY_KERNEL_<DEST>`` (``--max-upload-size`` ->
``COMFY_KERNEL_MAX_UPLOAD_SIZE``) or from a TOML file (``comfy-kernel.toml``
in the working directory, or ``--config PATH``) using the same names with
``_`` or ``-``. Precedence: command line > environment > file > default.

Options holding secrets (keys, tokens, passwords, private key paths) are
marked with :func:`mark_secret`; options whose names say so are marked too.
Their values never leave the process: :func:`redact_argv` hides them in the
command line ``/system_stats`` shows, :func:`redact_text` in captured logs,
and both hide the password of any ``scheme://user:password@host`` URL.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from typing import Any

ENV_PREFIX = "COMFY_KERNEL_"
DEFAULT_CONFIG_FILE = "comfy-kernel.toml"
REDACTED = "***"
SECRET_NAME = re.compile(r"secret|password|passwd|token|api[-_]?key|private[-_]?key|credential|keyfile")
URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)(?P<password>[^/\s@]+)(?=@)")

#: Option strings whose value is secret -> whether the value itself is the secret
#: (``--secrets-key``) rather than where one is kept (``--tls-keyfile``).
SECRET_FLAGS: dict[str, bool] = {}
#: Secret values of the running configuration, hidden in captured logs.
SECRET_VALUES: set[str] = set()


def mark_secret(action: argparse.Action, *, is_path: bool = False) -> argparse.Action:
    """Mark an option's value as secret (``is_path``: a file holding one); returns ``action``."""
    action.secret = "path" if is_path else "value"  # type: ignore[attr-defined]
    for flag in action.option_strings:
        SECRET_FLAGS[flag] = not is_path
    return action


def mark_secret_options(parser: argparse.ArgumentParser) -> None:
    """Mark, in ``parser`` and its sub-commands, the options whose names say they hold secrets.

    Options plugins add without :func:`mark_secret` are covered this way; numbers
    (``--auth-token-ttl``) and flags without a value are not secrets.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                mark_secret_options(sub)
            continue
        if not action.option_strings or getattr(action, "secret", None):
            continue
        if action.nargs == 0 or action.type in (int, float):
            continue
        if any(SECRET_NAME.search(flag.lstrip("-").lower()) for flag in action.option_strings):
            names = " ".join(action.option_strings).lower()
            mark_secret(action, is_path=("file" in names or "path" in names))


def _secret_flag(token: str) -> bool | None:
    """Whether ``token`` (an option, maybe abbreviated) is a secret one, and of which kind."""
    if token in SECRET_FLAGS:
        return SECRET_FLAGS[token]
    if token.startswith("--") and len(token) > 3:
        matches = [kind for flag, kind in SECRET_FLAGS.items() if flag.startswith(token)]
        if matches:
            return any(matches)
    return None


def redact_text(text: str) -> str:
    """``text`` with URL passwords and the configuration's secret values replaced by ``***``."""
    if "://" in text and "@" in text:
        text = URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED, text)
    for value in SECRET_VALUES:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def redact_argv(argv: list[str]) -> list[str]:
    """A command line safe to show: the values of secret options become ``***``."""
    out: list[str] = []
    hide_next = False
    for token in argv:
        if hide_next and not token.startswith("-"):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = False
        if token.startswith("-") and "=" in token:
            flag, _ = token.split("=", 1)
            if _secret_flag(flag) is not None:
                out.append(f"{flag}={REDACTED}")
                continue
        elif _secret_flag(token) is not None:
            hide_next = True
        out.append(redact_text(token))
    return out


def secrets_on_command_line(argv: list[str]) -> list[str]:
    """The secret-valued options given in ``argv`` (visible to every local user in ``ps``)."""
    found = []
    for token in argv:
        flag = token.split("=", 1)[0] if token.startswith("--") else token
        if _secret_flag(flag):
            found.append(flag)
        elif "://" in token and URL_PASSWORD.search(token):
            found.append("a URL with a password")
    return found


def remember_secret_values(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Collect the values of ``args``' secret options (from any source) for :func:`redact_text`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                remember_secret_values(args, sub)
            continue
        if getattr(action, "secret", None) is None:
            continue
        value = getattr(args, action.dest, None)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and len(item) >= 4:
                SECRET_VALUES.add(item)


class StartupError(Exception):
    """A setting the server cannot start with; the CLI prints it as one line and exits 2."""


def port_number(value: str) -> int:
    """``--port``: a TCP port, 1 to 65535."""
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1-65535")
    return port


def _existing_dir(value: str) -> str:
    if not os.path.isdir(value):
        raise argparse.ArgumentTypeError(f"directory does not exist: {value}")
    return os.path.abspath(value)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The kernel's own ``serve`` flags."""
    add = parser.add_argument
    add("--config", default=None, help="TOML config file (default: ./comfy-kernel.toml if present)")
    add("--listen", nargs="?", const="0.0.0.0,::", default="127.0.0.1",
        help="address(es) to listen on, comma-separated; bare flag = all interfaces")
    add("--port", type=port_number, default=8188)
    mark_secret(add("--tls-keyfile", default=None), is_path=True)
    add("--tls-certfile", default=None)
    add("--base-directory", default=None, help="base for models, custom_nodes, input, output, temp, user")
    add("--input-directory", default=None)
    add("--output-directory", default=None)
    add("--temp-directory", default=None, help="the temp directory is <DIR>/temp, wiped at start and exit")
    add("--user-directory", type=_existing_dir, default=None)
    add("--extra-model-paths-config", nargs="+", action="append", default=None, metavar="PATH")
    add("--database", default=None, help="SQLite file for queue, history and plugin state "
        "(default: <user directory>/comfy-kernel.db)")
    add("--max-upload-size", type=float, default=100.0, help="request body cap in MB")
    add("--enable-cors-header", nargs="?", const="*", default=None, metavar="ORIGIN")
    add("--allowed-hosts", type=_csv, default=[], help="extra Host names accepted besides loopback "
        "and the listen addresses (DNS-rebinding protection)")
    add("--multi-user", action="store_true", help="per-user storage selected by the Comfy-User header")
    add("--disable-metadata", action="store_true", help="no prompt/workflow metadata in saved files")
    add("--preview-method", default="none", choices=["none", "auto", "latent2rgb", "taesd"])
    add("--preview-size", type=int, default=512)
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--cache-classic", action="store_true", help="classic executor cache (default)")
    cache.add_argument("--cache-lru", type=int, default=0, help="LRU executor cache of N entries")
    cache.add_argument("--cache-none", action="store_true", help="no executor cache (least RAM)")
    cache.add_argument("--cache-ram", nargs="?", type=float, const=4.0, default=0.0,
                       help="keep outputs until free RAM falls below GB")
    add("--history-max-items", type=int, default=10000, help="history entries kept per server")
    add("--webhook-allow-private", action="store_true",
        help="allow webhooks to loopback and private addresses (refused by default)")
    add("--webhook-max-attempts", type=int, default=9, help="attempts per webhook delivery before giving up")
    add("--webhook-retry-delay", type=float, default=5.0,
        help="seconds before a webhook's first retry; each next one waits 4x longer (at most 6 h)")
    add("--disable-plugins", type=_csv, default=[], help="plugin or node-pack names to skip, comma-separated")
    add("--disable-all-custom-nodes", action="store_true")
    add("--whitelist-custom-nodes", nargs="+", default=[])
    add("--verbose", nargs="?", const="DEBUG", default="INFO")
    add("--log-stdout", action="store_true")
    add("--dont-print-server", action="store_true")
    add("--quick-test-for-ci", action="store_true", help="exit after start-up")
    add("--no-warmup", action="store_true", help="do not import torch and the node modules in the background "
        "once the server answers (the first prompt then pays for it)")
    add("--preload", action="store_true", help="the background warm-up also loads the models the last "
        "prompts used, so the first prompt after a restart finds them loaded")
    try:
        from .gpu import add_arguments as add_gpu_arguments
    except ImportError:  # the GPU scheduler is optional for the HTTP layer
        add_gpu_arguments = None
    if add_gpu_arguments is not None:
        add_gpu_arguments(parser)
    elif not _has_option(parser, "--cpu"):
        add("--cpu", action="store_true", help="run everything on the CPU")


def _has_option(parser: argparse.ArgumentParser, flag: str) -> bool:
    return flag in parser._option_string_actions


def read_config_file(path: str | None) -> dict[str, Any]:
    path = path or os.environ.get(ENV_PREFIX + "CONFIG")
    if path is None and os.path.isfile(DEFAULT_CONFIG_FILE):
        path = DEFAULT_CONFIG_FILE
    if not path:
        return {}
    with open(path, "rb") as f:
        data = tomllib.load(f)
    section = data.get("comfy-kernel", data.get("comfy_kernel", data))
    return {k.replace("-", "_"): v for k, v in section.items() if not isinstance(v, dict)}


def _from_env(action: argparse.Action, raw: str) -> Any:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        truth = raw.strip().lower() in ("1", "true", "yes", "on")
        return truth if isinstance(action, argparse._StoreTrueAction) else not truth
    if action.nargs in ("+", "*") or isinstance(action, argparse._AppendAction):
        values = _csv(raw)
        return [values] if isinstance(action, argparse._AppendAction) else values
    return action.type(raw) if callable(action.type) else raw


def apply_layered_defaults(parser: argparse.ArgumentParser, argv: list[str] | None) -> None:
    """Set parser defaults from the config file and the environment."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    file_values = read_config_file(known.config)
    overrides: dict[str, Any] = {}
    for action in parser._actions:
        dest = action.dest
        if dest in ("help", "config") or not action.option_strings:
            continue
        if dest in file_values:
            value = file_values[dest]
            if isinstance(action, argparse._AppendAction) and isinstance(value, list):
                value = [value]
            overrides[dest] = value
        env = os.environ.get(ENV_PREFIX + dest.upper())
        if env is not None:
            overrides[dest] = _from_env(action, env)
    if overrides:
        parser.set_defaults(**overrides)


def normalise(args: argparse.Namespace) -> argparse.Namespace:
    """Flatten repeated options and fill derived defaults."""
    paths = args.extra_model_paths_config or []
    args.extra_model_paths_config = [p for group in paths for p in (group if isinstance(group, list) else [group])]
    if isinstance(args.disable_plugins, str):
        args.disable_plugins = _csv(args.disable_plugins)
    return args


def default_config(**overrides: Any) -> argparse.Namespace:
    """A fully populated config as ``serve`` would build it (for tests and embedding)."""
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    args = normalise(parser.parse_args([]))
    for key, value in overrides.items():
        setattr(args, key, value)
    return args
