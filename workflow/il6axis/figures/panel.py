"""IL-6 panel figures of one cohort: the genes' expression by group and what the DE said about them.

- :func:`panel_heatmap`: z-scored log-scale expression of the panel genes present, rows grouped by tier,
  columns by group; genes significant genome-wide marked, absent genes listed under the map.
- :func:`panel_gene_boxes`: per-gene normalised counts by group with the DE estimate in each title.
- :func:`panel_detection`: share of samples detecting each IL-6-family ligand and receptor, per group (low
  IL6 detection in blood is the first caveat of any fold change).

``*_figure`` variants add the report's title from the DE summary.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap

from il6axis.analysis.genesets import CORE_SIGNALLING
from il6axis.analysis.qc import cohort_name, layer_frame, severity_of
from il6axis.cohort.contrast import Contrast
from il6axis.de import routing
from il6axis.errors import InputError
from il6axis.figures.common import (
    TIER_ORDER,
    TITLE_Y,
    box_strip,
    contrast_group_label,
    declared_contrast,
    estimate_ci,
    format_p,
    grid_shape,
    is_true,
    log_scale_name,
    message_panel,
    summary_contrast,
    summary_title,
)
from il6axis.figures.style import despine
from il6axis.vocabulary import DIVERGING_CMAP, SEVERITY_ORDER, SEVERITY_PALETTE

# Ligands and receptors whose detection in blood is the first question about IL-6 signalling there.
DETECTION_GENES = ["IL6", "IL6R", "IL6ST", "OSM", "LIF", "IL11"]
Z_CLIP = 3.0


# ----------------------------------------------------------------------------------------------------
# Heatmap
# ----------------------------------------------------------------------------------------------------


def _panel_order(panel_de: pd.DataFrame, genes: Sequence[str]) -> pd.DataFrame:
    """Panel rows of the genes present, ordered by tier (TIER_ORDER) then by the panel file's order."""
    if not {"symbol", "tier"} <= set(panel_de.columns):
        raise InputError(
            "IL-6 panel table lacks 'symbol'/'tier'; expected results/de/{cohort}/il6_panel.tsv."
        )
    rows = panel_de[panel_de["symbol"].isin(set(genes))].copy()
    rows["_tier_rank"] = [TIER_ORDER.index(t) if t in TIER_ORDER else len(TIER_ORDER) for t in rows["tier"]]
    rows["_file_rank"] = np.arange(len(rows))
    return rows.sort_values(["_tier_rank", "_file_rank"]).drop(columns=["_tier_rank", "_file_rank"])


def zscore_genes(values: pd.DataFrame) -> pd.DataFrame:
    """Per-gene (column) z-score across samples; constant genes become NaN rather than 0/0."""
    sd = values.std(axis=0, ddof=1)
    return (values - values.mean(axis=0)) / sd.where(sd > 0)


def panel_heatmap(adata: ad.AnnData, panel_de: pd.DataFrame, alpha: float, title: str) -> plt.Figure:
    """Z-scored VST of the panel genes present: rows grouped by tier, columns by group (reference first).

    Genes significant genome-wide (padj < alpha) carry an asterisk. Absent genes are listed below the
    map, so a missing ligand is visible rather than silently dropped.
    """
    cohort = cohort_name(adata)
    contrast = declared_contrast(adata)
    severity = severity_of(adata.obs, cohort)
    keep = severity.isin(SEVERITY_ORDER)
    samples = pd.DataFrame({"severity": severity[keep]}).assign(
        rank=lambda d: d["severity"].map({g: i for i, g in enumerate(SEVERITY_ORDER)})
    )
    # Mild first, then severe; within a group by sample id.
    samples = samples.iloc[np.lexsort((samples.index.astype(str).to_numpy(), samples["rank"].to_numpy()))]
    present = set(adata.var_names)
    rows = _panel_order(panel_de, present)
    absent = [g for g in panel_de["symbol"].astype(str) if g not in present]
    vst = layer_frame(adata, "vst", cohort, list(dict.fromkeys(rows["symbol"].astype(str))))
    z = zscore_genes(vst.loc[samples.index, rows["symbol"]]).T.clip(-Z_CLIP, Z_CLIP)
    padj = pd.to_numeric(rows.get("padj"), errors="coerce").to_numpy()
    labels = [f"{g} *" if p < alpha else g for g, p in zip(rows["symbol"], padj, strict=True)]

    n_genes, n_samples = z.shape
    footer = f"* padj < {alpha:g} (genome-wide BH). Grey cells: gene constant across samples."
    if absent:
        footer += "\n" + textwrap.fill(f"Absent from the count matrix: {', '.join(absent)}", width=110)
    label_chars = max((len(str(s)) for s in samples.index), default=0) if n_samples <= 60 else 0
    fig, ax_bar, ax, ax_cbar = _heatmap_axes(n_genes, n_samples, label_chars, footer.count("\n") + 1)
    codes = samples["rank"].to_numpy()[None, :]
    severity_cmap = ListedColormap([SEVERITY_PALETTE[g] for g in SEVERITY_ORDER])
    ax_bar.imshow(
        codes, aspect="auto", cmap=severity_cmap, vmin=0, vmax=len(SEVERITY_ORDER) - 1,
        extent=(0, n_samples, 1, 0), interpolation="nearest",
    )  # fmt: skip
    ax_bar.set_xlim(0, n_samples)
    ax_bar.set_yticks([0.5])
    ax_bar.set_yticklabels(["group"], fontsize=8)
    ax_bar.tick_params(axis="both", length=0, bottom=False, labelbottom=False)
    n = samples["severity"].value_counts()
    start = 0
    for g in SEVERITY_ORDER:
        if n.get(g, 0):
            ax_bar.text(
                start + n[g] / 2, 0.5, contrast_group_label(g, int(n[g]), contrast), ha="center",
                va="center", fontsize=8,
                color="white", fontweight="bold",
            )  # fmt: skip
            start += int(n[g])
    # imshow rather than sns.heatmap: same picture, no seaborn deprecation noise in the rule's log.
    image = ax.imshow(
        z.to_numpy(dtype=float), aspect="auto", cmap=DIVERGING_CMAP, vmin=-Z_CLIP, vmax=Z_CLIP,
        interpolation="nearest", extent=(0, n_samples, n_genes, 0),
    )  # fmt: skip
    fig.colorbar(
        image, cax=ax_cbar, extend="both", label=f"z-score of {log_scale_name(adata)} (clipped at ±3)"
    )
    ax.set_yticks(np.arange(n_genes) + 0.5)
    ax.set_yticklabels(labels)
    if n_samples <= 60:
        ax.set_xticks(np.arange(n_samples) + 0.5)
        ax.set_xticklabels([str(s) for s in samples.index])
    else:
        ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_facecolor("0.85")  # constant genes (NaN z) show as grey
    ax.set_ylabel("")
    ax.set_xlabel("sample" if n_samples <= 60 else f"{n_samples} samples")
    ax.tick_params(axis="y", labelsize=7, length=0)
    ax.tick_params(axis="x", labelsize=6, rotation=90, length=0)
    boundary = int(n.get(SEVERITY_ORDER[0], 0))
    for a in (ax, ax_bar):
        a.axvline(boundary, color="black", lw=1.2)
    # Tier separators, and tier names in the gap between the map and the colour bar.
    tiers = rows["tier"].astype(str).to_numpy()
    edges = [0, *[i for i in range(1, n_genes) if tiers[i] != tiers[i - 1]], n_genes]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if lo > 0:
            ax.axhline(lo, color="white", lw=2.5)
        ax.annotate(
            tiers[lo], xy=(1.0, 1 - (lo + hi) / 2 / n_genes), xycoords="axes fraction", xytext=(6, 0),
            textcoords="offset points", ha="left", va="center", fontsize=8,
        )  # fmt: skip
    fig.text(0.01, 0.01, footer, fontsize=7, va="bottom", ha="left")
    ax_bar.set_title(title, fontsize=10)
    return fig


def _heatmap_axes(
    n_genes: int, n_samples: int, label_chars: int, footer_lines: int
) -> tuple[plt.Figure, plt.Axes, plt.Axes, plt.Axes]:
    """Figure and axes laid out in inches: gene labels | map | tier names | colour bar; the bottom margin
    grows with the longest (rotated) sample id and the footer's lines."""
    cell_w, cell_h = 0.2, 0.17
    map_w = min(14.0, max(4.0, cell_w * n_samples))
    map_h = max(1.0, cell_h * n_genes)
    left, tier_gap, cbar_w, right = 1.1, 1.05, 0.16, 0.75
    top, bar_h, bar_gap = 0.75, 0.28, 0.06
    # 6-pt rotated sample ids take ~0.055 in per character; then the axis label and the footer.
    bottom = 0.055 * label_chars + 0.45 + 0.14 * footer_lines + 0.1
    width = left + map_w + tier_gap + cbar_w + right
    height = top + bar_h + bar_gap + map_h + bottom
    fig = plt.figure(figsize=(width, height), dpi=150)

    def box(x: float, y: float, w: float, h: float) -> list[float]:
        return [x / width, y / height, w / width, h / height]

    ax = fig.add_axes(box(left, bottom, map_w, map_h))
    ax_bar = fig.add_axes(box(left, bottom + map_h + bar_gap, map_w, bar_h))
    ax_cbar = fig.add_axes(box(left + map_w + tier_gap, bottom, cbar_w, min(map_h, 3.5)))
    return fig, ax_bar, ax, ax_cbar


def panel_heatmap_figure(
    adata: ad.AnnData, panel_de: pd.DataFrame, summary: Mapping, alpha: float
) -> plt.Figure:
    """:func:`panel_heatmap` with the report's title (cohort, n per group, genes present)."""
    n_present = int(panel_de["symbol"].isin(set(adata.var_names)).sum())
    what = f"IL-6 panel: z-scored {log_scale_name(adata)} of {n_present} genes present, grouped by tier"
    return panel_heatmap(adata, panel_de, alpha, summary_title(summary, what))


# ----------------------------------------------------------------------------------------------------
# Per-gene normalised counts with the DE estimate
# ----------------------------------------------------------------------------------------------------


def de_annotation(row: pd.Series | None) -> str:
    """Two-line DE note of one il6_panel.tsv row: estimate [CI] and genome-wide / panel q, or why not."""
    if row is None:
        return "not in the IL-6 panel table"
    if not is_true(row.get("present", True)):
        return "absent from the count matrix"
    if not is_true(row.get("tested", False)) or not np.isfinite(float(row.get("log2FoldChange", np.nan))):
        reason = row.get("not_tested_reason")
        reason = reason if isinstance(reason, str) and reason else "no estimate"
        return f"not tested:\n{reason}"
    line1 = f"log2FC {estimate_ci(row['log2FoldChange'], row['ci_low'], row['ci_high'])}"
    line2 = f"padj {format_p(float(row['padj']))}"
    if is_true(row.get("independently_filtered", False)):
        line2 = "padj NA (independent filtering)"
    if "padj_panel" in row.index:
        line2 += f", panel q {format_p(float(row['padj_panel']))}"
    return f"{line1}\n{line2}"


def default_panel_genes(panel_de: pd.DataFrame) -> list[str]:
    """The signalling chain first, then the other core-tier genes in panel order."""
    core = panel_de.loc[panel_de["tier"] == "core", "symbol"].astype(str).tolist()
    return [*CORE_SIGNALLING, *[g for g in core if g not in CORE_SIGNALLING]]


def _panel_value_name(adata: ad.AnnData, axis: bool = False) -> str:
    """What the panel-gene boxes show: normalised counts, normalised values or published log2 values."""
    if routing.is_log2(adata):
        return log_scale_name(adata)
    if routing.is_normalised(adata):
        return "normalised value + 1 (log)" if axis else "normalised values"
    return "normalised count + 1 (log)" if axis else "DESeq2-normalised counts"


def panel_gene_boxes(
    adata: ad.AnnData, panel_de: pd.DataFrame, genes: Sequence[str], title: str, n_cols: int = 5
) -> plt.Figure:
    """Small multiples: normalised counts + 1 (log axis) by severity per gene, DE estimate in the title.

    A cohort with published log2 values shows those values on a linear axis (its ``vst`` layer)."""
    cohort = cohort_name(adata)
    contrast = declared_contrast(adata)
    present = set(adata.var_names)
    log2_values = routing.is_log2(adata)
    layer = "vst" if log2_values else "normalised"
    norm = layer_frame(adata, layer, cohort, [g for g in dict.fromkeys(genes) if g in present])
    severity = severity_of(adata.obs, cohort)
    keep = severity.isin(SEVERITY_ORDER).to_numpy()
    norm, severity = norm.loc[keep], severity[keep]
    by_gene = panel_de.drop_duplicates("symbol").set_index("symbol")
    n_rows, n_cols = grid_shape(len(genes), n_cols)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(2.75 * n_cols, 2.9 * n_rows + 0.8), dpi=150, squeeze=False
    )
    for ax, gene in zip(axes.flat, genes, strict=False):
        row = by_gene.loc[gene] if gene in by_gene.index else None
        note = de_annotation(row)
        if gene in norm.columns:
            if log2_values:
                box_strip(ax, norm[gene], severity, SEVERITY_ORDER, contrast=contrast)
            else:
                box_strip(ax, norm[gene] + 1.0, severity, SEVERITY_ORDER, log_scale=True, contrast=contrast)
            ax.tick_params(axis="both", labelsize=7)
        else:
            message_panel(ax, "absent from the\ncount matrix")
            note = ""
        ax.set_title(f"{gene}\n{note}" if note else gene, fontsize=7.5, loc="center", y=TITLE_Y)
        ax.set_ylabel("")
    for ax in axes.flat[len(genes) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(_panel_value_name(adata, axis=True), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(h_pad=1.2)
    return fig


def panel_genes_figure(
    adata: ad.AnnData, panel_de: pd.DataFrame, summary: Mapping, genes: Sequence[str] | None = None
) -> plt.Figure:
    """:func:`panel_gene_boxes` of ``genes`` (default :func:`default_panel_genes`) with the report's title."""
    genes = list(genes) if genes is not None else default_panel_genes(panel_de)
    contrast = summary_contrast(summary)
    what = f"IL-6 core genes: {_panel_value_name(adata)}; log2FC [95% CI] {contrast.label}"
    return panel_gene_boxes(adata, panel_de, genes, summary_title(summary, what))


# ----------------------------------------------------------------------------------------------------
# Detection of ligands and receptors
# ----------------------------------------------------------------------------------------------------


def panel_detection(
    panel_expression: pd.DataFrame, genes: Sequence[str], title: str, contrast: Contrast | None = None
) -> plt.Figure:
    """Share of samples with any read and with CPM >= 1, per gene and group (grouped bars; the legend
    names the declared ``contrast``'s groups).

    Makes low IL6 detection in blood visible: a gene read in few samples has no usable fold change.
    Genes absent from the count matrix keep their slot, marked 'absent'.
    """
    table = panel_expression.drop_duplicates("symbol").set_index("symbol")
    genes = [g for g in genes if g in table.index]
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.7 * len(genes) + 2.5), 4.6), dpi=150, sharey=True)
    width = 0.38
    x = np.arange(len(genes))
    for ax, prefix, what in ((axes[0], "detect", "samples with reads (count > 0)"),
                             (axes[1], "cpm1", "samples with CPM ≥ 1")):  # fmt: skip
        for i, group in enumerate(SEVERITY_ORDER):
            values = pd.to_numeric(table.loc[genes, f"{prefix}_{group}"], errors="coerce").to_numpy() * 100
            n = pd.to_numeric(table[f"n_{group}"], errors="coerce").max()
            n_label = int(n) if np.isfinite(n) else 0
            bars = ax.bar(x + (i - 0.5) * width, np.nan_to_num(values), width, color=SEVERITY_PALETTE[group],
                          label=contrast_group_label(group, n_label, contrast))  # fmt: skip
            for bar, v in zip(bars, values, strict=True):
                if np.isfinite(v):
                    ax.text(bar.get_x() + bar.get_width() / 2, v + 1.5, f"{v:.0f}", ha="center", va="bottom",
                            fontsize=6.5)  # fmt: skip
        for xi, gene in zip(x, genes, strict=True):
            if not is_true(table.loc[gene, "present"]):
                ax.text(xi, 3, "absent from\nthe matrix", ha="center", va="bottom", fontsize=7, color="0.3")
        ticks = []
        for gene in genes:
            cpm = pd.to_numeric(pd.Series([table.loc[gene, "median_cpm_all"]]), errors="coerce").iloc[0]
            ticks.append(f"{gene}\n{_format_cpm(cpm)} CPM" if np.isfinite(cpm) else gene)
        ax.set_xticks(x)
        ax.set_xticklabels(ticks, fontsize=7.5)
        ax.set_ylim(0, 112)
        ax.set_yticks(range(0, 101, 20))
        ax.set_title(what, fontsize=9)
        despine(ax)
    axes[0].set_ylabel("samples (%)")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    fig.text(0.01, 0.01, "Under each gene: median CPM over both groups.", fontsize=7, ha="left", va="bottom")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def _format_cpm(cpm: float) -> str:
    if cpm >= 10:
        return f"{cpm:.0f}"
    return f"{cpm:.1f}" if cpm >= 1 else f"{cpm:.2f}"


def panel_detection_figure(
    panel_expression: pd.DataFrame, summary: Mapping, genes: Sequence[str] = DETECTION_GENES
) -> plt.Figure:
    """:func:`panel_detection` with the report's title."""
    what = "detection of IL-6-family ligands and receptors"
    return panel_detection(panel_expression, genes, summary_title(summary, what), summary_contrast(summary))
