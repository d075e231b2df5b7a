"""Entry point of the core_nodes plugin: registers ComfyUI's core nodes with the kernel.

This module and the node modules it imports stay free of torch at import time,
so the kernel's start-up does not pay for it; the nodes import the model code
when they first run.
"""

from __future__ import annotations

import os
from typing import Any

from comfy_kernel import hookimpl

from .nodes import NODES, context

# OpenMP threads that wait for work spin for about 10,000 rounds (some microseconds), then sleep.
# libgomp's default spins ~30x longer, which on a busy shared machine steals the CPU others need;
# sleeping at once (OMP_WAIT_POLICY=PASSIVE) makes every small parallel operation of a sampler
# step wait for a wake-up, ~45 % slower steps on a quiet machine. This short spin kept the quiet
# speed and the busy-machine robustness (see the README's "CPU threads"). Read when torch's OpenMP
# runtime loads, so it is set here, at plugin discovery; an explicit setting of either wins.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "10000"


@hookimpl
def ck_add_arguments(parser: Any) -> None:
    from .model.compiled import MODES  # no torch import: the model package imports nothing at its top

    parser.add_argument("--compile", nargs="?", const="default", choices=sorted(MODES), metavar="MODE",
                        help="run diffusion models through torch.compile (inductor, frozen weights): faster "
                             "steps after a first run that compiles for minutes; MODE max-autotune also "
                             "times several kernels for each matrix product while compiling (longer first "
                             "run, faster steps); off by default")


@hookimpl
def ck_register_model_folders(folders: Any) -> None:
    # Nothing to add (ComfyUI's default folders suffice); remember the registry for the loaders.
    context.configure(folders=folders)


@hookimpl
def ck_register_nodes(registry: Any) -> None:
    for node in NODES:
        registry.register(node.name, node.cls, node.display_name, python_module=node.python_module,
                          source="core_nodes", reserved=True)


@hookimpl
def ck_startup(kernel: Any) -> None:
    context.configure(folders=kernel.folders, config=kernel.config)
    mode = getattr(kernel.config, "compile", None)
    if mode:
        from .model import compiled

        compiled.configure(True, "default" if mode is True else mode)


@hookimpl
def ck_warmup(kernel: Any) -> None:
    from . import warmup

    warmup.warm_up(kernel)
