"""CURVE values: a curve through control points on [0, 1], as the frontend's curve widget edits it.

The widget (``io.Curve``) sends ``{"points": [[x, y], ...], "interpolation":
"monotone_cubic" | "linear"}``; a node turns that into a :class:`CurveInput`
with :meth:`CurveInput.from_raw` and evaluates it. The monotone cubic curve is
the Fritsch-Carlson construction (Hermite segments whose end slopes are
limited so the curve never overshoots between points), which is what the
frontend draws, so a node computes the curve the user sees. Node packs
import these names from ``comfy_api.input``.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CurvePoint = tuple[float, float]


class CurveInput(ABC):
    """A curve evaluated at x in [0, 1]; subclasses say how it passes between its points."""

    @property
    @abstractmethod
    def points(self) -> list[CurvePoint]:
        """The control points, sorted by x."""

    @abstractmethod
    def interp(self, x: float) -> float:
        """The curve's value at ``x``."""

    def interp_array(self, xs: np.ndarray) -> np.ndarray:
        """The curve's values at every ``x`` of ``xs`` (float64)."""
        return np.array([self.interp(float(x)) for x in xs], dtype=np.float64)

    def to_lut(self, size: int = 256) -> np.ndarray:
        """``size`` values at evenly spaced x from 0 to 1: a lookup table for image operations."""
        return self.interp_array(np.linspace(0.0, 1.0, size))

    @staticmethod
    def from_raw(data: Any) -> CurveInput:
        """A curve from the widget's value: a dict with ``points`` (and ``interpolation``), or a list of points.

        A curve passes through unchanged; an unknown interpolation is drawn
        monotone cubic, as the frontend does.
        """
        if isinstance(data, CurveInput):
            return data
        kind = "monotone_cubic"
        if isinstance(data, dict):
            raw, kind = data["points"], data.get("interpolation", kind)
        else:
            raw = data
        points = [(float(x), float(y)) for x, y in raw]
        if kind == "linear":
            return LinearCurve(points)
        if kind != "monotone_cubic":
            log.warning("unknown curve interpolation %r; using monotone_cubic", kind)
        return MonotoneCubicCurve(points)


class _SortedPoints(CurveInput):
    def __init__(self, control_points: list[CurvePoint]):
        self._points = sorted(((float(x), float(y)) for x, y in control_points), key=lambda p: p[0])
        self._xs = np.array([x for x, _ in self._points], dtype=np.float64)
        self._ys = np.array([y for _, y in self._points], dtype=np.float64)

    @property
    def points(self) -> list[CurvePoint]:
        return list(self._points)

    def interp(self, x: float) -> float:
        return float(self.interp_array(np.array([x], dtype=np.float64))[0])

    def interp_array(self, xs: np.ndarray) -> np.ndarray:
        xs = np.asarray(xs, dtype=np.float64)
        if len(self._xs) < 2:  # no point: 0; one point: its y everywhere
            return np.full(xs.shape, self._ys[0] if len(self._ys) else 0.0, dtype=np.float64)
        return self._between(xs)

    @abstractmethod
    def _between(self, xs: np.ndarray) -> np.ndarray:
        """The values at ``xs`` for a curve of at least two points."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(points={self._points})"


class LinearCurve(_SortedPoints):
    """Straight segments between the points; flat beyond the first and last."""

    def _between(self, xs: np.ndarray) -> np.ndarray:
        return np.interp(xs, self._xs, self._ys)


class MonotoneCubicCurve(_SortedPoints):
    """Cubic Hermite segments with Fritsch-Carlson slopes: smooth, and monotone wherever the points are."""

    def __init__(self, control_points: list[CurvePoint]):
        super().__init__(control_points)
        self._slopes = _monotone_slopes(self._xs, self._ys)

    def _between(self, xs: np.ndarray) -> np.ndarray:
        px, py, m = self._xs, self._ys, self._slopes
        hi = np.clip(np.searchsorted(px, xs, side="right"), 1, len(px) - 1)
        lo = hi - 1
        h = px[hi] - px[lo]
        t = np.divide(xs - px[lo], h, out=np.zeros_like(xs), where=h != 0)
        t2, t3 = t * t, t * t * t
        value = ((2 * t3 - 3 * t2 + 1) * py[lo] + (t3 - 2 * t2 + t) * h * m[lo]
                 + (3 * t2 - 2 * t3) * py[hi] + (t3 - t2) * h * m[hi])
        return np.where(xs <= px[0], py[0], np.where(xs >= px[-1], py[-1], value))


def _monotone_slopes(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson tangents: secants at the ends, averaged secants inside (zero at a local extremum),
    then each segment's pair scaled down where it would overshoot; segments are limited left to right."""
    n = len(xs)
    slopes = np.zeros(n, dtype=np.float64)
    if n < 2:
        return slopes
    h = np.diff(xs)
    secant = np.divide(np.diff(ys), h, out=np.zeros(n - 1), where=h != 0)
    slopes[0], slopes[-1] = secant[0], secant[-1]
    for i in range(1, n - 1):
        left, right = secant[i - 1], secant[i]
        slopes[i] = 0.0 if left * right <= 0 else (left + right) / 2
    for i in range(n - 1):
        d = secant[i]
        if d == 0:
            slopes[i] = slopes[i + 1] = 0.0
            continue
        a, b = slopes[i] / d, slopes[i + 1] / d
        if a * a + b * b > 9:
            scale = 3 / math.sqrt(a * a + b * b)
            slopes[i], slopes[i + 1] = scale * a * d, scale * b * d
    return slopes
