"""Which cohorts pool together: the primary fits of the meta-analysis and why a cohort is only shown.

Only like is pooled with like. Two rules decide which cohorts enter a primary fit:

1. **Contrast:** one primary fit per declared contrast kind (``il6axis.cohort.contrast``): severe vs mild
   cohorts with each other, critical vs severe cohorts with each other, disease vs healthy cohorts with
   each other; a cohort of kind ``other`` enters no primary fit.
2. **Scale:** within a kind, cohorts whose effects are off the log2-count scale (log2-normalised linear
   model) are left out while a count cohort of that kind exists.

A cohort left out by either rule is drawn in the forest plots, marked "not pooled" with the reason. The
report's text and the meta-analysis both read the plan from :func:`pooling_plan`, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from il6axis.analysis.meta.effects import DEFAULT_SCALE
from il6axis.cohort.contrast import DEFAULT_KIND, KINDS, pooling_kind

# Why a cohort is drawn in the forest plots but left out of its primary fit (forest `not_pooled_reason`).
NOT_POOLED_SCALE = "other effect scale"
NOT_POOLED_CONTRAST = "contrast kind 'other'"


@dataclass(frozen=True)
class PoolingPlan:
    """Which cohorts each primary fit pools, and why the others are only shown.

    ``groups`` maps a contrast kind to the cohorts its primary fit pools (input order, kinds in
    ``il6axis.cohort.contrast.KINDS`` order); ``not_pooled`` maps a cohort left out of every primary fit to
    the reason (:data:`NOT_POOLED_SCALE`, :data:`NOT_POOLED_CONTRAST`); ``kinds`` maps every cohort to its
    kind.
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


def plan_of_effects(effects: pd.DataFrame) -> PoolingPlan:
    """:func:`pooling_plan` of a long effects table (one kind and one scale per cohort)."""
    first = effects.drop_duplicates("cohort")
    scale = first["scale"] if "scale" in first.columns else pd.Series(DEFAULT_SCALE, index=first.index)
    kind = first["contrast"] if "contrast" in first.columns else pd.Series(DEFAULT_KIND, index=first.index)
    return pooling_plan(zip(first["cohort"], kind, scale, strict=True))


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
