"""Sample-QC figures of one cohort, drawn from the tables rule cohort_qc wrote (:mod:`il6axis.analysis.qc`).

- Library size and detected genes per sample (:func:`library_sizes`), low libraries labelled.
- Recorded sex against the XIST / chrY expression pattern (:func:`sex_check`), discordant samples circled
  and labelled: a sample swap or a label error.
- PCA of the contrast samples' log-scale expression (:func:`pca_plot`), outliers labelled.

Each takes the QC table(s) and the cohort's DE summary (cohort name, declared contrast, value type) and
returns a matplotlib ``Figure``; the calculations are not repeated here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from il6axis.analysis.qc import PCA_OUTLIER_Z, SEX_CALL_MARGIN, count_text
from il6axis.cohort.contrast import Contrast
from il6axis.cohort.value_scale import LINEAR_MODEL_TYPES, LOG2_NORMALISED
from il6axis.errors import InputError
from il6axis.figures.common import (
    ALL_GROUPS,
    box_strip,
    contrast_group_label,
    contrast_title,
    counts_by_group,
    halo_text,
    log_scale_name,
    message_panel,
    repel_labels,
    summary_contrast,
    summary_value_type,
)
from il6axis.figures.style import despine
from il6axis.jsonio import read_json
from il6axis.vocabulary import EXCLUDED, MILD, SEVERE, SEVERITY_ORDER, SEVERITY_PALETTE

# Recorded sex is drawn in colours that cannot be mistaken for the severity palette (blue/red/grey).
SEX_PALETTE = {"female": "#e69f00", "male": "#009e73", "unknown": "#7f7f7f"}
SEX_MARKERS = {"female": "o", "male": "^", "unknown": "s"}
SEVERITY_MARKERS = {MILD: "o", SEVERE: "s", EXCLUDED: "X"}

LIBRARY_COLUMNS = (
    "sample_id",
    "severity",
    "total_millions",
    "detected_genes",
    "genes_in_matrix",
    "low_library",
)
SEX_COLUMNS = (
    "sample_id",
    "severity",
    "recorded_sex",
    "female_marker_log2cpm",
    "male_marker_log2cpm",
    "inferred_sex",
    "agreement",
)
# The column that marks library_sizes.tsv of a cohort counted from reads, and the columns its figure reads.
READS_COLUMN = "mapping_rate"
READS_LIBRARY_COLUMNS = (
    "fragments_processed",
    "mapping_rate",
    "min_mapping_rate",
    "min_read_pairs",
    "min_library_fraction",
    "low_mapping_rate",
    "low_read_pairs",
)
# Ring drawn around a flagged sample's point in every panel of the library figure.
FLAG_RING = {"s": 70, "facecolors": "none", "edgecolors": "black", "linewidths": 1.0, "zorder": 4}
PCA_COLUMNS = ("sample_id", "severity", "recorded_sex", "PC1", "PC2", "outlier")
PCA_VARIANCE_COLUMNS = ("component", "variance_fraction", "genes_used")


def read_qc_table(path: str | Path, columns: Sequence[str], index: bool = True) -> pd.DataFrame:
    """A QC table of rule cohort_qc, checked for ``columns``; indexed by ``sample_id`` (kept as text)."""
    table = pd.read_csv(path, sep="\t", dtype={"sample_id": str})
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(f"{path}: QC table lacks column(s) {missing}; rerun rule cohort_qc.")
    return table.set_index("sample_id") if index else table


# ----------------------------------------------------------------------------------------------------
# Library sizes
# ----------------------------------------------------------------------------------------------------


def library_sizes(table: pd.DataFrame, summary: Mapping) -> plt.Figure:
    """Library size and detected genes per sample by group, excluded samples included (in grey).

    ``table`` is library_sizes.tsv (:func:`il6axis.analysis.qc.library_table`); samples flagged
    ``low_library`` are labelled. For a cohort counted from reads (the table has ``mapping_rate``:
    :func:`il6axis.analysis.qc.with_reads_qc`) a third panel shows salmon's mapping rate with the
    ``reads.qc.min_mapping_rate`` line, and every sample flagged by library size or by its reads is
    ringed in all panels (the same sample can be followed across them) and labelled where it fails.
    """
    contrast = summary_contrast(summary)
    n = counts_by_group(table["severity"])
    from_reads = READS_COLUMN in table.columns
    if from_reads:
        missing = [c for c in READS_LIBRARY_COLUMNS if c not in table.columns]
        if missing:
            raise InputError(
                f"library sizes of a reads cohort lack column(s) {missing}; rerun rule cohort_qc."
            )
    fig, axes = plt.subplots(1, 3 if from_reads else 2, figsize=(13.5 if from_reads else 9.5, 4.8), dpi=150)
    point_x = box_strip(axes[0], table["total_millions"], table["severity"], ALL_GROUPS, contrast=contrast)
    value_type = summary_value_type(summary)
    normalised = value_type in LINEAR_MODEL_TYPES
    log2_values = value_type == LOG2_NORMALISED
    total_name = "sum of normalised values" if normalised else "library size"
    if log2_values:  # published log2 values are summed on the linear scale
        total_name = "sum of 2^(log2 value)"
    axes[0].set_ylabel(f"{total_name} (millions)" if normalised else "library size (million counts)")
    detected_x = box_strip(axes[1], table["detected_genes"], table["severity"], ALL_GROUPS, contrast=contrast)
    detected_rule = "above sample minimum" if log2_values else "count > 0"
    axes[1].set_ylabel(f"detected genes ({detected_rule})")
    # Library size from zero so relative depth reads off the axis; detected genes on their own range
    # (they vary by a few percent and would flatten against zero).
    axes[0].set_ylim(bottom=0)
    n_genes = int(table["genes_in_matrix"].max()) if len(table) else 0
    if n_genes and table["detected_genes"].min() >= 0.99 * n_genes:
        # Every sample detects (nearly) every gene: the submitters shipped a pre-filtered matrix, so this
        # panel carries no quality information.
        note = f"every sample detects ≥ 99% of the matrix's {n_genes} genes:\nmatrix probably pre-filtered"
        axes[1].set_title(note, fontsize=8, color="0.3")  # above the axes: never over a point
    low_depth = table["low_library"].astype(bool)
    labels = None
    if from_reads:
        # Too few fragments need not show as a small count total: the label says what failed.
        few = table["low_read_pairs"].astype(bool)
        low_depth |= few
        labels = {
            idx: f"{idx} ({count_text(table.loc[idx, 'fragments_processed'])} fragments)"
            if few[idx]
            else str(idx)
            for idx in table.index[low_depth]
        }
    _label_points(axes[0], point_x, table["total_millions"], table.index[low_depth], labels)
    excluded = f", {n[EXCLUDED]} excluded" if n[EXCLUDED] else ""
    what = f"{total_name} and detected genes per sample (all {len(table)} samples{excluded})"
    if from_reads:
        flags = _mapping_rate_panel(axes, table, contrast, low_depth, [point_x, detected_x])
        what = (
            f"{total_name}, detected genes and salmon mapping rate per sample (all {len(table)} samples"
            f"{excluded}, counted from reads)\n{flags}"
        )
    fig.suptitle(contrast_title(str(summary["cohort"]), n, what, contrast), fontsize=10)
    fig.tight_layout()
    return fig


def _label_points(
    ax: plt.Axes,
    point_x: pd.Series,
    values: pd.Series,
    samples: Sequence,
    labels: Mapping[object, str] | None = None,
) -> None:
    """Label ``samples`` by id (or by ``labels``), each label starting on its own (jittered) point so the
    leader line ends at the right sample."""
    labels = labels or {}
    texts = [
        halo_text(ax, point_x[idx], values[idx], labels.get(idx, str(idx)), fontsize=7)
        for idx in samples
        if np.isfinite(point_x[idx])
    ]
    if texts:
        repel_labels(texts, ax, arrowprops={"arrowstyle": "-", "color": "0.2", "lw": 0.5})


def _mapping_rate_panel(
    axes: Sequence[plt.Axes],
    table: pd.DataFrame,
    contrast: Contrast,
    low_depth: pd.Series,
    point_x: Sequence[pd.Series],
) -> str:
    """Third panel of a reads cohort: salmon's mapping rate (%) with the flag line; flagged samples ringed
    in every panel (``point_x``: where box_strip drew each sample in the first two). Returns the title
    line that says which samples are ringed and why."""
    rate = 100 * table["mapping_rate"].astype(float)
    rate_x = box_strip(axes[2], rate, table["severity"], ALL_GROUPS, contrast=contrast)
    threshold = 100 * float(table["min_mapping_rate"].iloc[0])
    axes[2].axhline(threshold, color="0.35", ls="--", lw=0.8, zorder=1)
    axes[2].text(
        axes[2].get_xlim()[1], threshold, f"flag below {threshold:g}% ", fontsize=7, color="0.35",
        ha="right", va="bottom",
    )  # fmt: skip
    axes[2].set_ylim(0, 102)
    axes[2].set_ylabel("salmon mapping rate (% of fragments)")
    low_rate = table["low_mapping_rate"].astype(bool)
    _label_points(axes[2], rate_x, rate, table.index[low_rate])
    flagged = low_depth | low_rate
    values = [table["total_millions"], table["detected_genes"], rate]
    for ax, x, y in zip(axes, [*point_x, rate_x], values, strict=True):
        ax.scatter(x[flagged], y[flagged], **FLAG_RING)
    if flagged.any():
        ring = plt.Line2D(
            [], [], marker="o", ls="", markerfacecolor="none", markeredgecolor="k", markersize=8
        )
        axes[2].legend(
            [ring], [f"flagged (n={int(flagged.sum())})"], loc="lower left", frameon=False, fontsize=7
        )
    min_pairs = count_text(float(table["min_read_pairs"].iloc[0]))
    fraction = float(table["min_library_fraction"].iloc[0])
    rules = (
        f"mapping rate < {threshold:g}%, < {min_pairs} fragments, or library < {fraction:g} × cohort median"
    )
    if not flagged.any():
        return f"no sample flagged ({rules})"
    return f"ringed = flagged ({int(flagged.sum())}): {rules}"


# ----------------------------------------------------------------------------------------------------
# Sex check
# ----------------------------------------------------------------------------------------------------


def sex_check(table: pd.DataFrame, check: Mapping, summary: Mapping) -> plt.Figure:
    """XIST vs chrY marker expression coloured by recorded sex (marker = severity group), all samples.

    ``table`` and ``check`` are sex_check.tsv and sex_check.json
    (:func:`il6axis.analysis.qc.sex_check_table`). Discordant samples are circled and labelled by id.
    With one marker missing the available one is shown per recorded sex without calls; with both missing,
    or nothing recorded, the figure says so instead of failing.
    """
    n = counts_by_group(table["severity"])
    contrast = summary_contrast(summary)
    female = " + ".join(check["female_markers"]) or "female marker"
    male = " + ".join(check["male_markers"]) or "male marker"
    missing = [*check["female_markers_missing"], *check["male_markers_missing"]]
    sex_column = check["recorded_sex_column"]
    no_markers = not check["female_markers"] and not check["male_markers"]
    fig, ax = plt.subplots(figsize=(7.4, 3.0) if no_markers else (7.4, 5.8), dpi=150)
    if no_markers:
        recorded = (
            f"Recorded sex ('{sex_column}'): {_sex_counts(table['recorded_sex'])}."
            if sex_column
            else "No sex or gender column in the sample metadata either."
        )
        message_panel(
            ax,
            f"Sex check not possible: {' and '.join(missing)} absent from the count matrix\n"
            f"(filtered out upstream?), so recorded sex cannot be compared with expression.\n{recorded}",
        )
        what = "sex check: marker genes absent"
    elif not (check["female_markers"] and check["male_markers"]):
        present, key = (
            (female, "female_marker_log2cpm") if check["female_markers"] else (male, "male_marker_log2cpm")
        )
        order = [s for s in ("female", "male", "unknown") if (table["recorded_sex"] == s).any()]
        rng = np.random.default_rng(0)  # seeded jitter: reruns write identical files
        for pos, s in enumerate(order):
            y = table.loc[table["recorded_sex"] == s, key].to_numpy(dtype=float)
            x = pos + rng.uniform(-0.2, 0.2, size=len(y))
            ax.scatter(x, y, s=25, color=SEX_PALETTE[s], linewidths=0, zorder=3)
        ax.set_xlim(-0.6, len(order) - 0.4)
        counts_sex = table["recorded_sex"].value_counts()
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([f"{s} (n={counts_sex[s]})" for s in order])
        ax.set_xlabel("recorded sex")
        ax.set_ylabel(f"{present}, log2(CPM + 1)")
        despine(ax)
        # In the title rather than inside the axes, where it could cover the top points.
        absent = " and ".join(missing)
        what = f"sex check: {present} by recorded sex ({absent} absent from the matrix: no sex call)"
    else:
        _sex_scatter(ax, table, female, male, contrast)
        if sex_column is None:
            what = "sex check: no recorded sex in the metadata, expression pattern only"
        else:
            n_disc = int((table["agreement"] == "discordant").sum())
            what = f"sex check: recorded sex ('{sex_column}') vs {female}/{male}; {n_disc} discordant"
    ax.set_title(contrast_title(str(summary["cohort"]), n, what, contrast), fontsize=10)
    fig.tight_layout()
    return fig


def _sex_counts(sex: pd.Series) -> str:
    counts = sex.value_counts()
    return ", ".join(f"{counts[s]} {s}" for s in ("female", "male", "unknown") if counts.get(s, 0))


def _sex_scatter(
    ax: plt.Axes, table: pd.DataFrame, female: str, male: str, contrast: Contrast | None = None
) -> None:
    x, y = "female_marker_log2cpm", "male_marker_log2cpm"
    for (recorded, severity), sub in table.groupby(["recorded_sex", "severity"], observed=True):
        ax.scatter(
            sub[x],
            sub[y],
            c=SEX_PALETTE.get(recorded, "#7f7f7f"),
            marker=SEVERITY_MARKERS.get(severity, "o"),
            s=34,
            edgecolors="white",
            linewidths=0.5,
            zorder=3,
        )
    top = float(np.nanmax(table[[x, y]].to_numpy())) if len(table) else 1.0
    top = max(top, 2.0) * 1.08
    grid = np.array([0.0, top])
    # The expression call's decision band: within SEX_CALL_MARGIN of the diagonal is 'ambiguous'.
    ax.fill_between(grid, grid - SEX_CALL_MARGIN, grid + SEX_CALL_MARGIN, color="0.92", zorder=0, lw=0)
    # ... and so is everything where neither marker reaches 1 CPM (log2(CPM + 1) < 1).
    ax.add_patch(plt.Rectangle((-0.3, -0.3), 1.3, 1.3, color="0.92", zorder=0, lw=0))
    ax.plot(grid, grid, color="0.6", ls="--", lw=0.8, zorder=1)
    ax.set_xlim(-0.3, top)
    ax.set_ylim(-0.3, top)
    discordant = table[table["agreement"] == "discordant"]
    ax.scatter(
        discordant[x], discordant[y], s=150, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4,
    )  # fmt: skip
    texts = [halo_text(ax, r[x], r[y], str(idx), fontsize=8) for idx, r in discordant.iterrows()]
    if texts:
        repel_labels(texts, ax, arrowprops={"arrowstyle": "-", "color": "0.2", "lw": 0.6})
    ax.set_xlabel(f"{female} (female marker), log2(CPM + 1)")
    ax.set_ylabel(f"{male} (male marker), log2(CPM + 1)")
    ax.set_aspect("equal", adjustable="box")
    despine(ax)
    counts_sex = table["recorded_sex"].value_counts()
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=SEX_PALETTE[s], markersize=6)
        for s in ("female", "male", "unknown")
        if counts_sex.get(s, 0)
    ]
    labels = [
        f"recorded {s} (n={counts_sex[s]})" for s in ("female", "male", "unknown") if counts_sex.get(s, 0)
    ]
    n_sev = table["severity"].value_counts()
    for g in ALL_GROUPS:
        if n_sev.get(g, 0):
            handles.append(plt.Line2D([], [], marker=SEVERITY_MARKERS[g], ls="", color="0.3", markersize=6))
            labels.append(contrast_group_label(g, int(n_sev[g]), contrast))
    handles.append(
        plt.Line2D([], [], marker="o", ls="", markerfacecolor="none", markeredgecolor="k", markersize=9)
    )
    labels.append(f"discordant (n={len(discordant)})")
    handles.append(plt.Rectangle((0, 0), 1, 1, color="0.92"))
    labels.append("no call (ambiguous band)")
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8)


# ----------------------------------------------------------------------------------------------------
# PCA
# ----------------------------------------------------------------------------------------------------


def pca_plot(table: pd.DataFrame, variance: pd.DataFrame, summary: Mapping) -> plt.Figure:
    """PC1 vs PC2 of the contrast samples' log-scale expression, colour = severity, marker = recorded sex.

    ``table`` and ``variance`` are pca.tsv and pca_variance.tsv (:func:`il6axis.analysis.qc.pca_table`);
    samples flagged ``outlier`` (more than ``PCA_OUTLIER_Z`` robust SDs on PC1 or PC2) are labelled.
    """
    cohort = str(summary["cohort"])
    contrast = summary_contrast(summary)
    n = counts_by_group(table["severity"])
    fig, ax = plt.subplots(figsize=(7.4, 5.6), dpi=150)
    if variance.empty:
        message_panel(ax, f"PCA needs at least 3 samples; the contrast has {len(table)}.")
        what = f"PCA of {log_scale_name(summary)} expression"
        ax.set_title(contrast_title(cohort, n, what, contrast), fontsize=10)
        return fig
    ratio = variance["variance_fraction"].to_numpy(dtype=float)
    for (group, s), sub in table.groupby(["severity", "recorded_sex"]):
        ax.scatter(
            sub["PC1"], sub["PC2"], c=SEVERITY_PALETTE[group], marker=SEX_MARKERS.get(s, "s"),
            s=46, edgecolors="white", linewidths=0.6, zorder=3,
        )  # fmt: skip
    outlier = table["outlier"].astype(bool)
    texts = [halo_text(ax, r.PC1, r.PC2, str(idx), fontsize=7) for idx, r in table[outlier].iterrows()]
    if texts:
        repel_labels(texts, ax, arrowprops={"arrowstyle": "-", "color": "0.2", "lw": 0.5})
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f}% variance)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f}% variance)")
    ax.axhline(0, color="0.85", lw=0.6, zorder=0)
    ax.axvline(0, color="0.85", lw=0.6, zorder=0)
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=SEVERITY_PALETTE[g], markersize=7) for g in SEVERITY_ORDER
    ]
    labels = [contrast_group_label(g, n[g], contrast) for g in SEVERITY_ORDER]
    sex_n = table["recorded_sex"].value_counts()
    for s in ("female", "male", "unknown"):
        if sex_n.get(s, 0):
            handles.append(plt.Line2D([], [], marker=SEX_MARKERS[s], ls="", color="0.35", markersize=7))
            labels.append(f"{s} (n={sex_n[s]})" if s != "unknown" else f"sex not recorded (n={sex_n[s]})")
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8)
    genes_used = int(variance["genes_used"].iloc[0])
    what = f"PCA of {log_scale_name(summary)} expression, top {genes_used} most variable genes"
    if outlier.any():
        what += f"; labelled: > {PCA_OUTLIER_Z:g} robust SD"
    ax.set_title(contrast_title(cohort, n, what, contrast), fontsize=10)
    despine(ax)
    fig.tight_layout()
    return fig


def read_sex_check(table_path: str | Path, summary_path: str | Path) -> tuple[pd.DataFrame, dict]:
    """sex_check.tsv and sex_check.json of rule cohort_qc."""
    check = read_json(
        summary_path,
        what="sex-check summary",
        rule="cohort_qc",
        required=("recorded_sex_column", "female_markers", "male_markers", "female_markers_missing",
                  "male_markers_missing"),
    )  # fmt: skip
    return read_qc_table(table_path, SEX_COLUMNS), check
