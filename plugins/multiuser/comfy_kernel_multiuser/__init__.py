"""comfy-kernel's ``multiuser`` plugin: authenticated users, workspaces, tokens and secrets.

The plugin is inert unless the server runs with ``--auth`` (or
``COMFY_KERNEL_AUTH=1``, or ``auth = true`` in the config file): installing
it alone changes nothing, so a shared environment keeps working unchanged.
"""

__version__ = "0.1.0"
