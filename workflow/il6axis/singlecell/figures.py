"""Figures of a single-cell cohort: panel dot / matrix plots on cells, per-cell-type volcanoes and the
per-donor pathway scores.

The matplotlib backend is set once by :mod:`il6axis.figures`, imported here for its shared style; colours
come from :mod:`il6axis.vocabulary`, as in every bulk figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from il6axis.cohort.contrast import Contrast
from il6axis.errors import InputError
from il6axis.figures.de import volcano
from il6axis.figures.style import save
from il6axis.singlecell.donors import DONOR_SEVERITY_ORDER, UNDERPOWERED_BELOW
from il6axis.vocabulary import EXCLUDED, MILD, SEVERE, SEVERITY_PALETTE


def donor_counts_text(donor_obs: pd.DataFrame, contrast: Contrast | None = None) -> str:
    """Donors per group for a figure title, groups named as declared; flags an underpowered contrast."""
    n = donor_obs["severity"].astype(str).value_counts()
    contrast = contrast or Contrast()
    text = (
        f"donors: {contrast.case} {n.get(SEVERE, 0)}, {contrast.reference} {n.get(MILD, 0)}, "
        f"excluded {n.get(EXCLUDED, 0)}"
    )
    if min(n.get(SEVERE, 0), n.get(MILD, 0)) < UNDERPOWERED_BELOW:
        text += " (underpowered: code exercise, no inference)"
    return text


def panel_dotplot(
    cells: ad.AnnData,
    genes: Sequence[str] | Mapping[str, Sequence[str]],
    out_path: str | Path,
    title: str,
    kind: str = "dotplot",
) -> None:
    """scanpy dot plot (or matrix plot) of panel genes by cell type x severity on normalised cells.

    ``genes`` may be a mapping (e.g. panel tier -> genes): scanpy then brackets each group on the gene axis.
    Genes absent from ``cells`` are left out; groups left empty are dropped.
    """
    import scanpy as sc

    groups = dict(genes) if isinstance(genes, Mapping) else {"": list(genes)}
    present = {k: [g for g in v if g in cells.var_names] for k, v in groups.items()}
    present = {k: v for k, v in present.items() if v}
    n_genes = sum(map(len, present.values()))
    if not n_genes:
        raise InputError("none of the panel genes is in the single-cell matrix; nothing to plot")
    var_names: list[str] | dict[str, list[str]] = (
        present if len(present) > 1 else next(iter(present.values()))
    )
    cells = cells.copy()
    cells.obs["severity"] = cells.obs["severity"].cat.remove_unused_categories()
    labels = cells.obs["cell_type"].astype(str) + " / " + cells.obs["severity"].astype(str)
    order = [
        f"{ct} / {sev}"
        for ct in sorted(cells.obs["cell_type"].unique())
        for sev in cells.obs["severity"].cat.categories
    ]
    cells.obs["group"] = pd.Categorical(labels, categories=[o for o in order if (labels == o).any()])
    n_rows = len(cells.obs["group"].cat.categories)
    # Sized from the gene and group counts; scanpy's default leaves a wide gap under the title.
    figsize = (max(6.0, 0.3 * n_genes + 3.5), max(2.8, 0.32 * n_rows + 2.0))
    common: dict[str, Any] = {"var_names": var_names, "groupby": "group", "figsize": figsize, "show": False}
    common["return_fig"] = True
    # With gene-group brackets the title goes on the figure, above them (on the axes it collides).
    bracketed = isinstance(var_names, dict)
    if bracketed:
        common["var_group_rotation"] = 0
    else:
        common["title"] = title
    if kind == "dotplot":
        plot = sc.pl.dotplot(
            cells, **common, colorbar_title="mean log1p\n(CP10k)", size_title="fraction of\ncells (%)"
        )
    elif kind == "matrixplot":
        plot = sc.pl.matrixplot(
            cells, **common, standard_scale="var", colorbar_title="mean log1p,\nscaled per gene"
        )
    else:
        raise ValueError(f"kind must be 'dotplot' or 'matrixplot', not {kind!r}")
    plot.make_figure()
    if bracketed:
        plot.fig.suptitle(title, y=1.0, va="bottom", fontsize=11)
    plot.fig.savefig(str(out_path), bbox_inches="tight", dpi=150)
    plt.close("all")


def celltype_volcano(
    table: pd.DataFrame,
    label_genes: Sequence[str],
    alpha: float,
    title: str,
    out_path: str | Path,
    contrast: Contrast | None = None,
) -> None:
    """The bulk volcano (il6axis.figures.de.volcano) for one cell type's DE table (axis and legend name the
    declared ``contrast``)."""
    save(volcano(table, label_genes, alpha, title, contrast), [out_path])


def pathway_score_plot(scores: pd.DataFrame, out_path: str | Path, title: str) -> None:
    """Per-donor set scores by cell type and severity, one panel per gene set.

    ``scores`` is long: ``gene_set``, ``cell_type``, ``severity``, ``score`` (one row per donor). Every donor
    is a dot: with a handful of donors, a box alone would hide how few there are.
    """
    data = scores.dropna(subset=["score"]).copy()
    sets = list(dict.fromkeys(data["gene_set"]))
    if not sets:
        raise InputError("no gene-set score could be computed (too few panel genes present); nothing to plot")
    hue_order = [s for s in DONOR_SEVERITY_ORDER if s in set(data["severity"].astype(str))]
    palette = SEVERITY_PALETTE
    order = sorted(data["cell_type"].unique())
    ncols = min(3, len(sets))
    nrows = -(-len(sets) // ncols)
    width = max(3.2, 0.9 * len(order) + 1.6)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 3.4 * nrows), dpi=150, squeeze=False)
    for ax, name in zip(axes.ravel(), sets, strict=False):
        part = data[data["gene_set"] == name].assign(severity=lambda d: d["severity"].astype(str))
        sns.boxplot(
            data=part, x="cell_type", y="score", hue="severity", order=order, hue_order=hue_order,
            palette=palette, fill=False, showfliers=False, legend=False, ax=ax, linewidth=0.8,
        )  # fmt: skip
        sns.stripplot(
            data=part, x="cell_type", y="score", hue="severity", order=order, hue_order=hue_order,
            palette=palette, dodge=True, size=5, jitter=0.08, ax=ax, legend=ax is axes.ravel()[0],
        )  # fmt: skip
        used = int(part["n_genes_used"].max()) if "n_genes_used" in part else 0
        ax.set_title(f"{name} ({used} genes)", fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("mean z of log2 CPM")
        ax.tick_params(axis="x", labelrotation=30 if len(order) > 3 else 0, labelsize=8)
        ax.axhline(0, color="grey", lw=0.5, ls=":")
        sns.despine(ax=ax)
    for ax in axes.ravel()[len(sets) :]:
        ax.set_visible(False)
    # One legend for the figure, outside the panels, so it never covers a donor.
    first = axes.ravel()[0]
    handles, labels = first.get_legend_handles_labels()
    if first.get_legend() is not None:
        first.get_legend().remove()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.legend(handles, labels, title="severity", fontsize=8, title_fontsize=8, loc="center left",
               bbox_to_anchor=(1.0, 0.5), frameon=False)  # fmt: skip
    fig.savefig(str(out_path), bbox_inches="tight", dpi=150)
    plt.close(fig)
