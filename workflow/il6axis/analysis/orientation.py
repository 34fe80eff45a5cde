"""Is the severe-vs-mild contrast the right way round? A check on known severity markers.

The markers (``resources/genesets/severity_sanity_markers.tsv``, role ``orientation``) are cell-composition
markers with a well-replicated direction in severe COVID-19 blood: granulocyte / emergency-granulopoiesis
genes up (ARG1, OLFM4, MMP8, CD177, ORM1), S100 alarmins up (S100A8/9/12), MHC-II genes down (HLA-DRA,
CD74, HLA-DPA1, HLA-DPB1). A cohort whose severe and mild labels were swapped in the config shows most of
them the wrong way round, and that is what this module detects.

**Independence.** No orientation marker is a gene under test: the markers share no gene with the IL-6
panel or the scored IL-6 pathway sets (checked by :func:`check_independent`, called when the gene sets are
loaded). Otherwise a cohort whose IL-6 genes moved "unexpectedly" would count as evidence of swapped labels,
and the check could stop a run because of the very result it is meant to protect.

**Per tissue.** Each marker lists the materials (cohort ``tissue`` key) where its direction holds
(``tissues`` column); a cohort is checked only on its material's markers. Granulocyte genes need
granulocytes in the sample, so they are not used for ``other`` material; the S100 and MHC-II genes change
within monocytes and are used everywhere. The reasons per gene are in ``resources/genesets/README.md``.

Verdict rules (pre-specified; *judgement*, see ``statistics.md`` Section 8):

* A marker counts as **tested** when the DE table has it with ``tested`` true, a finite MLE
  ``log2FoldChange`` and a Wald p-value. Cook's-distance outliers (no p-value) are left out because their
  fold change may be driven by one sample; independently filtered genes (p-value but no padj) count, with
  their sign, but are never significant.
* **agrees**: the sign of ``log2FoldChange`` matches ``expected_in_severe``; **significant** means
  ``padj < alpha``.
* Fewer than ``min_tested`` markers tested, or fewer than half of the orientation markers: **inconclusive**
  (too little evidence either way).
* **reversed** when at least two thirds of the tested markers go against expectation AND at least
  ``min_sig_reversed`` (3) of them do so significantly. That is what a flipped contrast looks like; the
  significance requirement keeps a noisy, underpowered cohort from being called flipped on signs alone.
* **consistent** when at least two thirds agree and the significant disagreements do not outnumber the
  significant agreements. Deliberately easier to reach than "reversed": "reversed" is meant to stop a run,
  so it needs the stronger evidence.
* Anything else (e.g. half agree, half disagree) is **inconclusive**. When two thirds go against
  expectation without three significant reversals, the message says the labels may be swapped.

With few markers tested (fewer than ``FEW_TESTED``, 10; material ``other`` has only 7 markers) the sign
count alone is weak evidence, because the markers move in three correlated blocks (granulocyte, S100,
MHC-II): "consistent" then means "no sign of a swap" more than a confirmation, and the message says so.
"reversed" still needs three significant reversals.

Interferon-stimulated genes (role ``interferon_report_only``: IFI27, RSAD2, ISG15, MX1) are reported in the
table but never used: their direction differs between cohorts and with days since symptom onset.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from il6axis.analysis.tsv import write_tsv
from il6axis.errors import InputError
from il6axis.vocabulary import TISSUES

log = logging.getLogger(__name__)

ORIENTATION_ROLE = "orientation"
INTERFERON_ROLE = "interferon_report_only"
CONSISTENT = "consistent"
REVERSED = "reversed"
INCONCLUSIVE = "inconclusive"

CLEAR_MAJORITY = 2.0 / 3.0  # share of tested markers that must point one way
MIN_SIG_REVERSED = 3  # significant disagreements needed to call a contrast reversed
MIN_TESTED = 5  # fewer tested orientation markers than this: inconclusive
MIN_FRACTION_TESTED = 0.5  # ... or fewer than this share of the orientation markers
FEW_TESTED = 10  # below this many tested markers, a sign majority is weak evidence (said in the message)

# A marker's ``tissues`` field lists the cohort materials (vocabulary.TISSUES) it is used for.
TISSUE_SEPARATOR = ";"

ISG_NOTE = "interferon gene: reported only; ISGs never orient a contrast (sign varies with days since onset)"
PBMC_NOTE = (
    "PBMC lack mature neutrophils, so the granulocyte markers (ARG1, OLFM4, MMP8, CD177, ORM1) rest on the "
    "few granulocytes in the PBMC fraction and may be absent, filtered or flat; weaker orientation evidence "
    "is expected"
)
FEW_NOTE = (
    "with only {n} markers tested, moving in correlated blocks, 'consistent' means no sign of swapped labels "
    "rather than a confirmation of the direction"
)

MARKER_COLUMNS = ("symbol", "role", "expected_in_severe", "tissues")
DE_COLUMNS = ("gene", "log2FoldChange", "lfcSE", "pvalue", "padj", "tested")


@dataclass(frozen=True)
class OrientationVerdict:
    """Summary of the orientation check for one cohort (counts are over orientation markers only)."""

    status: str  # consistent / reversed / inconclusive
    n_markers: int  # orientation markers in the marker list
    n_tested: int
    n_agree: int
    n_disagree: int
    n_sig_agree: int
    n_sig_disagree: int
    tissue: str
    alpha: float
    message: str
    # Orientation markers of the marker table not used for this tissue (direction not established there).
    not_for_tissue: tuple[str, ...] = field(default=())


def load_markers(
    path: str | Path, *, genes_under_test: Mapping[str, pd.DataFrame] | None = None
) -> pd.DataFrame:
    """Read the severity sanity-marker table (TSV) and validate it.

    ``genes_under_test`` (file label -> table with ``symbol`` and optionally ``ensembl_gene_id``; see
    :func:`il6axis.analysis.genesets.tables_under_test`) additionally enforces :func:`check_independent`.
    """
    markers = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    markers = validate_markers(markers, source=str(path))
    if genes_under_test is not None:
        check_independent(markers, str(path), genes_under_test)
    return markers


def _split_tissues(value: object) -> list[str]:
    return [t.strip() for t in str(value).split(TISSUE_SEPARATOR) if t.strip()]


def validate_markers(markers: pd.DataFrame, source: str = "marker table") -> pd.DataFrame:
    """Check columns, expected directions and tissues; return a copy with ``expected_in_severe`` and
    ``tissues`` normalised (lower case, no blanks)."""
    missing = [c for c in MARKER_COLUMNS if c not in markers.columns]
    if missing:
        raise InputError(
            f"{source}: missing column(s) {missing}; the marker table needs {list(MARKER_COLUMNS)} "
            f"(see resources/genesets/severity_sanity_markers.tsv; 'tissues' lists, separated by "
            f"'{TISSUE_SEPARATOR}', the cohort materials {list(TISSUES)} an orientation marker is used for)."
        )
    out = markers.copy()
    for column in ("symbol", "role"):
        out[column] = out[column].fillna("").astype(str).str.strip()
    out["expected_in_severe"] = out["expected_in_severe"].fillna("").astype(str).str.strip().str.lower()
    out["tissues"] = (
        out["tissues"]
        .fillna("")
        .astype(str)
        .str.lower()
        .map(lambda v: TISSUE_SEPARATOR.join(_split_tissues(v)))
    )
    orient = out["role"] == ORIENTATION_ROLE
    bad = out.loc[orient & ~out["expected_in_severe"].isin(["up", "down"]), "symbol"].tolist()
    if bad:
        raise InputError(
            f"{source}: orientation marker(s) {bad} need expected_in_severe 'up' or 'down'; fix the "
            f"expected_in_severe column or change their role."
        )
    if not orient.any():
        raise InputError(f"{source}: no row has role '{ORIENTATION_ROLE}'; nothing to orient the contrast.")
    no_tissue = out.loc[orient & (out["tissues"] == ""), "symbol"].tolist()
    if no_tissue:
        raise InputError(
            f"{source}: orientation marker(s) {no_tissue} have an empty 'tissues' field; list the materials "
            f"where their direction holds, separated by '{TISSUE_SEPARATOR}', from {list(TISSUES)}."
        )
    unknown = {
        symbol: sorted(set(_split_tissues(value)) - set(TISSUES))
        for symbol, value in zip(out.loc[orient, "symbol"], out.loc[orient, "tissues"], strict=True)
    }
    unknown = {symbol: bad_values for symbol, bad_values in unknown.items() if bad_values}
    if unknown:
        raise InputError(
            f"{source}: unknown value(s) in column 'tissues': {unknown}; use {list(TISSUES)} "
            f"(the cohort 'tissue' keys), separated by '{TISSUE_SEPARATOR}'."
        )
    dup = out.loc[out["symbol"].duplicated(), "symbol"].tolist()
    if dup:
        raise InputError(f"{source}: symbol(s) {dup} listed more than once; keep one row per symbol.")
    return out


def _gene_keys(table: pd.DataFrame) -> tuple[set[str], set[str]]:
    """Upper-case symbols and Ensembl IDs (when the table has them) of a gene table."""
    symbols = {s.strip().upper() for s in table["symbol"].fillna("").astype(str) if s.strip()}
    ids: set[str] = set()
    if "ensembl_gene_id" in table.columns:
        ids = {e.strip() for e in table["ensembl_gene_id"].fillna("").astype(str) if e.strip()}
    return symbols, ids


def marker_overlaps(
    markers: pd.DataFrame, genes_under_test: Mapping[str, pd.DataFrame]
) -> dict[str, list[str]]:
    """Orientation markers that also belong to a gene table under test, per table label.

    A marker matches by symbol (case-insensitive) or, when both tables carry ``ensembl_gene_id``, by
    Ensembl ID, so an alias symbol cannot hide an overlap. Only role ``orientation`` counts: sex,
    glucocorticoid, neutrophil-score and interferon rows never decide the orientation verdict.
    """
    orient = markers[markers["role"].astype(str).str.strip() == ORIENTATION_ROLE]
    ids = (
        orient["ensembl_gene_id"].fillna("").astype(str).str.strip()
        if "ensembl_gene_id" in orient.columns
        else pd.Series("", index=orient.index)
    )
    overlaps: dict[str, list[str]] = {}
    for label, table in genes_under_test.items():
        symbols, ensembl = _gene_keys(table)
        hits = [
            symbol
            for symbol, gene_id in zip(orient["symbol"].astype(str).str.strip(), ids, strict=True)
            if symbol.upper() in symbols or (gene_id and gene_id in ensembl)
        ]
        if hits:
            overlaps[label] = hits
    return overlaps


def check_independent(
    markers: pd.DataFrame, markers_source: str, genes_under_test: Mapping[str, pd.DataFrame]
) -> None:
    """Refuse orientation markers that are genes under test (the IL-6 panel or a scored IL-6 pathway set).

    A marker that is also under test makes the check circular: an unexpected IL-6 result would count as
    evidence of swapped labels. The error names the marker file, each overlapping file and the genes.
    """
    overlaps = marker_overlaps(markers, genes_under_test)
    if overlaps:
        listed = "; ".join(f"{genes} with {label}" for label, genes in overlaps.items())
        raise InputError(
            f"{markers_source}: orientation marker(s) overlap the genes under test: {listed}. The "
            f"orientation check must use genes independent of the IL-6 panel and pathway sets; remove these "
            f"rows from the marker file (or give them another role, e.g. a report-only one), or remove the "
            f"genes from the panel file."
        )


def _check_de_table(de_table: pd.DataFrame) -> None:
    missing = [c for c in DE_COLUMNS if c not in de_table.columns]
    if missing:
        raise InputError(
            f"DE table: missing column(s) {missing}; expected the severe_vs_mild.tsv layout written by "
            f"il6axis.de.nb (gene, log2FoldChange, lfcSE, pvalue, padj, tested, ...)."
        )


def _check_tissue(tissue: str) -> str:
    if tissue not in TISSUES:
        raise InputError(
            f"orientation check: unknown cohort tissue {tissue!r}; the cohort's 'tissue' key must be one of "
            f"{list(TISSUES)}."
        )
    return tissue


def markers_for_tissue(markers: pd.DataFrame, tissue: str) -> tuple[pd.DataFrame, list[str]]:
    """Orientation markers used for ``tissue`` and the symbols of those that are not (validated table)."""
    _check_tissue(tissue)
    orient = markers[markers["role"] == ORIENTATION_ROLE]
    used = orient["tissues"].map(lambda v: tissue in _split_tissues(v))
    return orient[used], orient.loc[~used, "symbol"].tolist()


def marker_table(
    de_table: pd.DataFrame, markers: pd.DataFrame, *, tissue: str, alpha: float = 0.05
) -> pd.DataFrame:
    """One row per orientation marker of ``tissue`` or interferon marker, with its observed effect and
    agreement flags.

    ``agrees`` / ``significant_*`` are NA for markers that are not tested or have no expected direction.
    """
    _check_de_table(de_table)
    markers = validate_markers(markers)
    orient, _ = markers_for_tissue(markers, tissue)
    rows = pd.concat([orient, markers[markers["role"] == INTERFERON_ROLE]])
    rows = rows[["symbol", "role", "expected_in_severe"]].reset_index(drop=True)
    de = de_table.drop_duplicates("gene").set_index("gene")
    cols = ["baseMean", "log2FoldChange", "lfcSE", "pvalue", "padj", "tested", "not_tested_reason"]
    observed = de.reindex(rows["symbol"])[[c for c in cols if c in de.columns]].reset_index(drop=True)
    table = pd.concat([rows, observed], axis=1)
    table["present"] = rows["symbol"].isin(de.index).to_numpy()

    lfc = pd.to_numeric(table["log2FoldChange"], errors="coerce")
    pval = pd.to_numeric(table["pvalue"], errors="coerce")
    padj = pd.to_numeric(table["padj"], errors="coerce")
    flag = table["tested"].map(lambda v: str(v).strip().lower() in {"true", "1"})
    tested = table["present"] & flag & np.isfinite(lfc) & np.isfinite(pval)
    table["tested"] = tested

    expected_sign = table["expected_in_severe"].map({"up": 1.0, "down": -1.0})
    table["expected_sign"] = expected_sign
    directional = tested & expected_sign.notna() & (table["role"] == ORIENTATION_ROLE)
    sign = np.sign(lfc)
    significant = padj < alpha  # NaN padj (independent filtering) is never significant
    agrees = (sign == expected_sign).where(directional)
    disagrees = (sign == -expected_sign).where(directional)
    table["agrees"] = agrees.astype("boolean")
    table["significant_agree"] = (agrees.eq(True) & significant).where(directional).astype("boolean")
    table["significant_disagree"] = (disagrees.eq(True) & significant).where(directional).astype("boolean")
    table["used_for_verdict"] = directional
    reason = table["not_tested_reason"] if "not_tested_reason" in table else pd.Series("", index=table.index)
    reason = reason.fillna("").astype(str).str.strip()
    reason = reason.where(reason != "", "no Wald p-value")
    table["note"] = np.select(
        [table["role"] == INTERFERON_ROLE, ~table["present"], ~tested],
        [ISG_NOTE, "absent from the DE table", "not tested: " + reason],
        default="",
    )
    return table


def _enough_tested(n_markers: int, n_tested: int) -> bool:
    return n_tested >= max(MIN_TESTED, math.ceil(MIN_FRACTION_TESTED * n_markers))


def _verdict_status(
    n_markers: int, n_tested: int, n_agree: int, n_disagree: int, n_sig_agree: int, n_sig_disagree: int
) -> str:
    """Apply the pre-specified rules of the module docstring."""
    if not _enough_tested(n_markers, n_tested):
        return INCONCLUSIVE
    if n_disagree >= CLEAR_MAJORITY * n_tested and n_sig_disagree >= MIN_SIG_REVERSED:
        return REVERSED
    if n_agree >= CLEAR_MAJORITY * n_tested and n_sig_agree >= n_sig_disagree:
        return CONSISTENT
    return INCONCLUSIVE


def orientation_check(
    de_table: pd.DataFrame, markers: pd.DataFrame, *, tissue: str, alpha: float = 0.05
) -> tuple[pd.DataFrame, OrientationVerdict]:
    """Compare observed marker fold changes with their expected direction in severe disease.

    Returns the per-marker table (the orientation markers of ``tissue`` and the interferon markers) and
    the verdict. ``tissue`` is the cohort's ``uns["tissue"]`` (one of :data:`TISSUES`): it selects the
    markers whose direction holds in that material.
    """
    markers = validate_markers(markers)
    table = marker_table(de_table, markers, tissue=tissue, alpha=alpha)
    _, not_for_tissue = markers_for_tissue(markers, tissue)
    used = table[table["used_for_verdict"]]
    n_markers = int((table["role"] == ORIENTATION_ROLE).sum())
    counts = {
        "n_tested": len(used),
        "n_agree": int(used["agrees"].sum()),
        # Not ~agrees: an LFC of exactly 0 neither agrees nor disagrees.
        "n_disagree": int((np.sign(used["log2FoldChange"].astype(float)) == -used["expected_sign"]).sum()),
        "n_sig_agree": int(used["significant_agree"].sum()),
        "n_sig_disagree": int(used["significant_disagree"].sum()),
    }
    status = _verdict_status(n_markers, **counts)
    untested = table.loc[(table["role"] == ORIENTATION_ROLE) & ~table["tested"], "symbol"].tolist()
    message = _message(status, n_markers, untested, not_for_tissue, tissue, alpha, **counts)
    verdict = OrientationVerdict(
        status=status,
        n_markers=n_markers,
        tissue=tissue,
        alpha=alpha,
        message=message,
        not_for_tissue=tuple(not_for_tissue),
        **counts,
    )
    return table, verdict


def _message(
    status: str,
    n_markers: int,
    untested: Iterable[str],
    not_for_tissue: Iterable[str],
    tissue: str,
    alpha: float,
    n_tested: int,
    n_agree: int,
    n_disagree: int,
    n_sig_agree: int,
    n_sig_disagree: int,
) -> str:
    parts = [
        f"{status} (tissue {tissue}): {n_agree}/{n_tested} tested orientation markers in the "
        f"expected direction ({n_sig_agree} with padj < {alpha:g}), {n_disagree}/{n_tested} against "
        f"({n_sig_disagree} with padj < {alpha:g}); {n_tested}/{n_markers} markers for this tissue tested"
    ]
    untested, not_for_tissue = list(untested), list(not_for_tissue)
    if untested:
        parts.append(f"not tested: {', '.join(untested)}")
    if not_for_tissue:
        parts.append(
            f"not used for {tissue} (direction not established in this material): {', '.join(not_for_tissue)}"
        )
    if status == REVERSED:
        parts.append(
            "this is what swapped case/reference labels look like: check severity.severe (the case slot) and "
            "severity.mild (the reference slot) in the cohort's config"
        )
    elif (
        status == INCONCLUSIVE
        and _enough_tested(n_markers, n_tested)
        and n_disagree >= CLEAR_MAJORITY * n_tested
    ):
        # Too few significant reversals to stop the run, but the signs point the wrong way: say so.
        parts.append(
            f"most tested markers go against expectation, but fewer than {MIN_SIG_REVERSED} significantly: "
            "the case/reference labels may be swapped; check severity.severe (case) and severity.mild "
            "(reference) in the cohort's config"
        )
    elif status == INCONCLUSIVE:
        parts.append("the markers neither confirm nor contradict the contrast direction")
    elif n_tested < FEW_TESTED:
        parts.append(FEW_NOTE.format(n=n_tested))
    if tissue == "pbmc":
        parts.append(PBMC_NOTE)
    parts.append("interferon genes are reported but never used to orient a contrast")
    return "; ".join(parts)


def log_verdict(verdict: OrientationVerdict, cohort: str, logger: logging.Logger) -> None:
    """Log the verdict: WARNING for reversed or inconclusive, INFO for consistent."""
    if verdict.status == REVERSED:
        logger.warning(
            "cohort %s looks reversed: %d/%d orientation markers go against expectation (%d with padj < %g); "
            "check severity.severe/mild in config. %s",
            cohort,
            verdict.n_disagree,
            verdict.n_tested,
            verdict.n_sig_disagree,
            verdict.alpha,
            verdict.message,
        )
    elif verdict.status == INCONCLUSIVE:
        logger.warning(
            "cohort %s: orientation inconclusive: %d/%d tested orientation markers agree with expectation, "
            "%d go against it. %s",
            cohort,
            verdict.n_agree,
            verdict.n_tested,
            verdict.n_disagree,
            verdict.message,
        )
    else:
        logger.info("cohort %s: orientation consistent. %s", cohort, verdict.message)


def run_orientation(
    de_table: pd.DataFrame,
    markers: pd.DataFrame,
    tissue: str,
    alpha: float,
    cohort: str,
    table_path: str | Path,
    verdict_path: str | Path,
    fail_on_reversed: bool = True,
) -> OrientationVerdict:
    """Rule ``orientation_check``: write the orientation table and verdict of one cohort.

    A reversed or inconclusive cohort is a WARNING in the log, and a reversed one stops the run unless
    ``fail_on_reversed`` is off (a flipped contrast flips every sign)."""
    table, verdict = orientation_check(de_table, markers, tissue=tissue, alpha=alpha)
    log_verdict(verdict, cohort, log)
    if verdict.status == REVERSED and fail_on_reversed:
        raise InputError(
            f"{cohort}: {verdict.message}. Check severity.severe / severity.mild for this cohort in config; "
            f"if the direction is genuinely unusual, set qc.fail_on_reversed: false to continue."
        )
    write_tsv(table, table_path)
    Path(verdict_path).write_text(json.dumps({"cohort": cohort, **verdict.__dict__}, indent=2) + "\n")
    return verdict
