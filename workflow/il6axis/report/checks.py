"""Front-page sections that qualify the findings: orientation checks, composition sensitivity, caveats.

Every caveat is computed from the results (strata with one or two cohorts, pooling across materials,
heterogeneity, mixed effect scales, how often IL6 itself could be tested, orientation not confirmed),
so a caveat appears exactly when it applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from il6axis.cohort.contrast import DEFAULT_KIND, KIND_LABEL, Contrast
from il6axis.report.groups import ByCohort, contrast_of, kind_parts, shown_strata
from il6axis.report.rst import cohort_literals, heading, rst_escape
from il6axis.vocabulary import ALL_STRATA, STRATUM_NAME, STRATUM_ORDER, TISSUE_LABEL

HIGH_I2 = 0.5  # I2 above this is called substantial heterogeneity in the caveats


def orientation_section(orientation: ByCohort) -> list[str]:
    """Section "Orientation checks": each cohort's marker verdict, with a warning when not consistent."""
    lines = heading("Orientation checks")
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


def composition_section(
    composition: ByCohort,
    composition_tables: Mapping[str, pd.DataFrame] | None,
    core: Sequence[str],
) -> list[str]:
    """Section "Composition sensitivity": per cohort, the genes that the neutrophil-score refit
    shows to be composition-driven (core genes named), or why the cohort was not adjusted."""
    lines = heading("Composition sensitivity")
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


def _il6_caveat(
    meta_genes: pd.DataFrame,
    n_pooled: int,
    panels: Mapping[str, pd.DataFrame] | None,
    contrasts: Mapping[str, Contrast] | None = None,
) -> str:
    """How often IL6 itself could be tested, with detection where the panel tables say why not."""
    il6 = meta_genes[(meta_genes["feature"] == "IL6") & (meta_genes["stratum"] == ALL_STRATA)]
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


def caveats_section(
    meta_genes: pd.DataFrame,
    summaries: ByCohort,
    orientation: ByCohort,
    panels: Mapping[str, pd.DataFrame] | None,
    core: Sequence[str],
) -> list[str]:
    """Section "Caveats computed from these results": each caveat listed only when it applies."""
    lines = heading("Caveats computed from these results")
    parts = kind_parts(meta_genes, summaries)
    several = len(parts) > 1
    for kind, part_k, members in parts:
        analysed = set(part_k["stratum"])
        prefix = f"{KIND_LABEL.get(kind, kind)}, " if several else ""
        for stratum in STRATUM_ORDER:
            cohorts = members[stratum]
            if stratum not in analysed or (
                stratum == ALL_STRATA and stratum not in shown_strata(part_k, members)
            ):
                continue
            name = prefix + STRATUM_NAME[stratum]
            if stratum != ALL_STRATA and len(cohorts) == 1:
                lines.append(
                    f"- No pooled estimate for {name}: one cohort (``{cohorts[0]}``); its rows are that "
                    "cohort's own estimates."
                )
            elif len(cohorts) == 2:
                lines.append(
                    f"- {name[0].upper() + name[1:]}: only 2 cohorts, so the 1-df t interval is very wide "
                    "and tau² is barely estimable."
                )
        if ALL_STRATA in analysed and sum(1 for s in STRATUM_ORDER[:-1] if members[s]) > 1:
            mixed = " and ".join(STRATUM_NAME[s] for s in STRATUM_ORDER[:-1] if members[s])
            sentence = f"{prefix}pooling across materials mixes {mixed}"
            lines.append(
                f"- {sentence[0].upper() + sentence[1:]}, whose cell composition differs: a sensitivity "
                "analysis only."
            )
    n_pooled = sum(len(members[ALL_STRATA]) for _, _, members in parts)
    if len(summaries) < 2:
        lines.append("- Only one cohort was analysed: no estimate is pooled anywhere (k < 2).")
    elif all(len(members[ALL_STRATA]) < 2 for _, _, members in parts):
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
        contrasts = {c: contrast_of(c, s) for c, s in summaries.items()}
        lines.append(_il6_caveat(meta_genes, n_pooled, panels, contrasts))
    flagged = [c for c, v in orientation.items() if v.get("status") != "consistent"]
    if flagged:
        lines.append(
            f"- Orientation not confirmed for {cohort_literals(flagged)}: read their signs "
            "with care (see the warning above)."
        )
    return [*lines, ""]
