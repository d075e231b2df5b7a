"""The manager's schema migrations (Alembic revision scripts, branch ``manager``); see ``comfy_kernel.storage``."""

import os

from comfy_kernel.storage.migrations import Migrations

MANAGER = Migrations("manager", os.path.dirname(__file__), head="manager_0001")
