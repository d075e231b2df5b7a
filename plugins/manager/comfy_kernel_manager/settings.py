"""The manager's persistent settings (``config.ini``) and its working folders.

ComfyUI-Manager keeps its settings in an INI file under the user directory;
this plugin does the same (``<user>/__manager/config.ini``) so the values a
user sets through the API (db_mode, channel, policies, preview method) survive
a restart, and so the security level can be set by editing the file. A
command-line/environment option (``--manager-security-level``) wins over it.
"""

from __future__ import annotations

import configparser
import os
import threading
from typing import Any

DEFAULTS: dict[str, str] = {
    "security_level": "normal",
    "db_mode": "cache",
    "channel_url": "default",
    "preview_method": "",
    "update_policy": "stable",
    "component_policy": "workflow",
    "protected_packages": "",
}

SECURITY_LEVELS = ("strong", "normal", "normal-", "weak")
DB_MODES = ("channel", "local", "remote", "cache")
PREVIEW_METHODS = ("auto", "latent2rgb", "taesd", "none")
UPDATE_POLICIES = ("stable", "nightly", "nightly-comfyui", "stable-comfyui")
COMPONENT_POLICIES = ("workflow", "higher", "mine")


class Settings:
    """Read/write access to ``config.ini``; every write is flushed at once."""

    def __init__(self, directory: str, overrides: dict[str, Any] | None = None):
        self.directory = directory
        self.path = os.path.join(directory, "config.ini")
        self.overrides = {k: v for k, v in (overrides or {}).items() if v not in (None, "")}
        self._lock = threading.Lock()
        self._parser = configparser.ConfigParser()
        if os.path.isfile(self.path):
            self._parser.read(self.path, encoding="utf-8")
        if not self._parser.has_section("default"):
            self._parser.add_section("default")

    def get(self, key: str) -> str:
        if key in self.overrides:
            return str(self.overrides[key])
        return self._parser.get("default", key, fallback=DEFAULTS.get(key, ""))

    def set(self, key: str, value: str) -> None:
        with self._lock:
            self._parser.set("default", key, value)
            os.makedirs(self.directory, exist_ok=True)
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                self._parser.write(f)
            os.replace(tmp, self.path)

    @property
    def security_level(self) -> str:
        level = self.get("security_level").strip().lower()
        return level if level in SECURITY_LEVELS else "normal"
