"""Is the severe-vs-mild contrast the right way round? A check on known severity markers.

The markers (``resources/genesets/severity_sanity_markers.tsv``, role ``orientation``) are mostly cell
composition markers with a well-replicated direction in severe COVID-19 blood: neutrophil / emergency
granulopoiesis genes up (IL1R2, ARG1, OLFM4, LCN2, S100A8/9/12, ...), MHC-II genes down (HLA-DRA, CD74,
HLA-DPA1, HLA-DPB1). A cohort whose severe and mild labels were swapped in the config shows most of them
the wrong way round, and that is what this module detects.

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
* Anything else (e.g. half agree, half disagree) is **inconclusive**.

Interferon-stimulated genes (role ``interferon_report_only``: IFI27, RSAD2, ISG15, MX1) are reported in the
table but never used: their direction differs between cohorts and with days since symptom onset.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from il6axis.errors import InputError

ORIENTATION_ROLE = "orientation"
INTERFERON_ROLE = "interferon_report_only"
CONSISTENT = "consistent"
REVERSED = "reversed"
INCONCLUSIVE = "inconclusive"

CLEAR_MAJORITY = 2.0 / 3.0  # share of tested markers that must point one way
MIN_SIG_REVERSED = 3  # significant disagreements needed to call a contrast reversed
MIN_TESTED = 5  # fewer tested orientation markers than this: inconclusive
MIN_FRACTION_TESTED = 0.5  # ... or fewer than this share of the orientation markers

ISG_NOTE = "interferon gene: reported only; ISGs never orient a contrast (sign varies with days since onset)"
PBMC_NOTE = (
    "PBMC lack mature neutrophils, so neutrophil-granule markers (OLFM4, CD177, ORM1, LCN2, MMP8, ...) "
    "may be absent, filtered or flat; weaker orientation evidence is expected"
)

MARKER_COLUMNS = ("symbol", "role", "expected_in_severe")
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


def load_markers(path: str | Path) -> pd.DataFrame:
    """Read the severity sanity-marker table (TSV) and validate it."""
    markers = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    return validate_markers(markers, source=str(path))


def validate_markers(markers: pd.DataFrame, source: str = "marker table") -> pd.DataFrame:
    """Check columns and expected directions; return a copy with ``expected_in_severe`` lower-cased."""
    missing = [c for c in MARKER_COLUMNS if c not in markers.columns]
    if missing:
        raise InputError(
            f"{source}: missing column(s) {missing}; the marker table needs {list(MARKER_COLUMNS)} "
            f"(see resources/genesets/severity_sanity_markers.tsv)."
        )
    out = markers.copy()
    out["expected_in_severe"] = out["expected_in_severe"].fillna("").astype(str).str.strip().str.lower()
    orient = out["role"] == ORIENTATION_ROLE
    bad = out.loc[orient & ~out["expected_in_severe"].isin(["up", "down"]), "symbol"].tolist()
    if bad:
        raise InputError(
            f"{source}: orientation marker(s) {bad} need expected_in_severe 'up' or 'down'; fix the "
            f"expected_in_severe column or change their role."
        )
    if not orient.any():
        raise InputError(f"{source}: no row has role '{ORIENTATION_ROLE}'; nothing to orient the contrast.")
    dup = out.loc[out["symbol"].duplicated(), "symbol"].tolist()
    if dup:
        raise InputError(f"{source}: symbol(s) {dup} listed more than once; keep one row per symbol.")
    return out


def _check_de_table(de_table: pd.DataFrame) -> None:
    missing = [c for c in DE_COLUMNS if c not in de_table.columns]
    if missing:
        raise InputError(
            f"DE table: missing column(s) {missing}; expected the severe_vs_mild.tsv layout written by "
            f"il6axis.de (gene, log2FoldChange, lfcSE, pvalue, padj, tested, ...)."
        )


def marker_table(de_table: pd.DataFrame, markers: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """One row per orientation or interferon marker with its observed effect and agreement flags.

    ``agrees`` / ``significant_*`` are NA for markers that are not tested or have no expected direction.
    """
    _check_de_table(de_table)
    markers = validate_markers(markers)
    rows = markers.loc[markers["role"].isin([ORIENTATION_ROLE, INTERFERON_ROLE])]
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


def _verdict_status(
    n_markers: int, n_tested: int, n_agree: int, n_disagree: int, n_sig_agree: int, n_sig_disagree: int
) -> str:
    """Apply the pre-specified rules of the module docstring."""
    if n_tested < max(MIN_TESTED, math.ceil(MIN_FRACTION_TESTED * n_markers)):
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

    Returns the per-marker table (orientation and interferon markers) and the verdict. ``tissue`` is the
    cohort's ``uns["tissue"]``; it only changes the message (PBMC: no mature neutrophils).
    """
    table = marker_table(de_table, markers, alpha=alpha)
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
    message = _message(status, n_markers, untested, tissue, alpha, **counts)
    verdict = OrientationVerdict(
        status=status, n_markers=n_markers, tissue=tissue, alpha=alpha, message=message, **counts
    )
    return table, verdict


def _message(
    status: str,
    n_markers: int,
    untested: list[str],
    tissue: str,
    alpha: float,
    n_tested: int,
    n_agree: int,
    n_disagree: int,
    n_sig_agree: int,
    n_sig_disagree: int,
) -> str:
    parts = [
        f"{status} (tissue {tissue or 'unknown'}): {n_agree}/{n_tested} tested orientation markers in the "
        f"expected direction ({n_sig_agree} with padj < {alpha:g}), {n_disagree}/{n_tested} against "
        f"({n_sig_disagree} with padj < {alpha:g}); {n_tested}/{n_markers} markers tested"
    ]
    if untested:
        parts.append(f"not tested: {', '.join(untested)}")
    if status == REVERSED:
        parts.append(
            "this is what swapped severe/mild labels look like: check severity.severe and severity.mild in "
            "the cohort's config"
        )
    elif status == INCONCLUSIVE:
        parts.append("the markers neither confirm nor contradict the contrast direction")
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
