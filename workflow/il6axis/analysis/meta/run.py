"""The meta rules' job: plan the fits, run them, judge each pooled call's stability, add the sensitivity
fits, and write the pooled, forest and sensitivity tables.

Primary fits follow :func:`il6axis.analysis.meta.plan.pooling_plan` (one per contrast kind, the scale rule
within it); each pooled call carries its leave-one-cohort-out stability
(:func:`il6axis.analysis.meta.stability.cohort_stability`); the sensitivity table holds the runs of
:mod:`il6axis.analysis.meta.sensitivity`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from il6axis.analysis.meta.effects import contributes, read_cohort_effects, validated_effects
from il6axis.analysis.meta.fit import forest_table, meta_analyse
from il6axis.analysis.meta.plan import NOT_POOLED_SCALE, PoolingPlan, plan_of_effects
from il6axis.analysis.meta.sensitivity import ANALYSIS_ALL_SCALES, ANALYSIS_LEAVE_ONE_OUT, cross_contrast_runs
from il6axis.analysis.meta.stability import cohort_stability
from il6axis.cohort.contrast import KINDS
from il6axis.vocabulary import ALL_STRATA

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetaSettings:
    """The meta-analysis settings (config ``meta``): the CI level and padj threshold ``alpha``, the
    material ``strata`` fitted, the between-cohort variance estimator ``method_re`` and the cohorts the
    sensitivity table leaves out one at a time."""

    alpha: float = 0.05
    strata: tuple[str, ...] = (ALL_STRATA, "whole_blood", "pbmc")
    method_re: str = "iterated"
    sensitivity_exclude: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, meta: Mapping[str, Any]) -> MetaSettings:
        """The settings of the config's ``meta`` block (defaults filled in by the schema)."""
        return cls(
            alpha=meta["alpha"],
            strata=tuple(meta["strata"]),
            method_re=meta["method_re"],
            sensitivity_exclude=tuple(meta["sensitivity_exclude"]),
        )


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

    Primary fits follow :func:`~il6axis.analysis.meta.plan.pooling_plan` (one per contrast kind, scale
    rule within); the pooled table has one block of (stratum, feature) rows per kind, told apart by its
    ``contrast`` column. The sensitivity table holds leave-one-out fits, each kind with every scale ("all
    scales pooled"), and the cross-contrast fits
    (:func:`~il6axis.analysis.meta.sensitivity.cross_contrast_runs`) when they pool something no other
    fit does. ``alpha``, ``strata``, ``method_re`` and ``sensitivity_exclude`` are the fields of
    :class:`MetaSettings`.
    """
    effects = read_cohort_effects(
        dict(zip(cohorts, effect_tables, strict=True)),
        dict(zip(cohorts, summaries, strict=True)),
        features=list(features) if features is not None else None,
    )
    plan = plan_of_effects(effects)
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
    runs += cross_contrast_runs(effects, plan, run)
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


def _not_pooled_rows(
    effects: pd.DataFrame, plan: PoolingPlan, strata: Sequence[str], alpha: float
) -> pd.DataFrame:
    """Forest rows (``pooled`` False, no weight, with the reason) for cohorts shown beside, not in, a fit."""
    df = validated_effects(effects)
    df = df[df["cohort"].isin(list(plan.not_pooled)) & contributes(df)]
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
