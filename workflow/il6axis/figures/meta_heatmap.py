"""Cohort x gene heatmap of the IL-6 panel's log2 fold changes: one row per cohort (material and declared
contrast in its label), genes grouped by tier, significant cells starred, absent and untested genes
marked rather than left blank."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from il6axis.cohort.contrast import DEFAULT_KIND, KIND_LABEL, Contrast
from il6axis.errors import InputError
from il6axis.figures.common import TIER_ORDER, read_tsv, require_columns
from il6axis.figures.style import save
from il6axis.vocabulary import DIVERGING_CMAP, TISSUE_LABEL

log = logging.getLogger(__name__)

PANEL_COLUMNS = ("symbol", "tier", "log2FoldChange", "padj")


def tested_rows(panel: pd.DataFrame) -> pd.Series:
    if "tested" in panel.columns:
        return panel["tested"].astype(str).str.lower().isin(["true", "1"])
    return panel["log2FoldChange"].notna()


def _present(panel: pd.DataFrame) -> pd.Series:
    if "present" in panel.columns:
        return panel["present"].astype(str).str.lower().isin(["true", "1"])
    return pd.Series(True, index=panel.index)


def _gene_order(panels: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Panel genes (symbol, tier) grouped by tier in TIER_ORDER, keeping the resource order within a tier."""
    genes = pd.concat([p[["symbol", "tier"]] for p in panels.values()]).drop_duplicates("symbol")
    rank = {t: i for i, t in enumerate(TIER_ORDER)}
    genes["_tier"] = genes["tier"].map(lambda t: rank.get(t, len(rank)))
    genes["_pos"] = range(len(genes))
    return genes.sort_values(["_tier", "_pos"])[["symbol", "tier"]].reset_index(drop=True)


def lfc_heatmap(
    panels: Mapping[str, pd.DataFrame],
    alpha: float,
    tissues: Mapping[str, str] | None = None,
    vmax_cap: float = 3.0,
    contrasts: Mapping[str, Contrast] | None = None,
) -> plt.Figure:
    """Cohorts (rows) x IL-6 panel genes (columns, grouped by tier): MLE log2FC, '*' where padj < alpha.

    Each row is labelled with the cohort's material and declared contrast (``contrasts``; severe vs mild
    when not given), since a row's sign means "higher in that cohort's case group".

    Genes absent from a cohort's matrix are hatched; present but untested genes (too few counts) are light
    grey with a '·'. Colours saturate at +/- ``vmax_cap`` (or the largest |log2FC| if smaller, min 1).
    """
    if not panels:
        raise InputError("lfc_heatmap: no cohort panel tables given.")
    for cohort, panel in panels.items():
        require_columns(panel, PANEL_COLUMNS, f"il6_panel.tsv of cohort {cohort}")
    tissues = dict(tissues or {})
    genes = _gene_order(panels)
    cohorts = list(panels)
    lfc = np.full((len(cohorts), len(genes)), np.nan)
    padj = np.full_like(lfc, np.nan)
    state = np.full(lfc.shape, "absent", dtype=object)
    col = {g: j for j, g in enumerate(genes["symbol"])}
    for i, cohort in enumerate(cohorts):
        p = panels[cohort].drop_duplicates("symbol")
        tested, present = tested_rows(p), _present(p)
        for rec, t, pr in zip(p.itertuples(), tested, present, strict=True):
            j = col[rec.symbol]
            if t and np.isfinite(rec.log2FoldChange):
                lfc[i, j], padj[i, j], state[i, j] = rec.log2FoldChange, rec.padj, "tested"
            elif pr:
                state[i, j] = "untested"
    finite = np.abs(lfc[np.isfinite(lfc)])
    vmax = float(min(vmax_cap, max(1.0, finite.max() if finite.size else 1.0)))
    norm = Normalize(vmin=-vmax, vmax=vmax)
    cmap = plt.get_cmap(DIVERGING_CMAP)
    n_g, n_c = len(genes), len(cohorts)
    fig, ax = plt.subplots(figsize=(0.27 * n_g + 3.2, 0.5 * n_c + 2.6))
    masked = np.ma.masked_invalid(lfc)
    mesh = ax.pcolormesh(
        np.arange(n_g + 1),
        np.arange(n_c + 1),
        masked,
        cmap=cmap,
        norm=norm,
        edgecolors="white",
        linewidth=0.6,
    )
    for i in range(n_c):
        for j in range(n_g):
            if state[i, j] == "absent":
                ax.add_patch(
                    Rectangle((j, i), 1, 1, facecolor="0.82", edgecolor="white", hatch="////", lw=0.6)
                )
            elif state[i, j] == "untested":
                ax.add_patch(Rectangle((j, i), 1, 1, facecolor="0.9", edgecolor="white", lw=0.6))
                ax.text(j + 0.5, i + 0.5, "·", ha="center", va="center", fontsize=11, color="0.35")
            elif np.isfinite(padj[i, j]) and padj[i, j] < alpha:
                dark = abs(lfc[i, j]) > 0.6 * vmax
                ax.text(
                    j + 0.5,
                    i + 0.62,
                    "*",
                    ha="center",
                    va="center",
                    fontsize=11,
                    color="white" if dark else "black",
                    fontweight="bold",
                )
    ax.set_xlim(0, n_g)
    ax.set_ylim(n_c, 0)
    ax.set_xticks(np.arange(n_g) + 0.5)
    ax.set_xticklabels(genes["symbol"], rotation=90, fontsize=7.5)
    ax.set_yticks(np.arange(n_c) + 0.5)
    contrasts = dict(contrasts or {})
    row_labels = []
    for c in cohorts:
        label = f"{c} ({TISSUE_LABEL.get(tissues.get(c, ''), tissues.get(c, '?'))})" if c in tissues else c
        row_labels.append(f"{label}: {contrasts[c].label}" if c in contrasts else label)
    ax.set_yticklabels(row_labels, fontsize=8.5)
    ax.tick_params(length=0)
    # Tier blocks: separator lines and the tier name above the block.
    bounds = genes.groupby("tier", sort=False).size()
    start = 0
    for tier, size in bounds.items():
        if start > 0:
            ax.axvline(start, color="black", lw=1.2)
        ax.text(
            start + size / 2,
            1.02,  # just above the cells, whatever the number of cohort rows
            tier,
            ha="center",
            va="bottom",
            fontsize=8,
            fontweight="bold",
            transform=ax.get_xaxis_transform(),
            clip_on=False,
        )
        start += size
    for spine in ax.spines.values():
        spine.set_visible(False)
    kinds = {c.kind for c in contrasts.values()} or {DEFAULT_KIND}
    what = KIND_LABEL[next(iter(kinds))] if len(kinds) == 1 else "each cohort's declared contrast (row label)"
    ax.set_title(f"IL-6 panel genes per cohort: log2 fold change (MLE), {what}", fontsize=10, pad=22)
    extend = "both" if finite.size and finite.max() > vmax else "neither"
    cbar = fig.colorbar(mesh, ax=ax, fraction=0.025, pad=0.01, extend=extend)
    high = f"higher in {contrasts[cohorts[0]].case}" if len(contrasts) == 1 else "higher in the case group"
    cbar.set_label(f"log2FC (red = {high})", fontsize=8)
    cbar.ax.tick_params(labelsize=7.5)
    handles = [
        Line2D(
            [],
            [],
            ls="",
            marker="$*$",
            color="black",
            markersize=8,
            label=f"padj < {alpha:g} (genome-wide BH)",
        ),
        Patch(facecolor="0.9", edgecolor="0.6", label="· present, not tested (low counts / filtered)"),
        Patch(facecolor="0.82", edgecolor="0.6", hatch="////", label="absent from the count matrix"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def lfc_heatmap_from_files(
    panel_paths: Sequence[str | Path],
    cohorts: Sequence[str],
    alpha: float,
    out_paths: Sequence[str | Path],
    tissues: Mapping[str, str] | None = None,
    contrasts: Mapping[str, Contrast] | None = None,
) -> None:
    """Heatmap from the per-cohort ``il6_panel.tsv`` files (one per cohort, in ``cohorts`` order)."""
    if len(panel_paths) != len(cohorts):
        raise InputError(f"{len(panel_paths)} panel tables for {len(cohorts)} cohorts; give one per cohort.")
    panels = {c: read_tsv(p) for c, p in zip(cohorts, panel_paths, strict=True)}
    save(lfc_heatmap(panels, alpha, tissues, contrasts=contrasts), out_paths)
    log.info("log2FC heatmap of %d cohorts written to %s", len(panels), list(map(str, out_paths)))
