"""The report's headline findings, computed from the result tables (reStructuredText).

Nothing here is written by hand about the data: every number, direction, verdict and caveat is read from
the meta-analysis tables and the per-cohort summaries, so the front page cannot drift from the results.
Each cohort is described by its declared contrast (``summary.json`` ``contrast``: e.g. ICU vs non-ICU, or
acute COVID-19 vs healthy donors), never by the internal slot names severe / mild, and pooled results are
reported per contrast kind, as the meta-analysis fits them (``il6axis.analysis.meta.plan.pooling_plan``).
The sections are built by :mod:`~il6axis.report.cohorts`, :mod:`~il6axis.report.findings`,
:mod:`~il6axis.report.calls`, :mod:`~il6axis.report.checks` and :mod:`~il6axis.report.reads`; this
module checks the inputs and puts them in reading order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from il6axis.analysis.genesets import CORE_SIGNALLING
from il6axis.errors import InputError
from il6axis.report.calls import stability_section
from il6axis.report.checks import caveats_section, composition_section, orientation_section
from il6axis.report.cohorts import cohort_section, set_aside_section
from il6axis.report.findings import gene_section, score_section
from il6axis.report.groups import ByCohort
from il6axis.report.reads import ReadsCohortQc, reads_qc_section

# Columns of a meta-analysis table (results/meta/*.tsv) the headlines read.
META_NEEDED = (
    "stratum",
    "feature",
    "k",
    "pooled_log2FoldChange",
    "ci_low",
    "ci_high",
    "q",
    "i2",
    "sign_summary",
)


def _check_meta(meta: pd.DataFrame, what: str) -> None:
    missing = [c for c in META_NEEDED if c not in meta.columns]
    if missing:
        raise InputError(f"{what}: missing column(s) {missing}; rerun the meta-analysis rule.")


def headlines_rst(
    meta_genes: pd.DataFrame,
    meta_scores: pd.DataFrame,
    summaries: ByCohort,
    orientation: ByCohort,
    composition: ByCohort,
    alpha: float,
    panels: Mapping[str, pd.DataFrame] | None = None,
    composition_tables: Mapping[str, pd.DataFrame] | None = None,
    forest_genes: pd.DataFrame | None = None,
    forest_scores: pd.DataFrame | None = None,
    core: Sequence[str] = CORE_SIGNALLING,
    unmatched: Mapping[str, pd.DataFrame] | None = None,
    subjects: Mapping[str, pd.DataFrame] | None = None,
    stabilities: Mapping[str, pd.DataFrame] | None = None,
    reads_qc: Mapping[str, ReadsCohortQc] | None = None,
) -> str:
    """reStructuredText of the headline findings, computed from the result tables.

    ``summaries`` / ``orientation`` / ``composition`` map cohort -> the parsed summary.json,
    orientation.json and composition_sensitivity.json; cohort order follows ``summaries``. Optional
    ``forest_genes`` / ``forest_scores`` (forest tables) give a single-cohort stratum its cohort's own
    estimate, ``panels`` (cohort -> il6_panel.tsv) add IL6 detection, and ``composition_tables``
    (cohort -> composition_sensitivity.tsv) name composition-driven core genes. ``unmatched`` and
    ``subjects`` (cohort -> {cohort}.unmatched.tsv / .subjects.tsv) add the "Samples set aside" section;
    ``stabilities`` (cohort -> panel_stability.tsv) give a single-cohort stratum its robust / borderline
    split in the "Robust and borderline calls" section (pooled strata read the meta table's ``stability``).
    ``reads_qc`` (cohort -> :class:`~il6axis.report.reads.ReadsCohortQc`, cohorts counted from reads)
    adds the "Reads QC" section. Sections use ``-`` underlines, so the text nests under an ``=`` section
    of the front page.
    """
    _check_meta(meta_genes, "panel-gene meta-analysis table")
    _check_meta(meta_scores, "pathway-score meta-analysis table")
    if not summaries:
        raise InputError("headlines_rst: no cohort summaries given (results/de/{cohort}/summary.json).")
    lines: list[str] = []
    lines += cohort_section(summaries, alpha)
    lines += set_aside_section(unmatched, subjects)
    lines += reads_qc_section(reads_qc)
    lines += gene_section(meta_genes, summaries, alpha, forest_genes, core)
    lines += stability_section(meta_genes, summaries, alpha, stabilities)
    lines += score_section(meta_scores, summaries, forest_scores)
    lines += orientation_section(orientation)
    lines += composition_section(composition, composition_tables, core)
    lines += caveats_section(meta_genes, summaries, orientation, panels, core)
    return "\n".join(lines).rstrip() + "\n"
