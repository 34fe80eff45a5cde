"""One meta-analysis fit of a set of cohorts: the pooled table (a row per stratum and feature) and the
forest-plot rows that draw it.

Strata: ``whole_blood`` (whole blood + leukocytes) is the primary stratum, ``pbmc`` is reported on its
own, and ``all`` (pooling across materials) is a sensitivity analysis only. A fit pools every cohort it
is given; choosing which cohorts belong together is :mod:`il6axis.analysis.meta.plan`'s job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from il6axis.analysis.meta.effects import contributes, validated_effects
from il6axis.analysis.meta.estimators import random_effects, sign_consistency, stouffer
from il6axis.cohort.contrast import DEFAULT_KIND, KINDS
from il6axis.de.contract import benjamini_hochberg
from il6axis.errors import InputError
from il6axis.vocabulary import ALL_STRATA, STRATUM_OF_TISSUE, STRATUM_UNIT

log = logging.getLogger(__name__)

NOTE_K2 = "k=2: 1-df t interval is very wide"

OUTPUT_COLUMNS = [
    "contrast",
    "stratum",
    "feature",
    "k",
    "cohorts",
    "pooled_log2FoldChange",
    "se",
    "ci_low",
    "ci_high",
    "ci_method",
    "p",
    "q",
    "tau2",
    "i2",
    "Q",
    "fixed_log2FoldChange",
    "stouffer_z",
    "stouffer_p",
    "n_up",
    "n_down",
    "n_up_sig",
    "n_down_sig",
    "sign_summary",
    "scales",
    "contrast_kinds",
    "reason",
    "note",
]


_ROW_FIELDS = ("cohort", "log2FoldChange", "lfcSE", "stat", "padj", "n", "scale", "contrast")


def _feature_row(rows: Mapping[str, np.ndarray], alpha: float, unit: str, method_re: str) -> dict[str, Any]:
    """Pooled statistics of one feature in one stratum from its contributing cohorts (arrays by field).

    Plain arrays rather than DataFrame slices: per-feature pandas indexing dominated the run time.
    """
    fit = random_effects(rows["log2FoldChange"], rows["lfcSE"], list(rows["cohort"]), alpha, method_re)
    k = fit["k"]
    z, zp = float("nan"), float("nan")
    has_stat = np.isfinite(rows["stat"].astype(float))
    if k >= 2 and has_stat.sum() >= 2:
        z, zp = stouffer(rows["stat"][has_stat], rows["n"][has_stat])
    signs = sign_consistency(rows["log2FoldChange"], rows["padj"], alpha, unit)
    scales = sorted(set(rows["scale"]))
    kinds = [k_ for k_ in KINDS if k_ in set(rows["contrast"])]
    notes = []
    if k == 2:
        notes.append(NOTE_K2)
    if len(scales) > 1:
        notes.append(f"mixed scales ({', '.join(scales)}): sensitivity analysis only")
    if len(kinds) > 1:
        notes.append(f"mixed contrasts ({', '.join(kinds)}): sensitivity analysis only")
    if not fit["converged"]:
        notes.append("Paule-Mandel tau2 did not converge")
    if k >= 2 and has_stat.sum() < k:
        notes.append(f"Stouffer Z from {int(has_stat.sum())} of {k} cohorts (missing stat)")
    return {
        "k": k,
        "cohorts": ",".join(fit["cohorts"]),
        "pooled_log2FoldChange": fit["estimate"],
        "se": fit["se"],
        "ci_low": fit["ci_low"],
        "ci_high": fit["ci_high"],
        "ci_method": fit["ci_method"],
        "p": fit["p"],
        "tau2": fit["tau2"],
        "i2": fit["i2"],
        "Q": fit["Q"],
        "fixed_log2FoldChange": fit["fixed_estimate"],
        "stouffer_z": z,
        "stouffer_p": zp,
        "n_up": signs["n_up"],
        "n_down": signs["n_down"],
        "n_up_sig": signs["n_up_sig"],
        "n_down_sig": signs["n_down_sig"],
        "sign_summary": signs["text"],
        "scales": ",".join(scales),
        "contrast_kinds": ",".join(kinds),
        "reason": fit["reason"],
        "note": "; ".join(notes),
    }


def meta_analyse(
    effects: pd.DataFrame,
    alpha: float = 0.05,
    strata: Sequence[str] = (ALL_STRATA, "whole_blood", "pbmc"),
    exclude_cohorts: Iterable[str] = (),
    method_re: str = "iterated",
    contrast: str | None = None,
) -> pd.DataFrame:
    """One row per (stratum, feature): pooled log2FC with t CI, p, BH q, tau2, I2, Stouffer Z, signs.

    This pools every cohort it is given (less ``exclude_cohorts``): choosing which cohorts belong
    together (one contrast kind, one scale) is :func:`il6axis.analysis.meta.run.run_meta`'s job, through
    :func:`il6axis.analysis.meta.plan.pooling_plan`.
    ``contrast`` fills the output's ``contrast`` column (the fit's label); by default the kinds of the
    cohorts pooled, joined by "+". ``contrast_kinds`` per row lists the kinds that contributed, and a
    row mixing kinds carries a "mixed contrasts" note.

    Strata: ``whole_blood`` (whole blood + leukocytes) is the primary analysis; ``pbmc`` is reported
    separately; ``all`` pools across materials and is a sensitivity analysis only (a tissue moderator
    cannot be estimated from so few cohorts). Every input feature gets a row in every stratum, with
    ``reason`` = "fewer than 2 cohorts" and NaN statistics when fewer than two cohorts contribute.
    ``q`` is BH across the features of one stratum, so call this separately for panel genes and for
    pathway scores to keep those two families apart. ``alpha`` is both the CI level (1 - alpha) and the
    padj threshold of the sign counts. ``exclude_cohorts`` drops cohorts for with/without sensitivity
    runs (e.g. a log2-TMM linear-model cohort); unknown names raise so a typo cannot pass silently.
    """
    df = validated_effects(effects)
    excluded = [str(c) for c in exclude_cohorts]
    unknown = sorted(set(excluded) - set(df["cohort"]))
    if unknown:
        raise InputError(
            f"exclude_cohorts names unknown cohort(s) {unknown}; available: {sorted(set(df['cohort']))}."
        )
    features = pd.unique(df["feature"])
    df = df[~df["cohort"].isin(excluded)]
    valid = sorted({*STRATUM_OF_TISSUE.values(), ALL_STRATA})
    if any(s not in valid for s in strata):
        raise InputError(f"strata {list(strata)} must be drawn from {valid}.")
    used = df[contributes(df)]
    label = contrast or "+".join(k for k in KINDS if k in set(df["contrast"])) or DEFAULT_KIND
    out = []
    for stratum in strata:
        sub = used if stratum == ALL_STRATA else used[used["stratum"] == stratum]
        unit = STRATUM_UNIT[stratum]
        positions = sub.groupby("feature", sort=False).indices
        arrays = {f: sub[f].to_numpy() for f in _ROW_FIELDS}
        none = np.array([], dtype=int)
        rows = []
        for feature in features:
            pos = positions.get(feature, none)
            part = {f: a[pos] for f, a in arrays.items()}
            rows.append(
                {
                    "contrast": label,
                    "stratum": stratum,
                    "feature": feature,
                    **_feature_row(part, alpha, unit, method_re),
                }
            )
        table = pd.DataFrame(rows)
        table["q"] = benjamini_hochberg(table["p"]) if len(table) else []
        out.append(table)
    result = pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=OUTPUT_COLUMNS)
    log.info(
        "meta-analysis: %d features x strata %s; excluded cohorts %s", len(features), list(strata), excluded
    )
    return result[OUTPUT_COLUMNS]


def forest_table(effects: pd.DataFrame, meta: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Forest-plot data: per-cohort rows plus one pooled row per (stratum, feature) with k >= 2.

    Per-cohort intervals are Wald normal (effect +/- z * lfcSE, z = 1.96 for 95%); ``weight`` is the
    cohort's relative random-effects weight 1/(se^2 + tau2), normalised within the fit, using the tau2
    and the contributing cohorts recorded in ``meta`` (NaN when no pooled fit, k < 2). The pooled row
    carries the random-effects interval, the stratum's BH q in ``padj`` and the summed ``n``; every row
    carries the fit's ``contrast`` label from ``meta``.
    """
    df = validated_effects(effects)
    col = {c: df[c].to_numpy() for c in ("tissue", "log2FoldChange", "lfcSE", "padj", "n")}
    # Positional lookup by (cohort, feature): MultiIndex .loc per row was the bottleneck on large tables.
    where = {key: i for i, key in enumerate(zip(df["cohort"], df["feature"], strict=True))}
    z = float(stats.norm.isf(alpha / 2))
    rows = []
    for rec in meta.itertuples(index=False):
        cohorts = [c for c in str(rec.cohorts).split(",") if c] if isinstance(rec.cohorts, str) else []
        if not cohorts:
            continue
        pos = np.array([where[(c, rec.feature)] for c in cohorts])
        eff, se = col["log2FoldChange"][pos].astype(float), col["lfcSE"][pos].astype(float)
        if rec.k >= 2 and np.isfinite(rec.tau2):
            w = 1 / (se**2 + rec.tau2)
            weight = w / w.sum()
        else:
            weight = np.full(len(cohorts), np.nan)
        for i, cohort in enumerate(cohorts):
            rows.append(
                {
                    "contrast": rec.contrast,
                    "stratum": rec.stratum,
                    "feature": rec.feature,
                    "row_type": "cohort",
                    "cohort": cohort,
                    "tissue": col["tissue"][pos[i]],
                    "effect": eff[i],
                    "se": se[i],
                    "ci_low": eff[i] - z * se[i],
                    "ci_high": eff[i] + z * se[i],
                    "padj": col["padj"][pos[i]],
                    "n": col["n"][pos[i]],
                    "weight": weight[i],
                }
            )
        if rec.k >= 2:
            rows.append(
                {
                    "contrast": rec.contrast,
                    "stratum": rec.stratum,
                    "feature": rec.feature,
                    "row_type": "pooled",
                    "cohort": "pooled",
                    "tissue": "",
                    "effect": rec.pooled_log2FoldChange,
                    "se": rec.se,
                    "ci_low": rec.ci_low,
                    "ci_high": rec.ci_high,
                    "padj": rec.q,
                    "n": float(col["n"][pos].sum()),
                    "weight": 1.0,
                }
            )
    columns = ["contrast", "stratum", "feature", "row_type", "cohort", "tissue", "effect", "se", "ci_low"]
    return pd.DataFrame(rows, columns=[*columns, "ci_high", "padj", "n", "weight"])
