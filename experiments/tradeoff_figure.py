"""The privacy-utility trade-off figure of the tables (matplotlib, PNG + PDF).

Two panels: re-identification (attack "own original" on the outputs, one evaluator) against the
head-pose error, and against the expression agreement. Each table is one series: a sweep table (its
rows in order, e.g. the margin m) is drawn as a line, a methods table (FALCO beside the baselines) as
labelled points. A row without the metric is left out of that panel and named in the figure's footer.
"""
from __future__ import annotations

from pathlib import Path

PANELS = (("pose error (deg)", "head-pose error, mean |Δ| yaw/pitch/roll (deg)  ← better"),
          ("expression agreement %", "expression agreement with the original (%)  → better"))


def reid_column(evaluator: str) -> str:
    return f"re-ID % own_original output ({evaluator})"


def write(by_table: dict[str, list[dict]], stem: Path, evaluator: str) -> list[Path]:
    """``stem.png`` and ``stem.pdf`` from ``{table: rows}`` (rows of :func:`tables.run_row`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y_col = reid_column(evaluator)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(12, 5.5))
    fig.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.2, wspace=0.25)
    left_out = []
    markers = "osD^v<>p"
    for ax, (x_col, x_label) in zip(axes, PANELS):
        for k, (table, rows) in enumerate(sorted(by_table.items())):
            points = [(r[x_col], r[y_col], r["cell"]) for r in rows
                      if r.get(x_col) is not None and r.get(y_col) is not None]
            left_out += [f"{table}: {r['cell']} ({x_col if r.get(x_col) is None else y_col})" for r in rows
                         if r.get(x_col) is None or r.get(y_col) is None]
            if not points:
                continue
            xs, ys, labels = zip(*points)
            sweep = "margin" in table or "sweep" in table
            ax.plot(xs, ys, marker=markers[k % len(markers)], linestyle="-" if sweep else "none", label=table)
            for x, y, label in points:
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel(x_label)
        ax.set_ylabel("re-identified, own original (%)  ↓ private")
        ax.set_ylim(-5, 105)
        ax.margins(x=0.15)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Privacy-utility trade-off (re-identification by {evaluator})")
    if left_out:
        fig.text(0.01, 0.01, "not drawn (metric n/a): " + "; ".join(sorted(set(left_out))), fontsize=6, wrap=True)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".png", ".pdf"):
        fig.savefig(stem.with_suffix(suffix), dpi=150)
        written.append(stem.with_suffix(suffix))
    plt.close(fig)
    return written
