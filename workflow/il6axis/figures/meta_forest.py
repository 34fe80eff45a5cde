"""Forest plots across cohorts: per feature (IL-6 panel gene or pathway score), each cohort's effect with
its confidence interval and the pooled random-effects estimate of each material stratum as a diamond.

Reads the meta-analysis and forest tables (il6axis.analysis.meta) and degrades gracefully: with a single
cohort there is no pooled estimate, so the plot shows the cohort alone and says that pooling needs at
least two cohorts, rather than failing. Cohorts are grouped by contrast kind and material stratum; the
words and colours of tissues and strata come from :mod:`il6axis.vocabulary`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Polygon
from matplotlib.ticker import MaxNLocator

from il6axis.analysis.genesets import CORE_SIGNALLING as CORE_GENES
from il6axis.cohort.contrast import DEFAULT_KIND, KIND_LABEL, KINDS, SEVERITY_KINDS, Contrast
from il6axis.errors import InputError
from il6axis.figures.common import read_tsv, require_columns
from il6axis.figures.style import save
from il6axis.vocabulary import (
    ALL_STRATA,
    STRATUM_OF_TISSUE,
    STRATUM_ORDER,
    STRATUM_PALETTE,
    STRATUM_POOLED_LABEL,
    STRATUM_SHORT,
    TISSUE_LABEL,
    TISSUE_PALETTE,
)

log = logging.getLogger(__name__)

# Strata a cohort can belong to (the cross-material ``all`` fit has no cohorts of its own).
MATERIAL_STRATA = tuple(s for s in STRATUM_ORDER if s != ALL_STRATA)
NO_POOL_TEXT = "pooled estimate needs >= 2 cohorts"
FOREST_COLUMNS = (
    "stratum",
    "feature",
    "row_type",
    "cohort",
    "tissue",
    "effect",
    "ci_low",
    "ci_high",
    "weight",
)
META_COLUMNS = ("stratum", "feature", "k", "pooled_log2FoldChange", "ci_low", "ci_high", "q", "i2", "reason")


def _fmt_q(q: float) -> str:
    """Compact q-value for panel titles."""
    if not np.isfinite(q):
        return "NA"
    return f"{q:.2g}" if q >= 0.001 else f"{q:.1e}"


# ---------------------------------------------------------------------------------------------------------
# Forest plots
# ---------------------------------------------------------------------------------------------------------


def _kinds(table: pd.DataFrame) -> pd.Series:
    """The contrast kind of each row of a forest or meta table (older tables without the column, or rows
    without a kind: severe vs mild)."""
    if "contrast" not in table.columns:
        return pd.Series(DEFAULT_KIND, index=table.index)
    return table["contrast"].fillna(DEFAULT_KIND).astype(str).replace("", DEFAULT_KIND)


def _cohort_rows(forest: pd.DataFrame, cohorts: Sequence[str] | None) -> pd.DataFrame:
    """One row per cohort (cohort, tissue, stratum, contrast kind, pooled, reason) in display order:
    contrast kinds in ``KINDS`` order, within a kind material strata, then the given cohort order."""
    cohort_part = forest[forest["row_type"] == "cohort"].assign(contrast=_kinds)
    # A cohort on another effect scale, or of contrast kind `other`, is drawn but not pooled (meta.run_meta).
    pooled = (
        cohort_part["pooled"].astype(str).str.lower().isin(["true", "1"])
        if "pooled" in cohort_part.columns
        else pd.Series(True, index=cohort_part.index)
    )
    rows = cohort_part.drop_duplicates("cohort")[["cohort", "tissue", "contrast"]]
    rows["pooled"] = rows["cohort"].map(pooled.groupby(cohort_part["cohort"]).any())
    reasons = (
        cohort_part["not_pooled_reason"].fillna("").astype(str)
        if "not_pooled_reason" in cohort_part.columns
        else pd.Series("", index=cohort_part.index)
    )
    rows["reason"] = rows["cohort"].map(reasons.groupby(cohort_part["cohort"]).max())
    order = list(cohorts) if cohorts is not None else list(rows["cohort"])
    rows = rows.set_index("cohort").reindex([c for c in order if c in set(rows["cohort"])]).reset_index()
    rows["stratum"] = rows["tissue"].map(lambda t: STRATUM_OF_TISSUE.get(str(t), "other"))
    stratum_rank = {s: i for i, s in enumerate(STRATUM_ORDER)}
    kind_rank = {k: i for i, k in enumerate(KINDS)}
    rows["_kind"] = rows["contrast"].map(lambda k: kind_rank.get(k, len(kind_rank)))
    rows["_rank"] = rows["stratum"].map(stratum_rank)
    rows["_pos"] = range(len(rows))
    rows = rows.sort_values(["_kind", "_rank", "_pos"]).drop(columns=["_kind", "_rank", "_pos"])
    return rows.reset_index(drop=True)


def _section_title(kind: str) -> str:
    """Heading row of a contrast kind in a forest plot with several kinds."""
    if kind == "other":
        return "other contrasts (never pooled)"
    severity = kind in SEVERITY_KINDS
    return f"{KIND_LABEL.get(kind, kind)}{'' if severity else ' (not a severity contrast)'}"


def _cohort_label(rec: Any, contrasts: Mapping[str, Contrast]) -> str:
    """'GSE1 (whole blood): ICU vs non-ICU', with ', not pooled: <reason>' for a cohort only shown."""
    tissue = TISSUE_LABEL.get(rec.tissue, rec.tissue)
    inner = tissue if rec.pooled else f"{tissue}, not pooled: {rec.reason or 'not in a pooled fit'}"
    groups = contrasts[rec.cohort].label if rec.cohort in contrasts else ""
    return f"{rec.cohort} ({inner}){': ' + groups if groups else ''}"


def _layout(
    cohort_rows: pd.DataFrame,
    meta_keys: Sequence[tuple[str, str]] | Sequence[str],
    contrasts: Mapping[str, Contrast] | None = None,
) -> list[tuple[str, Any, str]]:
    """Display rows top to bottom as (kind, key, label): per contrast kind, the cohorts of each stratum,
    then that stratum's pooled row (key ``(contrast kind, stratum)``).

    A pooled row appears only for a stratum with at least two pooled cohorts of one kind (others can
    never pool), and the cross-material ``all`` row only when it would pool more cohorts than any single
    stratum does. With several contrast kinds each kind starts with a heading row (``header``): cohorts of
    different kinds are never pooled together in the primary fit. ``meta_keys`` are the (contrast,
    stratum) pairs the meta-analysis table holds (bare strata mean the default kind).
    """
    contrasts = dict(contrasts or {})
    keys = {(DEFAULT_KIND, k) if isinstance(k, str) else tuple(k) for k in meta_keys}
    layout: list[tuple[str, Any, str]] = []
    kinds = list(dict.fromkeys(cohort_rows["contrast"]))
    for kind in kinds:
        part = cohort_rows[cohort_rows["contrast"] == kind]
        if len(kinds) > 1:
            layout.append(("header", kind, _section_title(kind)))
        sizes = part.loc[part["pooled"], "stratum"].value_counts()
        for stratum in STRATUM_ORDER:
            members = part[part["stratum"] == stratum]
            for rec in members.itertuples():
                layout.append(("cohort", rec.cohort, _cohort_label(rec, contrasts)))
            if int(members["pooled"].sum()) >= 2 and (kind, stratum) in keys:
                layout.append(("pooled", (kind, stratum), STRATUM_POOLED_LABEL[stratum]))
        n_pooled = int(part["pooled"].sum())
        if (kind, "all") in keys and n_pooled >= 2 and n_pooled > sizes.max():
            layout.append(("pooled", (kind, "all"), STRATUM_POOLED_LABEL["all"]))
    return layout


def _diamond(ax: plt.Axes, y: float, est: float, lo: float, hi: float, colour: str) -> None:
    poly = Polygon(
        [(lo, y), (est, y + 0.32), (hi, y), (est, y - 0.32)],
        closed=True,
        facecolor=colour,
        edgecolor=colour,
        zorder=3,
    )
    ax.add_patch(poly)


def _panel_title(feature: str, meta_f: pd.DataFrame, label: str | None = None) -> str:
    """Feature name plus one line per pooled fit: k, I2, q (only where a pooled fit exists); the contrast
    kind leads each line when fits of several kinds are shown."""
    lines = [label or feature]
    rank = {s: i for i, s in enumerate(STRATUM_ORDER)}
    kind_rank = {k: i for i, k in enumerate(KINDS)}
    meta_f = meta_f.assign(contrast=_kinds(meta_f))
    ordered = meta_f.assign(
        _k=meta_f["contrast"].map(lambda k: kind_rank.get(k, len(kind_rank))),
        _r=meta_f["stratum"].map(lambda s: rank.get(s, len(rank))),
    ).sort_values(["_k", "_r"])
    fitted = ordered[(ordered["k"] >= 2) & np.isfinite(ordered["pooled_log2FoldChange"])]
    if "cohorts" in fitted.columns:  # the cross-material fit repeats a stratum's when it adds no cohort
        by_stratum = fitted[fitted["stratum"] != "all"]
        stratum_fits = set(zip(by_stratum["contrast"], by_stratum["cohorts"], strict=True))
        repeat = [(k, c) in stratum_fits for k, c in zip(fitted["contrast"], fitted["cohorts"], strict=True)]
        fitted = fitted[~((fitted["stratum"] == "all") & np.array(repeat, dtype=bool))]
    several = fitted["contrast"].nunique() > 1
    for rec in fitted.itertuples():
        i2 = f"{100 * rec.i2:.0f}%" if np.isfinite(rec.i2) else "NA"
        where = STRATUM_SHORT.get(rec.stratum, rec.stratum)
        if several:
            where = f"{KIND_LABEL.get(rec.contrast, rec.contrast)}, {where}"
        lines.append(f"{where}: k={int(rec.k)}, I²={i2}, q={_fmt_q(rec.q)}")
    if len(lines) == 1:
        ks = [int(k) for k in meta_f["k"] if np.isfinite(k)]
        lines.append(f"k={max(ks) if ks else 0}: no pooled estimate")
    return "\n".join(lines)


def _weight_size(weight: float) -> float:
    """Marker area: proportional to the random-effects weight; a fixed medium size when there is none."""
    return 60.0 if not np.isfinite(weight) else 25.0 + 230.0 * float(weight)


def _not_tested(ax: plt.Axes, y: float, text: str) -> None:
    ax.text(
        0.02,
        y,
        text,
        transform=ax.get_yaxis_transform(),
        fontsize=7,
        va="center",
        color="0.45",
        style="italic",
    )


def _cohort_record(rows: pd.DataFrame, cohort: str, stratum: str) -> pd.Series | None:
    """The cohort's forest row, with its weight from its own stratum's fit, else from the 'all' fit."""
    rec = rows[(rows["row_type"] == "cohort") & (rows["cohort"] == cohort)]
    if rec.empty or not np.isfinite(rec["effect"].iloc[0]):
        return None
    own = rec[rec["stratum"] == stratum]
    out = (own if len(own) else rec).iloc[0].copy()
    if not np.isfinite(out["weight"]):
        across = rec[(rec["stratum"] == "all") & np.isfinite(rec["weight"])]
        if len(across):
            out["weight"] = across["weight"].iloc[0]
    return out


def _x_limits(cohort_spans: list[tuple[float, float, float]], pooled: list[tuple[float, float, float]]):
    """x range: every cohort interval and pooled estimate, plus pooled intervals up to a margin.

    With k = 2 the 1-df t interval is ~13 SE wide; letting it set the axis would squeeze every cohort
    into a few pixels, so a diamond may run past the edge (marked with an arrow).
    """
    core = [0.0] + [v for span in cohort_spans for v in span] + [est for est, _, _ in pooled]
    core = [v for v in core if np.isfinite(v)]
    lo, hi = min(core), max(core)
    if hi - lo < 0.5:  # nothing (or one point) to show: a readable range around it
        mid = (lo + hi) / 2
        lo, hi = mid - 0.25, mid + 0.25
    width = hi - lo
    reach_lo = min([lo, *[low for _, low, _ in pooled if np.isfinite(low)]])
    reach_hi = max([hi, *[high for _, _, high in pooled if np.isfinite(high)]])
    lo, hi = max(reach_lo, lo - 0.35 * width), min(reach_hi, hi + 0.35 * width)
    pad = 0.06 * (hi - lo)
    return lo - pad, hi + pad


def _forest_panel(
    ax: plt.Axes,
    layout: list[tuple[str, Any, str]],
    ys: Mapping[tuple[str, Any], int],
    rows: pd.DataFrame,
    meta_f: pd.DataFrame,
    stratum_of: Mapping[str, str],
    tissue_of: Mapping[str, str],
    not_pooled: frozenset[str] = frozenset(),
) -> bool:
    """Draw one feature's forest panel; True when a pooled interval runs past the panel edge."""
    cohorts: list[tuple[float, pd.Series, str]] = []
    pooled: list[tuple[float, pd.Series, tuple[str, str]]] = []
    for kind, key, _ in layout:
        y = ys[(kind, key)]
        if kind == "cohort":
            rec = _cohort_record(rows, key, stratum_of[key])
            if rec is None:
                _not_tested(ax, y, "not tested")
            else:
                cohorts.append((y, rec, key))
        elif kind == "pooled":
            contrast, stratum = key
            m = meta_f[(_kinds(meta_f) == contrast) & (meta_f["stratum"] == stratum)]
            if m.empty or not np.isfinite(m["pooled_log2FoldChange"].iloc[0]):
                k = int(m["k"].iloc[0]) if len(m) and np.isfinite(m["k"].iloc[0]) else 0
                _not_tested(ax, y, f"k={k}: no pooled estimate")
            else:
                pooled.append((y, m.iloc[0], key))
    lo, hi = _x_limits(
        [(r["effect"], r["ci_low"], r["ci_high"]) for _, r, _ in cohorts],
        [(m["pooled_log2FoldChange"], m["ci_low"], m["ci_high"]) for _, m, _ in pooled],
    )
    ax.set_xlim(lo, hi)
    for y, r, cohort in cohorts:
        colour = TISSUE_PALETTE.get(tissue_of[cohort], TISSUE_PALETTE["other"])
        ax.plot([r["ci_low"], r["ci_high"]], [y, y], color=colour, lw=1.3, zorder=2)
        hollow = cohort in not_pooled  # other effect scale: shown, not pooled
        ax.scatter(
            [r["effect"]],
            [y],
            s=_weight_size(r["weight"]),
            marker="s",
            facecolor="white" if hollow else colour,
            edgecolor=colour if hollow else "white",
            linewidth=1.2 if hollow else 0.5,
            zorder=3,
        )
    clipped = False
    for y, m, (_, stratum) in pooled:
        colour = STRATUM_PALETTE.get(stratum, "#222222")
        _diamond(ax, y, m["pooled_log2FoldChange"], m["ci_low"], m["ci_high"], colour)
        for edge, beyond, marker in ((lo, m["ci_low"] < lo, "<"), (hi, m["ci_high"] > hi, ">")):
            if beyond:
                clipped = True
                ax.plot([edge], [y], marker=marker, color=colour, markersize=7, clip_on=False, zorder=4)
    return clipped


def forest_grid(
    forest: pd.DataFrame,
    meta: pd.DataFrame,
    features: Sequence[str],
    xlabel: str,
    suptitle: str,
    labels: Mapping[str, str] | None = None,
    cohorts: Sequence[str] | None = None,
    ncols: int = 4,
    contrasts: Mapping[str, Contrast] | None = None,
) -> plt.Figure:
    """Grid of forest plots, one panel per feature: per-cohort effect with 95% CI, pooled diamond per stratum
    and contrast kind.

    Cohort markers are coloured by material and sized by their random-effects weight within their material
    stratum (across all cohorts when the stratum has one cohort); diamonds span the pooled random-effects
    interval, cut with an arrow at the panel edge when it is far wider than the cohorts' own intervals.
    Rows are the same in every panel, so a cohort that did not test a feature shows "not tested". Cohorts
    are grouped by contrast kind (a heading row per kind when there are several); ``contrasts`` (cohort ->
    declared contrast) adds each cohort's groups to its row label. A cohort left out of every primary fit
    (other effect scale, contrast kind ``other``) has a hollow marker and its reason in the label.
    """
    require_columns(forest, FOREST_COLUMNS, "forest table")
    require_columns(meta, META_COLUMNS, "meta-analysis table")
    if not features:
        raise InputError("forest_grid: no features to plot; the meta-analysis table has no rows to show.")
    labels = dict(labels or {})
    cohort_rows = _cohort_rows(forest, cohorts)
    meta_keys = list(dict.fromkeys(zip(_kinds(meta), meta["stratum"], strict=True)))
    layout = _layout(cohort_rows, meta_keys, contrasts)
    if not layout:
        layout = [("empty", "", "no cohort tested these features")]
    stratum_of = dict(zip(cohort_rows["cohort"], cohort_rows["stratum"], strict=True))
    tissue_of = dict(zip(cohort_rows["cohort"], cohort_rows["tissue"], strict=True))
    not_pooled = frozenset(cohort_rows.loc[~cohort_rows["pooled"], "cohort"])
    n = len(features)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    row_h = 0.34 * len(layout) + 1.3
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.3 * ncols + 2.2, row_h * nrows + 1.4), sharey=True, squeeze=False
    )
    ys = {(kind, key): len(layout) - 1 - i for i, (kind, key, _) in enumerate(layout)}
    by_feature = {f: g for f, g in forest.groupby("feature", sort=False)}
    meta_by_feature = {f: g for f, g in meta.groupby("feature", sort=False)}
    any_pooled = any(kind == "pooled" for kind, _, _ in layout)
    clipped_any = False
    for idx, feature in enumerate(features):
        ax = axes[idx // ncols][idx % ncols]
        rows = by_feature.get(feature, forest.iloc[0:0])
        meta_f = meta_by_feature.get(feature, meta.iloc[0:0])
        clipped_any |= _forest_panel(ax, layout, ys, rows, meta_f, stratum_of, tissue_of, not_pooled)
        ax.axvline(0, color="0.35", lw=0.8, ls=":", zorder=1)
        ax.set_title(_panel_title(feature, meta_f, labels.get(feature)), fontsize=8.5, loc="left")
        ax.tick_params(axis="x", labelsize=7.5)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.grid(axis="x", color="0.92", lw=0.6, zorder=0)
        for spine in ("top", "right"):
            ax.spines[spine].set_visible(False)
        if idx // ncols == nrows - 1 or idx + ncols >= n:
            ax.set_xlabel(xlabel, fontsize=8)
    for idx in range(n, nrows * ncols):
        axes[idx // ncols][idx % ncols].set_visible(False)
    first = axes[0][0]
    first.set_ylim(-0.7, len(layout) - 0.3)
    first.set_yticks([ys[(kind, key)] for kind, key, _ in layout])
    for row in axes:
        # sharey shares ticks but not the label font: set it on the first column of every row.
        row[0].set_yticklabels([label for _, _, label in layout], fontsize=8)
        for tick, (kind, key, _) in zip(row[0].get_yticklabels(), layout, strict=True):
            if kind == "pooled":
                tick.set_fontweight("bold")
            elif kind == "header":
                tick.set_fontweight("bold")
                tick.set_fontstyle("italic")
            elif kind == "cohort":
                tick.set_color(TISSUE_PALETTE.get(tissue_of[key], "black"))
    handles = [
        Line2D(
            [],
            [],
            marker="s",
            ls="-",
            color=TISSUE_PALETTE[t],
            label=f"cohort, {TISSUE_LABEL[t]} (95% Wald CI)",
        )
        for t in TISSUE_PALETTE
        if t in set(cohort_rows["tissue"])
    ]
    if not_pooled:
        reasons = sorted({r for r in cohort_rows.loc[~cohort_rows["pooled"], "reason"] if r})
        handles.append(
            Line2D(
                [],
                [],
                marker="s",
                ls="-",
                color="0.4",
                markerfacecolor="white",
                label=f"shown, not pooled ({'; '.join(reasons) or 'not in a pooled fit'})",
            )
        )
    pooled_strata = list(dict.fromkeys(key[1] for kind, key, _ in layout if kind == "pooled"))
    handles += [
        Patch(color=STRATUM_PALETTE[s], label=f"{STRATUM_POOLED_LABEL[s]} (random effects, t CI)")
        for s in pooled_strata
    ]
    several_kinds = cohort_rows["contrast"].nunique() > 1
    note = "marker area ~ random-effects weight (within the cohort's material, else across all cohorts)"
    if not any_pooled:
        per = "contrast kind and material" if several_kinds else "material"
        note = f"{len(cohort_rows)} cohort(s), at most one per {per}: {NO_POOL_TEXT}"
    if several_kinds:
        note += "\ncohorts of different contrast kinds are never pooled together (sensitivity table only)"
    if any_pooled and clipped_any:
        note += "\narrow: pooled interval continues past the panel edge (t with k - 1 df: very wide at k = 2)"
    fig.suptitle(f"{suptitle}\n{note}", fontsize=10.5, y=0.995)
    # Legend entries are ~3.6 in wide at 8 pt: as many columns as the figure holds, rows below the panels.
    legend_cols = max(1, min(len(handles), 3, int(fig.get_figwidth() // 3.6)))
    legend_rows = math.ceil(len(handles) / legend_cols) if handles else 0
    bottom = 0.03 + 0.22 * legend_rows / fig.get_figheight() if handles else 0
    fig.tight_layout(rect=(0, bottom, 1, 0.97))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=legend_cols, fontsize=8, frameon=False)
    return fig


def _rank_effect(meta: pd.DataFrame, forest: pd.DataFrame) -> pd.Series:
    """|effect| per feature for ranking: the first contrast kind (``KINDS`` order) with a pooled fit, its
    primary pooled stratum, then 'all', PBMC, other; else the largest cohort effect."""
    rank = pd.Series(dtype=float)
    kinds = _kinds(meta)
    for kind in [k for k in KINDS if k in set(kinds)] or [DEFAULT_KIND]:
        for stratum in ("whole_blood", "all", "pbmc", "other"):
            part = meta[
                (kinds == kind) & (meta["stratum"] == stratum) & meta["pooled_log2FoldChange"].notna()
            ]
            if len(part):
                rank = part.set_index("feature")["pooled_log2FoldChange"].abs()
                break
        if not rank.empty:
            break
    if rank.empty:
        cohort = forest[forest["row_type"] == "cohort"].dropna(subset=["effect"])
        rank = cohort.groupby("feature")["effect"].apply(lambda s: s.abs().max())
    return rank.sort_values(ascending=False, kind="stable")


def select_forest_genes(
    meta: pd.DataFrame, forest: pd.DataFrame, core: Sequence[str] = CORE_GENES, n_extra: int = 4
) -> list[str]:
    """The core signalling genes present in the tables, then the ``n_extra`` others by largest |effect|."""
    available = set(meta["feature"])
    chosen = [g for g in core if g in available]
    rank = _rank_effect(meta, forest)
    extra = [g for g in rank.index if g not in chosen][:n_extra]
    return chosen + extra


def select_score_features(meta: pd.DataFrame, method: str = "mean_z") -> list[str]:
    """Pathway-score features of one scoring method (features are named ``"<set> (<method>)"``)."""
    suffix = f" ({method})"
    features = [f for f in pd.unique(meta["feature"]) if str(f).endswith(suffix)]
    # Table order (the IL-6 sets as the resources list them); composition reference scores last.
    return sorted(features, key=lambda f: "neutrophil" in f.lower())


def contrast_wording(forest: pd.DataFrame) -> tuple[str, str]:
    """What the effects compare, (short for axis labels, long for titles): the one kind's label ('severe vs
    mild') twice, or, with several kinds, 'case vs reference' (of each cohort's declared contrast)."""
    kinds = [k for k in KINDS if k in set(_kinds(forest))] or [DEFAULT_KIND]
    if len(kinds) == 1:
        return KIND_LABEL[kinds[0]], KIND_LABEL[kinds[0]]
    return "case vs reference", "case vs reference of each cohort's declared contrast (row labels)"


def forest_genes_from_files(
    meta_path: str | Path,
    forest_path: str | Path,
    out_paths: Sequence[str | Path],
    cohorts: Sequence[str] | None = None,
    n_extra: int = 4,
    contrasts: Mapping[str, Contrast] | None = None,
) -> list[str]:
    """Forest grid of the IL-6 core genes and the next ``n_extra`` panel genes by |pooled effect|."""
    meta, forest = read_tsv(meta_path), read_tsv(forest_path)
    genes = select_forest_genes(meta, forest, n_extra=n_extra)
    labels = {g: (g if g in CORE_GENES else f"{g} (top |effect|)") for g in genes}
    short, long = contrast_wording(forest)
    fig = forest_grid(
        forest,
        meta,
        genes,
        xlabel=f"log2 fold change, {short}",
        suptitle=f"IL-6 axis genes across cohorts: {long} (MLE log2FC, 95% CI)",
        labels=labels,
        cohorts=cohorts,
        contrasts=contrasts,
    )
    save(fig, out_paths)
    log.info("forest plot of %d genes written to %s", len(genes), list(map(str, out_paths)))
    return genes


def forest_scores_from_files(
    meta_path: str | Path,
    forest_path: str | Path,
    out_paths: Sequence[str | Path],
    cohorts: Sequence[str] | None = None,
    method: str = "mean_z",
    contrasts: Mapping[str, Contrast] | None = None,
) -> list[str]:
    """Forest grid of the pathway scores of one method (mean z of VST by default)."""
    meta, forest = read_tsv(meta_path), read_tsv(forest_path)
    features = select_score_features(meta, method)
    if meta.empty:
        # No gene set could be scored in any cohort (e.g. too few genes): say so instead of failing the run.
        save(message_figure(f"No pathway score was meta-analysed ({meta_path} is empty)."), out_paths)
        log.warning("no pathway scores in %s: wrote a placeholder figure", meta_path)
        return []
    if not features:
        raise InputError(
            f"{meta_path}: no pathway-score feature ends with ' ({method})'; available e.g. "
            f"{list(pd.unique(meta['feature']))[:5]}."
        )
    labels = {f: f[: -len(f" ({method})")] for f in features}
    short, long = contrast_wording(forest)
    fig = forest_grid(
        forest,
        meta,
        features,
        xlabel=f"score difference, {short.replace(' vs ', ' - ', 1)} ({method})",
        suptitle=f"Pathway scores across cohorts: {long} ({method} score, OLS effect, 95% CI)",
        labels=labels,
        cohorts=cohorts,
        ncols=3,
        contrasts=contrasts,
    )
    save(fig, out_paths)
    log.info("forest plot of %d scores written to %s", len(features), list(map(str, out_paths)))
    return features


def message_figure(text: str) -> plt.Figure:
    """A small figure that only states why there is nothing to plot."""
    fig, ax = plt.subplots(figsize=(6.0, 1.6))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10, wrap=True)
    return fig
