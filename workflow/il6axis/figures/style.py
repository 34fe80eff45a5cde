"""One visual language for every figure of the report: severity palette, direction palette, saving."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
# Fixed SVG element ids (random by default), so reruns write byte-identical SVGs.
matplotlib.rcParams["svg.hashsalt"] = "il6axis"

import matplotlib.pyplot as plt  # noqa: E402

# Severity groups: mild (the reference) cool, severe warm; excluded samples grey.
SEVERITY_PALETTE = {"mild": "#4c72b0", "severe": "#c44e52", "excluded": "#9e9e9e"}
SEVERITY_ORDER = ["mild", "severe"]
# Direction of change in severe relative to mild (volcano, MA, heatmaps of calls).
DIRECTION_PALETTE = {"up in severe": "#c0392b", "down in severe": "#2471a3", "not significant": "#b3b6b7"}
# Diverging colour map for log2 fold changes and z-scores: blue = lower in severe, red = higher.
DIVERGING_CMAP = "RdBu_r"
DPI = 150


def save(fig: plt.Figure, out_paths: Sequence[str | Path]) -> None:
    """Write the figure to every path (PNG and SVG); SVGs carry no date so reruns are byte-identical.

    The figure is laid out once and every format is cropped to that one tight bounding box:
    ``bbox_inches="tight"`` would lay it out again for each file, and for small multiples that extra
    text layout costs as much as drawing the file.
    """
    fig.set_dpi(DPI)  # the layout pass measures text at the dpi the PNG is written with
    fig.draw_without_rendering()
    bbox = fig.get_tightbbox(fig.canvas.get_renderer()).padded(matplotlib.rcParams["savefig.pad_inches"])
    for path in out_paths:
        metadata = {"Date": None} if str(path).endswith(".svg") else None
        fig.savefig(path, dpi=DPI, bbox_inches=bbox, metadata=metadata)
    plt.close(fig)


def despine(ax: plt.Axes) -> None:
    """Open axes: hide the top and right spines (what seaborn's despine does, without importing seaborn,
    whose scipy.stats import alone costs a plotting job about a second)."""
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def group_label(group: str, n: int) -> str:
    """Axis / legend label with the group size, e.g. 'severe (n=10)'."""
    return f"{group} (n={n})"
