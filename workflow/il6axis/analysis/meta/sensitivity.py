"""The sensitivity fits that relax the pooling rules, each labelled in the table's ``analysis`` column.

"all scales pooled" refits a kind with every scale; "severity contrasts pooled" joins severe vs mild with
critical vs severe and "all contrasts pooled" joins every kind, both with the scale rule kept and again
with every scale ("... and all scales pooled"); "leave one out" drops one pooled cohort. Runs that would
repeat a fit are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from il6axis.analysis.meta.plan import PoolingPlan, off_scale_cohorts
from il6axis.cohort.contrast import KINDS, SEVERITY_KINDS

# `contrast` of the cross-contrast sensitivity fits, and the `analysis` labels of the sensitivity table.
SEVERITY_CONTRASTS = "+".join(k for k in KINDS if k in SEVERITY_KINDS)
ALL_CONTRASTS = "all"
ANALYSIS_ALL_SCALES = "all scales pooled"
ANALYSIS_SEVERITY_CONTRASTS = "severity contrasts pooled"
ANALYSIS_SEVERITY_CONTRASTS_ALL_SCALES = "severity contrasts and all scales pooled"
ANALYSIS_ALL_CONTRASTS = "all contrasts pooled"
ANALYSIS_ALL_CONTRASTS_ALL_SCALES = "all contrasts and all scales pooled"
ANALYSIS_LEAVE_ONE_OUT = "leave one out"


def cross_contrast_runs(
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
