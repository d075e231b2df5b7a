"""The plugin's settings: ``serve`` flags, also read from the environment and the config file.

The kernel layers every ``serve`` option (command line > ``COMFY_KERNEL_<DEST>``
> ``comfy-kernel.toml`` > default), so ``--auth`` is also ``COMFY_KERNEL_AUTH=1``
or ``auth = true``. :class:`Settings` reads them once into typed fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_arguments(parser: Any) -> None:
    """Add the plugin's options to ``comfy-kernel serve``."""
    from comfy_kernel.config import mark_secret

    group = parser.add_argument_group("authentication (multiuser plugin)")
    add = group.add_argument
    add("--auth", action="store_true",
        help="require sign-in: users, sessions, API keys, JWTs, OAuth, workspaces and secrets")
    add("--auth-public-url", default=None, metavar="URL",
        help="the server's public base URL (issuer of tokens and OAuth metadata); "
             "default: taken from each request")
    add("--auth-session-ttl", type=int, default=5 * 24 * 3600, metavar="SECONDS",
        help="lifetime of a sign-in session cookie")
    add("--auth-token-ttl", type=int, default=900, metavar="SECONDS", help="lifetime of JWT access tokens")
    add("--auth-refresh-ttl", type=int, default=30 * 24 * 3600, metavar="SECONDS",
        help="lifetime of OAuth refresh tokens")
    add("--auth-key-rotation", type=int, default=24 * 3600, metavar="SECONDS",
        help="how long a JWT signing key signs before a new one takes over")
    add("--auth-max-failures", type=int, default=5, metavar="N",
        help="failed sign-ins of one account (or from one address) before a lockout")
    add("--auth-lockout", type=int, default=900, metavar="SECONDS", help="lockout duration")
    add("--auth-rate-limit", type=int, default=30, metavar="N",
        help="requests per minute and address on sign-in and token endpoints")
    add("--auth-external-issuer", default=None, metavar="ISS",
        help="issuer (iss) of identity tokens accepted by /api/auth/token")
    add("--auth-external-jwks", default=None, metavar="URL_OR_FILE",
        help="JWKS of the external issuer: an http(s) URL or a local JSON file")
    add("--auth-external-audience", default=None, metavar="AUD",
        help="required audience (aud) of external identity tokens")
    add("--auth-dcr-https-hosts", type=_csv, default=[], metavar="HOSTS",
        help="hosts allowed in https redirect URIs of dynamically registered web OAuth clients")
    mark_secret(add("--secrets-key", default=None, metavar="KEY",
                    help="key encrypting stored secrets (a Fernet key, or a long passphrase); "
                         "prefer --secrets-key-file or COMFY_KERNEL_SECRETS_KEY"))
    mark_secret(add("--secrets-key-file", default=None, metavar="PATH", help="file holding the secrets key"),
                is_path=True)


@dataclass
class Settings:
    """Typed view of the plugin's options on ``kernel.config``."""

    enabled: bool = False
    public_url: str | None = None
    session_ttl: int = 5 * 24 * 3600
    token_ttl: int = 900
    refresh_ttl: int = 30 * 24 * 3600
    key_rotation: int = 24 * 3600
    max_failures: int = 5
    lockout: int = 900
    rate_limit: int = 30
    external_issuer: str | None = None
    external_jwks: str | None = None
    external_audience: str | None = None
    dcr_https_hosts: list[str] = field(default_factory=list)
    secrets_key: str | None = None
    tls: bool = False

    @classmethod
    def from_config(cls, config: Any) -> Settings:
        def get(name: str, default: Any = None) -> Any:
            value = getattr(config, name, default)
            return default if value is None else value

        key = get("secrets_key")
        key_file = get("secrets_key_file")
        if not key and key_file:
            with open(key_file, encoding="utf-8") as f:
                key = f.read().strip()
        hosts = get("auth_dcr_https_hosts", [])
        if isinstance(hosts, str):
            hosts = _csv(hosts)
        public = get("auth_public_url")
        return cls(
            enabled=bool(get("auth", False)),
            public_url=public.rstrip("/") if public else None,
            session_ttl=int(get("auth_session_ttl", cls.session_ttl)),
            token_ttl=int(get("auth_token_ttl", cls.token_ttl)),
            refresh_ttl=int(get("auth_refresh_ttl", cls.refresh_ttl)),
            key_rotation=int(get("auth_key_rotation", cls.key_rotation)),
            max_failures=int(get("auth_max_failures", cls.max_failures)),
            lockout=int(get("auth_lockout", cls.lockout)),
            rate_limit=int(get("auth_rate_limit", cls.rate_limit)),
            external_issuer=get("auth_external_issuer"),
            external_jwks=get("auth_external_jwks"),
            external_audience=get("auth_external_audience"),
            dcr_https_hosts=[h.lower() for h in hosts],
            secrets_key=key or None,
            tls=bool(get("tls_keyfile") and get("tls_certfile")),
        )
