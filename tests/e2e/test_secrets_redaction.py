"""Secret option values never leave the process: ``/system_stats``'s argv, the logs, the console.

``/system_stats`` is public (the frontend reads ``argv``), so it shows the
command line with the values of secret options (keys, tokens, passwords,
private key paths) and URL passwords replaced by ``***``.
"""

from __future__ import annotations

import argparse

from comfy_kernel.config import REDACTED, mark_secret, mark_secret_options, redact_argv, redact_text
from tests.conftest import KERNEL_ONLY


def test_system_stats_hides_secret_option_values(make_server, tmp_path):
    key = tmp_path / "private-server.key"
    server = make_server(*KERNEL_ONLY, "--tls-keyfile", str(key))
    argv = server.get("/system_stats").json()["system"]["argv"]
    assert "--tls-keyfile" in argv and argv[argv.index("--tls-keyfile") + 1] == REDACTED
    assert str(key) not in str(argv) and "private-server" not in server.get("/internal/logs").text
    assert "--port" in argv and str(server.port) in argv  # everything else stays as given


def test_redaction_rules():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers().add_parser("serve")
    mark_secret(sub.add_argument("--vault-key"))
    sub.add_argument("--upstream-token")  # marked by its name
    sub.add_argument("--auth-token-ttl", type=int)  # a number: not a secret
    sub.add_argument("--db-password-file")  # a path to a secret
    mark_secret_options(parser)
    argv = ["serve", "--vault-key", "k3y-value", "--upstream-token=tok-value", "--auth-token-ttl", "900",
            "--db-password-file", "/etc/pw", "--database", "postgresql://app:hunter22@db:5432/x", "--vault-k", "abbr"]
    shown = redact_argv(argv)
    assert shown == ["serve", "--vault-key", REDACTED, f"--upstream-token={REDACTED}", "--auth-token-ttl", "900",
                     "--db-password-file", REDACTED, "--database", f"postgresql://app:{REDACTED}@db:5432/x",
                     "--vault-k", REDACTED]
    assert redact_text("connect postgresql://app:hunter22@db/x failed") == f"connect postgresql://app:{REDACTED}@db/x failed"
