"""Fixtures for the compat plugin's tests: real servers with node packs installed."""

from __future__ import annotations

import os
import sys

# compat_helpers sits beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
