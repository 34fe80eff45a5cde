"""Text of the report's front page, computed from the result tables: headline findings and provenance.

Nothing here is written by hand about the data: every number, direction, verdict and caveat is read from
the meta-analysis tables and the per-cohort summaries, so the front page cannot drift from the results.
Each cohort is described by its declared contrast (``summary.json`` ``contrast``: e.g. ICU vs non-ICU, or
acute COVID-19 vs healthy donors), never by the internal slot names severe / mild, and pooled results are
reported per contrast kind, as the meta-analysis fits them (``il6axis.analysis.meta.pooling_plan``).
The output is reStructuredText, because Snakemake renders the report's front page (``workflow.rst``)
with docutils; the workflow reads the generated text into ``config["_report"]`` at parse time, and
``workflow.rst`` includes it with Jinja.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from il6axis.analysis.genesets import CORE_SIGNALLING as CORE_GENES
from il6axis.analysis.meta import (
    ANALYSIS_ALL_CONTRASTS,
    ANALYSIS_ALL_CONTRASTS_ALL_SCALES,
    ANALYSIS_SEVERITY_CONTRASTS,
    ANALYSIS_SEVERITY_CONTRASTS_ALL_SCALES,
    NOT_POOLED_SCALE,
    PoolingPlan,
    pooling_plan,
)
from il6axis.cohort.contrast import (
    DEFAULT_KIND,
    KIND_LABEL,
    KINDS,
    SEVERITY_KINDS,
    Contrast,
    contrast_from_summary,
)
from il6axis.de.routing import SCALE_COUNTS
from il6axis.de.stability import BORDERLINE, NEAR_MISS, NOT_ASSESSED, ROBUST
from il6axis.errors import InputError

__all__ = [
    "CORE_GENES",
    "SOFTWARE_PACKAGES",
    "config_yaml",
    "headlines_rst",
    "provenance_rst",
    "rst_escape",
    "software_versions",
    "write_report_summary",
]

log = logging.getLogger(__name__)

SOFTWARE_PACKAGES = (
    "snakemake",
    "pydeseq2",
    "scanpy",
    "anndata",
    "pandas",
    "numpy",
    "scipy",
    "statsmodels",
    "gseapy",
    "seaborn",
    "matplotlib",
)
# Strata in reading order: the primary stratum first, the cross-material pooling last (sensitivity).
STRATUM_ORDER = ("whole_blood", "pbmc", "other", "all")
STRATUM_TITLE = {
    "whole_blood": "Whole blood and leukocytes (primary stratum)",
    "pbmc": "PBMC",
    "other": "Other material",
    "all": "All cohorts pooled across materials (sensitivity analysis)",
}
STRATUM_NAME = {
    "whole_blood": "whole blood and leukocytes",
    "pbmc": "PBMC",
    "other": "other material",
    "all": "pooling across materials",
}
STRATUM_UNIT = {
    "whole_blood": "whole-blood cohorts",
    "pbmc": "PBMC cohorts",
    "other": "other",
    "all": "cohorts",
}
_TISSUE_STRATUM = {
    "whole_blood": "whole_blood",
    "leukocytes": "whole_blood",
    "pbmc": "pbmc",
    "other": "other",
}
TISSUE_LABEL = {"whole_blood": "whole blood", "leukocytes": "leukocytes", "pbmc": "PBMC", "other": "other"}
HIGH_I2 = 0.5  # I2 above this is called substantial heterogeneity in the caveats
MAX_LISTED = 10  # other significant genes / sets listed by name
MAX_SET_ASIDE = 30  # sample names listed per cohort and kind; the rest are counted, and are in the TSVs
COLUMN_WITHOUT_METADATA = "count column without metadata"  # `side` values of {cohort}.unmatched.tsv
ROW_WITHOUT_COLUMN = "metadata row without count column"
SCORE_METHOD = "mean_z"
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


# ---------------------------------------------------------------------------------------------------------
# Formatting helpers
# ---------------------------------------------------------------------------------------------------------


def rst_escape(text: object) -> str:
    """Backslash-escape characters that reStructuredText would read as markup (``*``, `````, ``_``, ``|``)."""
    out = str(text).replace("\\", "\\\\")
    for ch in ("*", "`", "_", "|"):
        out = out.replace(ch, "\\" + ch)
    return out


def _heading(title: str, char: str = "-") -> list[str]:
    return [title, char * len(title), ""]


def _num(x: float, digits: int = 2) -> str:
    return f"{x:+.{digits}f}" if np.isfinite(x) else "NA"


def _p(x: float) -> str:
    """p / q for text: 2 significant digits, scientific below 0.001."""
    if x is None or not np.isfinite(x):
        return "NA"
    if x >= 0.001:
        text = f"{x:.2g}"
        return "1" if text == "1" else text
    return f"{x:.1e}"


def _list_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        for i, cell in enumerate(row):
            lines.append(f"   {'*' if i == 0 else ' '} - {cell}")
    return [*lines, ""]


def _contrast(cohort: str, summary: Mapping[str, Any]) -> Contrast:
    return contrast_from_summary(summary, source=f"summary.json of {cohort}")


def _plan(summaries: Mapping[str, Mapping[str, Any]]) -> PoolingPlan:
    """The meta-analysis' pooling groups, from the summaries (contrast kind and scale per cohort)."""
    return pooling_plan((c, _contrast(c, s).kind, s.get("scale")) for c, s in summaries.items())


def _stratum_cohorts(
    summaries: Mapping[str, Mapping[str, Any]], cohorts: Sequence[str]
) -> dict[str, list[str]]:
    """The ``cohorts`` of one contrast kind's primary fit in each material stratum (and ``all``), in the
    summaries' cohort order."""
    out: dict[str, list[str]] = {s: [] for s in STRATUM_ORDER}
    for cohort, summary in summaries.items():
        if cohort not in set(cohorts):
            continue
        out[_TISSUE_STRATUM.get(str(summary.get("tissue", "other")), "other")].append(cohort)
        out["all"].append(cohort)
    return out


def _kind_parts(
    meta: pd.DataFrame, summaries: Mapping[str, Mapping[str, Any]]
) -> list[tuple[str, pd.DataFrame, dict[str, list[str]]]]:
    """(contrast kind, its rows of the meta table, its cohorts per stratum) for each primary fit, in
    ``KINDS`` order. A meta table without a ``contrast`` column (older runs) is one severe-vs-mild fit."""
    plan = _plan(summaries)
    kinds = (
        meta["contrast"].astype(str) if "contrast" in meta.columns else pd.Series(DEFAULT_KIND, meta.index)
    )
    return [
        (kind, meta[kinds == kind], _stratum_cohorts(summaries, members))
        for kind, members in plan.groups.items()
        if kind in set(kinds)
    ]


def _kind_heading(kind: str, cohorts: Sequence[str], several: bool) -> list[str]:
    """Lead line of one contrast kind's block when several kinds were fitted (nothing otherwise)."""
    if not several:
        return []
    listed = ", ".join(f"``{c}``" for c in cohorts)
    note = "" if kind in SEVERITY_KINDS else "; not a severity contrast"
    pooling = "pooled with each other only" if len(cohorts) > 1 else "not pooled with cohorts of other kinds"
    return [f"*Contrast {KIND_LABEL.get(kind, kind)}* ({listed}; {pooling}{note})", ""]


def _shown_strata(meta: pd.DataFrame, members: Mapping[str, list[str]]) -> list[str]:
    """Strata worth a paragraph: analysed, with cohorts, and ``all`` only when it adds cohorts."""
    analysed = set(meta["stratum"])
    shown = [s for s in STRATUM_ORDER[:-1] if s in analysed and members[s]]
    largest = max((len(members[s]) for s in STRATUM_ORDER[:-1]), default=0)
    if "all" in analysed and len(members["all"]) > largest:
        shown.append("all")
    return shown


def _check_meta(meta: pd.DataFrame, what: str) -> None:
    missing = [c for c in META_NEEDED if c not in meta.columns]
    if missing:
        raise InputError(f"{what}: missing column(s) {missing}; rerun the meta-analysis rule.")


# ---------------------------------------------------------------------------------------------------------
# Headline sections
# ---------------------------------------------------------------------------------------------------------


def _cohort_section(summaries: Mapping[str, Mapping[str, Any]], alpha: float) -> list[str]:
    lines = _heading("Cohorts analysed")
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
    contrasts = {c: _contrast(c, s) for c, s in summaries.items()}
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
    lines += _list_table(header, rows)
    lines += _contrast_notes(summaries, contrasts)
    plan = _plan(summaries)
    off_scale = [c for c, why in plan.not_pooled.items() if why == NOT_POOLED_SCALE]
    linear = [c for c, s in summaries.items() if s.get("scale") not in (None, "", SCALE_COUNTS)]
    if linear:
        names = ", ".join(f"``{c}``" for c in linear)
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


def _contrast_notes(
    summaries: Mapping[str, Mapping[str, Any]], contrasts: Mapping[str, Contrast]
) -> list[str]:
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
        & (forest["stratum"].isin([stratum, "all"]))
    ]
    rows = rows[np.isfinite(rows["effect"].astype(float))]
    if rows.empty:
        return None
    r = rows.iloc[0]
    return f"{_num(r['effect'])} [{_num(r['ci_low'])}, {_num(r['ci_high'])}] {unit}, padj = {_p(r['padj'])}"


def _pooled_line(rec: pd.Series, name: str, unit: str) -> str:
    """One bullet: pooled effect [CI], q, sign consistency, I2; or why there is no pooled estimate."""
    k = int(rec["k"]) if np.isfinite(rec["k"]) else 0
    if k >= 2 and np.isfinite(rec["pooled_log2FoldChange"]):
        i2 = f", I² = {100 * rec['i2']:.0f}%" if np.isfinite(rec["i2"]) else ""
        return (
            f"- **{name}**: {_num(rec['pooled_log2FoldChange'])} "
            f"[{_num(rec['ci_low'])}, {_num(rec['ci_high'])}] {unit}, q = {_p(rec['q'])}; "
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
    listed = ", ".join(f"``{c}``" for c in cohorts)
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


def _gene_section(
    meta: pd.DataFrame,
    summaries: Mapping[str, Mapping[str, Any]],
    alpha: float,
    forest: pd.DataFrame | None,
    core: Sequence[str],
) -> list[str]:
    lines = _heading("IL-6 axis genes across cohorts")
    parts = _kind_parts(meta, summaries)
    if not parts:
        return [
            *lines,
            "No two cohorts could be pooled (see the cohort table).",
            "",
            *_not_pooled_lines(summaries),
        ]
    what = KIND_LABEL[parts[0][0]] if len(parts) == 1 else "case vs reference of each cohort's contrast"
    lines += [
        f"Random-effects pooled MLE log2 fold change ({what}) with its 95% t interval, BH q across "
        "the panel within the stratum, and the number of cohorts per direction; a stratum with one cohort "
        "shows that cohort's estimate with its 95% Wald interval and padj.",
        "",
    ]
    for kind, part_k, members in parts:
        lines += _kind_heading(kind, members["all"], len(parts) > 1)
        for stratum in _shown_strata(part_k, members):
            part = part_k[part_k["stratum"] == stratum].set_index("feature")
            cohorts = members[stratum]
            genes = [g for g in core if g in part.index]
            lines += _stratum_block(part, genes, {g: g for g in genes}, stratum, cohorts, "log2FC", forest)
            if len(cohorts) >= 2:
                others = part[(~part.index.isin(core)) & (part["q"] < alpha)].sort_values("q")
                if len(others):
                    shown = [
                        f"{g} ({_num(r['pooled_log2FoldChange'])})"
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
    return [*lines, *_not_pooled_lines(summaries)]


def _not_pooled_lines(summaries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Cohorts in no primary fit (other effect scale, contrast kind ``other``), with the reason."""
    plan = _plan(summaries)
    if not plan.not_pooled:
        return []
    listed = "; ".join(f"``{c}`` ({rst_escape(why)})" for c, why in plan.not_pooled.items())
    return [
        f"Not in any pooled estimate above, shown in the forest plots: {listed}.",
        "",
    ]


def _score_section(
    meta: pd.DataFrame,
    summaries: Mapping[str, Mapping[str, Any]],
    forest: pd.DataFrame | None,
    method: str = SCORE_METHOD,
) -> list[str]:
    suffix = f" ({method})"
    part_all = meta[meta["feature"].astype(str).str.endswith(suffix)]
    lines = _heading("Pathway scores")
    if part_all.empty:
        return [*lines, f"No pathway score of method ``{method}`` was meta-analysed.", ""]
    parts = _kind_parts(part_all, summaries)
    lines += [
        f"Per-sample scores (``{method}``: mean z of severity-blind VST expression over the set's genes), "
        "case minus reference group from ``score ~ covariates + severity``, pooled like the genes (score "
        "units).",
        "",
    ]
    for kind, part_k, members in parts:
        lines += _kind_heading(kind, members["all"], len(parts) > 1)
        for stratum in _shown_strata(part_k, members):
            part = part_k[part_k["stratum"] == stratum]
            order = part.sort_values(["q", "feature"], na_position="last")["feature"].tolist()
            names = {f: rst_escape(str(f)[: -len(suffix)]) for f in order}
            block = _stratum_block(
                part.set_index("feature"), order, names, stratum, members[stratum], "score units", forest
            )
            lines += [*block, ""] if block[-1] else block
    return lines


def _orientation_section(orientation: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = _heading("Orientation checks")
    if not orientation:
        return [*lines, "No orientation check was run.", ""]
    warnings = []
    for cohort, v in orientation.items():
        status = str(v.get("status", "unknown"))
        tissue = TISSUE_LABEL.get(str(v.get("tissue", "")), rst_escape(v.get("tissue", "")))
        lines.append(
            f"- ``{cohort}`` ({tissue}): **{status}**: {v.get('n_agree', 'NA')} of {v.get('n_tested', 'NA')} "
            f"tested markers in the expected direction ({v.get('n_sig_agree', 'NA')} with padj < "
            f"{float(v.get('alpha', 0.05)):g}), {v.get('n_disagree', 'NA')} against "
            f"({v.get('n_sig_disagree', 'NA')} significant)"
        )
        if status != "consistent":
            warnings.append(f"``{cohort}`` is **{status}**: {rst_escape(v.get('message', ''))}")
    lines.append("")
    for text in warnings:
        lines += [".. warning::", "", f"   {text}", ""]
    return lines


def _composition_section(
    composition: Mapping[str, Mapping[str, Any]],
    composition_tables: Mapping[str, pd.DataFrame] | None,
    core: Sequence[str],
) -> list[str]:
    lines = _heading("Composition sensitivity")
    if not composition:
        return [*lines, "No composition sensitivity analysis was run.", ""]
    for cohort, c in composition.items():
        if c.get("adjusted"):
            n = c.get("n_composition_driven", "NA")
            text = (
                f"- ``{cohort}``: refitted with the neutrophil score as covariate; {n} gene"
                f"{'' if n == 1 else 's'} significant in the primary fit lose significance and at least half "
                f"of the log2FC (composition-driven)"
            )
            table = (composition_tables or {}).get(cohort)
            if table is not None and {"gene", "label"} <= set(table.columns):
                driven = table.loc[
                    (table["label"] == "composition-driven") & table["gene"].isin(core), "gene"
                ]
                if len(driven):
                    text += f", among them the core genes {', '.join(sorted(driven))}"
            lines.append(text)
        else:
            lines.append(
                f"- ``{cohort}``: not adjusted ({rst_escape(c.get('reason', 'no reason recorded'))})"
            )
    return [*lines, ""]


def _names(items: Sequence[object], limit: int = MAX_SET_ASIDE) -> str:
    """``a``, ``b`` ... and N more: sample names as literals, never cut silently."""
    items = [str(x) for x in items]
    text = ", ".join(f"``{x}``" for x in items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _set_aside_section(
    unmatched: Mapping[str, pd.DataFrame] | None, subjects: Mapping[str, pd.DataFrame] | None
) -> list[str]:
    """Samples left out by sample matching and subjects decided by tie-break or conflict, per cohort."""
    if unmatched is None and subjects is None:
        return []
    lines = _heading("Samples set aside")
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
                    bullets.append(f"- ``{cohort}``: {len(names)} {what}: {_names(names)}")
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
        lines.append(f"- Nothing set aside in {', '.join(f'``{c}``' for c in quiet)}.")
    return [*lines, ""]


def _il6_caveat(
    meta_genes: pd.DataFrame,
    n_pooled: int,
    panels: Mapping[str, pd.DataFrame] | None,
    contrasts: Mapping[str, Contrast] | None = None,
) -> str:
    """How often IL6 itself could be tested, with detection where the panel tables say why not."""
    il6 = meta_genes[(meta_genes["feature"] == "IL6") & (meta_genes["stratum"] == "all")]
    ks = [int(k) for k in il6["k"] if np.isfinite(k)]
    k = sum(ks) if ks else None  # one 'all' row per contrast kind: the kinds' cohorts do not overlap
    details = []
    for cohort, table in (panels or {}).items():
        row = table[table["symbol"] == "IL6"]
        if row.empty:
            continue
        r = row.iloc[0]
        present = str(r.get("present", True)).lower() in ("true", "1")
        tested = str(r.get("tested", False)).lower() in ("true", "1")
        if not present:
            details.append(f"absent from the ``{cohort}`` matrix")
        elif not tested:
            details.append(
                f"present but not tested in ``{cohort}`` ({rst_escape(r.get('not_tested_reason', ''))})"
            )
        elif "detection_severe" in r and np.isfinite(r["detection_severe"]):
            case = rst_escape((contrasts or {}).get(cohort, Contrast()).case)
            details.append(
                f"detected in {100 * r['detection_severe']:.0f}% of {case} samples of ``{cohort}``"
            )
    head = (
        f"IL6 mRNA entered the test in {k} of {n_pooled} cohorts"
        if k is not None
        else "IL6 was not meta-analysed"
    )
    tail = f" ({'; '.join(details)})" if details else ""
    return (
        f"- {head}{tail}. Blood cells make little IL6 mRNA: the plasma IL-6 rise in severe disease comes "
        "from tissue sources, so the receptor, kinase, STAT3 and SOCS3 rows are the read-out, not IL6 itself."
    )


def _caveats_section(
    meta_genes: pd.DataFrame,
    summaries: Mapping[str, Mapping[str, Any]],
    orientation: Mapping[str, Mapping[str, Any]],
    panels: Mapping[str, pd.DataFrame] | None,
    core: Sequence[str],
) -> list[str]:
    lines = _heading("Caveats computed from these results")
    parts = _kind_parts(meta_genes, summaries)
    several = len(parts) > 1
    for kind, part_k, members in parts:
        analysed = set(part_k["stratum"])
        prefix = f"{KIND_LABEL.get(kind, kind)}, " if several else ""
        for stratum in STRATUM_ORDER:
            cohorts = members[stratum]
            if stratum not in analysed or (
                stratum == "all" and stratum not in _shown_strata(part_k, members)
            ):
                continue
            name = prefix + STRATUM_NAME[stratum]
            if stratum != "all" and len(cohorts) == 1:
                lines.append(
                    f"- No pooled estimate for {name}: one cohort (``{cohorts[0]}``); its rows are that "
                    "cohort's own estimates."
                )
            elif len(cohorts) == 2:
                lines.append(
                    f"- {name[0].upper() + name[1:]}: only 2 cohorts, so the 1-df t interval is very wide "
                    "and tau² is barely estimable."
                )
        if "all" in analysed and sum(1 for s in STRATUM_ORDER[:-1] if members[s]) > 1:
            mixed = " and ".join(STRATUM_NAME[s] for s in STRATUM_ORDER[:-1] if members[s])
            sentence = f"{prefix}pooling across materials mixes {mixed}"
            lines.append(
                f"- {sentence[0].upper() + sentence[1:]}, whose cell composition differs: a sensitivity "
                "analysis only."
            )
    n_pooled = sum(len(members["all"]) for _, _, members in parts)
    if len(summaries) < 2:
        lines.append("- Only one cohort was analysed: no estimate is pooled anywhere (k < 2).")
    elif all(len(members["all"]) < 2 for _, _, members in parts):
        lines.append(
            "- No two cohorts share a contrast kind (and effect scale): no estimate is pooled in the "
            "primary analysis (k < 2); the cross-contrast fits are in ``results/meta/*_sensitivity.tsv``."
        )
    if several:
        lines.append(
            "- Cohorts of different contrast kinds answer different questions and were not pooled together; "
            "pooled estimates of one kind do not carry over to another."
        )
    heterogeneous = meta_genes[
        meta_genes["feature"].isin(core) & (meta_genes["k"] >= 2) & (meta_genes["i2"] > HIGH_I2)
    ]
    if len(heterogeneous):
        kinds = heterogeneous.get("contrast", pd.Series(DEFAULT_KIND, index=heterogeneous.index))
        items = [
            f"{r.feature} ({f'{KIND_LABEL.get(k, k)}, ' if several else ''}{r.stratum}, "
            f"I² = {100 * r.i2:.0f}%)"
            for r, k in zip(heterogeneous.itertuples(), kinds, strict=True)
        ]
        lines.append(
            f"- Substantial heterogeneity (I² > {100 * HIGH_I2:.0f}%): {rst_escape(', '.join(items))}."
        )
    if "note" in meta_genes.columns:
        mixed = meta_genes["note"].fillna("").str.contains("mixed scales")
        if mixed.any():
            lines.append(f"- {int(mixed.sum())} pooled rows mix effect scales (sensitivity analysis only).")
    if "IL6" in set(meta_genes["feature"]):
        contrasts = {c: _contrast(c, s) for c, s in summaries.items()}
        lines.append(_il6_caveat(meta_genes, n_pooled, panels, contrasts))
    flagged = [c for c, v in orientation.items() if v.get("status") != "consistent"]
    if flagged:
        lines.append(
            f"- Orientation not confirmed for {', '.join(f'``{c}``' for c in flagged)}: read their signs "
            "with care (see the warning above)."
        )
    return [*lines, ""]


# ---------------------------------------------------------------------------------------------------------
# Robust and borderline calls
# ---------------------------------------------------------------------------------------------------------

MAX_STABILITY_LISTED = 25  # genes named per class and stratum; the rest are counted (and in the tables)


def _stability_section(
    meta: pd.DataFrame,
    summaries: Mapping[str, Mapping[str, Any]],
    alpha: float,
    stabilities: Mapping[str, pd.DataFrame] | None,
) -> list[str]:
    """The panel genes' calls split into robust and borderline (and near misses of a lone cohort), per
    contrast kind and stratum as in the gene section, by the pre-specified rule: leave-one-cohort-out
    for pooled calls (``meta`` column ``stability``, ``il6axis.analysis.meta.cohort_stability``),
    leave-one-sample-out
    for a stratum with one cohort (``stabilities``: cohort -> panel_stability.tsv,
    ``il6axis.de.stability``)."""
    lines = _heading("Robust and borderline calls")
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
    parts = _kind_parts(meta, summaries)
    several = len(parts) > 1
    for kind, part_k, members in parts:
        lines += _kind_heading(kind, members["all"], several)
        for stratum in _shown_strata(part_k, members):
            cohorts = members[stratum]
            listed = ", ".join(f"``{c}``" for c in cohorts)
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
        f"{rst_escape(r.feature)} ({_num(r.pooled_log2FoldChange)}, q = {_p(r.q)})"
        for r in called.itertuples()
        if r.stability == ROBUST
    ]
    borderline = [
        f"{rst_escape(r.feature)} ({_num(r.pooled_log2FoldChange)}, q = {_p(r.q)}; "
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
            f"{rst_escape(r.gene)} ({_num(r.log2FoldChange)}, padj = {_p(r.padj)}"
            + (f"; {rst_escape(r.note)})" if with_note and isinstance(r.note, str) and r.note else ")")
            for r in rows.itertuples()
        ]

    return [
        _class_line("Robust", named(ROBUST, False)),
        _class_line("Borderline", named(BORDERLINE, True), "; "),
        _class_line("Near misses (not called)", named(NEAR_MISS, False)),
    ]


def headlines_rst(
    meta_genes: pd.DataFrame,
    meta_scores: pd.DataFrame,
    summaries: Mapping[str, Mapping[str, Any]],
    orientation: Mapping[str, Mapping[str, Any]],
    composition: Mapping[str, Mapping[str, Any]],
    alpha: float,
    panels: Mapping[str, pd.DataFrame] | None = None,
    composition_tables: Mapping[str, pd.DataFrame] | None = None,
    forest_genes: pd.DataFrame | None = None,
    forest_scores: pd.DataFrame | None = None,
    core: Sequence[str] = CORE_GENES,
    unmatched: Mapping[str, pd.DataFrame] | None = None,
    subjects: Mapping[str, pd.DataFrame] | None = None,
    stabilities: Mapping[str, pd.DataFrame] | None = None,
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
    Sections use ``-`` underlines, so the text nests under an ``=`` section of the front page.
    """
    _check_meta(meta_genes, "panel-gene meta-analysis table")
    _check_meta(meta_scores, "pathway-score meta-analysis table")
    if not summaries:
        raise InputError("headlines_rst: no cohort summaries given (results/de/{cohort}/summary.json).")
    lines: list[str] = []
    lines += _cohort_section(summaries, alpha)
    lines += _set_aside_section(unmatched, subjects)
    lines += _gene_section(meta_genes, summaries, alpha, forest_genes, core)
    lines += _stability_section(meta_genes, summaries, alpha, stabilities)
    lines += _score_section(meta_scores, summaries, forest_scores)
    lines += _orientation_section(orientation)
    lines += _composition_section(composition, composition_tables, core)
    lines += _caveats_section(meta_genes, summaries, orientation, panels, core)
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------------------


def software_versions(packages: Sequence[str] = SOFTWARE_PACKAGES) -> pd.DataFrame:
    """Installed version of Python and of each package (``not installed`` when absent)."""
    rows = [{"package": "python", "version": platform.python_version()}]
    for name in packages:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = "not installed"
        rows.append({"package": name, "version": version})
    return pd.DataFrame(rows, columns=["package", "version"])


def _plain(value: Any) -> Any:
    """Plain dicts / lists / scalars (Snakemake may hand over its own mapping types)."""
    return json.loads(json.dumps(value, default=str))


def config_yaml(config: Mapping[str, Any]) -> str:
    """YAML of the configuration the workflow ran with (without the report text attached at parse time)."""
    plain = {k: v for k, v in _plain(dict(config)).items() if k != "_report"}
    return yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, default_flow_style=False)


def provenance_rst(versions: pd.DataFrame, config_text: str, manifest: pd.DataFrame | None = None) -> str:
    """reStructuredText: software versions, downloaded files with URL and sha256, the configuration used."""
    lines = _heading("Software")
    lines += _list_table(
        ["package", "version"], [[rst_escape(r.package), f"``{r.version}``"] for r in versions.itertuples()]
    )
    lines += _heading("Downloaded files")
    if manifest is None or manifest.empty:
        lines += ["No file was downloaded (local inputs only, e.g. the demo cohort).", ""]
    else:
        missing = [c for c in ("file", "url", "sha256") if c not in manifest.columns]
        if missing:
            raise InputError(f"download manifest: missing column(s) {missing}; rerun rule download_manifest.")
        for r in manifest.itertuples():
            lines += [f"- ``{r.file}``", "", f"  from ``{r.url}``", "", f"  sha256 ``{r.sha256}``", ""]
    lines += _heading("Configuration used")
    lines += ["::", ""]
    lines += [f"   {line}" if line else "" for line in config_text.rstrip().splitlines()]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------------------
# File wrapper used by the rule
# ---------------------------------------------------------------------------------------------------------


def _read_json(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); rerun the rule that writes it.") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object.")
    return data


def _by_cohort(cohorts: Sequence[str], paths: Sequence[str | Path], what: str) -> dict[str, dict[str, Any]]:
    if len(paths) != len(cohorts):
        raise InputError(f"{len(paths)} {what} files for {len(cohorts)} cohorts; give one per cohort.")
    return {c: _read_json(p) for c, p in zip(cohorts, paths, strict=True)}


def write_report_summary(
    cohorts: Sequence[str],
    meta_genes_path: str | Path,
    meta_scores_path: str | Path,
    summary_paths: Sequence[str | Path],
    orientation_paths: Sequence[str | Path],
    composition_paths: Sequence[str | Path],
    manifest_paths: Sequence[str | Path],
    alpha: float,
    config: Mapping[str, Any],
    headlines_path: str | Path,
    provenance_path: str | Path,
    versions_path: str | Path,
    config_path: str | Path,
    panel_paths: Sequence[str | Path] = (),
    composition_table_paths: Sequence[str | Path] = (),
    forest_genes_path: str | Path | None = None,
    forest_scores_path: str | Path | None = None,
    unmatched_paths: Sequence[str | Path] = (),
    subjects_paths: Sequence[str | Path] = (),
    stability_paths: Sequence[str | Path] = (),
) -> str:
    """Read the result files, write headlines.rst, provenance.rst, software_versions.tsv, config_used.yaml.

    The optional inputs (panel tables, composition tables, forest tables, the samples set aside and the
    subjects decided per cohort) only add detail to the text.
    """
    tsv = {"sep": "\t"}
    text_tsv = {"sep": "\t", "dtype": str, "keep_default_na": False}
    unmatched = (
        {c: pd.read_csv(p, **text_tsv) for c, p in zip(cohorts, unmatched_paths, strict=True)}
        if unmatched_paths
        else None
    )
    subjects = (
        {c: pd.read_csv(p, **text_tsv) for c, p in zip(cohorts, subjects_paths, strict=True)}
        if subjects_paths
        else None
    )
    panels = (
        {c: pd.read_csv(p, **tsv) for c, p in zip(cohorts, panel_paths, strict=True)} if panel_paths else None
    )
    comp_tables = (
        {c: pd.read_csv(p, **tsv) for c, p in zip(cohorts, composition_table_paths, strict=True)}
        if composition_table_paths
        else None
    )
    stabilities = (
        {c: pd.read_csv(p, **tsv) for c, p in zip(cohorts, stability_paths, strict=True)}
        if stability_paths
        else None
    )
    text = headlines_rst(
        pd.read_csv(meta_genes_path, **tsv),
        pd.read_csv(meta_scores_path, **tsv),
        _by_cohort(cohorts, summary_paths, "summary.json"),
        _by_cohort(cohorts, orientation_paths, "orientation.json"),
        _by_cohort(cohorts, composition_paths, "composition_sensitivity.json"),
        alpha,
        panels=panels,
        composition_tables=comp_tables,
        forest_genes=pd.read_csv(forest_genes_path, **tsv) if forest_genes_path else None,
        forest_scores=pd.read_csv(forest_scores_path, **tsv) if forest_scores_path else None,
        unmatched=unmatched,
        subjects=subjects,
        stabilities=stabilities,
    )
    versions = software_versions()
    config_text = config_yaml(config)
    manifest = pd.concat([pd.read_csv(p, **tsv) for p in manifest_paths]) if manifest_paths else None
    for path in (headlines_path, provenance_path, versions_path, config_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(headlines_path).write_text(text, encoding="utf-8")
    Path(provenance_path).write_text(provenance_rst(versions, config_text, manifest), encoding="utf-8")
    versions.to_csv(versions_path, sep="\t", index=False)
    Path(config_path).write_text(config_text, encoding="utf-8")
    log.info("report text for %d cohorts written to %s and %s", len(cohorts), headlines_path, provenance_path)
    return text
