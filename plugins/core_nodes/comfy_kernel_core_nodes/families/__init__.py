"""Model families, one package each: architecture, key detection, loaders' entries and the family's nodes.

Each package registers its detectors with :mod:`..model.detection` when
imported and lists its nodes in ``nodes.py`` (collected like the category
modules of ``..nodes``). Adding a family touches only its own folder.
"""
