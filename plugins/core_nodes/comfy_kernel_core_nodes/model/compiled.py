"""``serve --compile [MODE]``: diffusion networks run through ``torch.compile`` (off by default).

Inductor with weight freezing turns the network into fused kernels with
pre-packed weights; ``max-autotune`` also times several kernels for each
matrix product while compiling. On the 2-core CPU the tiny SD1.5 UNet
(bench/txt2img.py's network, 64x64, in one process) took about 0.8x its
eager time compiled, 0.72-0.75x with ``max-autotune``; through the server,
beside ComfyUI, a step took 0.82x ComfyUI's compiled and 0.80-0.85x with
``max-autotune`` (1.07x eager), at the price of a first run that compiles
for one to several minutes per network and latent size. The network must
first be called in inference mode (the engine sees to it): a first call
outside it compiled a second graph later, without frozen weights, and the
steps took twice as long. Freezing bakes the weights into the compiled code, which is safe here
because every set of weight patches (LoRA, merges) is loaded as its own
module by the model manager; one compiled function is kept per module and
per process.

Evaluations that carry Python patches (attention replacements, block
patches, ControlNet residuals, wrappers) run eagerly: those are arbitrary
code the compiled graph cannot follow, and tracing them would compile again
for every new object.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

_enabled = False
#: ``serve --compile MODE`` -> torch.compile's mode (``max-autotune`` without CUDA graphs, which would
#: pin each network's memory)
MODES: dict[str, str | None] = {"default": None, "max-autotune": "max-autotune-no-cudagraphs"}
_mode: str | None = None
#: where a module keeps its compiled function (in its __dict__, not as a submodule: the
#: compiled wrapper holds the module, and the cycle is freed with the module)
_ATTR = "_ck_compiled"


def configure(enabled: bool, mode: str = "default") -> None:
    """Switch compilation on or off (``serve --compile [MODE]``); ``mode`` is a key of :data:`MODES`."""
    global _enabled, _mode
    _enabled = bool(enabled)
    _mode = MODES[mode]


def enabled() -> bool:
    return _enabled


def _plain(transformer_options: dict[str, Any] | None, control: Any, kwargs: dict[str, Any]) -> bool:
    """True when the evaluation carries nothing but tensors: no patches, wrappers or control."""
    if control is not None:
        return False
    options = transformer_options or {}
    if any(options.get(name) for name in ("patches", "patches_replace")):
        return False
    if any(options.get("wrappers", {}).values()):
        return False
    return all(hasattr(v, "shape") or v is None for v in kwargs.values())


def network_for(module: Any, transformer_options: dict[str, Any] | None, control: Any,
                kwargs: dict[str, Any]) -> Any | None:
    """The compiled ``module`` when compilation is on and this evaluation can use it, else None."""
    if not _enabled or not _plain(transformer_options, control, kwargs):
        return None
    fn = module.__dict__.get(_ATTR)
    if fn is None:
        import torch
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        log.info("compiling %s with torch.compile (first run is slow)", type(module).__name__)
        fn = torch.compile(module, mode=_mode)
        module.__dict__[_ATTR] = fn
    return fn
