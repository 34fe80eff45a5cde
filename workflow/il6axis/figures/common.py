"""What every per-cohort figure shares: titles naming the declared contrast, effect and p-value text,
haloed and repelled labels, the box-and-points panel, log-axis ticks and the cohort's log-scale name.

The figure families (:mod:`il6axis.figures.de`, :mod:`~il6axis.figures.qc`, :mod:`~il6axis.figures.panel`,
:mod:`~il6axis.figures.scores`) import these so that a title or a label reads the same in all of them.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import anndata as ad
import matplotlib.patheffects as pe
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from adjustText import adjust_text
from matplotlib.cbook import boxplot_stats
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from il6axis.analysis.qc import cohort_name
from il6axis.cohort.contrast import Contrast, contrast_from_summary, contrast_from_uns
from il6axis.cohort.value_scale import COUNTS, NORMALISED
from il6axis.de import routing
from il6axis.de.contract import SCALE_NORMALISED
from il6axis.errors import InputError
from il6axis.figures.style import despine, group_label
from il6axis.jsonio import read_json
from il6axis.vocabulary import EXCLUDED, SEVERITY_ORDER, SEVERITY_PALETTE

# Every severity slot, excluded samples last (QC figures show them; the contrast figures do not).
ALL_GROUPS = [*SEVERITY_ORDER, EXCLUDED]
# Small-multiple titles sit at a fixed height just above their axes (no tick labels on top). Left
# unset, matplotlib re-measures every y axis at each draw to place each title: about a third of the
# drawing time of a 17-panel figure, for the same position.
TITLE_Y = 1.0
BOX_WIDTH = 0.55
# Tiers of the IL-6 panel resource, in the order heatmaps group them.
TIER_ORDER = ("core", "family", "STAT3-target", "acute-phase", "control")

# Labels drawn over dense point clouds stay readable with a white outline.
HALO = [pe.withStroke(linewidth=2.2, foreground="white")]
# Label repulsion (adjustText) runs a fixed number of iterations instead of its default one second of
# wall time, so the same table always gives the same figure whatever the machine load. An iteration
# costs roughly in proportion to the number of labels, so the budget is iterations x labels, capped
# at LABEL_ITERATIONS (which settles every label set of the demo and GEO cohorts that can settle).
LABEL_ITERATIONS = 300
LABEL_WORK = 4000


# ----------------------------------------------------------------------------------------------------
# Titles and text
# ----------------------------------------------------------------------------------------------------


def contrast_title(
    cohort: str, n_per_group: Mapping[str, int], what: str, contrast: Contrast | None = None
) -> str:
    """'{cohort}: ICU (n=..) vs non-ICU (n=..)' (the declared contrast; severe vs mild by default) on the
    first line, what the figure shows on the second. A contrast that is not a severity contrast says so."""
    contrast = contrast or Contrast()
    head = f"{cohort}: {contrast.with_n(n_per_group)}"
    if not contrast.is_severity:
        head += f" ({contrast.kind_label}, not a severity contrast)"
    return f"{head}\n{what}" if what else head


def summary_contrast(summary: Mapping) -> Contrast:
    """The declared contrast of a DE summary (severe vs mild for summaries written before it existed)."""
    return contrast_from_summary(summary, source=f"summary.json of {summary.get('cohort', '?')}")


def summary_title(summary: Mapping, what: str) -> str:
    """:func:`contrast_title` from a DE summary: cohort, declared contrast with n, then ``what``."""
    return contrast_title(summary["cohort"], summary["n_per_group"], what, summary_contrast(summary))


def read_tsv(path: str | Path) -> pd.DataFrame:
    """A tab-separated table the workflow wrote."""
    return pd.read_csv(path, sep="\t")


def require_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """InputError naming ``what`` and the missing columns unless ``table`` has every one of ``columns``."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(f"{what}: missing column(s) {missing}; rerun the rule that writes it.")


def read_summary(path: str | Path) -> dict:
    """The DE summary JSON (cohort, design, n_per_group, alpha, ...), checked for the keys titles need."""
    return read_json(path, what="DE summary", rule="deseq2", required=("cohort", "n_per_group"))


def summary_value_type(summary: Mapping) -> str:
    """The cohort's value type from its DE summary; a summary without ``value_type`` (older runs) is read
    from its ``scale``."""
    if summary.get("value_type"):
        return str(summary["value_type"])
    return NORMALISED if summary.get("scale") == SCALE_NORMALISED else COUNTS


def log_scale_name(source: ad.AnnData | Mapping) -> str:
    """Name of the cohort's log expression scale for labels, from its AnnData or its DE summary: the VST
    for counts, log2(normalised + 1) for a cohort that publishes normalised values only, and "published
    log2 normalised" for one whose values are already log2."""
    if isinstance(source, ad.AnnData):
        return routing.log_scale_name(routing.value_type_of(source))
    return routing.log_scale_name(summary_value_type(source))


def declared_contrast(adata: ad.AnnData) -> Contrast:
    """The cohort's declared contrast, carried in ``uns`` from the config (severe vs mild if absent)."""
    return contrast_from_uns(adata.uns, source=f"{cohort_name(adata)} AnnData")


def contrast_group_label(group: str, n: int, contrast: Contrast | None = None) -> str:
    """'ICU (n=50)': the declared label of a severity slot with its size ('excluded (n=3)' stays)."""
    return group_label((contrast or Contrast()).group_label(group), n)


def tick_label(group: str, n: int, contrast: Contrast | None) -> str:
    """:func:`contrast_group_label` for an axis tick: a long declared label ('non-ICU (hospitalised)') is
    wrapped, with the size on its own line, so neighbouring ticks do not run into each other."""
    name = (contrast or Contrast()).group_label(group)
    if len(name) <= 10:
        return group_label(name, n)
    return f"{textwrap.fill(name, 14)}\n(n={n})"


def counts_by_group(severity: pd.Series) -> dict[str, int]:
    """Samples per severity slot (every slot, zero when empty)."""
    counts = severity.value_counts()
    return {g: int(counts.get(g, 0)) for g in ALL_GROUPS}


def is_true(value: object) -> bool:
    """A TSV boolean read back as text or number."""
    return str(value).strip().lower() in {"true", "1", "1.0"}


def format_p(p: float) -> str:
    """Compact p / q value: 2 significant digits, scientific below 0.001, 'NA' when missing."""
    if p is None or not np.isfinite(p):
        return "NA"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.2g}"


def format_estimate(value: float) -> str:
    """Two decimals, without the '-0.00' that rounding a tiny negative value produces."""
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def estimate_ci(estimate: float, low: float, high: float) -> str:
    """'0.55 [0.27, 0.82]' (bracket = confidence interval)."""
    est, lo, hi = (format_estimate(float(v)) for v in (estimate, low, high))
    return f"{est} [{lo}, {hi}]"


def effect_text(
    label: str, estimate: float, low: float, high: float, padj: float, q_label: str = "padj"
) -> str:
    """'label 0.55 [0.27, 0.82], padj 0.003' (bracket = confidence interval)."""
    return f"{label} {estimate_ci(estimate, low, high)}, {q_label} {format_p(padj)}"


def halo_text(ax: plt.Axes, x: float, y: float, text: str, **kwargs) -> plt.Text:
    """A data label with a white outline so it stays legible on top of coloured points."""
    kwargs.setdefault("fontsize", 7)
    kwargs.setdefault("zorder", 5)
    return ax.text(x, y, text, path_effects=HALO, **kwargs)


def repel_labels(texts: list, ax: plt.Axes, **kwargs) -> None:
    """Move overlapping data labels apart (adjustText), deterministically: a fixed iteration budget
    instead of adjustText's default time limit. ``kwargs`` go to ``adjust_text`` (arrowprops, expand)."""
    if texts:
        iterations = int(np.clip(LABEL_WORK // len(texts), 50, LABEL_ITERATIONS))
        adjust_text(texts, ax=ax, iter_lim=iterations, **kwargs)


def grid_shape(n_panels: int, max_cols: int = 4) -> tuple[int, int]:
    """Rows and columns for ``n_panels`` small multiples, at most ``max_cols`` wide."""
    n_cols = max(1, min(max_cols, n_panels))
    return max(1, math.ceil(n_panels / n_cols)), n_cols


# ----------------------------------------------------------------------------------------------------
# Panels
# ----------------------------------------------------------------------------------------------------


def box_strip(
    ax: plt.Axes,
    values: pd.Series,
    groups: pd.Series,
    order: Sequence[str],
    log_scale: bool = False,
    contrast: Contrast | None = None,
) -> pd.Series:
    """Open box (quartiles, whiskers to 1.5 IQR, no fliers: every point is drawn) plus jittered points per
    group, coloured by the severity palette; tick labels carry the declared group label (``contrast``,
    severe / mild by default) and the group size. Returns each point's
    jittered x (NaN where not drawn), so a caller can label a point where it actually is.

    Plain matplotlib, and the box drawn as two lines per group (frame + whiskers + caps, and the median)
    with matplotlib's own box statistics: the same picture as ``Axes.boxplot``, which builds six
    artists per box and merges the whole rcParams for each (a third of a 17-panel figure's cost). The
    jitter is seeded so reruns give identical files.
    """
    data = pd.DataFrame({"value": values.to_numpy(dtype=float), "group": groups.astype(str).to_numpy()})
    x_drawn = np.full(len(data), np.nan)
    data = data[np.isfinite(data["value"])]
    order = [g for g in order if (data["group"] == g).any()]
    if not order:
        return pd.Series(x_drawn, index=values.index)
    rng = np.random.default_rng(0)
    xs, ys, colours = [], [], []
    for pos, group in enumerate(order):
        rows = data.index[data["group"] == group]  # positions in ``values``
        y = data.loc[rows, "value"].to_numpy()
        colour = SEVERITY_PALETTE.get(group, "#7f7f7f")
        frame_x, frame_y, median_x, median_y = box_lines(y, pos)
        ax.plot(frame_x, frame_y, color=colour, linewidth=1.2)
        ax.plot(median_x, median_y, color=colour, linewidth=1.8)
        xs.append(pos + rng.uniform(-0.18, 0.18, size=len(y)))
        x_drawn[rows] = xs[-1]
        ys.append(y)
        colours.extend([colour] * len(y))
    ax.scatter(
        np.concatenate(xs), np.concatenate(ys), s=13, color=colours, alpha=0.85, edgecolors="white",
        linewidths=0.4, zorder=3,
    )  # fmt: skip
    n = data["group"].value_counts()
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels([tick_label(g, int(n.get(g, 0)), contrast) for g in order])
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_xlabel("")
    if log_scale:
        ax.set_yscale("log")
        log_ticks(ax)
    despine(ax)
    return pd.Series(x_drawn, index=values.index)


def box_lines(
    values: np.ndarray, pos: float, width: float = BOX_WIDTH
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Line coordinates of one box at x = ``pos``: the frame (quartile box, whiskers to the furthest
    point within 1.5 IQR, caps half the box width; NaN breaks between the pieces) and the median.
    Statistics from ``matplotlib.cbook.boxplot_stats``, as ``Axes.boxplot`` uses them."""
    stats = boxplot_stats(values, whis=1.5)[0]
    q1, q3, low, high = stats["q1"], stats["q3"], stats["whislo"], stats["whishi"]
    left, right = pos - width / 2, pos + width / 2
    cap_left, cap_right = pos - width / 4, pos + width / 4
    nan = float("nan")
    frame_x = [left, right, right, left, left, nan, pos, pos, nan, pos, pos, nan]
    frame_y = [q1, q1, q3, q3, q1, nan, q1, low, nan, q3, high, nan]
    frame_x += [cap_left, cap_right, nan, cap_left, cap_right]
    frame_y += [low, low, nan, high, high]
    return frame_x, frame_y, [left, right], [stats["med"], stats["med"]]


def log_ticks(ax: plt.Axes) -> None:
    """Labelled ticks (3 to 6) on a log y axis; matplotlib's default leaves one tick, or none, on panels
    spanning less than a decade, and its fallback crowds them.

    Under a 3-fold span the log axis is nearly linear: round linear steps (100s, 2500s, ...) cover it
    evenly, where the 1-2-5 style series below would bunch all ticks into one end of the panel.
    Otherwise the sparsest 'nice' series (1; 1-2-5; 1-1.5-2-3-5-7; ...) with 3 to 6 ticks inside the
    limits.
    """
    low, high = ax.get_ylim()
    chosen = log_axis_ticks(low, high)
    ax.yaxis.set_major_locator(FixedLocator(chosen))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(NullLocator())


def log_axis_ticks(low: float, high: float) -> list[float]:
    """Tick values for a log axis from ``low`` to ``high`` (both > 0); see :func:`log_ticks`."""
    if np.log10(high / low) < np.log10(3.0):
        for n_bins in range(3, 8):
            locator = MaxNLocator(nbins=n_bins, steps=[1, 2, 2.5, 5, 10])
            ticks = [float(t) for t in locator.tick_values(low, high) if low <= t <= high]
            if 3 <= len(ticks) <= 6:
                return ticks
    decades = range(int(np.floor(np.log10(low))) - 1, int(np.ceil(np.log10(high))) + 1)
    series = [
        (1.0,),
        (1.0, 2.0, 5.0),
        (1.0, 1.5, 2.0, 3.0, 5.0, 7.0),
        (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0),
        tuple(np.arange(1.0, 10.0, 0.5)),
    ]
    options = [[m * 10.0**d for d in decades for m in subs if low <= m * 10.0**d <= high] for subs in series]
    chosen = next((t for t in options if 3 <= len(t) <= 6), None)
    return chosen or next((t for t in options if 2 <= len(t) <= 8), options[-1])


def message_panel(ax: plt.Axes, message: str) -> None:
    """An empty panel that says why there is nothing to plot."""
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=9, wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
