"""Random-effects meta-analysis of per-cohort effects (each cohort's declared contrast) across cohorts.

Per feature (an IL-6 panel gene or a pathway score) the per-cohort unshrunk log2 fold changes and their
standard errors are pooled with a Paule-Mandel random-effects model (statsmodels ``combine_effects``) and a
t interval with k - 1 degrees of freedom. Few cohorts and heterogeneous tissues are the norm here, so the
module also reports a signed, sample-size-weighted Stouffer Z and a plain count of cohorts per direction,
and it analyses material strata separately: whole blood / leukocytes is the primary stratum, PBMC is
reported on its own, and "all" (pooling across materials) is a sensitivity analysis only.

Only like is pooled with like (:func:`pooling_plan`). Two rules decide which cohorts enter a primary fit:

1. **Contrast:** one primary fit per declared contrast kind (``il6axis.cohort.contrast``): severe vs mild
cohorts
   with each other, critical vs severe cohorts with each other, disease vs healthy cohorts with each other;
   a cohort of kind ``other`` enters no primary fit.
2. **Scale:** within a kind, cohorts whose effects are off the log2-count scale (log2-normalised linear
   model) are left out while a count cohort of that kind exists.

A cohort left out by either rule is drawn in the forest plots, marked "not pooled" with the reason.
The sensitivity table relaxes the rules, each run labelled in its ``analysis`` column: "all scales pooled"
(per kind, every scale), "severity contrasts pooled" (severe vs mild with critical vs severe, the scale
rule kept), "all contrasts pooled" (every kind, the scale rule kept), the last two also with every scale
("... and all scales pooled"); plus "leave one out". Runs that would repeat a fit are skipped.

Each pooled call also carries its leave-one-cohort-out stability (:func:`cohort_stability`): ``robust``
when it holds without each of its pooled cohorts in turn, ``borderline`` otherwise.

Input is a long table, one row per (cohort, feature); see :data:`REQUIRED_COLUMNS`. A NaN effect or SE
(gene not tested in that cohort) means the cohort does not contribute to that feature.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.tools.sm_exceptions import InvalidTestWarning

from il6axis.cohort.contrast import DEFAULT_KIND, KINDS, SEVERITY_KINDS, contrast_from_summary, pooling_kind
from il6axis.de.nb import benjamini_hochberg
from il6axis.de.routing import SCALE_COUNTS
from il6axis.de.stability import BORDERLINE, NOT_CALLED, ROBUST
from il6axis.errors import InputError
from il6axis.vocabulary import MILD, SEVERE

__all__ = [
    "ALL_CONTRASTS",
    "ALL_STRATA",
    "ANALYSIS_ALL_CONTRASTS",
    "ANALYSIS_ALL_CONTRASTS_ALL_SCALES",
    "ANALYSIS_ALL_SCALES",
    "ANALYSIS_SEVERITY_CONTRASTS",
    "ANALYSIS_SEVERITY_CONTRASTS_ALL_SCALES",
    "DEFAULT_SCALE",
    "NOTE_K2",
    "NOT_POOLED_CONTRAST",
    "NOT_POOLED_SCALE",
    "REASON_FEW",
    "REQUIRED_COLUMNS",
    "SEVERITY_CONTRASTS",
    "PoolingPlan",
    "cohort_stability",
    "forest_table",
    "meta_analyse",
    "off_primary_scale",
    "off_scale_cohorts",
    "pooling_plan",
    "random_effects",
    "read_cohort_effects",
    "run_meta",
    "sign_consistency",
    "stouffer",
    "stratum_of",
]

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("cohort", "feature", "log2FoldChange", "lfcSE", "stat", "padj", "n", "tissue")
DEFAULT_SCALE = SCALE_COUNTS  # log2 fold changes of counts (the NB model)
ALL_STRATA = "all"
REASON_FEW = "fewer than 2 cohorts"
NOTE_K2 = "k=2: 1-df t interval is very wide"
# Why a cohort is drawn in the forest plots but left out of its primary fit (forest `not_pooled_reason`).
NOT_POOLED_SCALE = "other effect scale"
NOT_POOLED_CONTRAST = "contrast kind 'other'"
# `contrast` of the cross-contrast sensitivity fits, and the `analysis` labels of the sensitivity table.
SEVERITY_CONTRASTS = "+".join(k for k in KINDS if k in SEVERITY_KINDS)
ALL_CONTRASTS = "all"
ANALYSIS_ALL_SCALES = "all scales pooled"
ANALYSIS_SEVERITY_CONTRASTS = "severity contrasts pooled"
ANALYSIS_SEVERITY_CONTRASTS_ALL_SCALES = "severity contrasts and all scales pooled"
ANALYSIS_ALL_CONTRASTS = "all contrasts pooled"
ANALYSIS_ALL_CONTRASTS_ALL_SCALES = "all contrasts and all scales pooled"
ANALYSIS_LEAVE_ONE_OUT = "leave one out"
# Leave-one-cohort-out stability of pooled calls (cohort_stability); the within-cohort names are shared.
STABILITY_NOT_POOLED = "not_pooled"
CI_RE = "random_effect"
CI_HKSJ = "hksj"

# Leukocytes (GSE157103, buffy coat) and whole blood share cell composition closely enough to pool.
_STRATUM_OF_TISSUE = {
    "whole_blood": "whole_blood",
    "leukocytes": "whole_blood",
    "pbmc": "pbmc",
    "other": "other",
}
_STRATUM_LABEL = {ALL_STRATA: "cohorts", "whole_blood": "whole-blood cohorts", "pbmc": "PBMC cohorts"}
# PM iteration settings. statsmodels' default atol (1e-5 on Q_gen - (k-1)) leaves tau2 off by up to ~0.3%
# (relative) when tau2 is small; 1e-7 brings that to ~4e-6. Tighter is a trap in 0.15: once Q_gen sits at
# rounding level a step can leave it at -1e-16, and the iteration then resets tau2 to 0 (about 1 fit in 15 at
# atol 1e-9; none in ~4,700 simulated fits at 1e-7). random_effects repairs such a reset anyway.
_PM_KWDS: dict[str, float] = {"atol": 1e-7, "maxiter": 100}
# Tolerance on the HKSJ scale Q_gen/(k-1): with PM and tau2 > 0 it is 1 up to the iteration tolerance;
# only a clearly different scale counts, so ci_method does not flip on rounding noise.
_SCALE_TOL = 1e-4

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


def stratum_of(tissue: str) -> str:
    """Material stratum of a cohort: whole blood and leukocytes pool as ``whole_blood``."""
    key = str(tissue).strip().lower()
    if key not in _STRATUM_OF_TISSUE:
        raise InputError(
            f"tissue {tissue!r} is not one of {sorted(_STRATUM_OF_TISSUE)}; set the cohort's `tissue` in the "
            f"config (or its summary.json) to one of these."
        )
    return _STRATUM_OF_TISSUE[key]


def _na_result(k: int, cohorts: Sequence[str], reason: str) -> dict[str, Any]:
    nan = float("nan")
    return {
        "k": k,
        "cohorts": list(cohorts),
        "estimate": nan,
        "se": nan,
        "ci_low": nan,
        "ci_high": nan,
        "ci_method": "",
        "p": nan,
        "tau2": nan,
        "i2": nan,
        "Q": nan,
        "fixed_estimate": nan,
        "fixed_se": nan,
        "weights": {},
        "converged": True,
        "reason": reason,
    }


def random_effects(
    effects: Sequence[float] | np.ndarray,
    ses: Sequence[float] | np.ndarray,
    cohorts: Sequence[str],
    alpha: float = 0.05,
    method_re: str = "iterated",
) -> dict[str, Any]:
    """Random-effects pooled effect with a t interval on k - 1 df (statsmodels ``combine_effects``).

    ``method_re="iterated"`` is Paule-Mandel (tau2 truncated at 0 by statsmodels); ``"dl"`` is
    DerSimonian-Laird, whose negative tau2 is truncated here (statsmodels would weight with it).
    The reported interval is the wider of the plain random-effects t interval and the Hartung-Knapp
    (HKSJ, ``"random effect wls"``) interval: the modified Knapp-Hartung rule, because with tau2 = 0 the
    HKSJ scale Q/(k-1) falls below 1 and would give an interval narrower than the fixed-effect one.
    With Paule-Mandel the HKSJ scale is 1 (to the iteration tolerance) whenever tau2 > 0 and below 1 when
    tau2 = 0, so under PM the rule always keeps the plain interval; it changes the result only for DL.

    Returns a dict: k, cohorts, estimate, se, ci_low, ci_high, ci_method ("random_effect" or "hksj"),
    p (two-sided t, k - 1 df), tau2, i2 (both >= 0), Q (Cochran's, fixed-effect weights),
    fixed_estimate, fixed_se, weights (cohort -> relative random-effects weight), converged, reason.
    With k < 2 every statistic is NaN and ``reason`` says why; nothing raises.
    """
    eff = np.asarray(effects, dtype=float)
    se = np.asarray(ses, dtype=float)
    names = [str(c) for c in cohorts]
    if not (len(eff) == len(se) == len(names)):
        raise ValueError(f"effects ({len(eff)}), ses ({len(se)}) and cohorts ({len(names)}) differ in length")
    bad = ~(np.isfinite(eff) & np.isfinite(se) & (se > 0))
    if bad.any():
        raise InputError(
            f"cohort(s) {[n for n, b in zip(names, bad, strict=True) if b]} have a non-finite effect or a "
            f"non-positive / non-finite SE; drop them before pooling (meta_analyse does this per feature)."
        )
    k = len(eff)
    if k < 2:
        return _na_result(k, names, REASON_FEW)
    method = method_re.lower()
    if method not in ("iterated", "pm", "dl", "chi2"):
        raise ValueError(f"method_re must be iterated/pm/dl/chi2, got {method_re!r}")
    res = _combine(eff, se**2, names, method, alpha)
    if method in ("iterated", "pm") and res.tau2 == 0 and res.q > (k - 1) * (1 + _SCALE_TOL):
        # Q > k - 1 means the PM root is positive: tau2 = 0 here is statsmodels' reset after a step
        # overshot to a (rounding-level) negative estimating equation. Restart just left of the root.
        root = _pm_root(eff, se**2)
        log.warning("Paule-Mandel reset tau2 to 0 for cohorts %s; restarting at %.6g", names, root)
        res = _combine(eff, se**2, names, method, alpha, tau2_start=root * (1 - 1e-6))
    if res.tau2 < 0:
        # DL's moment estimate went negative (Q < k - 1): the truncated estimate is tau2 = 0, which is
        # exactly what the PM iteration returns when its estimating equation is negative at 0.
        res = _combine(eff, se**2, names, "iterated", alpha)
    df = k - 1
    tau2 = max(float(res.tau2), 0.0)
    q_stat = float(res.q)
    # statsmodels divides by Q for I2 (-inf when all effects are identical); I2 = max(0, (Q - df) / Q).
    i2 = max(0.0, (q_stat - df) / q_stat) if q_stat > 0 else 0.0
    _, ci_re, _, ci_hksj = res.conf_int(alpha=alpha, use_t=True)
    sd_re, sd_hksj = float(res.sd_eff_w_re), float(res.sd_eff_w_re_hksj)
    if sd_hksj > sd_re * (1 + _SCALE_TOL):
        ci_method, sd, ci = CI_HKSJ, sd_hksj, ci_hksj
    else:
        ci_method, sd, ci = CI_RE, sd_re, ci_re
    estimate = float(res.mean_effect_re)
    p = float(2 * stats.t.sf(abs(estimate / sd), df))
    # Generalised Q at the PM solution must equal k - 1 when tau2 > 0; otherwise the iteration stopped early.
    pm = method in ("iterated", "pm")
    converged = not pm or abs(res.scale_hksj_re - 1) <= _SCALE_TOL or (tau2 == 0 and q_stat <= df)
    if not converged:
        log.warning(
            "Paule-Mandel tau2 did not converge for cohorts %s (HKSJ scale %.6g)", names, res.scale_hksj_re
        )
    return {
        "k": k,
        "cohorts": names,
        "estimate": estimate,
        "se": sd,
        "ci_low": float(ci[0]),
        "ci_high": float(ci[1]),
        "ci_method": ci_method,
        "p": p,
        "tau2": tau2,
        "i2": i2,
        "Q": q_stat,
        "fixed_estimate": float(res.mean_effect_fe),
        "fixed_se": float(res.sd_eff_w_fe),
        "weights": dict(zip(names, np.asarray(res.weights_rel_re, dtype=float).tolist(), strict=True)),
        "converged": bool(converged),
        "reason": "",
    }


def _pm_root(eff: np.ndarray, var: np.ndarray) -> float:
    """Paule-Mandel tau2 by bracketed root finding, used only to restart a collapsed iteration.

    Q_gen(t) <= SS/(min(var) + t) with SS the unweighted sum of squares, so Q_gen(SS/(k-1)) < k - 1
    brackets the root; the caller ensures Q_gen(0) = Q > k - 1.
    """
    df = len(eff) - 1

    def excess(tau2: float) -> float:
        w = 1 / (var + tau2)
        return float(w @ (eff - w @ eff / w.sum()) ** 2 - df)

    return float(optimize.brentq(excess, 0.0, float(((eff - eff.mean()) ** 2).sum()) / df, xtol=1e-14))


def _combine(
    eff: np.ndarray, var: np.ndarray, names: list[str], method: str, alpha: float, **pm_kwds: float
) -> Any:
    """``combine_effects`` with its harmless warnings silenced locally (not process-wide)."""
    kwds = {**_PM_KWDS, **pm_kwds} if method in ("iterated", "pm") else {}
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # InvalidTestWarning concerns the per-cohort t intervals, which are not used; the divide warning
        # is statsmodels' own I2 when Q == 0, recomputed by the caller.
        warnings.simplefilter("ignore", InvalidTestWarning)
        return combine_effects(eff, var, method_re=method, use_t=True, row_names=names, alpha=alpha, **kwds)


def stouffer(stats_: Sequence[float] | np.ndarray, n: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Signed weighted Stouffer Z = sum(w z) / sqrt(sum w^2), w = sqrt(n); two-sided normal p.

    Unlike Fisher's method it keeps the direction: cohorts pulling in opposite directions cancel.
    OLS t statistics of small cohorts enter as if they were z (slightly anti-conservative).
    """
    z = np.asarray(stats_, dtype=float)
    w = np.sqrt(np.asarray(n, dtype=float))
    if z.shape != w.shape:
        raise ValueError(f"stats ({z.shape}) and n ({w.shape}) differ in shape")
    if not (np.isfinite(z).all() and np.isfinite(w).all() and (w > 0).all()):
        raise InputError("Stouffer inputs must be finite statistics and positive sample sizes `n`")
    if z.size == 0:
        return float("nan"), float("nan")
    z_comb = float((w * z).sum() / np.sqrt((w**2).sum()))
    return z_comb, float(2 * stats.norm.sf(abs(z_comb)))


def sign_consistency(
    lfc: Sequence[float] | np.ndarray,
    padj: Sequence[float] | np.ndarray,
    alpha: float = 0.05,
    unit: str = "cohorts",
) -> dict[str, Any]:
    """Count cohorts per direction, and per direction with padj < alpha (NaN padj = not significant).

    The text leads with the majority direction, e.g. "up in 3/3 cohorts (2 with padj < 0.05)".
    """
    x = np.asarray(lfc, dtype=float)
    q = np.asarray(padj, dtype=float)
    k = len(x)
    sig = np.nan_to_num(q, nan=np.inf) < alpha
    n_up, n_down = int((x > 0).sum()), int((x < 0).sum())
    n_up_sig, n_down_sig = int(((x > 0) & sig).sum()), int(((x < 0) & sig).sum())
    parts = [("up", n_up, n_up_sig), ("down", n_down, n_down_sig)]
    if n_down > n_up:
        parts.reverse()
    texts = [f"{d} in {n}/{k} {unit} ({s} with padj < {alpha:g})" for d, n, s in parts if n > 0]
    text = "; ".join(texts) if texts else (f"no {unit}" if k == 0 else f"no direction in {k} {unit}")
    return {"n_up": n_up, "n_down": n_down, "n_up_sig": n_up_sig, "n_down_sig": n_down_sig, "text": text}


def _validated(effects: pd.DataFrame) -> pd.DataFrame:
    """Copy of the long input with typed columns, a default scale and the stratum of each row."""
    missing = [c for c in REQUIRED_COLUMNS if c not in effects.columns]
    if missing:
        raise InputError(
            f"per-cohort effects table lacks column(s) {missing}; it needs {list(REQUIRED_COLUMNS)} "
            f"(build it with read_cohort_effects)."
        )
    df = effects.copy()
    df["cohort"] = df["cohort"].astype(str)
    df["feature"] = df["feature"].astype(str)
    with_comma = sorted(set(df.loc[df["cohort"].str.contains(","), "cohort"]))
    if with_comma:
        raise InputError(f"cohort names {with_comma} contain a comma; rename the cohorts in the config.")
    for col in ("log2FoldChange", "lfcSE", "stat", "padj", "n"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    dup = df.duplicated(["cohort", "feature"])
    if dup.any():
        first = df.loc[dup, ["cohort", "feature"]].iloc[0].tolist()
        raise InputError(
            f"effects table has {int(dup.sum())} duplicate (cohort, feature) rows, e.g. {first}."
        )
    n_per = df.groupby("cohort")["n"].agg(["min", "max"])
    bad_n = n_per.index[~((n_per["min"] > 0) & (n_per["min"] == n_per["max"]))].tolist()
    if bad_n:
        raise InputError(
            f"cohort(s) {bad_n}: column `n` must be one positive sample count per cohort (mild + severe "
            f"from summary.json n_per_group)."
        )
    df["stratum"] = df["tissue"].map(stratum_of)
    mixed = df.groupby("cohort")["stratum"].nunique()
    if (mixed > 1).any():
        raise InputError(f"cohort(s) {mixed.index[mixed > 1].tolist()} have more than one `tissue` value.")
    if "scale" not in df.columns:
        df["scale"] = DEFAULT_SCALE
    df["scale"] = df["scale"].fillna(DEFAULT_SCALE).astype(str).replace("", DEFAULT_SCALE)
    if "contrast" not in df.columns:
        df["contrast"] = DEFAULT_KIND
    df["contrast"] = df["contrast"].fillna(DEFAULT_KIND).astype(str).replace("", DEFAULT_KIND)
    unknown = sorted(set(df["contrast"]) - set(KINDS))
    if unknown:
        raise InputError(f"contrast kind(s) {unknown} are not among {list(KINDS)}; rerun the DE rule.")
    mixed_kind = df.groupby("cohort")["contrast"].nunique()
    if (mixed_kind > 1).any():
        bad = mixed_kind.index[mixed_kind > 1].tolist()
        raise InputError(f"cohort(s) {bad} have more than one contrast kind; one per cohort is needed.")
    return df


def _contributes(df: pd.DataFrame) -> pd.Series:
    """Rows that enter the pooling: finite effect and a finite, positive SE."""
    se = df["lfcSE"]
    return np.isfinite(df["log2FoldChange"]) & np.isfinite(se) & (se > 0)


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
    together (one contrast kind, one scale) is :func:`run_meta`'s job through :func:`pooling_plan`.
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
    df = _validated(effects)
    excluded = [str(c) for c in exclude_cohorts]
    unknown = sorted(set(excluded) - set(df["cohort"]))
    if unknown:
        raise InputError(
            f"exclude_cohorts names unknown cohort(s) {unknown}; available: {sorted(set(df['cohort']))}."
        )
    features = pd.unique(df["feature"])
    df = df[~df["cohort"].isin(excluded)]
    valid = sorted({*_STRATUM_OF_TISSUE.values(), ALL_STRATA})
    if any(s not in valid for s in strata):
        raise InputError(f"strata {list(strata)} must be drawn from {valid}.")
    used = df[_contributes(df)]
    label = contrast or "+".join(k for k in KINDS if k in set(df["contrast"])) or DEFAULT_KIND
    out = []
    for stratum in strata:
        sub = used if stratum == ALL_STRATA else used[used["stratum"] == stratum]
        unit = _STRATUM_LABEL.get(stratum, f"{stratum} cohorts")
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
    df = _validated(effects)
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


def _load_summary(cohort: str, summary: str | Path | Mapping[str, Any]) -> tuple[int, str, str | None, str]:
    """(n in the contrast, tissue, scale or None, contrast kind) from a summary.json path or a loaded dict.

    A summary without a ``contrast`` object (written before contrasts were declared) is severe vs mild."""
    where = f"summary for cohort {cohort!r}"
    if not isinstance(summary, Mapping):
        where = str(summary)
        with open(summary, encoding="utf-8") as fh:
            summary = json.load(fh)
    groups = summary.get("n_per_group")
    if not isinstance(groups, Mapping) or MILD not in groups or SEVERE not in groups:
        raise InputError(
            f"{where}: `n_per_group` must be a mapping with `{MILD}` and `{SEVERE}` sample counts; "
            f"rerun the DE rule to rewrite summary.json."
        )
    tissue = summary.get("tissue")
    if not tissue:
        raise InputError(f"{where}: `tissue` is missing or empty; set `tissue` for the cohort in the config.")
    stratum_of(tissue)  # fail here, naming the file, rather than later
    kind = contrast_from_summary(summary, source=where).kind
    return int(groups[MILD]) + int(groups[SEVERE]), str(tissue), summary.get("scale"), kind


def _read_table(cohort: str, path: str | Path) -> pd.DataFrame:
    """One cohort's DE / score table, with untested and Cook's-outlier rows blanked out."""
    table = pd.read_csv(path, sep="\t")
    key = "feature" if "feature" in table.columns else "gene"
    need = [key, "log2FoldChange", "lfcSE", "stat", "padj"]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {missing}; a DE/score table for the meta-analysis needs a `gene` or "
            f"`feature` column and log2FoldChange, lfcSE, stat, padj."
        )
    table = table.rename(columns={key: "feature"})
    table["feature"] = table["feature"].astype(str)
    if table["feature"].duplicated().any():
        dup = table.loc[table["feature"].duplicated(), "feature"].iloc[0]
        raise InputError(f"{path}: feature {dup!r} appears more than once; one row per gene/score is needed.")
    blank = pd.Series(False, index=table.index)
    if "tested" in table.columns:
        blank |= ~table["tested"].astype(str).str.lower().isin(["true", "1"])
    if "pvalue" in table.columns:
        # DESeq2 sets p to NA for Cook's-distance outliers but keeps the outlier-driven estimate.
        blank |= table["pvalue"].isna() & table["log2FoldChange"].notna()
    table.loc[blank, ["log2FoldChange", "lfcSE", "stat", "padj"]] = np.nan
    table["cohort"] = cohort
    keep = ["cohort", "feature", "log2FoldChange", "lfcSE", "stat", "padj"]
    return table[keep + (["scale"] if "scale" in table.columns else [])]


def read_cohort_effects(
    de_tables: Mapping[str, str | Path],
    summaries: Mapping[str, str | Path | Mapping[str, Any]],
    features: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Long (cohort, feature) effects table from per-cohort DE TSVs and their summary.json files.

    ``n`` is mild + severe from ``n_per_group``; ``tissue``, the ``contrast`` kind and an optional
    ``scale`` come from the summary (a ``scale`` column in the table wins; default "log2_counts"). Rows
    not tested in a cohort (``tested`` false, or a Cook's outlier with p = NA) keep NaN effects so that
    the cohort does not contribute. With ``features`` (e.g. the IL-6 panel) only those are kept, and a
    feature absent from a cohort's table appears as a NaN row, so every cohort lists every requested
    feature.
    """
    if set(de_tables) != set(summaries):
        raise InputError(
            f"cohorts with a DE table {sorted(de_tables)} and with a summary {sorted(summaries)} differ; "
            f"give both for every cohort."
        )
    parts = []
    for cohort, path in de_tables.items():
        n, tissue, scale, kind = _load_summary(cohort, summaries[cohort])
        table = _read_table(cohort, path)
        if features is not None:
            wanted = pd.DataFrame({"feature": [str(f) for f in pd.unique(pd.Series(list(features)))]})
            table = wanted.merge(table, on="feature", how="left").assign(cohort=cohort)
        table["n"] = n
        table["tissue"] = tissue
        if "scale" not in table.columns:
            table["scale"] = scale or DEFAULT_SCALE
        table["scale"] = table["scale"].fillna(scale or DEFAULT_SCALE)
        table["contrast"] = kind
        parts.append(table)
    columns = [*REQUIRED_COLUMNS, "scale", "contrast"]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]


@dataclass(frozen=True)
class PoolingPlan:
    """Which cohorts each primary fit pools, and why the others are only shown.

    ``groups`` maps a contrast kind to the cohorts its primary fit pools (input order, kinds in
    ``il6axis.cohort.contrast.KINDS`` order); ``not_pooled`` maps a cohort left out of every primary fit to
    the
    reason (:data:`NOT_POOLED_SCALE`, :data:`NOT_POOLED_CONTRAST`); ``kinds`` maps every cohort to its kind.
    """

    groups: dict[str, list[str]] = field(default_factory=dict)
    not_pooled: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)

    def members(self, kind: str) -> list[str]:
        """Every cohort declared with this kind, pooled or not, in input order."""
        return [c for c, k in self.kinds.items() if k == kind]

    def primary_group(self, cohort: str) -> str | None:
        """The kind whose primary fit pools ``cohort``, or None when it is only shown."""
        return next((kind for kind, cs in self.groups.items() if cohort in cs), None)


def pooling_plan(cohorts: Iterable[tuple[str, str | None, str | None]]) -> PoolingPlan:
    """Primary pooling groups from (cohort, contrast kind, scale) triples, e.g. from the DE summaries.

    A missing kind is severe vs mild and a missing scale the count scale (summaries of older runs). Each
    kind (but ``other``) gets its own primary fit; within it the scale rule of :func:`off_primary_scale`
    applies. The report's text and the meta-analysis both call this, so they cannot disagree.
    """
    triples = [(str(c), _kind_or_default(k), s) for c, k, s in cohorts]
    plan = PoolingPlan(kinds={c: k for c, k, _ in triples})
    for kind in KINDS:
        members = [(c, s) for c, k, s in triples if k == kind]
        if not members:
            continue
        if pooling_kind(kind) is None:
            plan.not_pooled.update({c: NOT_POOLED_CONTRAST for c, _ in members})
            continue
        off = set(off_primary_scale(members))
        plan.not_pooled.update({c: NOT_POOLED_SCALE for c, _ in members if c in off})
        plan.groups[kind] = [c for c, _ in members if c not in off]
    return plan


def _kind_or_default(kind: object) -> str:
    """A cohort's contrast kind; missing or empty (summaries of older runs) is severe vs mild."""
    return DEFAULT_KIND if kind is None or pd.isna(kind) or kind == "" else str(kind)


def _plan_of(effects: pd.DataFrame) -> PoolingPlan:
    """:func:`pooling_plan` of a long effects table (one kind and one scale per cohort)."""
    first = effects.drop_duplicates("cohort")
    scale = first["scale"] if "scale" in first.columns else pd.Series(DEFAULT_SCALE, index=first.index)
    kind = first["contrast"] if "contrast" in first.columns else pd.Series(DEFAULT_KIND, index=first.index)
    return pooling_plan(zip(first["cohort"], kind, scale, strict=True))


def run_meta(
    cohorts: Sequence[str],
    effect_tables: Sequence[str | Path],
    summaries: Sequence[str | Path],
    features: Sequence[str] | None,
    alpha: float,
    strata: Sequence[str],
    method_re: str,
    sensitivity_exclude: Sequence[str],
    meta_path: str | Path,
    forest_path: str | Path,
    sensitivity_path: str | Path,
) -> pd.DataFrame:
    """Meta-analyse per-cohort effect tables and write the pooled, forest and sensitivity tables.

    Primary fits follow :func:`pooling_plan` (one per contrast kind, scale rule within); the pooled
    table has one block of (stratum, feature) rows per kind, told apart by its ``contrast`` column. The
    sensitivity table holds leave-one-out fits, each kind with every scale ("all scales pooled"), and
    the cross-contrast fits (:func:`_cross_contrast_runs`) when they pool something no other fit does.
    """
    effects = read_cohort_effects(
        dict(zip(cohorts, effect_tables, strict=True)),
        dict(zip(cohorts, summaries, strict=True)),
        features=list(features) if features is not None else None,
    )
    plan = _plan_of(effects)
    for cohort, reason in plan.not_pooled.items():
        kind = plan.kinds[cohort]
        log.info("cohort %s (%s) is shown but not pooled in any primary fit: %s", cohort, kind, reason)

    def run(members: Sequence[str], exclude: Sequence[str], label: str) -> pd.DataFrame:
        sub = effects[effects["cohort"].isin(list(members))]
        return meta_analyse(
            sub,
            alpha=alpha,
            strata=tuple(strata),
            method_re=method_re,
            exclude_cohorts=exclude,
            contrast=label,
        )

    def off_scale_in(kind: str) -> list[str]:
        return [c for c in plan.members(kind) if plan.not_pooled.get(c) == NOT_POOLED_SCALE]

    primary = [run(plan.members(kind), off_scale_in(kind), kind) for kind in plan.groups]
    if not primary:  # every cohort is of kind `other`: the table keeps its rows, each without a fit
        everyone = list(plan.kinds)
        primary = [run(everyone, everyone, "+".join(k for k in KINDS if k in set(plan.kinds.values())))]
    meta = pd.concat(primary, ignore_index=True)
    # Robust or borderline: every pooled call refitted without each of its kind's pooled cohorts in turn.
    leave_outs = {
        kind: {c: run(plan.members(kind), [*off_scale_in(kind), c], kind) for c in members}
        for kind, members in plan.groups.items()
    }
    meta = cohort_stability(meta, effects, leave_outs, alpha)
    meta.to_csv(meta_path, sep="\t", index=False, float_format="%.6g")

    parts = [
        forest_table(effects[effects["cohort"].isin(members)], meta[meta["contrast"] == kind], alpha)
        for kind, members in plan.groups.items()
    ]
    forest = (
        pd.concat(parts, ignore_index=True) if parts else forest_table(effects, meta.iloc[0:0], alpha)
    ).assign(pooled=True, not_pooled_reason="")
    if plan.not_pooled:  # shown in the forest plot beside the pooled cohorts, marked as not pooled
        shown = _not_pooled_rows(effects, plan, strata, alpha)
        forest = pd.concat([forest, shown], ignore_index=True) if len(forest) else shown
    forest.to_csv(forest_path, sep="\t", index=False, float_format="%.6g")

    runs = []
    for cohort in sensitivity_exclude:  # only cohorts that are in a primary fit can be left out of it
        kind = plan.primary_group(cohort) if cohort in set(cohorts) else None
        if kind is not None:
            fit = leave_outs[kind][cohort]  # the same fit the stability rule made
            runs.append(fit.assign(analysis=ANALYSIS_LEAVE_ONE_OUT, excluded=cohort))
    runs += [
        run(plan.members(kind), [], kind).assign(analysis=ANALYSIS_ALL_SCALES, excluded="")
        for kind in plan.groups
        if off_scale_in(kind)
    ]
    runs += _cross_contrast_runs(effects, plan, run)
    empty = meta.iloc[0:0].assign(analysis="", excluded="")
    sensitivity = pd.concat(runs, ignore_index=True) if runs else empty
    sensitivity.to_csv(sensitivity_path, sep="\t", index=False, float_format="%.6g")
    log.info(
        "meta-analysis of %d features over %d cohorts: primary fits %s, %d shown but not pooled; "
        "written to %s",
        meta["feature"].nunique(),
        len(cohorts),
        {kind: members for kind, members in plan.groups.items()},
        len(plan.not_pooled),
        meta_path,
    )
    return meta


def cohort_stability(
    meta: pd.DataFrame,
    effects: pd.DataFrame,
    leave_outs: Mapping[str, Mapping[str, pd.DataFrame]],
    alpha: float,
) -> pd.DataFrame:
    """``meta`` with the leave-one-cohort-out stability of each pooled call (columns ``stability``,
    ``stability_note``), the pooled counterpart of ``il6axis.de.stability``'s within-cohort rule.

    ``leave_outs[kind][cohort]`` is the kind's primary fit without that cohort. A pooled call (k >= 2,
    q < alpha) is ``robust`` when it holds in the pooled fit and in every leave-one-cohort-out fit of its
    stratum: q < alpha with the same sign, or, where only one cohort remains, that cohort's own padj <
    alpha with the same sign (a stratum with one cohort is judged by the within-cohort rule, so the
    single remaining cohort is read the same way); otherwise ``borderline``, with the cohorts whose
    removal loses the call. Rows with q >= alpha are ``not_called``; rows without a pooled estimate
    (k < 2) are ``not_pooled``: the report reads a lone cohort's class from its ``panel_stability.tsv``.
    """
    df = _validated(effects)
    own = df.set_index(["cohort", "feature"])[["log2FoldChange", "padj"]]
    stratum_members = df.drop_duplicates("cohort").set_index("cohort")["stratum"]
    indexed = {
        kind: {c: fit.set_index(["stratum", "feature"]) for c, fit in fits.items()}
        for kind, fits in leave_outs.items()
    }
    classes, notes = [], []
    for rec in meta.itertuples(index=False):
        k = int(rec.k) if np.isfinite(rec.k) else 0
        estimate = float(rec.pooled_log2FoldChange)
        if k < 2 or not np.isfinite(estimate):
            classes.append(STABILITY_NOT_POOLED)
            notes.append("")
            continue
        if not (np.isfinite(rec.q) and rec.q < alpha):
            classes.append(NOT_CALLED)
            notes.append("")
            continue
        fits = indexed.get(str(rec.contrast), {})
        lost = []
        for cohort, fit in fits.items():
            if rec.stratum != ALL_STRATA and stratum_members.get(cohort) != rec.stratum:
                continue  # not in this stratum: leaving it out changes nothing here
            row = fit.loc[(rec.stratum, rec.feature)]
            held, why = _call_holds(row, own, rec.feature, np.sign(estimate), alpha)
            if not held:
                lost.append(f"without {cohort}: {why}")
        classes.append(BORDERLINE if lost else ROBUST)
        notes.append("; ".join(lost) if lost else f"holds without each of the {k} cohorts in turn")
    return meta.assign(stability=classes, stability_note=notes)


def _call_holds(
    row: pd.Series, own: pd.DataFrame, feature: str, sign: float, alpha: float
) -> tuple[bool, str]:
    """Whether a leave-one-cohort-out fit keeps the pooled call, and if not, why (for the note)."""
    k = int(row["k"]) if np.isfinite(row["k"]) else 0
    if k >= 2:
        q, est = float(row["q"]), float(row["pooled_log2FoldChange"])
        if np.sign(est) != sign:
            return False, f"pooled log2FC {est:+.2f}"
        if not (np.isfinite(q) and q < alpha):
            return False, f"q = {q:.2g}"
        return True, ""
    remaining = [c for c in str(row["cohorts"]).split(",") if c] if isinstance(row["cohorts"], str) else []
    if k == 1 and remaining:
        lfc, padj = (float(v) for v in own.loc[(remaining[0], feature)])
        if np.sign(lfc) != sign:
            return False, f"{remaining[0]} alone has log2FC {lfc:+.2f}"
        if not (np.isfinite(padj) and padj < alpha):
            return False, f"{remaining[0]} alone has padj = {padj:.2g}"
        return True, ""
    return False, "no cohort left"


def _cross_contrast_runs(
    effects: pd.DataFrame, plan: PoolingPlan, run: Callable[[Sequence[str], Sequence[str], str], pd.DataFrame]
) -> list[pd.DataFrame]:
    """Sensitivity fits that pool across contrast kinds, each labelled in ``analysis``.

    "severity contrasts pooled" joins severe vs mild with critical vs severe, "all contrasts pooled" joins
    every cohort (disease vs healthy and `other` too); both keep the scale rule, and each has an "... and
    all scales pooled" twin that drops it too (e.g. a critical-vs-severe cohort published as log2 values
    enters no other fit). A run is skipped when it would pool fewer than two cohorts, or exactly the
    cohorts of a primary fit, of a kind's "all scales pooled" fit or of an earlier run.
    """
    severity = [c for c, k in plan.kinds.items() if k in SEVERITY_KINDS]
    everyone = list(plan.kinds)
    candidates = []
    for members, label, kept, relaxed in (
        (severity, SEVERITY_CONTRASTS, ANALYSIS_SEVERITY_CONTRASTS, ANALYSIS_SEVERITY_CONTRASTS_ALL_SCALES),
        (everyone, ALL_CONTRASTS, ANALYSIS_ALL_CONTRASTS, ANALYSIS_ALL_CONTRASTS_ALL_SCALES),
    ):
        off = off_scale_cohorts(effects[effects["cohort"].isin(members)])
        candidates += [(members, off, label, kept), (members, [], label, relaxed)]
    # Primary fits and each kind's "all scales pooled" fit are already in the tables.
    seen = {frozenset(members) for members in plan.groups.values()}
    seen |= {frozenset(plan.members(kind)) for kind in plan.groups}
    out = []
    for members, exclude, label, analysis in candidates:
        pooled = frozenset(members) - set(exclude)
        if len(pooled) < 2 or pooled in seen:
            continue
        seen.add(pooled)
        out.append(run(members, exclude, label).assign(analysis=analysis, excluded=""))
    return out


def _not_pooled_rows(
    effects: pd.DataFrame, plan: PoolingPlan, strata: Sequence[str], alpha: float
) -> pd.DataFrame:
    """Forest rows (``pooled`` False, no weight, with the reason) for cohorts shown beside, not in, a fit."""
    df = _validated(effects)
    df = df[df["cohort"].isin(list(plan.not_pooled)) & _contributes(df)]
    z = float(stats.norm.isf(alpha / 2))
    parts = []
    for stratum in strata:
        sub = df if stratum == ALL_STRATA else df[df["stratum"] == stratum]
        parts.append(
            pd.DataFrame(
                {
                    "contrast": sub["contrast"],
                    "stratum": stratum,
                    "feature": sub["feature"],
                    "row_type": "cohort",
                    "cohort": sub["cohort"],
                    "tissue": sub["tissue"],
                    "effect": sub["log2FoldChange"],
                    "se": sub["lfcSE"],
                    "ci_low": sub["log2FoldChange"] - z * sub["lfcSE"],
                    "ci_high": sub["log2FoldChange"] + z * sub["lfcSE"],
                    "padj": sub["padj"],
                    "n": sub["n"],
                    "weight": np.nan,
                    "pooled": False,
                    "not_pooled_reason": sub["cohort"].map(plan.not_pooled),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def off_scale_cohorts(effects: pd.DataFrame) -> list[str]:
    """Cohorts left out of the primary pooling because their effects are on another scale.

    The primary scale is log2 fold changes of counts (NB model). A linear-model effect on log2 normalised
    values (``scale = log2_normalised``: log2(normalised + 1), or values published as log2 and modelled
    as they are) estimates a similar but not identical quantity (statistics.md: pool only effects on one
    scale), so such cohorts enter only the "all scales pooled" sensitivity run. When no cohort is on the
    count scale there is nothing to protect, and all cohorts are pooled: both kinds of log2-normalised
    effects are differences of mean log2 normalised expression, differing only in the offset added
    before the log (``il6axis.de.routing``).
    """
    scale = effects.get("scale", pd.Series(DEFAULT_SCALE, index=effects.index))
    return off_primary_scale(zip(effects["cohort"], scale, strict=True))


def off_primary_scale(cohort_scales: Iterable[tuple[str, str | None]]) -> list[str]:
    """:func:`off_scale_cohorts` from (cohort, scale) pairs, e.g. from the DE summaries; a missing or
    empty scale is the count scale."""
    pairs = [(str(c), DEFAULT_SCALE if pd.isna(s) or s == "" else str(s)) for c, s in cohort_scales]
    if all(s != DEFAULT_SCALE for _, s in pairs):
        return []
    return sorted({c for c, s in pairs if s != DEFAULT_SCALE})
