"""The hub's schema migrations (Alembic revision scripts, branch ``hub``); see ``comfy_kernel.storage``."""

import os

from comfy_kernel.storage import Migrations

HUB = Migrations("hub", os.path.dirname(__file__), head="hub0001")
