"""The plugin's flags and its plan file.

Flags (also ``COMFY_KERNEL_<DEST>`` or entries in ``comfy-kernel.toml``, as
for every ``serve`` option): ``--billing`` turns metering, quotas and billing
on; ``--billing-config`` names the plan file (TOML, default
``<user directory>/billing.toml``, else :data:`DEFAULT_PLANS`);
``--billing-database`` a billing file of an older version to import (see
:mod:`.adopt`); ``--billing-provider`` the payment provider.

Money: configuration amounts are in units of ``currency`` (``monthly_credits
= 5.0`` is five dollars for ``usd``). Stored amounts are integer micros
(1/1,000,000 of a unit), as the seed's balance fields are reported; plan
prices and credits are also shown in cents where the seed asks for cents.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

MICROS = 1_000_000
TIERS = ("FREE", "STANDARD", "CREATOR", "PRO", "FOUNDERS_EDITION")
DURATIONS = ("MONTHLY", "ANNUAL")
WORKSPACE_KINDS = ("any", "personal", "team")

#: Used when no plan file exists: one free plan, so that enabling billing
#: meters and limits without further setup. Real deployments write their own.
DEFAULT_PLANS = """
currency = "usd"
default_plan = "free"

[plans.free]
tier = "FREE"
monthly_credits = 5.0
max_concurrent = 1
max_queue = 20
price_per_second = { cpu = 0.0001, mps = 0.0002, cuda = 0.0005 }
"""


class ConfigError(ValueError):
    """The plan file is not usable; the message says which entry and why."""


def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("billing (billing plugin)")
    add = group.add_argument
    add("--billing", action="store_true",
        help="meter every prompt and enforce plans, credits and quotas (see the billing plugin's README)")
    add("--billing-config", default=None, metavar="PATH",
        help="plan file (TOML); default: <user directory>/billing.toml, else one built-in free plan")
    add("--billing-database", default=None, metavar="PATH",
        help="billing's own SQLite file from versions before billing moved into the kernel's database: its rows "
             "are imported once (default: comfy-kernel-billing.db beside the kernel's SQLite file)")
    add("--billing-provider", default="manual", metavar="NAME",
        help="payment provider (default: manual, administrators approve top-ups and paid plans)")


@dataclass(frozen=True)
class Plan:
    """One plan of the plan file (``[plans.<slug>]``)."""

    slug: str
    tier: str = "FREE"
    duration: str = "MONTHLY"
    price_cents: int = 0
    monthly_credits: float = 0.0
    max_seats: int = 1
    per_seat: bool = False
    workspace: str = "any"
    max_concurrent: int | None = None
    max_queue: int | None = None
    max_pixels: int | None = None
    max_batch: int | None = None
    prices: dict[str, float] = field(default_factory=dict)

    @property
    def credits_micros(self) -> int:
        return round(self.monthly_credits * MICROS)

    @property
    def credits_cents(self) -> int:
        return round(self.monthly_credits * 100)

    def price_per_second(self, device: dict[str, Any] | None) -> float:
        """Price of a device-second on ``device`` (a worker description): by name, then type, then default.

        Without a device (a run recovered after a crash, whose worker is not
        known) the ``default`` price applies, else the plan's lowest price.
        """
        prices = self.prices
        if device:
            for key in (str(device.get("name") or "").lower(), str(device.get("type") or "").lower()):
                if key and key in prices:
                    return prices[key]
        elif "default" not in prices and prices:
            return min(prices.values())
        return prices.get("default", 0.0)

    def cost_micros(self, busy_s: float, device: dict[str, Any] | None) -> int:
        return max(0, round(busy_s * self.price_per_second(device) * MICROS))


@dataclass
class Settings:
    enabled: bool = False
    config_path: str | None = None
    import_from: str = ""
    provider: str = "manual"
    currency: str = "usd"
    default_plan: str | None = None
    portal_url: str | None = None
    min_topup_cents: int = 500
    max_topup_cents: int = 100_000_00
    min_balance: float = 0.0
    plans: dict[str, Plan] = field(default_factory=dict)

    @property
    def min_balance_micros(self) -> int:
        return round(self.min_balance * MICROS)

    def plan(self, slug: str | None) -> Plan | None:
        return self.plans.get(slug) if slug else None

    @classmethod
    def from_config(cls, config: Any, kernel_dir: str, user_dir: str) -> Settings:
        """Read the flags; the plan file is read by :meth:`load_plans` (start-up, where errors are reported).

        ``kernel_dir`` is the directory of the kernel's SQLite file (where older
        versions kept ``comfy-kernel-billing.db``).
        """
        def get(name: str, default: Any = None) -> Any:
            value = getattr(config, name, default)
            return default if value is None else value

        legacy = get("billing_database") or os.path.join(kernel_dir, "comfy-kernel-billing.db")
        path = get("billing_config")
        if path is None and os.path.isfile(os.path.join(user_dir, "billing.toml")):
            path = os.path.join(user_dir, "billing.toml")
        return cls(enabled=bool(get("billing", False)), config_path=path, import_from=os.path.abspath(legacy),
                   provider=str(get("billing_provider", "manual")))

    def load_plans(self) -> None:
        if self.config_path:
            with open(self.config_path, "rb") as f:
                data = tomllib.load(f)
        else:
            data = tomllib.loads(DEFAULT_PLANS)
        apply_plan_file(self, data)


def apply_plan_file(settings: Settings, data: dict[str, Any]) -> None:
    """Validate a parsed plan file into ``settings`` (raises ConfigError naming the bad entry)."""
    section = data.get("billing", data)
    currency = section.get("currency", "usd")
    if not isinstance(currency, str) or not currency.isalpha() or len(currency) > 8:
        raise ConfigError("currency must be a short alphabetic code such as usd")
    settings.currency = currency.lower()
    settings.portal_url = _opt_str(section, "portal_url")
    settings.min_topup_cents = _int(section, "min_topup_cents", 500, minimum=1)
    settings.max_topup_cents = _int(section, "max_topup_cents", 100_000_00, minimum=settings.min_topup_cents)
    settings.min_balance = _number(section, "min_balance", 0.0, allow_negative=True)
    raw_plans = section.get("plans")
    if not isinstance(raw_plans, dict) or not raw_plans:
        raise ConfigError("the plan file needs at least one [plans.<slug>] table")
    plans = {}
    for slug, raw in raw_plans.items():
        if not isinstance(raw, dict):
            raise ConfigError(f"plans.{slug} must be a table")
        plans[slug] = _plan(slug, raw)
    settings.plans = plans
    default = section.get("default_plan")
    if default is not None and default not in plans:
        raise ConfigError(f"default_plan {default!r} is not one of the plans ({', '.join(plans)})")
    settings.default_plan = default


def _plan(slug: str, raw: dict[str, Any]) -> Plan:
    where = f"plans.{slug}"
    known = {"tier", "duration", "price_cents", "monthly_credits", "max_seats", "per_seat", "workspace",
             "max_concurrent", "max_queue", "max_pixels", "max_batch", "price_per_second"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    tier = str(raw.get("tier", "FREE")).upper()
    if tier not in TIERS:
        raise ConfigError(f"{where}.tier must be one of {', '.join(TIERS)}")
    duration = str(raw.get("duration", "MONTHLY")).upper()
    if duration not in DURATIONS:
        raise ConfigError(f"{where}.duration must be MONTHLY or ANNUAL")
    workspace = str(raw.get("workspace", "any"))
    if workspace not in WORKSPACE_KINDS:
        raise ConfigError(f"{where}.workspace must be any, personal or team")
    prices = raw.get("price_per_second", {})
    if not isinstance(prices, dict):
        raise ConfigError(f"{where}.price_per_second must be a table of device class = price")
    clean_prices = {}
    for key, value in prices.items():
        clean_prices[str(key).lower()] = _number({key: value}, key, 0.0, where=f"{where}.price_per_second")
    return Plan(slug=slug, tier=tier, duration=duration,
                price_cents=_int(raw, "price_cents", 0, minimum=0, where=where),
                monthly_credits=_number(raw, "monthly_credits", 0.0, where=where),
                max_seats=_int(raw, "max_seats", 1, minimum=1, where=where),
                per_seat=bool(raw.get("per_seat", False)), workspace=workspace,
                max_concurrent=_opt_int(raw, "max_concurrent", where), max_queue=_opt_int(raw, "max_queue", where),
                max_pixels=_opt_int(raw, "max_pixels", where), max_batch=_opt_int(raw, "max_batch", where),
                prices=clean_prices)


def _number(raw: dict[str, Any], key: str, default: float, *, allow_negative: bool = False,
            where: str = "") -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (value < 0 and not allow_negative):
        raise ConfigError(f"{where + '.' if where else ''}{key} must be a{'' if allow_negative else ' non-negative'} "
                          "number")
    return float(value)


def _int(raw: dict[str, Any], key: str, default: int, *, minimum: int = 0, where: str = "") -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where + '.' if where else ''}{key} must be an integer >= {minimum}")
    return value


def _opt_int(raw: dict[str, Any], key: str, where: str) -> int | None:
    if raw.get(key) is None:
        return None
    return _int(raw, key, 0, minimum=1, where=where)


def _opt_str(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} must be a non-empty string")
    return value.strip()
