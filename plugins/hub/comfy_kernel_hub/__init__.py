"""The ``hub`` plugin: saved, versioned and published workflows, hub profiles and browsing.

Modules hold one concern each and register their own routes:
``store`` (the SQLite tables), ``workflows`` (``/api/workflows*``),
``publishing`` (share ids, ``/api/userdata/{file}/publish``,
``/api/workflows/published/{share_id}``), ``hub`` (``/api/hub/*`` and
``/api/feedback``), ``convert`` (UI-format workflow to API-format prompt) and
``loopback`` (calls into the other plugins' public HTTP API in-process).
"""
