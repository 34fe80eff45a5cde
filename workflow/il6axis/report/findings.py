"""Front-page sections with the pooled results: the IL-6 axis genes and the pathway scores.

Per contrast kind and material stratum (:mod:`il6axis.report.groups`): the pooled random-effects
estimate of each core gene or gene-set score with its interval, q, sign consistency and I², or, for a
stratum with one cohort, that cohort's own estimate from the forest table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from il6axis.cohort.contrast import KIND_LABEL
from il6axis.report.groups import ByCohort, kind_heading, kind_parts, not_pooled_lines, shown_strata
from il6axis.report.rst import cohort_literals, heading, p_text, rst_escape, signed
from il6axis.vocabulary import ALL_STRATA, STRATUM_TITLE

MAX_LISTED = 10  # other significant genes listed by name
SCORE_METHOD = "mean_z"  # the score method the front page reports


def _cohort_value(
    forest: pd.DataFrame | None, stratum: str, feature: str, cohort: str, unit: str
) -> str | None:
    """'+0.23 [-0.10, +0.56] log2FC, padj = 0.94' for one cohort from the forest table, or None."""
    if forest is None or forest.empty:
        return None
    rows = forest[
        (forest["row_type"] == "cohort")
        & (forest["feature"] == feature)
        & (forest["cohort"] == cohort)
        & (forest["stratum"].isin([stratum, ALL_STRATA]))
    ]
    rows = rows[np.isfinite(rows["effect"].astype(float))]
    if rows.empty:
        return None
    r = rows.iloc[0]
    interval = f"[{signed(r['ci_low'])}, {signed(r['ci_high'])}]"
    return f"{signed(r['effect'])} {interval} {unit}, padj = {p_text(r['padj'])}"


def _pooled_line(rec: pd.Series, name: str, unit: str) -> str:
    """One bullet: pooled effect [CI], q, sign consistency, I2; or why there is no pooled estimate."""
    k = int(rec["k"]) if np.isfinite(rec["k"]) else 0
    if k >= 2 and np.isfinite(rec["pooled_log2FoldChange"]):
        i2 = f", I² = {100 * rec['i2']:.0f}%" if np.isfinite(rec["i2"]) else ""
        return (
            f"- **{name}**: {signed(rec['pooled_log2FoldChange'])} "
            f"[{signed(rec['ci_low'])}, {signed(rec['ci_high'])}] {unit}, q = {p_text(rec['q'])}; "
            f"{rst_escape(rec['sign_summary'])}{i2}"
        )
    if k == 0:
        return f"- **{name}**: not tested in any of these cohorts"
    return (
        f"- **{name}**: no pooled estimate (k = {k}, needs >= 2 cohorts); {rst_escape(rec['sign_summary'])}"
    )


def _stratum_block(
    part: pd.DataFrame,
    features: Sequence[str],
    names: Mapping[str, str],
    stratum: str,
    cohorts: Sequence[str],
    unit: str,
    forest: pd.DataFrame | None,
) -> list[str]:
    """Bullets of one stratum: pooled lines, or the lone cohort's own estimates when it has one cohort."""
    listed = cohort_literals(cohorts)
    if len(cohorts) == 1:
        lines = [
            f"**{STRATUM_TITLE[stratum]}**: one cohort ({listed}), its own estimates (nothing to pool):",
            "",
        ]
        for feature in features:
            value = _cohort_value(forest, stratum, feature, cohorts[0], unit)
            if value is None and feature in part.index:
                rec = part.loc[feature]
                value = "not tested" if rec["k"] == 0 else rst_escape(rec["sign_summary"])
            lines.append(f"- **{names[feature]}**: {value or 'not tested'}")
        return [*lines, ""]
    lines = [f"**{STRATUM_TITLE[stratum]}** ({listed}):", ""]
    for feature in features:
        if feature in part.index:
            lines.append(_pooled_line(part.loc[feature], names[feature], unit))
    return lines


def gene_section(
    meta: pd.DataFrame,
    summaries: ByCohort,
    alpha: float,
    forest: pd.DataFrame | None,
    core: Sequence[str],
) -> list[str]:
    """Section "IL-6 axis genes across cohorts": the core genes per contrast kind and stratum, then the
    other panel genes that reach q < alpha."""
    lines = heading("IL-6 axis genes across cohorts")
    parts = kind_parts(meta, summaries)
    if not parts:
        return [
            *lines,
            "No two cohorts could be pooled (see the cohort table).",
            "",
            *not_pooled_lines(summaries),
        ]
    what = KIND_LABEL[parts[0][0]] if len(parts) == 1 else "case vs reference of each cohort's contrast"
    lines += [
        f"Random-effects pooled MLE log2 fold change ({what}) with its 95% t interval, BH q across "
        "the panel within the stratum, and the number of cohorts per direction; a stratum with one cohort "
        "shows that cohort's estimate with its 95% Wald interval and padj.",
        "",
    ]
    for kind, part_k, members in parts:
        lines += kind_heading(kind, members[ALL_STRATA], len(parts) > 1)
        for stratum in shown_strata(part_k, members):
            part = part_k[part_k["stratum"] == stratum].set_index("feature")
            cohorts = members[stratum]
            genes = [g for g in core if g in part.index]
            lines += _stratum_block(part, genes, {g: g for g in genes}, stratum, cohorts, "log2FC", forest)
            if len(cohorts) >= 2:
                others = part[(~part.index.isin(core)) & (part["q"] < alpha)].sort_values("q")
                if len(others):
                    shown = [
                        f"{g} ({signed(r['pooled_log2FoldChange'])})"
                        for g, r in others.head(MAX_LISTED).iterrows()
                    ]
                    more = f" and {len(others) - MAX_LISTED} more" if len(others) > MAX_LISTED else ""
                    lines.append(
                        f"- Other panel genes with q < {alpha:g} (pooled log2FC): "
                        f"{rst_escape(', '.join(shown))}{more}"
                    )
                elif (part["k"] >= 2).any():
                    lines.append(f"- No other panel gene reaches q < {alpha:g} in this stratum.")
                lines.append("")
    return [*lines, *not_pooled_lines(summaries)]


def score_section(
    meta: pd.DataFrame,
    summaries: ByCohort,
    forest: pd.DataFrame | None,
    method: str = SCORE_METHOD,
) -> list[str]:
    """Section "Pathway scores": the ``method`` scores per contrast kind and stratum, by q."""
    suffix = f" ({method})"
    part_all = meta[meta["feature"].astype(str).str.endswith(suffix)]
    lines = heading("Pathway scores")
    if part_all.empty:
        return [*lines, f"No pathway score of method ``{method}`` was meta-analysed.", ""]
    parts = kind_parts(part_all, summaries)
    lines += [
        f"Per-sample scores (``{method}``: mean z of severity-blind VST expression over the set's genes), "
        "case minus reference group from ``score ~ covariates + severity``, pooled like the genes (score "
        "units).",
        "",
    ]
    for kind, part_k, members in parts:
        lines += kind_heading(kind, members[ALL_STRATA], len(parts) > 1)
        for stratum in shown_strata(part_k, members):
            part = part_k[part_k["stratum"] == stratum]
            order = part.sort_values(["q", "feature"], na_position="last")["feature"].tolist()
            names = {f: rst_escape(str(f)[: -len(suffix)]) for f in order}
            block = _stratum_block(
                part.set_index("feature"), order, names, stratum, members[stratum], "score units", forest
            )
            lines += [*block, ""] if block[-1] else block
    return lines
