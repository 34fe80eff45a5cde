"""Differential-expression figures of one cohort: volcano, MA plot, p-value histogram.

Each figure is a function returning a matplotlib ``Figure`` built from in-memory tables (``*_figure``
adds the report's title from the DE summary), so the plotting logic is testable without Snakemake;
:func:`il6axis.figures.cohort.write_cohort_figures` reads the files and saves them. Titles, labels and
number formats shared with the other per-cohort figures are in :mod:`il6axis.figures.common`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from il6axis.analysis.genesets import CORE_SIGNALLING
from il6axis.cohort.contrast import Contrast
from il6axis.errors import InputError
from il6axis.figures.common import HALO, halo_text, repel_labels, summary_contrast, summary_title
from il6axis.figures.style import despine
from il6axis.vocabulary import DIRECTION_PALETTE

log = logging.getLogger(__name__)


DIRECTION_ORDER = ["not significant", "down in severe", "up in severe"]


# ----------------------------------------------------------------------------------------------------
# Shared by the volcano and the MA plot
# ----------------------------------------------------------------------------------------------------


def robust_limit(values: pd.Series, keep: Sequence[float] = (), quantile: float = 0.999) -> float:
    """Symmetric axis limit covering 99.9% of |values| and every value in ``keep`` (labelled genes).

    A few genes with near-zero counts in one group get |log2FC| of 10-30, which would squash the
    informative range into a sliver; they are drawn as triangles at the limit instead (see
    :func:`clip_with_markers`).
    """
    finite = np.abs(values[np.isfinite(values)])
    if finite.empty:
        return 1.0
    limit = float(np.quantile(finite, quantile))
    kept = [abs(v) for v in keep if np.isfinite(v)]
    limit = max([limit, *kept, 1.0])
    return limit * 1.05


def clip_with_markers(values: pd.Series, limit: float) -> tuple[pd.Series, pd.Series]:
    """Values clipped to +-limit, and a boolean mask of the points that were clipped."""
    clipped = values.clip(lower=-limit, upper=limit)
    return clipped, values.abs() > limit


def panel_label_genes(panel: pd.DataFrame, alpha: float) -> list[str]:
    """Panel genes worth a label: the signalling core always, other panel genes only when significant.

    About 45 labels on the null cloud would be unreadable; the core is the question being asked.
    """
    core = panel["symbol"].isin(CORE_SIGNALLING)
    significant = pd.to_numeric(panel.get("padj"), errors="coerce") < alpha
    return panel.loc[core | significant, "symbol"].astype(str).tolist()


def _direction(table: pd.DataFrame, alpha: float) -> pd.Series:
    sig = table["padj"] < alpha
    return pd.Series(
        np.where(
            sig & (table["log2FoldChange"] > 0),
            "up in severe",
            np.where(sig & (table["log2FoldChange"] < 0), "down in severe", "not significant"),
        ),
        index=table.index,
    )


def direction_names(contrast: Contrast | None = None) -> dict[str, str]:
    """Display name of each direction key: 'up in severe' -> 'up in ICU' for the declared contrast."""
    contrast = contrast or Contrast()
    return {
        "not significant": "not significant",
        "down in severe": contrast.direction(up=False),
        "up in severe": contrast.direction(up=True),
    }


def _direction_legend(
    ax: plt.Axes,
    counts: pd.Series,
    alpha: float,
    n_clipped: int = 0,
    limit: float = 0.0,
    axis: str = "x",
    contrast: Contrast | None = None,
) -> None:
    """Direction legend below the axes, so it can never hide points; notes genes drawn at the edge."""
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=DIRECTION_PALETTE[d], markersize=5)
        for d in DIRECTION_ORDER
    ]
    names = direction_names(contrast)
    labels = [f"{names[d]} (n={counts.get(d, 0)})" for d in DIRECTION_ORDER]
    handles.append(
        plt.Line2D([], [], marker="o", ls="", markerfacecolor="none", markeredgecolor="black", markersize=6)
    )
    labels.append("IL-6 panel gene")
    if n_clipped:
        handles.append(
            plt.Line2D([], [], marker=">" if axis == "x" else "^", ls="", color="0.4", markersize=5)
        )
        labels.append(f"|log2FC| > {limit:.1f}, drawn at the edge (n={n_clipped})")
    ax.legend(
        handles,
        labels,
        title=f"BH FDR < {alpha:g} (genome-wide)",
        loc="upper center",
        bbox_to_anchor=(0.5, -0.13),
        ncol=3,
        frameon=False,
        fontsize=8,
        title_fontsize=8,
        handletextpad=0.3,
        columnspacing=1.2,
    )


def _scatter_directions(
    ax: plt.Axes, data: pd.DataFrame, x: str, y: str, raw: pd.Series, clipped: pd.Series, axis: str
) -> None:
    """Points coloured by direction; points clipped on ``axis`` ('x' or 'y') drawn as triangles pointing
    off the axis on their own side."""
    beyond = (">", "<") if axis == "x" else ("^", "v")
    for direction in DIRECTION_ORDER:
        sub = data[data["direction"] == direction]
        for marker, mask in (
            ("o", ~clipped.loc[sub.index]),
            (beyond[0], clipped.loc[sub.index] & (raw.loc[sub.index] > 0)),
            (beyond[1], clipped.loc[sub.index] & (raw.loc[sub.index] < 0)),
        ):
            part = sub[mask]
            if part.empty:
                continue
            ax.scatter(
                part[x],
                part[y],
                s=9 if marker == "o" else 18,
                c=DIRECTION_PALETTE[direction],
                marker=marker,
                linewidths=0,
                alpha=0.75,
                rasterized=True,  # thousands of points: keep the SVG small
                zorder=2 if direction != "not significant" else 1,
            )


def _circle_and_label(ax: plt.Axes, data: pd.DataFrame, x: str, y: str, genes: Sequence[str]) -> list:
    panel = data[data["gene"].isin(set(genes))]
    ax.scatter(panel[x], panel[y], s=26, facecolors="none", edgecolors="black", linewidths=0.8, zorder=4)
    return [halo_text(ax, r[x], r[y], r["gene"]) for _, r in panel.iterrows()]


def _adjust(texts: list, ax: plt.Axes) -> None:
    repel_labels(texts, ax, expand=(1.3, 1.6), arrowprops={"arrowstyle": "-", "color": "0.1", "lw": 0.6})


# ----------------------------------------------------------------------------------------------------
# Volcano
# ----------------------------------------------------------------------------------------------------


def effect_and_test_names(table: pd.DataFrame, contrast: Contrast | None = None) -> tuple[str, str]:
    """(effect axis label, test name) for a DE table: NB Wald, or the moderated log2 linear model of a
    cohort with normalised values only (its table carries ``scale = log2_normalised``, and ``value_type =
    log2_normalised`` when the published values were log2 already and were modelled as they are). The
    label names the declared contrast (case vs reference; severe vs mild by default)."""
    groups = (contrast or Contrast()).label
    if "scale" in table.columns and (table["scale"].astype(str) == "log2_normalised").any():
        if "value_type" in table.columns and (table["value_type"].astype(str) == "log2_normalised").any():
            return f"difference in published log2 normalised, {groups}", "moderated t"
        return f"difference in log2(normalised + 1), {groups}", "moderated t"
    return f"log2 fold change, {groups} (MLE)", "Wald test"


def volcano(
    table: pd.DataFrame,
    label_genes: Sequence[str],
    alpha: float,
    title: str,
    contrast: Contrast | None = None,
) -> plt.Figure:
    """log2 fold change vs -log10 p for tested genes; circles and labels for ``label_genes``; axis and
    legend name the declared ``contrast`` (severe vs mild when None)."""
    data = table.dropna(subset=["log2FoldChange", "pvalue"]).copy()
    floor = np.nextafter(0, 1)
    data["neg_log10_p"] = -np.log10(data["pvalue"].clip(lower=floor))
    data["direction"] = _direction(data, alpha)
    counts = data["direction"].value_counts()
    labelled = data[data["gene"].isin(set(label_genes))]
    limit = robust_limit(data["log2FoldChange"], labelled["log2FoldChange"].tolist())
    data["x"], clipped = clip_with_markers(data["log2FoldChange"], limit)

    fig, ax = plt.subplots(figsize=(7.5, 6.4), dpi=150)
    _scatter_directions(ax, data, "x", "neg_log10_p", data["log2FoldChange"], clipped, "x")
    texts = _circle_and_label(ax, data, "x", "neg_log10_p", label_genes)
    ax.axvline(0, color="grey", lw=0.6, ls=":")
    ax.set_xlim(-limit * 1.02, limit * 1.02)
    ax.set_ylim(bottom=-0.03 * max(1.0, float(data["neg_log10_p"].max())))
    effect_name, test_name = effect_and_test_names(table, contrast)
    ax.set_xlabel(effect_name)
    ax.set_ylabel(f"-log10 p-value ({test_name})")
    ax.set_title(title, fontsize=10)
    _direction_legend(ax, counts, alpha, int(clipped.sum()), limit, "x", contrast)
    despine(ax)
    fig.tight_layout()
    _adjust(texts, ax)
    return fig


def load_de(results_path: str | Path) -> pd.DataFrame:
    """The DE table ``severe_vs_mild.tsv``, checked for the columns the DE figures use."""
    table = pd.read_csv(results_path, sep="\t")
    needed = {"gene", "baseMean", "log2FoldChange", "pvalue", "padj"}
    if not needed <= set(table.columns):
        raise InputError(
            f"{results_path}: DE table lacks {sorted(needed - set(table.columns))}; expected the "
            f"severe_vs_mild.tsv layout written by the deseq2 rule."
        )
    return table


def volcano_figure(table: pd.DataFrame, panel: pd.DataFrame, summary: Mapping, alpha: float) -> plt.Figure:
    """:func:`volcano` of a loaded DE table with the report's title (cohort, n per group, design)."""
    design = summary.get("design", "?")
    what = f"{_n_tested(table)} tested genes, design {design}; circled: IL-6 core + significant panel"
    title = summary_title(summary, what)
    return volcano(table, panel_label_genes(panel, alpha), alpha, title, summary_contrast(summary))


def _n_tested(table: pd.DataFrame) -> int:
    return int(table["pvalue"].notna().sum())


# ----------------------------------------------------------------------------------------------------
# MA plot
# ----------------------------------------------------------------------------------------------------


def ma_plot(
    table: pd.DataFrame,
    label_genes: Sequence[str],
    alpha: float,
    title: str,
    contrast: Contrast | None = None,
) -> plt.Figure:
    """log10 mean normalised count vs log2 fold change; shrunken fold changes when the table has them.

    Shrinkage (pydeseq2 ``lfc_shrink``) pulls noisy low-count fold changes towards zero, which is what an
    MA plot should show; colours still come from the unshrunken Wald test's padj.
    """
    shrunk = "log2FoldChange_shrunk" in table.columns and table["log2FoldChange_shrunk"].notna().any()
    y_col = "log2FoldChange_shrunk" if shrunk else "log2FoldChange"
    # Same gene set as the volcano and the p-value histogram: genes with a Wald p-value.
    data = table.dropna(subset=[y_col, "baseMean", "pvalue"]).copy()
    data = data[data["baseMean"] > 0]
    data["log10_base_mean"] = np.log10(data["baseMean"])
    data["direction"] = _direction(data, alpha)
    counts = data["direction"].value_counts()
    labelled = data[data["gene"].isin(set(label_genes))]
    limit = robust_limit(data[y_col], labelled[y_col].tolist())
    data["y"], clipped = clip_with_markers(data[y_col], limit)
    fig, ax = plt.subplots(figsize=(7.5, 6.4), dpi=150)
    _scatter_directions(ax, data, "log10_base_mean", "y", data[y_col], clipped, "y")
    texts = _circle_and_label(ax, data, "log10_base_mean", "y", label_genes)
    ax.axhline(0, color="grey", lw=0.6, ls=":")
    ax.set_ylim(-limit * 1.02, limit * 1.02)
    ax.set_xlabel("mean of normalised counts (log10)")
    effect_name, _ = effect_and_test_names(table, contrast)
    ax.set_ylabel(effect_name.replace("(MLE)", "(shrunken)") if shrunk else effect_name)
    ax.set_title(title, fontsize=10)
    _direction_legend(ax, counts, alpha, int(clipped.sum()), limit, "y", contrast)
    despine(ax)
    fig.tight_layout()
    _adjust(texts, ax)
    return fig


def ma_figure(table: pd.DataFrame, panel: pd.DataFrame, summary: Mapping, alpha: float) -> plt.Figure:
    """:func:`ma_plot` of a loaded DE table with the report's title."""
    what = f"MA plot of {_n_tested(table)} tested genes; circled: IL-6 core + significant panel"
    title = summary_title(summary, what)
    return ma_plot(table, panel_label_genes(panel, alpha), alpha, title, summary_contrast(summary))


# ----------------------------------------------------------------------------------------------------
# p-value histogram
# ----------------------------------------------------------------------------------------------------


def storey_pi0(pvalues: np.ndarray, lam: float = 0.5) -> float:
    """Storey's estimate of the fraction of true nulls: share of p > lambda, rescaled; capped at 1."""
    p = pvalues[np.isfinite(pvalues)]
    if p.size == 0:
        return float("nan")
    return float(min(1.0, np.mean(p > lam) / (1.0 - lam)))


def pvalue_histogram(table: pd.DataFrame, title: str, bin_width: float = 0.05) -> plt.Figure:
    """Histogram of raw Wald p-values of the tested genes, with the flat line expected if no gene changed.

    A well-calibrated test gives a flat histogram plus a peak near 0 for real effects; a hump in the
    middle or a rise towards 1 points to a misspecified model (e.g. a missing batch covariate, or
    over-dispersion estimates gone wrong) and makes the padj values untrustworthy.
    """
    tested = table["tested"].astype(str).str.lower().isin(["true", "1"]) if "tested" in table else True
    p = table.loc[tested, "pvalue"].to_numpy(dtype=float)
    p = p[np.isfinite(p)]
    n_bins = int(round(1.0 / bin_width))
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    fig, ax = plt.subplots(figsize=(7.0, 4.6), dpi=150)
    ax.hist(p, bins=edges, color="#7f8c8d", edgecolor="white", linewidth=0.6)
    expected = p.size / n_bins
    ax.axhline(expected, color="black", ls="--", lw=1.0)
    ax.text(
        0.99,
        expected,
        f"uniform expectation ({expected:.0f} genes per bin)",
        transform=ax.get_yaxis_transform(),
        ha="right",
        va="bottom",
        fontsize=8,
        path_effects=HALO,
    )
    pi0 = storey_pi0(p)
    ax.text(
        0.99,
        0.97,
        f"estimated share of unchanged genes (Storey π0, λ=0.5): {pi0:.2f}",
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize=8,
    )
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"raw p-value ({effect_and_test_names(table)[1]}), bins of {bin_width:g}")
    ax.set_ylabel("genes per bin")
    ax.set_title(title, fontsize=10)
    despine(ax)
    fig.tight_layout()
    return fig


def pvalue_histogram_figure(table: pd.DataFrame, summary: Mapping) -> plt.Figure:
    """:func:`pvalue_histogram` of a loaded DE table with the report's title."""
    tested = table["pvalue"].notna()
    if "tested" in table.columns:
        tested &= table["tested"].astype(str).str.lower().isin(["true", "1"])
    what = f"p-value distribution of {int(tested.sum())} tested genes"
    return pvalue_histogram(table, summary_title(summary, what))
