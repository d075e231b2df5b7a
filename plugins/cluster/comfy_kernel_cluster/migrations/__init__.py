"""The cluster plugin's schema migrations (Alembic revision scripts, branch ``cluster``).

The plugin returns :data:`CLUSTER` from ``ck_migrations``; the kernel brings
its database to the head at start, in front-ends and workers alike (see
``comfy_kernel.storage.migrations``).
"""

import os

from comfy_kernel.storage import Migrations

CLUSTER = Migrations("cluster", os.path.dirname(__file__), head="c0001")
