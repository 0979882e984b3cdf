"""Figures as PNG bytes for the report pages (matplotlib without a screen)."""

from __future__ import annotations

import io
from typing import Any


def subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``matplotlib.pyplot.subplots`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def png_bytes(fig: Any) -> bytes:
    """Render ``fig`` to PNG and close it (figures are not left open across a report run)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def readable_log_axis(ax: Any, values: Any, axis: str = "x") -> None:
    """A log axis (``"x"`` or ``"y"``) with plain-number ticks (0.1, 0.2, 0.5, 1, 2, 5, ...) over ``values``."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    low, high = float(min(values)), float(max(values))
    getattr(ax, f"set_{axis}scale")("log")
    ticks = [m * 10**e for e in range(-3, 5) for m in (1, 2, 5) if low / 1.5 <= m * 10**e <= high * 1.5]
    target = getattr(ax, f"{axis}axis")
    target.set_major_locator(FixedLocator(ticks))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def label_points(ax: Any, xs: list[float], ys: list[float], labels: list[str]) -> None:
    """Name every point, keeping labels apart: labels are placed from the lowest point up, and one
    closer than a text line to a label already placed (with x within a label's width) moves up a line,
    with a thin leader line back to its point. Call after the axes' limits and scales are final."""
    ax.figure.canvas.draw()
    to_px = ax.transData.transform
    placed: list[tuple[float, float]] = []  # label anchors, display pixels
    line, width = 11.0, 95.0  # display pixels of one 7-pt line and of a typical label
    for i in sorted(range(len(xs)), key=lambda i: ys[i]):
        px, py = to_px((xs[i], ys[i]))
        ty = py + 4
        while any(abs(ty - qy) < line and abs(px - qx) < width for qx, qy in placed):
            ty += line
        placed.append((px, ty))
        ax.annotate(
            labels[i],
            (xs[i], ys[i]),
            xytext=(4, ty - py),
            textcoords="offset pixels",
            fontsize=7,
            arrowprops=dict(arrowstyle="-", lw=0.4, color="grey") if ty - py > line else None,
        )
