import folder_paths  # noqa: F401

raise RuntimeError("this pack is broken on purpose")
