"""The report's figures, drawn with matplotlib: overlaid histograms and a labelled scatter.

Each function writes a 640 x 400 PNG and returns the numbers it drew (:class:`HistogramData`,
:class:`ScatterData`), which :func:`anon.report.render.write_plots` also keeps beside the PNG as
``<name>.json``: a reader (or a test) gets the data behind a figure without reading pixels.

Figures are built on :class:`matplotlib.figure.Figure` directly (no ``pyplot``): no global state,
no GUI backend, safe in any process of a multi-rank run.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SIZE_INCHES, DPI = (6.4, 4.0), 100  # 640 x 400 pixels
THRESHOLD_COLOUR = "#c80000"


@dataclass
class HistogramData:
    """What a histogram shows: shared bin ``edges``, ``counts[label]`` per bin, ``sizes[label]`` (finite
    values drawn), the ``threshold`` line (None: none)."""

    title: str
    xlabel: str
    edges: list[float]
    counts: dict[str, list[int]]
    sizes: dict[str, int]
    threshold: Optional[float]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "histogram", **asdict(self)}


@dataclass
class ScatterData:
    """What a scatter shows: the drawn ``points`` ``[x, y, label]`` (points with a missing coordinate left out)."""

    title: str
    xlabel: str
    ylabel: str
    points: list[list[Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "scatter", **asdict(self)}


def _finite(values: Sequence[Optional[float]]) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)


def _span(lo: float, hi: float) -> tuple[float, float]:
    """A drawable range: non-finite -> (0, 1); empty -> widened by 0.5 either side."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if hi - lo < 1e-9:
        return lo - 0.5, hi + 0.5
    return lo, hi


def _figure() -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE_INCHES, dpi=DPI)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def histogram_png(series: dict[str, Sequence[Optional[float]]], path: str | Path, title: str, xlabel: str,
                  threshold: float | None = None, bins: int = 30,
                  value_range: tuple[float, float] | None = None) -> HistogramData:
    """Overlaid histograms of several value lists on shared bins, a dashed threshold line and a legend.

    Missing and non-finite values are left out (``sizes`` counts what is drawn). ``value_range``
    fixes the bins' span (default: the values' and the threshold's min and max)."""
    finite = {label: _finite(values) for label, values in series.items()}
    pooled = np.concatenate([*finite.values(), np.asarray([] if threshold is None else [threshold], np.float64)])
    lo, hi = value_range or ((float(pooled.min()), float(pooled.max())) if pooled.size else (0.0, 1.0))
    edges = np.linspace(*_span(lo, hi), bins + 1)
    counts = {label: np.histogram(values, bins=edges)[0] for label, values in finite.items()}
    from matplotlib.ticker import MaxNLocator

    fig, ax = _figure()
    for label, values in finite.items():
        ax.hist(values, bins=edges.tolist(), alpha=0.45, edgecolor="black", linewidth=0.5, label=f"{label} (n={values.size})")
    if threshold is not None:
        ax.axvline(threshold, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1.5, label=f"threshold {threshold:.3g}")
    top = max([int(c.max()) for c in counts.values() if c.size] + [1])
    ax.set(title=title, xlabel=xlabel, ylabel="images", xlim=(edges[0], edges[-1]), ylim=(0, 1.3 * top))  # legend room
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    _save(fig, Path(path))
    return HistogramData(title, xlabel, [float(e) for e in edges], {k: [int(n) for n in c] for k, c in counts.items()},
                         {k: int(v.size) for k, v in finite.items()}, threshold)


def scatter_png(points: Sequence[tuple[Optional[float], Optional[float], str]], path: str | Path, title: str,
                xlabel: str, ylabel: str) -> ScatterData:
    """Labelled points ``(x, y, label)``; points with a missing or non-finite coordinate are left out."""
    drawn = [(float(x), float(y), label) for x, y, label in points
             if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    fig, ax = _figure()
    for k, (x, y, label) in enumerate(drawn):
        ax.scatter([x], [y], color=f"C{k % 10}", zorder=3)
        ax.annotate(label[:30], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7, color=f"C{k % 10}")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.margins(x=0.25, y=0.15)  # room for the labels
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, Path(path))
    return ScatterData(title, xlabel, ylabel, [list(p) for p in drawn])


__all__ = ["HistogramData", "ScatterData", "histogram_png", "scatter_png"]
