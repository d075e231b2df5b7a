"""The plugin's schema migrations (Alembic revision scripts, branch ``multiuser``); see ``comfy_kernel.storage``."""

import os

from comfy_kernel.storage import Migrations

MULTIUSER = Migrations("multiuser", os.path.dirname(__file__), head="mu0002")
