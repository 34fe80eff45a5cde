"""Figures: volcano plot of severe vs mild with the IL-6 panel genes labelled."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from adjustText import adjust_text  # noqa: E402

log = logging.getLogger("il6axis.plots")

# One palette for the whole report: direction of change in severe relative to mild.
DIRECTION_PALETTE = {"up in severe": "#c0392b", "down in severe": "#2471a3", "not significant": "#b3b6b7"}


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


def volcano(table: pd.DataFrame, label_genes: Sequence[str], alpha: float, title: str) -> plt.Figure:
    """log2 fold change vs -log10 p for tested genes; labels for the panel genes that were tested."""
    data = table.dropna(subset=["log2FoldChange", "pvalue"]).copy()
    floor = np.nextafter(0, 1)
    data["neg_log10_p"] = -np.log10(data["pvalue"].clip(lower=floor))
    data["direction"] = _direction(data, alpha)
    counts = data["direction"].value_counts()
    fig, ax = plt.subplots(figsize=(7.5, 6.0), dpi=150)
    order = ["not significant", "down in severe", "up in severe"]
    sns.scatterplot(
        data=data,
        x="log2FoldChange",
        y="neg_log10_p",
        hue="direction",
        hue_order=order,
        palette=DIRECTION_PALETTE,
        s=9,
        linewidth=0,
        alpha=0.7,
        rasterized=True,
        ax=ax,
    )
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(
        handles,
        [f"{lab} (n={counts.get(lab, 0)})" for lab in labels],
        title=f"BH FDR < {alpha:g}",
        loc="upper left",
        frameon=True,
        fontsize=8,
        title_fontsize=8,
    )
    panel = data[data["gene"].isin(set(label_genes))]
    ax.scatter(
        panel["log2FoldChange"],
        panel["neg_log10_p"],
        s=22,
        facecolors="none",
        edgecolors="black",
        linewidths=0.8,
        zorder=3,
    )
    texts = [
        ax.text(r.log2FoldChange, r.neg_log10_p, r.gene, fontsize=7, zorder=4) for r in panel.itertuples()
    ]
    ax.axvline(0, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("log2 fold change, severe vs mild (MLE)")
    ax.set_ylabel("-log10 p-value (Wald)")
    ax.set_title(title, fontsize=10)
    sns.despine(ax=ax)
    fig.tight_layout()
    if texts:
        adjust_text(texts, ax=ax, arrowprops={"arrowstyle": "-", "color": "0.3", "lw": 0.5})
    return fig


def save(fig: plt.Figure, out_paths: Sequence[str | Path]) -> None:
    for path in out_paths:
        fig.savefig(
            path,
            dpi=150,
            bbox_inches="tight",
            metadata={"Date": None} if str(path).endswith(".svg") else None,
        )
    plt.close(fig)


def volcano_from_files(
    results_path: str | Path,
    panel_path: str | Path,
    summary_path: str | Path,
    alpha: float,
    out_paths: Sequence[str | Path],
) -> None:
    table = pd.read_csv(results_path, sep="\t")
    panel = pd.read_csv(panel_path, sep="\t")
    with open(summary_path, encoding="utf-8") as fh:
        summary = json.load(fh)
    n = summary["n_per_group"]
    # Label the signalling core always and other panel genes only when significant: ~45 labels on the
    # null cloud would be unreadable.
    core = panel["tier"].eq("core") & panel["symbol"].isin(
        ["IL6", "IL6R", "IL6ST", "JAK1", "JAK2", "TYK2", "STAT3", "SOCS3"]
    )
    significant = panel["padj"] < alpha
    label_genes = panel.loc[core | significant, "symbol"].tolist()
    title = (
        f"{summary['cohort']}: severe (n={n['severe']}) vs mild (n={n['mild']}), "
        f"design {summary['design']}\ncircled: IL-6 receptor-JAK-STAT3 core and significant IL-6 panel genes"
    )
    save(volcano(table, label_genes, alpha, title), out_paths)
    log.info(
        "volcano of %d tested genes written to %s",
        int(table["pvalue"].notna().sum()),
        list(map(str, out_paths)),
    )
