"""Data directories, the model-folder registry and path confinement."""
