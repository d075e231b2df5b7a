"""The kernel's own HTTP routes, one module per area."""

from __future__ import annotations

from ..kernel import Kernel
from ..routing import RouteTable
from . import files, internal, models, nodes, system


def register_kernel_routes(table: RouteTable, kernel: Kernel) -> None:
    table.websocket("/ws")(kernel.ws.endpoint)
    for module in (system, nodes, models, files, internal):
        module.register(table, kernel)
    from ..openapi.routes import register as register_openapi

    register_openapi(table, kernel)
    try:
        from ..execution.routes import register as register_execution
    except ImportError:
        return
    register_execution(table, kernel)
    from ..execution.job_routes import register as register_jobs
    from ..webhooks.routes import register as register_webhooks

    register_jobs(table, kernel)
    register_webhooks(table, kernel)
