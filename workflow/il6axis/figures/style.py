"""How every figure of the report is saved and framed: one resolution, one crop, open axes, group labels.

The colours and words (severity, direction, tissue and stratum palettes) are in :mod:`il6axis.vocabulary`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

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
