"""Random-effects meta-analysis of severe-vs-mild effects across cohorts.

Per feature (an IL-6 panel gene or a pathway score) the per-cohort unshrunk log2 fold changes and their
standard errors are pooled with a Paule-Mandel random-effects model (statsmodels ``combine_effects``) and a
t interval with k - 1 degrees of freedom. Few cohorts and heterogeneous tissues are the norm here, so the
module also reports a signed, sample-size-weighted Stouffer Z and a plain count of cohorts per direction,
and it analyses material strata separately: whole blood / leukocytes is the primary stratum, PBMC is
reported on its own, and "all" (pooling across materials) is a sensitivity analysis only.

Input is a long table, one row per (cohort, feature); see :data:`REQUIRED_COLUMNS`. A NaN effect or SE
(gene not tested in that cohort) means the cohort does not contribute to that feature.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.tools.sm_exceptions import InvalidTestWarning

from il6axis.de import benjamini_hochberg
from il6axis.errors import InputError
from il6axis.groups import MILD, SEVERE
from il6axis.severity_model import SCALE_COUNTS

__all__ = [
    "ALL_STRATA",
    "DEFAULT_SCALE",
    "NOTE_K2",
    "REASON_FEW",
    "REQUIRED_COLUMNS",
    "forest_table",
    "meta_analyse",
    "off_primary_scale",
    "off_scale_cohorts",
    "random_effects",
    "read_cohort_effects",
    "run_meta",
    "sign_consistency",
    "stouffer",
    "stratum_of",
]

log = logging.getLogger("il6axis.meta")

REQUIRED_COLUMNS = ("cohort", "feature", "log2FoldChange", "lfcSE", "stat", "padj", "n", "tissue")
DEFAULT_SCALE = SCALE_COUNTS  # log2 fold changes of counts (the NB model)
ALL_STRATA = "all"
REASON_FEW = "fewer than 2 cohorts"
NOTE_K2 = "k=2: 1-df t interval is very wide"
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
    return df


def _contributes(df: pd.DataFrame) -> pd.Series:
    """Rows that enter the pooling: finite effect and a finite, positive SE."""
    se = df["lfcSE"]
    return np.isfinite(df["log2FoldChange"]) & np.isfinite(se) & (se > 0)


_ROW_FIELDS = ("cohort", "log2FoldChange", "lfcSE", "stat", "padj", "n", "scale")


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
    notes = []
    if k == 2:
        notes.append(NOTE_K2)
    if len(scales) > 1:
        notes.append(f"mixed scales ({', '.join(scales)}): sensitivity analysis only")
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
        "reason": fit["reason"],
        "note": "; ".join(notes),
    }


def meta_analyse(
    effects: pd.DataFrame,
    alpha: float = 0.05,
    strata: Sequence[str] = (ALL_STRATA, "whole_blood", "pbmc"),
    exclude_cohorts: Iterable[str] = (),
    method_re: str = "iterated",
) -> pd.DataFrame:
    """One row per (stratum, feature): pooled log2FC with t CI, p, BH q, tau2, I2, Stouffer Z, signs.

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
                {"stratum": stratum, "feature": feature, **_feature_row(part, alpha, unit, method_re)}
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
    carries the random-effects interval, the stratum's BH q in ``padj`` and the summed ``n``.
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
    columns = ["stratum", "feature", "row_type", "cohort", "tissue", "effect", "se", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=[*columns, "padj", "n", "weight"])


def _load_summary(cohort: str, summary: str | Path | Mapping[str, Any]) -> tuple[int, str, str | None]:
    """(n in the contrast, tissue, scale or None) from a summary.json path or an already-loaded dict."""
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
    return int(groups[MILD]) + int(groups[SEVERE]), str(tissue), summary.get("scale")


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

    ``n`` is mild + severe from ``n_per_group``; ``tissue`` and an optional ``scale`` come from the
    summary (a ``scale`` column in the table wins; default "log2_counts"). Rows not tested in a cohort
    (``tested`` false, or a Cook's outlier with p = NA) keep NaN effects so that the cohort does not
    contribute. With ``features`` (e.g. the IL-6 panel) only those are kept, and a feature absent from a
    cohort's table appears as a NaN row, so every cohort lists every requested feature.
    """
    if set(de_tables) != set(summaries):
        raise InputError(
            f"cohorts with a DE table {sorted(de_tables)} and with a summary {sorted(summaries)} differ; "
            f"give both for every cohort."
        )
    parts = []
    for cohort, path in de_tables.items():
        n, tissue, scale = _load_summary(cohort, summaries[cohort])
        table = _read_table(cohort, path)
        if features is not None:
            wanted = pd.DataFrame({"feature": [str(f) for f in pd.unique(pd.Series(list(features)))]})
            table = wanted.merge(table, on="feature", how="left").assign(cohort=cohort)
        table["n"] = n
        table["tissue"] = tissue
        if "scale" not in table.columns:
            table["scale"] = scale or DEFAULT_SCALE
        table["scale"] = table["scale"].fillna(scale or DEFAULT_SCALE)
        parts.append(table)
    columns = [*REQUIRED_COLUMNS, "scale"]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]


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
    """Meta-analyse per-cohort effect tables and write the pooled, forest and leave-one-out tables."""
    effects = read_cohort_effects(
        dict(zip(cohorts, effect_tables, strict=True)),
        dict(zip(cohorts, summaries, strict=True)),
        features=list(features) if features is not None else None,
    )
    off_scale = off_scale_cohorts(effects)
    if off_scale:
        log.info(
            "cohorts %s report effects on another scale than %s: primary meta-analysis without them, "
            "with them in the sensitivity table",
            off_scale,
            DEFAULT_SCALE,
        )

    def run(exclude: Sequence[str]) -> pd.DataFrame:
        return meta_analyse(
            effects, alpha=alpha, strata=tuple(strata), method_re=method_re, exclude_cohorts=exclude
        )

    meta = run(off_scale)
    meta.to_csv(meta_path, sep="\t", index=False, float_format="%.6g")
    forest = forest_table(effects, meta, alpha=alpha).assign(pooled=True)
    if off_scale:  # shown in the forest plot beside the pooled cohorts, marked as not pooled
        forest = pd.concat([forest, _not_pooled_rows(effects, off_scale, strata, alpha)], ignore_index=True)
    forest.to_csv(forest_path, sep="\t", index=False, float_format="%.6g")
    runs = [
        run([*off_scale, c]).assign(analysis="leave one out", excluded=c)
        for c in sensitivity_exclude
        if c in set(cohorts) and c not in off_scale
    ]
    if off_scale:
        runs.append(run([]).assign(analysis="all scales pooled", excluded=""))
    empty = meta.iloc[0:0].assign(analysis="", excluded="")
    sensitivity = pd.concat(runs, ignore_index=True) if runs else empty
    sensitivity.to_csv(sensitivity_path, sep="\t", index=False, float_format="%.6g")
    log.info(
        "meta-analysis of %d features over %d cohorts (%d off-scale) written to %s",
        meta["feature"].nunique(),
        len(cohorts),
        len(off_scale),
        meta_path,
    )
    return meta


def _not_pooled_rows(
    effects: pd.DataFrame, cohorts: Sequence[str], strata: Sequence[str], alpha: float
) -> pd.DataFrame:
    """Forest rows (``pooled`` False, no weight) for cohorts shown beside, but not in, the pooled fit."""
    df = _validated(effects)
    df = df[df["cohort"].isin(list(cohorts)) & _contributes(df)]
    z = float(stats.norm.isf(alpha / 2))
    parts = []
    for stratum in strata:
        sub = df if stratum == ALL_STRATA else df[df["stratum"] == stratum]
        parts.append(
            pd.DataFrame(
                {
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
    before the log (``il6axis.severity_model``).
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
