"""The node registry and the ``/object_info`` descriptions built from it."""
