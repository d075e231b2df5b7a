"""The billing plugin's schema migrations (Alembic revision scripts, branch ``billing``).

The plugin returns :data:`BILLING` from ``ck_migrations``; the kernel brings
its database to the head before the plugin starts (see
``comfy_kernel.storage.migrations``).
"""

import os

from comfy_kernel.storage import Migrations

BILLING = Migrations("billing", os.path.dirname(__file__), head="b0001")
