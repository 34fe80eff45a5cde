"""Leave-one-cohort-out stability of the pooled calls: ``robust`` when a call holds without each of its
pooled cohorts in turn, ``borderline`` otherwise.

The pooled counterpart of ``il6axis.de.stability``'s within-cohort rule, whose class names it shares.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from il6axis.analysis.meta.effects import validated_effects
from il6axis.de.stability import BORDERLINE, NOT_CALLED, ROBUST
from il6axis.vocabulary import ALL_STRATA

STABILITY_NOT_POOLED = "not_pooled"


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
    df = validated_effects(effects)
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
