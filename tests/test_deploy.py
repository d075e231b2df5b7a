"""deploy/: every comfy-kernel command and environment variable in the manifests is one the real CLI accepts."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import yaml

from comfy_kernel.cli import build_parser
from comfy_kernel.config import ENV_PREFIX
from comfy_kernel.plugins import PluginHost

DEPLOY = pathlib.Path(__file__).resolve().parents[1] / "deploy"


def _parser() -> Any:
    host = PluginHost()
    host.discover()
    return build_parser(host)


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = (doc.get("spec") or {}).get("template", {}).get("spec", {})
    return [c for c in spec.get("containers", []) if c.get("image") == "comfy-kernel"]


def _commands() -> list[tuple[str, list[str], dict[str, str]]]:
    """(where, argv, environment) of every comfy-kernel process the manifests start."""
    found = []
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("comfy-kernel"):
            found.append((f"compose {name}", service["command"], service.get("environment", {})))
    configs: dict[str, str] = {}
    for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / "config.yaml").read_text()):
        configs.update(doc.get("data") or doc.get("stringData") or {})
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            for container in _containers(doc or {}):
                found.append((f"{path.name} {doc['metadata']['name']}", container["args"], configs))
    return found


COMMANDS = _commands()


def test_both_roles_are_deployed_both_ways():
    roles = sorted((where.split()[0], argv[0], "--role" in argv) for where, argv, _ in COMMANDS)
    assert ("compose", "serve", True) in roles and ("compose", "worker", False) in roles
    assert any(w.endswith(".yaml") and a == "serve" and r for w, a, r in roles)
    assert any(w.endswith(".yaml") and a == "worker" for w, a, _ in roles)


@pytest.mark.parametrize("where, argv, env", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_commands_parse_and_environment_names_options(where, argv, env, monkeypatch):
    parser = _parser()
    args = parser.parse_args(argv)
    assert args.command == argv[0]
    if "--role" in argv:
        assert args.role == "api"
    sub = parser._subparsers._group_actions[0].choices[argv[0]]
    dests = {a.dest for a in sub._actions}
    for name in env:
        if name.startswith(ENV_PREFIX):
            assert name[len(ENV_PREFIX):].lower() in dests, (where, name)
    assert {"COMFY_KERNEL_DATABASE", "COMFY_KERNEL_NATS"} <= set(env), where
    assert env["COMFY_KERNEL_DATABASE"].startswith("postgresql://"), where
