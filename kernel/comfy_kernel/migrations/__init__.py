"""The kernel's schema migrations (Alembic revision scripts, branch ``kernel``); see ``storage.migrations``."""

import os

from ..storage.migrations import Migrations

KERNEL = Migrations("kernel", os.path.dirname(__file__), head="k0002")
