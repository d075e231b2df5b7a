"""Per-family set-ups for ``txt2img.py --family``: random-weight files and the family's workflow shape."""
