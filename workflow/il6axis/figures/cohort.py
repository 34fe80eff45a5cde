"""Per-cohort figures for the report beyond the DE plots: sample QC, the IL-6 panel, pathway scores.

- QC: library size and detected genes per sample (:func:`library_sizes`), recorded sex against the
  XIST / RPS4Y1 expression pattern (:func:`sex_check`, catching sample swaps and label errors), and a PCA
  of the VST expression (:func:`pca_plot`).
- IL-6 panel: z-scored VST heatmap (:func:`panel_heatmap`), per-gene normalised counts with the DE
  estimate (:func:`panel_gene_boxes`), detection rates of the ligands/receptors (:func:`panel_detection`).
- Pathway scores: per-set scores by severity with the covariate-adjusted OLS estimate
  (:func:`pathway_score_boxes`).

Each figure function takes in-memory AnnData / DataFrames and returns a matplotlib ``Figure``; the
``*_figure`` variants add the report's title from the DE summary. :func:`write_cohort_figures` reads
each of the workflow's inputs once and draws all of them, the DE figures of :mod:`il6axis.figures.de`
included, writing PNG + SVG via :func:`il6axis.figures.style.save`: it is the plot_cohort rule (one job per
cohort).
"""

from __future__ import annotations

import logging
import re
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from matplotlib.cbook import boxplot_stats  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator  # noqa: E402

from il6axis.cohort.contrast import Contrast, contrast_from_uns  # noqa: E402
from il6axis.cohort.value_scale import detected_log2  # noqa: E402
from il6axis.de import routing as severity_model  # noqa: E402
from il6axis.errors import InputError  # noqa: E402
from il6axis.figures.de import (  # noqa: E402
    CORE_SIGNALLING,
    contrast_title,
    effect_text,
    estimate_ci,
    format_p,
    grid_shape,
    halo_text,
    load_de,
    ma_figure,
    pvalue_histogram_figure,
    read_summary,
    repel_labels,
    summary_contrast,
    summary_title,
    volcano_figure,
)
from il6axis.figures.style import (  # noqa: E402
    DIVERGING_CMAP,
    SEVERITY_ORDER,
    SEVERITY_PALETTE,
    despine,
    group_label,
    save,
)
from il6axis.vocabulary import EXCLUDED, MILD, SEVERE  # noqa: E402

log = logging.getLogger(__name__)

ALL_GROUPS = [*SEVERITY_ORDER, EXCLUDED]
# Recorded sex is drawn in colours that cannot be mistaken for the severity palette (blue/red/grey).
SEX_PALETTE = {"female": "#e69f00", "male": "#009e73", "unknown": "#7f7f7f"}
SEX_MARKERS = {"female": "o", "male": "^", "unknown": "s"}
SEVERITY_MARKERS = {MILD: "o", SEVERE: "s", EXCLUDED: "X"}
# A library below this fraction of the cohort median is labelled: it is the first suspect for an outlier.
LOW_LIBRARY_FRACTION = 0.3
# Sex call from expression: the log2(CPM + 1) difference between the male and female marker must exceed
# this margin, and the winning marker must reach 1 CPM; otherwise the call is "ambiguous".
SEX_CALL_MARGIN = 1.0
PCA_TOP_GENES = 500
PCA_OUTLIER_Z = 3.5
TIER_ORDER = ["core", "family", "STAT3-target", "acute-phase", "control"]
# Ligands and receptors whose detection in blood is the first question about IL-6 signalling there.
DETECTION_GENES = ["IL6", "IL6R", "IL6ST", "OSM", "LIF", "IL11"]
Z_CLIP = 3.0
# Small-multiple titles sit at a fixed height just above their axes (no tick labels on top). Left
# unset, matplotlib re-measures every y axis at each draw to place each title: about a third of the
# drawing time of a 17-panel figure, for the same position.
TITLE_Y = 1.0


# ----------------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------------


def _severity(obs: pd.DataFrame, source: str) -> pd.Series:
    if "severity" not in obs.columns:
        raise InputError(f"{source}: obs has no 'severity' column; rebuild the cohort with build_cohort.")
    return obs["severity"].astype(str)


def declared_contrast(adata: ad.AnnData) -> Contrast:
    """The cohort's declared contrast, carried in ``uns`` from the config (severe vs mild if absent)."""
    return contrast_from_uns(adata.uns, source=f"{_cohort_name(adata)} AnnData")


def contrast_group_label(group: str, n: int, contrast: Contrast | None = None) -> str:
    """'ICU (n=50)': the declared label of a severity slot with its size ('excluded (n=3)' stays)."""
    return group_label((contrast or Contrast()).group_label(group), n)


def _tick_label(group: str, n: int, contrast: Contrast | None) -> str:
    """:func:`contrast_group_label` for an axis tick: a long declared label ('non-ICU (hospitalised)') is
    wrapped, with the size on its own line, so neighbouring ticks do not run into each other."""
    name = (contrast or Contrast()).group_label(group)
    if len(name) <= 10:
        return group_label(name, n)
    return f"{textwrap.fill(name, 14)}\n(n={n})"


def _counts_by_group(severity: pd.Series) -> dict[str, int]:
    counts = severity.value_counts()
    return {g: int(counts.get(g, 0)) for g in ALL_GROUPS}


def _dense(matrix) -> np.ndarray:
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def _raw_counts(adata: ad.AnnData) -> pd.DataFrame:
    """Samples x genes raw counts of a cohort AnnData as floats (X holds integer counts); for a cohort
    with published log2 values, 2**X (the linear scale that library sizes and CPM need)."""
    values = pd.DataFrame(_dense(adata.X).astype(float), index=adata.obs_names, columns=adata.var_names)
    return np.exp2(values) if severity_model.is_log2(adata) else values


def _detected_genes(adata: ad.AnnData) -> np.ndarray:
    """Per sample, genes with a count > 0, or, for published log2 values, above the sample's floor (where
    its zero counts sit: ``value_scale.detected_log2``)."""
    values = pd.DataFrame(_dense(adata.X).astype(float), index=adata.obs_names, columns=adata.var_names)
    detected = detected_log2(values) if severity_model.is_log2(adata) else values > 0
    return detected.sum(axis=1).to_numpy()


def _layer(adata: ad.AnnData, name: str, source: str, genes: Sequence[str] | None = None) -> pd.DataFrame:
    """Samples x genes DataFrame of a layer, all genes or only ``genes`` (a panel: no dense copy of the
    whole genome)."""
    if name not in adata.layers:
        raise InputError(
            f"{source}: expression AnnData lacks layer '{name}' (has {list(adata.layers)}); "
            f"rerun the expression_scores rule."
        )
    if genes is None:
        return pd.DataFrame(
            _dense(adata.layers[name]).astype(float), index=adata.obs_names, columns=adata.var_names
        )
    columns = adata.var_names.get_indexer(pd.Index(genes))
    if (columns < 0).any():
        missing = [g for g, c in zip(genes, columns, strict=True) if c < 0]
        raise KeyError(f"{source}: genes {missing} not in the expression AnnData")
    values = _dense(adata.layers[name][:, columns]).astype(float)
    return pd.DataFrame(values, index=adata.obs_names, columns=pd.Index(genes))


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
    ax.set_xticklabels([_tick_label(g, int(n.get(g, 0)), contrast) for g in order])
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_xlabel("")
    if log_scale:
        ax.set_yscale("log")
        _log_ticks(ax)
    despine(ax)
    return pd.Series(x_drawn, index=values.index)


BOX_WIDTH = 0.55


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


def log_scale_name(source: ad.AnnData | Mapping) -> str:
    """Name of the cohort's log expression scale for labels, from its AnnData or its DE summary: the VST
    for counts, log2(normalised + 1) for a cohort that publishes normalised values only, and "published
    log2 normalised" for one whose values are already log2. A summary without ``value_type``
    (older runs) is named from its ``scale``."""
    if isinstance(source, ad.AnnData):
        return severity_model.log_scale_name(severity_model.value_type_of(source))
    if source.get("value_type"):
        return severity_model.log_scale_name(str(source["value_type"]))
    normalised = source.get("scale") == severity_model.SCALE_NORMALISED
    return severity_model.log_scale_name(severity_model.NORMALISED if normalised else "counts")


def _log_ticks(ax: plt.Axes) -> None:
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
    """Tick values for a log axis from ``low`` to ``high`` (both > 0); see :func:`_log_ticks`."""
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


def _message_panel(ax: plt.Axes, message: str) -> None:
    """An empty panel that says why there is nothing to plot."""
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=9, wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _cohort_name(adata: ad.AnnData, fallback: str = "cohort") -> str:
    return str(adata.uns.get("cohort", fallback))


# ----------------------------------------------------------------------------------------------------
# QC (a): library sizes
# ----------------------------------------------------------------------------------------------------


def library_table(adata: ad.AnnData) -> pd.DataFrame:
    """Per sample: severity, total counts (millions) and detected genes (count > 0), all samples.

    Published log2 values are summed as 2**x; a gene is detected above the sample's floor."""
    counts = _raw_counts(adata)
    return pd.DataFrame(
        {
            "severity": _severity(adata.obs, _cohort_name(adata)).to_numpy(),
            "total_millions": counts.sum(axis=1).to_numpy() / 1e6,
            "detected_genes": _detected_genes(adata),
        },
        index=adata.obs_names,
    )


def library_sizes(adata: ad.AnnData) -> plt.Figure:
    """Library size and detected genes per sample by group, excluded samples included (in grey).

    Samples whose library is below ``LOW_LIBRARY_FRACTION`` of the cohort median are labelled.
    """
    table = library_table(adata)
    contrast = declared_contrast(adata)
    n = _counts_by_group(table["severity"])
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.8), dpi=150)
    point_x = box_strip(axes[0], table["total_millions"], table["severity"], ALL_GROUPS, contrast=contrast)
    normalised = severity_model.is_normalised(adata)
    log2_values = severity_model.is_log2(adata)
    total_name = "sum of normalised values" if normalised else "library size"
    if log2_values:  # published log2 values are summed on the linear scale
        total_name = "sum of 2^(log2 value)"
    axes[0].set_ylabel(f"{total_name} (millions)" if normalised else "library size (million counts)")
    box_strip(axes[1], table["detected_genes"], table["severity"], ALL_GROUPS, contrast=contrast)
    detected_rule = "above sample minimum" if log2_values else "count > 0"
    axes[1].set_ylabel(f"detected genes ({detected_rule})")
    # Library size from zero so relative depth reads off the axis; detected genes on their own range
    # (they vary by a few percent and would flatten against zero).
    axes[0].set_ylim(bottom=0)
    n_genes = adata.n_vars
    if n_genes and table["detected_genes"].min() >= 0.99 * n_genes:
        # Every sample detects (nearly) every gene: the submitters shipped a pre-filtered matrix, so this
        # panel carries no quality information.
        note = f"every sample detects ≥ 99% of the matrix's {n_genes} genes:\nmatrix probably pre-filtered"
        axes[1].set_title(note, fontsize=8, color="0.3")  # above the axes: never over a point
    low = table[table["total_millions"] < LOW_LIBRARY_FRACTION * table["total_millions"].median()]
    # Each label starts on its own (jittered) point, so the leader line ends at the right sample.
    texts = [
        halo_text(axes[0], point_x[idx], r.total_millions, str(idx), fontsize=7)
        for idx, r in low.iterrows()
        if np.isfinite(point_x[idx])
    ]
    if texts:
        repel_labels(texts, axes[0], arrowprops={"arrowstyle": "-", "color": "0.2", "lw": 0.5})
    excluded = f", {n[EXCLUDED]} excluded" if n[EXCLUDED] else ""
    what = f"{total_name} and detected genes per sample (all {len(table)} samples{excluded})"
    fig.suptitle(contrast_title(_cohort_name(adata), n, what, contrast), fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------
# QC (b): sex check
# ----------------------------------------------------------------------------------------------------


def normalise_sex(values: pd.Series) -> pd.Series:
    """Map free-text sex labels ('M', 'Female', 'gender: F', ...) to female / male / unknown."""
    text = values.astype("object").where(values.notna(), "").astype(str).str.strip().str.lower()
    text = text.str.replace(r"^(sex|gender)\s*[:=]\s*", "", regex=True)
    out = pd.Series("unknown", index=values.index, dtype=object)
    out[text.isin(["f", "female", "woman", "women"])] = "female"
    out[text.isin(["m", "male", "man", "men"])] = "male"
    return out


def recorded_sex(obs: pd.DataFrame, covariates: Sequence[str] = ()) -> tuple[pd.Series | None, str | None]:
    """The samples' recorded sex (female/male/unknown) and the obs column it came from.

    Looks first at the cohort's covariates, then at any metadata column whose name says sex or gender
    (GEO characteristics often carry ``gender: M``); None when no column holds a single male/female value.
    """
    pattern = re.compile(r"(^|[^a-z])(sex|gender)([^a-z]|$)", re.IGNORECASE)
    named = [c for c in obs.columns if pattern.search(str(c))]
    candidates = [c for c in covariates if c in named] + [c for c in named if c not in covariates]
    for column in candidates:
        sex = normalise_sex(obs[column])
        if sex.isin(["female", "male"]).any():
            return sex, str(column)
    # GEO characteristics columns are named characteristics_ch1.N: look inside them for 'gender: M'.
    for column in obs.columns:
        values = obs[column].astype("object").dropna().astype(str)
        if len(values) and values.str.match(r"^\s*(sex|gender)\s*[:=]", case=False).all():
            sex = normalise_sex(obs[column])
            if sex.isin(["female", "male"]).any():
                return sex, str(column)
    return None, None


def _marker_genes(markers: pd.DataFrame, role: str) -> list[str]:
    if not {"symbol", "role"} <= set(markers.columns):
        raise InputError("markers table lacks 'symbol'/'role'; expected severity_sanity_markers.tsv.")
    return markers.loc[markers["role"] == role, "symbol"].astype(str).tolist()


def infer_sex(log_female: pd.Series, log_male: pd.Series, margin: float = SEX_CALL_MARGIN) -> pd.Series:
    """Expression sex call from log2(CPM + 1) of the female (XIST) and male (RPS4Y1) markers.

    'male' when the male marker exceeds the female one by ``margin`` and reaches 1 CPM (log2 2 = 1),
    'female' symmetrically, 'ambiguous' otherwise (both silent, or both expressed).
    """
    diff = log_male - log_female
    call = pd.Series("ambiguous", index=log_female.index, dtype=object)
    call[(diff > margin) & (log_male >= 1.0)] = "male"
    call[(diff < -margin) & (log_female >= 1.0)] = "female"
    return call


def sex_check_table(adata: ad.AnnData, markers: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, object]]:
    """Per sample: severity, recorded sex, log2(CPM + 1) of the female/male markers, inferred sex and
    whether the two disagree; plus a dict saying which markers/metadata were available.

    CPM uses the sample's total counts over all genes of the matrix. Missing markers give NaN columns.
    """
    counts = _raw_counts(adata)
    covariates = [str(c) for c in np.atleast_1d(adata.uns.get("covariates", []))]
    sex, sex_column = recorded_sex(adata.obs, covariates)
    info: dict[str, object] = {"sex_column": sex_column}
    lib = counts.sum(axis=1)
    table = pd.DataFrame(
        {
            "severity": _severity(adata.obs, _cohort_name(adata)),
            "recorded": sex if sex is not None else "unknown",
        },
        index=adata.obs_names,
    )
    for role, key in (("sex_female", "female"), ("sex_male", "male")):
        genes = [g for g in _marker_genes(markers, role) if g in counts.columns]
        info[f"{key}_genes"] = genes
        info[f"{key}_missing"] = [g for g in _marker_genes(markers, role) if g not in counts.columns]
        if genes:
            cpm = counts[genes].sum(axis=1) / lib.where(lib > 0) * 1e6
            table[f"log_{key}"] = np.log2(cpm + 1.0)
        else:
            table[f"log_{key}"] = np.nan
    both = bool(info["female_genes"]) and bool(info["male_genes"])
    table["inferred"] = infer_sex(table["log_female"], table["log_male"]) if both else "not called"
    table["discordant"] = (
        table["recorded"].isin(["female", "male"])
        & table["inferred"].isin(["female", "male"])
        & (table["recorded"] != table["inferred"])
    )
    return table, info


def sex_check(adata: ad.AnnData, markers: pd.DataFrame) -> plt.Figure:
    """XIST vs RPS4Y1 expression coloured by recorded sex (marker = severity group), all samples.

    Discordant samples (recorded sex contradicts the expression call) are circled and labelled by id.
    With one marker missing the available one is shown per recorded sex without calls; with both missing,
    or nothing recorded, the figure says so instead of failing.
    """
    table, info = sex_check_table(adata, markers)
    n = _counts_by_group(table["severity"])
    cohort = _cohort_name(adata)
    contrast = declared_contrast(adata)
    female = " + ".join(info["female_genes"]) or "female marker"
    male = " + ".join(info["male_genes"]) or "male marker"
    missing = [*info["female_missing"], *info["male_missing"]]
    no_markers = not info["female_genes"] and not info["male_genes"]
    fig, ax = plt.subplots(figsize=(7.4, 3.0) if no_markers else (7.4, 5.8), dpi=150)
    if no_markers:
        recorded = (
            f"Recorded sex ('{info['sex_column']}'): {_sex_counts(table['recorded'])}."
            if info["sex_column"]
            else "No sex or gender column in the sample metadata either."
        )
        _message_panel(
            ax,
            f"Sex check not possible: {' and '.join(missing)} absent from the count matrix\n"
            f"(filtered out upstream?), so recorded sex cannot be compared with expression.\n{recorded}",
        )
        what = "sex check: marker genes absent"
    elif not (info["female_genes"] and info["male_genes"]):
        present, key = (female, "log_female") if info["female_genes"] else (male, "log_male")
        order = [s for s in ("female", "male", "unknown") if (table["recorded"] == s).any()]
        rng = np.random.default_rng(0)  # seeded jitter: reruns write identical files
        for pos, s in enumerate(order):
            y = table.loc[table["recorded"] == s, key].to_numpy(dtype=float)
            x = pos + rng.uniform(-0.2, 0.2, size=len(y))
            ax.scatter(x, y, s=25, color=SEX_PALETTE[s], linewidths=0, zorder=3)
        ax.set_xlim(-0.6, len(order) - 0.4)
        counts_sex = table["recorded"].value_counts()
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
        if info["sex_column"] is None:
            what = "sex check: no recorded sex in the metadata, expression pattern only"
        else:
            n_disc = int(table["discordant"].sum())
            what = f"sex check: recorded sex ('{info['sex_column']}') vs {female}/{male}; {n_disc} discordant"
    ax.set_title(contrast_title(cohort, n, what, contrast), fontsize=10)
    fig.tight_layout()
    return fig


def _sex_counts(sex: pd.Series) -> str:
    counts = sex.value_counts()
    return ", ".join(f"{counts[s]} {s}" for s in ("female", "male", "unknown") if counts.get(s, 0))


def _sex_scatter(
    ax: plt.Axes, table: pd.DataFrame, female: str, male: str, contrast: Contrast | None = None
) -> None:
    for (recorded, severity), sub in table.groupby(["recorded", "severity"], observed=True):
        ax.scatter(
            sub["log_female"],
            sub["log_male"],
            c=SEX_PALETTE.get(recorded, "#7f7f7f"),
            marker=SEVERITY_MARKERS.get(severity, "o"),
            s=34,
            edgecolors="white",
            linewidths=0.5,
            zorder=3,
        )
    top = float(np.nanmax(table[["log_female", "log_male"]].to_numpy())) if len(table) else 1.0
    top = max(top, 2.0) * 1.08
    grid = np.array([0.0, top])
    # The expression call's decision band: within SEX_CALL_MARGIN of the diagonal is 'ambiguous'.
    ax.fill_between(grid, grid - SEX_CALL_MARGIN, grid + SEX_CALL_MARGIN, color="0.92", zorder=0, lw=0)
    # ... and so is everything where neither marker reaches 1 CPM (log2(CPM + 1) < 1).
    ax.add_patch(plt.Rectangle((-0.3, -0.3), 1.3, 1.3, color="0.92", zorder=0, lw=0))
    ax.plot(grid, grid, color="0.6", ls="--", lw=0.8, zorder=1)
    ax.set_xlim(-0.3, top)
    ax.set_ylim(-0.3, top)
    discordant = table[table["discordant"]]
    ax.scatter(
        discordant["log_female"], discordant["log_male"], s=150, facecolors="none", edgecolors="black",
        linewidths=1.2, zorder=4,
    )  # fmt: skip
    texts = [
        halo_text(ax, r.log_female, r.log_male, str(idx), fontsize=8) for idx, r in discordant.iterrows()
    ]
    if texts:
        repel_labels(texts, ax, arrowprops={"arrowstyle": "-", "color": "0.2", "lw": 0.6})
    ax.set_xlabel(f"{female} (female marker), log2(CPM + 1)")
    ax.set_ylabel(f"{male} (male marker), log2(CPM + 1)")
    ax.set_aspect("equal", adjustable="box")
    despine(ax)
    counts_sex = table["recorded"].value_counts()
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


def log_sex_check(adata: ad.AnnData, markers: pd.DataFrame) -> pd.DataFrame:
    """The per-sample sex-check table, with the discordant samples written to the log (the rule's log is
    where a reviewer looks for sample swaps)."""
    table, info = sex_check_table(adata, markers)
    flagged = list(table.index[table["discordant"]])
    log.info(
        "sex check (recorded sex from %s): %d discordant sample(s) %s",
        info["sex_column"],
        len(flagged),
        flagged,
    )
    return table


# ----------------------------------------------------------------------------------------------------
# QC (c): PCA of the VST expression
# ----------------------------------------------------------------------------------------------------


def pca_vst(vst: pd.DataFrame, n_top: int = PCA_TOP_GENES) -> tuple[pd.DataFrame, np.ndarray]:
    """PCA (centred, unscaled SVD) of the ``n_top`` most variable genes of a samples x genes VST matrix.

    Returns sample coordinates (columns PC1..PCk) and each component's share of the total variance of
    those genes (sums to 1 over all components). Unscaled, as DESeq2's ``plotPCA``: VST already puts
    genes on a comparable log scale, and scaling would inflate noisy low-count genes.
    """
    variable = vst.var(axis=0).sort_values(ascending=False, kind="stable")
    genes = variable.index[: min(n_top, len(variable))]
    x = vst[genes].to_numpy(dtype=float)
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    var = s**2
    ratio = var / var.sum() if var.sum() > 0 else np.zeros_like(var)
    coords = pd.DataFrame(u * s, index=vst.index, columns=[f"PC{i + 1}" for i in range(len(s))])
    return coords, ratio


def _robust_z(values: pd.Series) -> pd.Series:
    mad = float(np.median(np.abs(values - values.median()))) * 1.4826
    return (values - values.median()) / mad if mad > 0 else values * 0.0


def pca_plot(adata: ad.AnnData, n_top: int = PCA_TOP_GENES) -> plt.Figure:
    """PC1 vs PC2 of the contrast samples' VST, colour = severity, marker = recorded sex.

    Samples more than ``PCA_OUTLIER_Z`` robust SDs from the median on PC1 or PC2 are labelled by id.
    """
    cohort = _cohort_name(adata)
    contrast = declared_contrast(adata)
    vst = _layer(adata, "vst", cohort)
    severity = _severity(adata.obs, cohort)
    keep = severity.isin(SEVERITY_ORDER).to_numpy()
    vst, severity = vst.loc[keep], severity[keep]
    covariates = [str(c) for c in np.atleast_1d(adata.uns.get("covariates", []))]
    sex, _ = recorded_sex(adata.obs.loc[keep], covariates)
    sex = sex if sex is not None else pd.Series("unknown", index=vst.index)
    n = _counts_by_group(severity)
    fig, ax = plt.subplots(figsize=(7.4, 5.6), dpi=150)
    if len(vst) < 3:
        _message_panel(ax, f"PCA needs at least 3 samples; the contrast has {len(vst)}.")
        what = f"PCA of {log_scale_name(adata)} expression"
        ax.set_title(contrast_title(cohort, n, what, contrast), fontsize=10)
        return fig
    coords, ratio = pca_vst(vst, n_top)
    frame = coords[["PC1", "PC2"]].assign(severity=severity.to_numpy(), sex=sex.reindex(vst.index).to_numpy())
    for (group, s), sub in frame.groupby(["severity", "sex"]):
        ax.scatter(
            sub["PC1"], sub["PC2"], c=SEVERITY_PALETTE[group], marker=SEX_MARKERS.get(s, "s"),
            s=46, edgecolors="white", linewidths=0.6, zorder=3,
        )  # fmt: skip
    outlier = (_robust_z(frame["PC1"]).abs() > PCA_OUTLIER_Z) | (
        _robust_z(frame["PC2"]).abs() > PCA_OUTLIER_Z
    )
    texts = [halo_text(ax, r.PC1, r.PC2, str(idx), fontsize=7) for idx, r in frame[outlier].iterrows()]
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
    sex_n = frame["sex"].value_counts()
    for s in ("female", "male", "unknown"):
        if sex_n.get(s, 0):
            handles.append(plt.Line2D([], [], marker=SEX_MARKERS[s], ls="", color="0.35", markersize=7))
            labels.append(f"{s} (n={sex_n[s]})" if s != "unknown" else f"sex not recorded (n={sex_n[s]})")
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8)
    what = f"PCA of {log_scale_name(adata)} expression, top {min(n_top, vst.shape[1])} most variable genes"
    if outlier.any():
        what += f"; labelled: > {PCA_OUTLIER_Z:g} robust SD"
    ax.set_title(contrast_title(cohort, n, what, contrast), fontsize=10)
    despine(ax)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------
# IL-6 panel (a): heatmap
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
    cohort = _cohort_name(adata)
    contrast = declared_contrast(adata)
    severity = _severity(adata.obs, cohort)
    keep = severity.isin(SEVERITY_ORDER)
    samples = pd.DataFrame({"severity": severity[keep]}).assign(
        rank=lambda d: d["severity"].map({g: i for i, g in enumerate(SEVERITY_ORDER)})
    )
    # Mild first, then severe; within a group by sample id.
    samples = samples.iloc[np.lexsort((samples.index.astype(str).to_numpy(), samples["rank"].to_numpy()))]
    present = set(adata.var_names)
    rows = _panel_order(panel_de, present)
    absent = [g for g in panel_de["symbol"].astype(str) if g not in present]
    vst = _layer(adata, "vst", cohort, list(dict.fromkeys(rows["symbol"].astype(str))))
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
# IL-6 panel (b): per-gene normalised counts with the DE estimate
# ----------------------------------------------------------------------------------------------------


def _is_true(value: object) -> bool:
    return str(value).strip().lower() in {"true", "1", "1.0"}


def de_annotation(row: pd.Series | None) -> str:
    """Two-line DE note of one il6_panel.tsv row: estimate [CI] and genome-wide / panel q, or why not."""
    if row is None:
        return "not in the IL-6 panel table"
    if not _is_true(row.get("present", True)):
        return "absent from the count matrix"
    if not _is_true(row.get("tested", False)) or not np.isfinite(float(row.get("log2FoldChange", np.nan))):
        reason = row.get("not_tested_reason")
        reason = reason if isinstance(reason, str) and reason else "no estimate"
        return f"not tested:\n{reason}"
    line1 = f"log2FC {estimate_ci(row['log2FoldChange'], row['ci_low'], row['ci_high'])}"
    line2 = f"padj {format_p(float(row['padj']))}"
    if _is_true(row.get("independently_filtered", False)):
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
    if severity_model.is_log2(adata):
        return log_scale_name(adata)
    if severity_model.is_normalised(adata):
        return "normalised value + 1 (log)" if axis else "normalised values"
    return "normalised count + 1 (log)" if axis else "DESeq2-normalised counts"


def panel_gene_boxes(
    adata: ad.AnnData, panel_de: pd.DataFrame, genes: Sequence[str], title: str, n_cols: int = 5
) -> plt.Figure:
    """Small multiples: normalised counts + 1 (log axis) by severity per gene, DE estimate in the title.

    A cohort with published log2 values shows those values on a linear axis (its ``vst`` layer)."""
    cohort = _cohort_name(adata)
    contrast = declared_contrast(adata)
    present = set(adata.var_names)
    log2_values = severity_model.is_log2(adata)
    layer = "vst" if log2_values else "normalised"
    norm = _layer(adata, layer, cohort, [g for g in dict.fromkeys(genes) if g in present])
    severity = _severity(adata.obs, cohort)
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
            _message_panel(ax, "absent from the\ncount matrix")
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
# IL-6 panel (c): detection of ligands and receptors
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
            if not _is_true(table.loc[gene, "present"]):
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


# ----------------------------------------------------------------------------------------------------
# Pathway scores
# ----------------------------------------------------------------------------------------------------


def pathway_score_boxes(
    scores: pd.DataFrame,
    models: pd.DataFrame,
    title: str,
    method: str = "mean_z",
    scale: str = "VST",
    n_cols: int = 4,
    contrast: Contrast | None = None,
) -> plt.Figure:
    """Per gene set: per-sample score by group, with the covariate-adjusted OLS difference annotated."""
    needed = {"sample_id", "severity", "set", "method", "score"}
    if not needed <= set(scores.columns):
        raise InputError(
            f"pathway scores lack {sorted(needed - set(scores.columns))}; expected pathway_scores.tsv."
        )
    scores = scores[scores["method"] == method]
    models = models[models["method"] == method].drop_duplicates("set").set_index("set")
    sets = [s for s in models.index if s in set(scores["set"])] + [
        s for s in dict.fromkeys(scores["set"]) if s not in models.index
    ]
    n_rows, n_cols = grid_shape(max(len(sets), 1), n_cols)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(3.1 * n_cols, 3.0 * n_rows + 0.9), dpi=150, squeeze=False
    )
    for ax, name in zip(axes.flat, sets, strict=False):
        sub = scores[scores["set"] == name]
        if sub["score"].notna().any():
            box_strip(ax, sub["score"], sub["severity"], SEVERITY_ORDER, contrast=contrast)
            ax.axhline(0, color="0.8", lw=0.6, zorder=0)
            ax.tick_params(axis="both", labelsize=7.5)
        else:
            _message_panel(ax, "no score\n(too few genes present)")
        note = _model_note(models.loc[name] if name in models.index else None)
        ax.set_title(f"{name}\n{note}", fontsize=7.5, y=TITLE_Y)
        ax.set_ylabel("")
    for ax in axes.flat[len(sets) :]:
        ax.set_visible(False)
    if not sets:
        _message_panel(axes.flat[0], f"no '{method}' scores")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"score (mean z of {scale})" if method == "mean_z" else f"score ({method})", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(h_pad=1.2)
    return fig


def _model_note(row: pd.Series | None) -> str:
    if row is None:
        return "no model"
    effect = float(row.get("effect", np.nan))
    if not np.isfinite(effect):
        note = row.get("note")
        return f"no model: {note}" if isinstance(note, str) and note else "no model"
    return effect_text("Δ", effect, float(row["ci_low"]), float(row["ci_high"]), float(row["padj"]))


def pathway_scores_figure(
    scores: pd.DataFrame, models: pd.DataFrame, summary: Mapping, method: str = "mean_z"
) -> plt.Figure:
    """:func:`pathway_score_boxes` with the report's title (confidence level from the DE summary)."""
    level = 100 * (1 - float(summary.get("alpha", 0.05)))
    scale = log_scale_name(summary)
    contrast = summary_contrast(summary)
    what = (
        f"pathway scores (mean z of {scale}); Δ = {contrast.case} − {contrast.reference}, OLS with "
        f"covariates [{level:g}% CI], BH padj"
    )
    return pathway_score_boxes(scores, models, summary_title(summary, what), method, scale, contrast=contrast)


# ----------------------------------------------------------------------------------------------------
# Every per-cohort figure in one pass (the plot_cohort rule)
# ----------------------------------------------------------------------------------------------------

# The figures, in the order they are drawn, by the names write_cohort_figures expects in ``outputs``.
COHORT_FIGURES = (
    "library_sizes",
    "sex_check",
    "pca",
    "volcano",
    "ma",
    "pvalue_histogram",
    "panel_heatmap",
    "panel_genes",
    "panel_detection",
    "pathway_scores",
)


@dataclass(frozen=True)
class CohortFigureInputs:
    """The files the per-cohort figures read: cohort and expression AnnData, severity markers, the DE
    results / IL-6 panel / summary, panel detection, pathway scores and their models."""

    cohort: str | Path
    expression: str | Path
    markers: str | Path
    de_results: str | Path
    panel_de: str | Path
    panel_expression: str | Path
    summary: str | Path
    scores: str | Path
    score_models: str | Path


def write_cohort_figures(
    inputs: CohortFigureInputs, outputs: Mapping[str, Sequence[str | Path]], alpha: float
) -> dict[str, float]:
    """Draw every per-cohort figure (QC, DE, IL-6 panel, pathway scores) and write each to its paths.

    ``outputs`` maps each name of :data:`COHORT_FIGURES` to its PNG + SVG paths. Each input is read once
    and shared by the figures that need it; one job per cohort, rather than one per figure group, pays
    the Python imports and the AnnData reads once. Returns seconds spent per figure (also logged).
    """
    missing = [name for name in COHORT_FIGURES if name not in outputs]
    unknown = [name for name in outputs if name not in COHORT_FIGURES]
    if missing or unknown:
        raise ValueError(
            f"cohort figure outputs: missing {missing}, unknown {unknown}; expected {COHORT_FIGURES}"
        )
    cohort = ad.read_h5ad(inputs.cohort)
    expression = ad.read_h5ad(inputs.expression)
    markers = pd.read_csv(inputs.markers, sep="\t")
    de = load_de(inputs.de_results)
    panel = pd.read_csv(inputs.panel_de, sep="\t")
    summary = read_summary(inputs.summary)
    builders: dict[str, Callable[[], plt.Figure]] = {
        "library_sizes": lambda: library_sizes(cohort),
        "sex_check": lambda: sex_check(cohort, markers),
        "pca": lambda: pca_plot(expression),
        "volcano": lambda: volcano_figure(de, panel, summary, alpha),
        "ma": lambda: ma_figure(de, panel, summary, alpha),
        "pvalue_histogram": lambda: pvalue_histogram_figure(de, summary),
        "panel_heatmap": lambda: panel_heatmap_figure(expression, panel, summary, alpha),
        "panel_genes": lambda: panel_genes_figure(expression, panel, summary),
        "panel_detection": lambda: panel_detection_figure(
            pd.read_csv(inputs.panel_expression, sep="\t"), summary
        ),
        "pathway_scores": lambda: pathway_scores_figure(
            pd.read_csv(inputs.scores, sep="\t"), pd.read_csv(inputs.score_models, sep="\t"), summary
        ),
    }
    log_sex_check(cohort, markers)
    seconds: dict[str, float] = {}
    for name in COHORT_FIGURES:
        started = time.perf_counter()
        save(builders[name](), outputs[name])
        seconds[name] = time.perf_counter() - started
        log.info("%s written to %s (%.1f s)", name, list(map(str, outputs[name])), seconds[name])
    return seconds


__all__ = [
    "COHORT_FIGURES",
    "CohortFigureInputs",
    "box_lines",
    "box_strip",
    "contrast_group_label",
    "declared_contrast",
    "default_panel_genes",
    "de_annotation",
    "infer_sex",
    "library_sizes",
    "library_table",
    "log_axis_ticks",
    "log_sex_check",
    "normalise_sex",
    "panel_detection",
    "panel_detection_figure",
    "panel_gene_boxes",
    "panel_genes_figure",
    "panel_heatmap",
    "panel_heatmap_figure",
    "pathway_score_boxes",
    "pathway_scores_figure",
    "pca_plot",
    "pca_vst",
    "recorded_sex",
    "sex_check",
    "sex_check_table",
    "write_cohort_figures",
    "zscore_genes",
]
