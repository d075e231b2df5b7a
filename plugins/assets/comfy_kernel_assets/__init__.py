"""comfy-kernel's asset library: files addressed by blake3 hash, owned per identity."""
