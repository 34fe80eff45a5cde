"""Front-page section "Robust and borderline calls": the panel genes' calls split by the stability rule.

Pooled calls are judged leave-one-cohort-out (the meta table's ``stability`` column,
:func:`il6axis.analysis.meta.stability.cohort_stability`); a stratum with one cohort is judged
leave-one-sample-out (its ``panel_stability.tsv``, :mod:`il6axis.de.stability`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from il6axis.de.stability import BORDERLINE, NEAR_MISS, NOT_ASSESSED, ROBUST
from il6axis.report.groups import ByCohort, kind_heading, kind_parts, shown_strata
from il6axis.report.rst import cohort_literals, heading, p_text, rst_escape, signed
from il6axis.vocabulary import ALL_STRATA, STRATUM_TITLE

MAX_STABILITY_LISTED = 25  # genes named per class and stratum; the rest are counted (and in the tables)


def stability_section(
    meta: pd.DataFrame,
    summaries: ByCohort,
    alpha: float,
    stabilities: Mapping[str, pd.DataFrame] | None,
) -> list[str]:
    """The panel genes' calls split into robust and borderline (and near misses of a lone cohort), per
    contrast kind and stratum as in the gene section, by the pre-specified rule: leave-one-cohort-out
    for pooled calls (``meta`` column ``stability``), leave-one-sample-out for a stratum with one cohort
    (``stabilities``: cohort -> panel_stability.tsv)."""
    lines = heading("Robust and borderline calls")
    lines += [
        "Stability rule fixed before the results were seen (``de.stability``, config/README.md). A pooled "
        f"call (q < {alpha:g}) is *robust* when it still holds (q < {alpha:g}, same sign) with each of its "
        "cohorts left out in turn (where one cohort remains, by that cohort's own padj). A call in a stratum "
        "with one cohort (padj < "
        f"{alpha:g}) is *robust* when every refit with one sample left out keeps its sign and a p-value at "
        "or below the cohort's Benjamini-Hochberg cut-off p\\* (the largest p-value called). Any other call "
        "is *borderline*: it rests on one cohort or one sample, so read it as provisional. Near misses are "
        "tested genes just above the threshold (padj below ``de.stability.near_miss_factor`` times "
        f"{alpha:g}); they are not calls.",
        "",
    ]
    parts = kind_parts(meta, summaries)
    several = len(parts) > 1
    for kind, part_k, members in parts:
        lines += kind_heading(kind, members[ALL_STRATA], several)
        for stratum in shown_strata(part_k, members):
            cohorts = members[stratum]
            listed = cohort_literals(cohorts)
            lines += [f"**{STRATUM_TITLE[stratum]}** ({listed}):", ""]
            if len(cohorts) == 1:
                table = (stabilities or {}).get(cohorts[0])
                lines += _cohort_stability_lines(table)
            else:
                lines += _pooled_stability_lines(part_k[part_k["stratum"] == stratum], alpha)
            lines.append("")
    if not parts:
        for cohort, table in (stabilities or {}).items():
            lines += [f"**``{cohort}``** (not pooled):", "", *_cohort_stability_lines(table), ""]
    return lines


def _class_line(label: str, items: Sequence[str], sep: str = ", ") -> str:
    """'- Robust (3): A, B, C' (the first MAX_STABILITY_LISTED named, the rest counted)."""
    shown = sep.join(items[:MAX_STABILITY_LISTED]) if items else "none"
    more = f"{sep}and {len(items) - MAX_STABILITY_LISTED} more" if len(items) > MAX_STABILITY_LISTED else ""
    return f"- {label} ({len(items)}): {shown}{more}"


def _pooled_stability_lines(part: pd.DataFrame, alpha: float) -> list[str]:
    """Robust and borderline pooled calls of one stratum, by q; borderline ones say which cohort's
    removal loses the call."""
    if "stability" not in part.columns:
        return ["- Stability not assessed (the meta-analysis table has no ``stability`` column: rerun it)."]
    called = part[part["stability"].isin([ROBUST, BORDERLINE])].sort_values(["q", "feature"])
    robust = [
        f"{rst_escape(r.feature)} ({signed(r.pooled_log2FoldChange)}, q = {p_text(r.q)})"
        for r in called.itertuples()
        if r.stability == ROBUST
    ]
    borderline = [
        f"{rst_escape(r.feature)} ({signed(r.pooled_log2FoldChange)}, q = {p_text(r.q)}; "
        f"{rst_escape(getattr(r, 'stability_note', ''))})"
        for r in called.itertuples()
        if r.stability == BORDERLINE
    ]
    if not robust and not borderline:
        return [f"- No pooled call at q < {alpha:g}."]
    return [_class_line("Robust", robust), _class_line("Borderline", borderline, "; ")]


def _cohort_stability_lines(table: pd.DataFrame | None) -> list[str]:
    """Robust, borderline and near-miss genes of one cohort from its panel_stability.tsv, by padj."""
    if table is None or "stability" not in table.columns:
        return ["- Stability not assessed (no ``panel_stability.tsv`` for this cohort)."]
    if table["stability"].eq(NOT_ASSESSED).all():
        return ["- Stability not assessed (``de.stability.enabled`` is false)."]
    ordered = table.sort_values(["padj", "gene"], na_position="last")

    def named(cls: str, with_note: bool) -> list[str]:
        rows = ordered[ordered["stability"] == cls]
        return [
            f"{rst_escape(r.gene)} ({signed(r.log2FoldChange)}, padj = {p_text(r.padj)}"
            + (f"; {rst_escape(r.note)})" if with_note and isinstance(r.note, str) and r.note else ")")
            for r in rows.itertuples()
        ]

    return [
        _class_line("Robust", named(ROBUST, False)),
        _class_line("Borderline", named(BORDERLINE, True), "; "),
        _class_line("Near misses (not called)", named(NEAR_MISS, False)),
    ]
