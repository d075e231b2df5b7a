"""Writes families/lotus/empty_prompt.safetensors: the fixed conditioning of ComfyUI's LotusConditioning.

Lotus-D was trained with a frozen SD 2 text encoder and the empty prompt, so
ComfyUI's node returns the encoder's output for it as numbers written into
``comfy_extras/nodes_lotus.py`` (a [1, 2, 1024] tensor literal in ComfyUI
0.3.64). This script reads that literal as data (``ast.literal_eval``, nothing
of the file is run), checks that every value is exact in float16, and stores
the tensor in float16 with its origin in the safetensors metadata. Run once
when ComfyUI's numbers change:
``python plugins/core_nodes/tools/lotus_conditioning_data.py PATH/comfy_extras/nodes_lotus.py``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "comfy_kernel_core_nodes" / "families" / "lotus" / "empty_prompt.safetensors"
KEY = "conditioning"


def tensor_literal(source: str) -> list:
    """The nested number list of the file's one ``torch.tensor([...])`` call."""
    found = [node for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "tensor"
             and node.args and isinstance(node.args[0], ast.List)]
    if len(found) != 1:
        raise SystemExit(f"expected one tensor literal, found {len(found)}")
    return ast.literal_eval(found[0].args[0])


def main(path: str) -> None:
    import torch
    from safetensors.torch import save_file

    values = torch.tensor(tensor_literal(Path(path).read_text()), dtype=torch.float64)
    if values.ndim != 3 or values.shape[0] != 1 or values.shape[2] != 1024:
        raise SystemExit(f"unexpected shape {list(values.shape)}")
    half = values.to(torch.float16)
    if not torch.equal(half.double(), values):
        raise SystemExit("some values are not exact in float16; store them wider")
    save_file({KEY: half.contiguous()}, str(OUT), metadata={
        "source": "ComfyUI 0.3.64, comfy_extras/nodes_lotus.py, LotusConditioning's tensor literal",
        "meaning": "SD 2 OpenCLIP-H text encoder output for the empty prompt (Lotus-D's fixed conditioning)",
    })
    print(f"wrote {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT.name}: "
          f"{list(half.shape)} float16")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
