"""Text of the report's front page, computed from the result tables: headline findings and provenance.

Nothing here is written by hand about the data: every number, direction, verdict and caveat is read from
the meta-analysis tables and the per-cohort summaries, so the front page cannot drift from the results.
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

from il6axis.errors import InputError
from il6axis.genesets import CORE_SIGNALLING as CORE_GENES
from il6axis.meta import off_primary_scale

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

log = logging.getLogger("il6axis.report_text")

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


def _off_scale(summaries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return off_primary_scale((c, s.get("scale")) for c, s in summaries.items())


def _stratum_cohorts(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """Pooled cohorts in each material stratum (and ``all``), in the given cohort order.

    Cohorts on another effect scale are left out as in the meta-analysis (``meta.off_primary_scale``).
    """
    out: dict[str, list[str]] = {s: [] for s in STRATUM_ORDER}
    not_pooled = set(_off_scale(summaries))
    for cohort, summary in summaries.items():
        if cohort in not_pooled:
            continue
        out[_TISSUE_STRATUM.get(str(summary.get("tissue", "other")), "other")].append(cohort)
        out["all"].append(cohort)
    return out


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
        f"{n} cohort{'s' if n != 1 else ''} entered the severe-vs-mild analysis ({total} samples); up / down "
        f"count the genes with padj < {alpha:g}.",
        "",
    ]
    rows = []
    for cohort, s in summaries.items():
        groups = s.get("n_per_group", {})
        tissue = str(s.get("tissue", ""))
        calls = f"{s.get('n_up', 'NA')} / {s.get('n_down', 'NA')}"
        rows.append(
            [
                f"``{cohort}``",
                TISSUE_LABEL.get(tissue, rst_escape(tissue)),
                str(groups.get("severe", "NA")),
                str(groups.get("mild", "NA")),
                f"``{s.get('design', 'NA')}``",
                f"{s.get('n_tested', 'NA')} ({calls})",
            ]
        )
    header = ["cohort", "material", "severe", "mild", "design", "genes tested (up / down)"]
    lines += _list_table(header, rows)
    off_scale = _off_scale(summaries)
    if off_scale:
        names = ", ".join(f"``{c}``" for c in off_scale)
        lines += [
            f"{names}: only normalised values are published, and rounding does not make them counts, so "
            "severity was tested with a linear model on log2 values with moderated variances "
            "(limma-trend's method), not the NB model: log2(value + 1) of linear values, or values "
            "published as log2 taken as they are (no second log). Its effects are on a different scale: "
            "the forest plots show it (hollow marker) but the pooled estimates leave it out; the pooled "
            'analysis with it is in ``results/meta/*_sensitivity.tsv`` (analysis "all scales pooled").',
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
    members: Mapping[str, list[str]],
    alpha: float,
    forest: pd.DataFrame | None,
    core: Sequence[str],
) -> list[str]:
    lines = _heading("IL-6 axis genes across cohorts")
    lines += [
        "Random-effects pooled MLE log2 fold change (severe vs mild) with its 95% t interval, BH q across "
        "the panel within the stratum, and the number of cohorts per direction; a stratum with one cohort "
        "shows that cohort's estimate with its 95% Wald interval and padj.",
        "",
    ]
    for stratum in _shown_strata(meta, members):
        part = meta[meta["stratum"] == stratum].set_index("feature")
        cohorts = members[stratum]
        genes = [g for g in core if g in part.index]
        lines += _stratum_block(part, genes, {g: g for g in genes}, stratum, cohorts, "log2FC", forest)
        if len(cohorts) >= 2:
            others = part[(~part.index.isin(core)) & (part["q"] < alpha)].sort_values("q")
            if len(others):
                shown = [
                    f"{g} ({_num(r['pooled_log2FoldChange'])})" for g, r in others.head(MAX_LISTED).iterrows()
                ]
                more = f" and {len(others) - MAX_LISTED} more" if len(others) > MAX_LISTED else ""
                lines.append(
                    f"- Other panel genes with q < {alpha:g} (pooled log2FC): "
                    f"{rst_escape(', '.join(shown))}{more}"
                )
            elif (part["k"] >= 2).any():
                lines.append(f"- No other panel gene reaches q < {alpha:g} in this stratum.")
            lines.append("")
    return lines


def _score_section(
    meta: pd.DataFrame,
    members: Mapping[str, list[str]],
    forest: pd.DataFrame | None,
    method: str = SCORE_METHOD,
) -> list[str]:
    suffix = f" ({method})"
    part_all = meta[meta["feature"].astype(str).str.endswith(suffix)]
    lines = _heading("Pathway scores")
    if part_all.empty:
        return [*lines, f"No pathway score of method ``{method}`` was meta-analysed.", ""]
    lines += [
        f"Per-sample scores (``{method}``: mean z of severity-blind VST expression over the set's genes), "
        "severe minus mild from ``score ~ covariates + severity``, pooled like the genes (score units).",
        "",
    ]
    for stratum in _shown_strata(meta, members):
        part = part_all[part_all["stratum"] == stratum]
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
    meta_genes: pd.DataFrame, members: Mapping[str, list[str]], panels: Mapping[str, pd.DataFrame] | None
) -> str:
    """How often IL6 itself could be tested, with detection where the panel tables say why not."""
    n = len(members["all"])
    il6 = meta_genes[(meta_genes["feature"] == "IL6") & (meta_genes["stratum"] == "all")]
    k = int(il6["k"].iloc[0]) if len(il6) and np.isfinite(il6["k"].iloc[0]) else None
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
            details.append(
                f"detected in {100 * r['detection_severe']:.0f}% of severe samples of ``{cohort}``"
            )
    head = (
        f"IL6 mRNA entered the test in {k} of {n} cohorts" if k is not None else "IL6 was not meta-analysed"
    )
    tail = f" ({'; '.join(details)})" if details else ""
    return (
        f"- {head}{tail}. Blood cells make little IL6 mRNA: the plasma IL-6 rise in severe disease comes "
        "from tissue sources, so the receptor, kinase, STAT3 and SOCS3 rows are the read-out, not IL6 itself."
    )


def _caveats_section(
    meta_genes: pd.DataFrame,
    members: Mapping[str, list[str]],
    orientation: Mapping[str, Mapping[str, Any]],
    panels: Mapping[str, pd.DataFrame] | None,
    core: Sequence[str],
) -> list[str]:
    lines = _heading("Caveats computed from these results")
    analysed = set(meta_genes["stratum"])
    for stratum in STRATUM_ORDER:
        cohorts = members[stratum]
        if stratum not in analysed or (
            stratum == "all" and stratum not in _shown_strata(meta_genes, members)
        ):
            continue
        name = STRATUM_NAME[stratum]
        if stratum != "all" and len(cohorts) == 1:
            lines.append(
                f"- No pooled estimate for {name}: one cohort (``{cohorts[0]}``); its rows are that "
                "cohort's own estimates."
            )
        elif len(cohorts) == 2:
            lines.append(
                f"- {name[0].upper() + name[1:]}: only 2 cohorts, so the 1-df t interval is very wide and "
                "tau² is barely estimable."
            )
    if len(members["all"]) < 2:
        lines.append("- Only one cohort was analysed: no estimate is pooled anywhere (k < 2).")
    elif "all" in analysed and sum(1 for s in STRATUM_ORDER[:-1] if members[s]) > 1:
        mixed = " and ".join(STRATUM_NAME[s] for s in STRATUM_ORDER[:-1] if members[s])
        lines.append(
            f"- Pooling across materials mixes {mixed}, whose cell composition differs: a sensitivity "
            "analysis only."
        )
    heterogeneous = meta_genes[
        meta_genes["feature"].isin(core) & (meta_genes["k"] >= 2) & (meta_genes["i2"] > HIGH_I2)
    ]
    if len(heterogeneous):
        items = [f"{r.feature} ({r.stratum}, I² = {100 * r.i2:.0f}%)" for r in heterogeneous.itertuples()]
        lines.append(
            f"- Substantial heterogeneity (I² > {100 * HIGH_I2:.0f}%): {rst_escape(', '.join(items))}."
        )
    if "note" in meta_genes.columns:
        mixed = meta_genes["note"].fillna("").str.contains("mixed scales")
        if mixed.any():
            lines.append(f"- {int(mixed.sum())} pooled rows mix effect scales (sensitivity analysis only).")
    if "IL6" in set(meta_genes["feature"]):
        lines.append(_il6_caveat(meta_genes, members, panels))
    flagged = [c for c, v in orientation.items() if v.get("status") != "consistent"]
    if flagged:
        lines.append(
            f"- Orientation not confirmed for {', '.join(f'``{c}``' for c in flagged)}: read their signs "
            "with care (see the warning above)."
        )
    return [*lines, ""]


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
) -> str:
    """reStructuredText of the headline findings, computed from the result tables.

    ``summaries`` / ``orientation`` / ``composition`` map cohort -> the parsed summary.json,
    orientation.json and composition_sensitivity.json; cohort order follows ``summaries``. Optional
    ``forest_genes`` / ``forest_scores`` (forest tables) give a single-cohort stratum its cohort's own
    estimate, ``panels`` (cohort -> il6_panel.tsv) add IL6 detection, and ``composition_tables``
    (cohort -> composition_sensitivity.tsv) name composition-driven core genes. ``unmatched`` and
    ``subjects`` (cohort -> {cohort}.unmatched.tsv / .subjects.tsv) add the "Samples set aside" section.
    Sections use ``-`` underlines, so the text nests under an ``=`` section of the front page.
    """
    _check_meta(meta_genes, "panel-gene meta-analysis table")
    _check_meta(meta_scores, "pathway-score meta-analysis table")
    if not summaries:
        raise InputError("headlines_rst: no cohort summaries given (results/de/{cohort}/summary.json).")
    members = _stratum_cohorts(summaries)
    lines: list[str] = []
    lines += _cohort_section(summaries, alpha)
    lines += _set_aside_section(unmatched, subjects)
    lines += _gene_section(meta_genes, members, alpha, forest_genes, core)
    lines += _score_section(meta_scores, members, forest_scores)
    lines += _orientation_section(orientation)
    lines += _composition_section(composition, composition_tables, core)
    lines += _caveats_section(meta_genes, members, orientation, panels, core)
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
