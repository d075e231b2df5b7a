"""Entry point of the ``billing`` plugin: wires its modules into the kernel's hooks.

Without ``--billing`` only the three cloud operations of :mod:`.cloudops` are
served. The execution hooks (admission at ``/prompt`` and metering on
:class:`ExecutionHooks`, the start filter on :class:`ConcurrencyHooks`) are
registered with the plugin host only when billing is on, the start filter
only when a plan sets ``max_concurrent``: a server without ``--billing`` runs
its prompts exactly as if the plugin were not installed.
"""

from __future__ import annotations

import logging
from typing import Any

from comfy_kernel import hookimpl

from . import admin, cli, cloudops, config
from . import routes as billing_routes
from .service import Billing
from .subroutes import SubRoutes

log = logging.getLogger(__name__)

HOOKS_NAME = "billing-execution"
CONCURRENCY_NAME = "billing-concurrency"


def state(kernel: Any) -> Billing:
    billing = kernel.state.get("billing")
    if billing is None:
        billing = Billing(kernel)
        kernel.state["billing"] = billing
    return billing


class ExecutionHooks:
    """The per-prompt hooks, registered while billing is on (see the module docstring)."""

    def __init__(self, billing: Billing):
        self.billing = billing

    @hookimpl
    def ck_admit_prompt(self, request: Any, prompt: dict[str, Any], extra_data: dict[str, Any],
                        owner: str) -> Any:
        return self.billing.admit(request, prompt, extra_data, owner)

    @hookimpl
    def ck_prompt_finished(self, event: dict[str, Any]) -> None:
        try:
            self.billing.finished(event)
        except Exception:
            # Never raise from an observer hook: the kernel would drop the plugin.
            log.exception("billing: could not meter prompt %s", event.get("prompt_id"))


class ConcurrencyHooks:
    """``max_concurrent``: registered only when a plan sets it, so the queue asks nobody otherwise."""

    def __init__(self, billing: Billing):
        self.billing = billing

    @hookimpl
    def ck_prompt_may_start(self, event: dict[str, Any]) -> bool | None:
        return self.billing.may_start(event)


@hookimpl
def ck_add_arguments(parser: Any) -> None:
    config.add_arguments(parser)


@hookimpl
def ck_add_commands(subparsers: Any) -> None:
    cli.add_commands(subparsers)


@hookimpl
def ck_migrations(kernel: Any) -> list[Any]:
    """The billing tables, in the kernel's database whether or not ``--billing`` is on (a later start may turn it
    on, and the ``comfy-kernel billing`` command works on them either way)."""
    from .migrations import BILLING

    return [BILLING]


@hookimpl
def ck_register_routes(routes: Any, kernel: Any) -> None:
    cloudops.register(routes, kernel)
    billing = state(kernel)
    if billing.enabled:
        for prefix, module in (("/billing", billing_routes), ("/admin/billing", admin)):
            area = SubRoutes(prefix)
            module.register(area, billing)
            area.mount(routes)


@hookimpl
async def ck_startup(kernel: Any) -> None:
    billing = state(kernel)
    if not billing.enabled:
        return
    try:
        await billing.start()
    except Exception:
        # Failing here would let every prompt through unmetered; instead the hooks
        # stay registered and /prompt refuses with 503 until the problem is fixed.
        log.exception("billing: start-up failed; prompts are refused until it is fixed")
        billing.broken = True
    kernel.host.pm.register(ExecutionHooks(billing), name=HOOKS_NAME)
    if any(plan.max_concurrent for plan in billing.settings.plans.values()):
        kernel.host.pm.register(ConcurrencyHooks(billing), name=CONCURRENCY_NAME)


@hookimpl
async def ck_shutdown(kernel: Any) -> None:
    billing = kernel.state.get("billing")
    if billing is None or not billing.enabled:
        return
    for name in (HOOKS_NAME, CONCURRENCY_NAME):
        hooks = kernel.host.pm.get_plugin(name)
        if hooks is not None:
            kernel.host.pm.unregister(hooks)
    await billing.stop()
