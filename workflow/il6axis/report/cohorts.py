"""Front-page sections about the cohorts themselves: what each compares, and which samples were set aside.

- "Cohorts analysed": one table row per cohort (material, declared contrast and its kind, design, genes
  tested and called), a warning for every contrast that is not a severity contrast, and a note on cohorts
  analysed with the linear model on another effect scale.
- "Samples set aside": count columns and metadata rows that did not match, and subjects whose kept
  sample was decided by the tie-break or whose labels conflict.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from il6axis.acquire.sample_matching import COLUMN_WITHOUT_METADATA, ROW_WITHOUT_COLUMN
from il6axis.analysis.meta.plan import NOT_POOLED_SCALE
from il6axis.analysis.meta.sensitivity import (
    ANALYSIS_ALL_CONTRASTS,
    ANALYSIS_ALL_CONTRASTS_ALL_SCALES,
    ANALYSIS_SEVERITY_CONTRASTS,
    ANALYSIS_SEVERITY_CONTRASTS_ALL_SCALES,
)
from il6axis.cohort.contrast import KIND_LABEL, KINDS, Contrast
from il6axis.de.contract import SCALE_COUNTS
from il6axis.report.groups import ByCohort, contrast_of, plan_of
from il6axis.report.rst import cohort_literals, heading, list_table, literal_names, rst_escape
from il6axis.vocabulary import TISSUE_LABEL


def cohort_section(summaries: ByCohort, alpha: float) -> list[str]:
    """Section "Cohorts analysed": one row per cohort, contrast warnings, the cohorts on another scale."""
    lines = heading("Cohorts analysed")
    n = len(summaries)
    total = sum(sum(int(v) for v in s.get("n_per_group", {}).values()) for s in summaries.values())
    lines += [
        f"{n} cohort{'s' if n != 1 else ''} entered the analysis ({total} samples). Each compares the two "
        "groups it declares (config ``contrast``): the first is the case group, the second the reference "
        f"level of its model, so a positive effect is higher in the case group; up / down count the genes "
        f"with padj < {alpha:g}.",
        "",
    ]
    rows = []
    contrasts = {c: contrast_of(c, s) for c, s in summaries.items()}
    for cohort, s in summaries.items():
        groups = s.get("n_per_group", {})
        tissue = str(s.get("tissue", ""))
        calls = f"{s.get('n_up', 'NA')} / {s.get('n_down', 'NA')}"
        contrast = contrasts[cohort]
        rows.append(
            [
                f"``{cohort}``",
                TISSUE_LABEL.get(tissue, rst_escape(tissue)),
                rst_escape(contrast.describe(groups)),
                rst_escape(contrast.kind_label + ("" if contrast.is_severity else " (not severity)")),
                f"``{s.get('design', 'NA')}``",
                f"{s.get('n_tested', 'NA')} ({calls})",
            ]
        )
    header = [
        "cohort",
        "material",
        "compares (declared contrast)",
        "kind",
        "design",
        "genes tested (up / down)",
    ]
    lines += list_table(header, rows)
    lines += _contrast_notes(summaries, contrasts)
    plan = plan_of(summaries)
    off_scale = [c for c, why in plan.not_pooled.items() if why == NOT_POOLED_SCALE]
    linear = [c for c, s in summaries.items() if s.get("scale") not in (None, "", SCALE_COUNTS)]
    if linear:
        names = cohort_literals(linear)
        if off_scale:
            pooling = (
                "the forest plots show it (hollow marker) but the pooled estimates leave it out; the pooled "
                'analysis with it is in ``results/meta/*_sensitivity.tsv`` (analysis "all scales pooled").'
            )
        else:  # no count cohort of the same contrast kind: pooled only with cohorts on its own scale
            pooling = (
                "no cohort of its contrast kind is on the count scale, so it is pooled only with cohorts "
                "of its kind on its own scale."
            )
        lines += [
            f"{names}: only normalised values are published, and rounding does not make them counts, so "
            "severity was tested with a linear model on log2 values with moderated variances "
            "(limma-trend's method), not the NB model: log2(value + 1) of linear values, or values "
            "published as log2 taken as they are (no second log). Its effects are on a different scale: "
            f"{pooling}",
            "",
        ]
    return lines


def _contrast_notes(summaries: ByCohort, contrasts: Mapping[str, Contrast]) -> list[str]:
    """A warning for every cohort whose declared contrast is not a severity contrast, a note for a
    critical-vs-severe one, and how the meta-analysis treats several contrast kinds."""
    lines: list[str] = []
    kinds = {c.kind for c in contrasts.values()}
    for cohort, contrast in contrasts.items():
        n = summaries[cohort].get("n_per_group", {})
        what = f"``{cohort}`` compares {rst_escape(contrast.with_n(n))}"
        # The cross-contrast run that holds it: the scale rule stays in the plain runs
        # (il6axis.analysis.meta).
        on_counts = summaries[cohort].get("scale") in (None, "", SCALE_COUNTS)
        across = ANALYSIS_ALL_CONTRASTS if on_counts else ANALYSIS_ALL_CONTRASTS_ALL_SCALES
        severity_run = ANALYSIS_SEVERITY_CONTRASTS if on_counts else ANALYSIS_SEVERITY_CONTRASTS_ALL_SCALES
        if contrast.kind == "other":
            lines += [
                ".. warning::",
                "",
                f"   {what}: a declared contrast of kind *other*, **not a severity contrast**. Its effects "
                "answer another question than severe vs mild disease; it is never pooled with another "
                "cohort in the primary meta-analysis (shown in the forest plots as not pooled), only in the "
                f'sensitivity run "{across}".',
                "",
            ]
        elif not contrast.is_severity:
            lines += [
                ".. warning::",
                "",
                f"   {what} (*{contrast.kind_label}*): **not a severity contrast**. Its reference group "
                f"({rst_escape(contrast.reference)}) is not mild disease, so its effects mix infection "
                "with severity. The meta-analysis pools it only with other cohorts of this kind, and with "
                f'severity contrasts only in the labelled sensitivity run "{across}".',
                "",
            ]
        elif contrast.kind == "critical_vs_severe":
            lines += [
                f"{what} (*{contrast.kind_label}*): its reference group is already severely ill, so the "
                "effect is that of critical over severe disease, expected to be smaller than severe vs "
                "mild. It is pooled only with other critical-vs-severe cohorts; with severe-vs-mild "
                f'cohorts only in the sensitivity run "{severity_run}".',
                "",
            ]
    if len(kinds) > 1:
        listed = ", ".join(KIND_LABEL[k] for k in KINDS if k in kinds)
        lines += [
            f"Contrast kinds declared: {listed}. Cohorts are pooled only with cohorts of the same kind; "
            "every cross-contrast fit is a labelled sensitivity analysis in "
            "``results/meta/*_sensitivity.tsv``.",
            "",
        ]
    return lines


def set_aside_section(
    unmatched: Mapping[str, pd.DataFrame] | None, subjects: Mapping[str, pd.DataFrame] | None
) -> list[str]:
    """Samples left out by sample matching and subjects decided by tie-break or conflict, per cohort."""
    if unmatched is None and subjects is None:
        return []
    lines = heading("Samples set aside")
    lines += [
        "Count columns without a metadata row and metadata rows without a count column are left out of "
        "every analysis (``results/cohorts/<cohort>.unmatched.tsv``). Subjects with several eligible "
        "samples whose kept sample was decided by the tie-break, or whose severity labels disagree, are "
        "in ``results/cohorts/<cohort>.subjects.tsv``; ``exclusion_reason`` in the sample table says why "
        "each sample left.",
        "",
    ]
    cohorts = list(dict.fromkeys([*(unmatched or {}), *(subjects or {})]))
    quiet = []
    for cohort in cohorts:
        bullets = []
        table = (unmatched or {}).get(cohort)
        if table is not None and len(table):
            for side, what in (
                (COLUMN_WITHOUT_METADATA, "count column(s) without a metadata row"),
                (ROW_WITHOUT_COLUMN, "metadata row(s) without a count column"),
            ):
                names = table.loc[table["side"] == side, "sample"].tolist()
                if names:
                    bullets.append(f"- ``{cohort}``: {len(names)} {what}: {literal_names(names)}")
        decided = (subjects or {}).get(cohort)
        if decided is not None and len(decided):
            conflict = decided["conflict"].astype(str).str.lower().isin(["true", "1"])
            for r in decided[conflict].itertuples():
                bullets.append(f"- ``{cohort}``: subject ``{r.subject}``: {rst_escape(r.decision)}")
            ties = decided[~conflict]
            if len(ties):
                kept = [f"{s} (kept {k})" for s, k in zip(ties["subject"], ties["kept_sample"], strict=True)]
                bullets.append(
                    f"- ``{cohort}``: {len(ties)} subject(s) with a tie at the best order value, broken by "
                    f"``one_per_patient.tie_break``: {rst_escape(', '.join(kept))}"
                )
        if bullets:
            lines += bullets
        else:
            quiet.append(cohort)
    if quiet:
        lines.append(f"- Nothing set aside in {cohort_literals(quiet)}.")
    return [*lines, ""]
