"""CURVE values evaluate as ComfyUI's do (its outputs recorded in tests/data/curves by record.py there)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from comfy_kernel.nodes import io
from comfy_kernel.nodes.curves import CurveInput, LinearCurve, MonotoneCubicCurve

RECORDED = json.loads((Path(__file__).parents[2] / "data" / "curves" / "comfyui_curves.json").read_text())
XS = np.array(RECORDED["xs"])


@pytest.mark.parametrize("name", sorted(RECORDED["cases"]))
def test_curve_matches_comfyui(name):
    case = RECORDED["cases"][name]
    curve = CurveInput.from_raw(case["raw"])
    assert type(curve).__name__ == case["type"]
    assert [list(p) for p in curve.points] == case["points"]
    np.testing.assert_allclose([curve.interp(float(x)) for x in XS], case["scalar"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve.interp_array(XS), case["array"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve.to_lut(8), case["lut8"], rtol=0, atol=1e-12)


def test_monotone_points_give_a_monotone_curve_through_them():
    points = [(0.0, 0.0), (0.1, 0.8), (0.15, 0.82), (0.7, 0.9), (1.0, 1.0)]
    curve = MonotoneCubicCurve(points)
    values = curve.interp_array(np.linspace(0, 1, 2001))
    assert np.all(np.diff(values) >= -1e-12)  # a plain cubic spline overshoots after the steep start
    assert [curve.interp(x) for x, _ in points] == pytest.approx([y for _, y in points])


def test_a_curve_passes_through_and_unknown_interpolation_is_cubic():
    linear = LinearCurve([(0, 0), (1, 1)])
    assert CurveInput.from_raw(linear) is linear
    assert isinstance(CurveInput.from_raw({"points": [[0, 0], [1, 1]], "interpolation": "bezier"}),
                      MonotoneCubicCurve)
    assert MonotoneCubicCurve([]).interp(0.5) == 0.0 and LinearCurve([]).to_lut(3).tolist() == [0.0, 0.0, 0.0]


def test_curve_widget_declares_comfyuis_default():
    class Editor(io.ComfyNode):
        @classmethod
        def define_schema(cls) -> io.Schema:
            return io.Schema(node_id="Editor", inputs=[io.Curve.Input("curve"),
                                                       io.Curve.Input("custom", default=[(0, 1), (1, 0)])],
                             outputs=[io.Curve.Output("curve")])

        @classmethod
        def execute(cls, curve, custom):
            return io.NodeOutput(CurveInput.from_raw(curve))

    required = Editor.GET_NODE_INFO_V1()["input"]["required"]
    assert required["curve"] == ["CURVE", {"default": {"points": [[0.0, 0.0], [1.0, 1.0]],
                                                       "interpolation": "monotone_cubic"}, "socketless": True}]
    assert required["custom"][1]["default"]["points"] == [[0, 1], [1, 0]]
    assert Editor.GET_NODE_INFO_V1()["output"] == ["CURVE"]
