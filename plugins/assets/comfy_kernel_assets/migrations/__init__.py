"""The asset library's schema migrations (Alembic revision scripts, branch ``assets``); see ``comfy_kernel.storage``."""

import os

from comfy_kernel.storage.migrations import Migrations

ASSETS = Migrations("assets", os.path.dirname(__file__), head="assets_0001")
