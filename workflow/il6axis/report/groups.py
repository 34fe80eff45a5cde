"""Which cohorts the report describes together: per contrast kind (as the meta-analysis pools them) and,
within a kind, per material stratum.

The grouping is recomputed from the cohorts' ``summary.json`` files with the meta-analysis' own rules
(:func:`il6axis.analysis.meta.plan.pooling_plan`, :func:`il6axis.vocabulary.stratum_of`), so a sentence on the
front page names the same cohorts as the pooled row it describes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from il6axis.analysis.meta.plan import PoolingPlan, pooling_plan
from il6axis.cohort.contrast import DEFAULT_KIND, KIND_LABEL, SEVERITY_KINDS, Contrast, contrast_from_summary
from il6axis.report.rst import cohort_literals, rst_escape
from il6axis.vocabulary import ALL_STRATA, STRATUM_ORDER, stratum_of

ByCohort = Mapping[str, Mapping[str, Any]]  # cohort -> one of its parsed JSON files, in report order


def contrast_of(cohort: str, summary: Mapping[str, Any]) -> Contrast:
    """The cohort's declared contrast, as its DE summary records it."""
    return contrast_from_summary(summary, source=f"summary.json of {cohort}")


def plan_of(summaries: ByCohort) -> PoolingPlan:
    """The meta-analysis' pooling groups, from the summaries (contrast kind and scale per cohort)."""
    return pooling_plan((c, contrast_of(c, s).kind, s.get("scale")) for c, s in summaries.items())


def stratum_cohorts(summaries: ByCohort, cohorts: Sequence[str]) -> dict[str, list[str]]:
    """The ``cohorts`` of one contrast kind's primary fit in each material stratum (and ``all``), in the
    summaries' cohort order. A summary without ``tissue`` counts as other material."""
    out: dict[str, list[str]] = {s: [] for s in STRATUM_ORDER}
    for cohort, summary in summaries.items():
        if cohort not in set(cohorts):
            continue
        out[stratum_of(summary.get("tissue", "other"))].append(cohort)
        out[ALL_STRATA].append(cohort)
    return out


def kind_parts(
    meta: pd.DataFrame, summaries: ByCohort
) -> list[tuple[str, pd.DataFrame, dict[str, list[str]]]]:
    """(contrast kind, its rows of the meta table, its cohorts per stratum) for each primary fit, in
    ``KINDS`` order. A meta table without a ``contrast`` column (older runs) is one severe-vs-mild fit."""
    plan = plan_of(summaries)
    kinds = (
        meta["contrast"].astype(str) if "contrast" in meta.columns else pd.Series(DEFAULT_KIND, meta.index)
    )
    return [
        (kind, meta[kinds == kind], stratum_cohorts(summaries, members))
        for kind, members in plan.groups.items()
        if kind in set(kinds)
    ]


def kind_heading(kind: str, cohorts: Sequence[str], several: bool) -> list[str]:
    """Lead line of one contrast kind's block when several kinds were fitted (nothing otherwise)."""
    if not several:
        return []
    note = "" if kind in SEVERITY_KINDS else "; not a severity contrast"
    pooling = "pooled with each other only" if len(cohorts) > 1 else "not pooled with cohorts of other kinds"
    return [f"*Contrast {KIND_LABEL.get(kind, kind)}* ({cohort_literals(cohorts)}; {pooling}{note})", ""]


def shown_strata(meta: pd.DataFrame, members: Mapping[str, list[str]]) -> list[str]:
    """Strata worth a paragraph: analysed, with cohorts, and ``all`` only when it adds cohorts."""
    analysed = set(meta["stratum"])
    materials = STRATUM_ORDER[:-1]
    shown = [s for s in materials if s in analysed and members[s]]
    largest = max((len(members[s]) for s in materials), default=0)
    if ALL_STRATA in analysed and len(members[ALL_STRATA]) > largest:
        shown.append(ALL_STRATA)
    return shown


def not_pooled_lines(summaries: ByCohort) -> list[str]:
    """Cohorts in no primary fit (other effect scale, contrast kind ``other``), with the reason."""
    plan = plan_of(summaries)
    if not plan.not_pooled:
        return []
    listed = "; ".join(f"``{c}`` ({rst_escape(why)})" for c, why in plan.not_pooled.items())
    return [
        f"Not in any pooled estimate above, shown in the forest plots: {listed}.",
        "",
    ]
