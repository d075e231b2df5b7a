"""The CLIP text transformer (CLIP-L, OpenCLIP-G), its BPE tokenizer and ComfyUI's prompt syntax."""
