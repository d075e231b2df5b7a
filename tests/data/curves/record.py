"""Records ComfyUI's CURVE evaluation for tests/kernel/nodes/test_curves.py (run once, in any Python with numpy).

    python tests/data/curves/record.py COMFYUI_CHECKOUT > tests/data/curves/comfyui_curves.json

It loads ``comfy_api/latest/_input/curve_types.py`` from the checkout by its
path (ComfyUI 0.18.1 was used) and evaluates each case below, one x at a time
and as an array, at 101 evenly spaced x from -0.1 to 1.1.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np

CASES = {
    "default": {"points": [[0, 0], [1, 1]]},
    "s_curve": {"points": [[0, 0], [0.25, 0.1], [0.5, 0.5], [0.75, 0.9], [1, 1]]},
    "unsorted_peak": {"points": [[1, 0.2], [0, 0], [0.5, 1.0], [0.3, 0.9]]},
    "steep_overshoot": {"points": [[0, 0], [0.1, 0.9], [0.2, 1.0], [1, 1]]},
    "flat_run": {"points": [[0, 0.5], [0.3, 0.5], [0.6, 0.5], [0.8, 0.1], [1, 0]]},
    "duplicate_x": {"points": [[0, 0], [0.5, 0.2], [0.5, 0.8], [1, 1]]},
    "one_point": {"points": [[0.4, 0.7]]},
    "linear": {"points": [[0, 1], [0.2, 0.4], [0.9, 0.6], [1, 0]], "interpolation": "linear"},
    "bare_list": [[0, 0.1], [0.6, 0.3], [1, 0.95]],
}


def main() -> None:
    path = f"{sys.argv[1]}/comfy_api/latest/_input/curve_types.py"
    spec = importlib.util.spec_from_file_location("curve_types", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    xs = np.linspace(-0.1, 1.1, 101)
    out = {"xs": xs.tolist(), "cases": {}}
    for name, raw in CASES.items():
        curve = module.CurveInput.from_raw(raw)
        out["cases"][name] = {"raw": raw, "type": type(curve).__name__, "points": [list(p) for p in curve.points],
                              "scalar": [curve.interp(float(x)) for x in xs],
                              "array": curve.interp_array(xs).tolist(), "lut8": curve.to_lut(8).tolist()}
    json.dump(out, sys.stdout, indent=0)


if __name__ == "__main__":
    main()
