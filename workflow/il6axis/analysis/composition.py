"""Composition sensitivity: does a severity effect survive adjustment for a neutrophil score?

Severe COVID-19 blood carries more (and more immature) neutrophils, so a bulk-blood "IL-6 axis" change can
be cell composition alone (IL6R, SOCS3, LCN2, MMP9, HP and CD163 sit on neutrophils or monocytes). The
sensitivity analysis (``statistics.md`` Section 5) refits ``~ covariates + neutrophil_score + severity``
and compares the severity effect of both fits. The score partly mediates severity, so the adjusted fit is a
sensitivity analysis, never the primary result.

The score and the comparison are pure pandas/numpy (:func:`neutrophil_score`, :func:`compare_fits`);
:func:`run_composition`, rule ``composition_sensitivity``'s entry, refits the cohort's DE model with the
score as one more covariate and compares that fit with the primary one.

Pre-specified labelling rule (*judgement*): a gene is **composition-driven** when it is significant in the
primary fit (padj < alpha), is no longer significant after adjustment (padj >= alpha or no padj), AND at
least half of its log2 fold change disappears (attenuation = 1 - lfc_adjusted / lfc_primary >= 0.5). Both
parts are required: losing significance alone can be lost power (the score is correlated with severity and
costs a degree of freedom), and a large attenuation of a still-significant effect leaves a real residual
severity effect.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from il6axis.analysis.tsv import write_tsv
from il6axis.de.contract import DeSettings
from il6axis.de.routing import fit_severity
from il6axis.errors import InputError
from il6axis.vocabulary import TISSUES

log = logging.getLogger(__name__)

NEUTROPHIL_GENES: tuple[str, ...] = ("CSF3R", "FCGR3B", "CXCR2")
SCORE_COLUMN = "neutrophil_score"
ATTENUATION_THRESHOLD = 0.5
LFC_FLOOR = 0.1  # below this |log2FC| the attenuation ratio is too unstable to compute

COMPOSITION_DRIVEN = "composition-driven"
ROBUST = "robust to composition"
NOT_SIGNIFICANT = "not significant in primary"
NOT_TESTED = "not tested"

# Materials with mature neutrophils; PBMC preparations remove them by density-gradient separation.
ADJUSTABLE_TISSUES = ("whole_blood", "leukocytes")


def neutrophil_score(
    vst: pd.DataFrame, genes: Sequence[str] = NEUTROPHIL_GENES, min_genes: int = 2
) -> tuple[pd.Series | None, str]:
    """Per-sample mean z-score of the neutrophil genes over the samples given (the contrast samples).

    ``vst`` is samples x genes on a log-normalised scale. A gene absent, non-finite or constant across the
    samples cannot be z-scored and is skipped. With fewer than ``min_genes`` usable genes the score is not
    computed: returns ``(None, reason)`` rather than raising, because a missing score only skips a
    sensitivity analysis. On success returns ``(score, description)``.
    """
    usable: list[str] = []
    skipped: list[str] = []
    for g in genes:
        if g not in vst.columns:
            skipped.append(f"{g} (absent)")
            continue
        col = pd.to_numeric(vst[g], errors="coerce")
        if not np.isfinite(col).all():
            skipped.append(f"{g} (missing values)")
        elif float(col.std(ddof=1)) <= 0 or len(col) < 2:
            skipped.append(f"{g} (constant across samples)")
        else:
            usable.append(g)
    if len(usable) < min_genes:
        return None, (
            f"neutrophil score not computed: {len(usable)} of {len(genes)} genes usable "
            f"({', '.join(usable) or 'none'}), at least {min_genes} needed; skipped: {', '.join(skipped)}"
        )
    sub = vst[usable].astype(float)
    z = (sub - sub.mean(axis=0)) / sub.std(axis=0, ddof=1)
    score = z.mean(axis=1).rename(SCORE_COLUMN)
    description = f"neutrophil score = mean z of {', '.join(usable)} over {len(sub)} samples"
    if skipped:
        description += f"; skipped: {', '.join(skipped)}"
    return score, description


def should_adjust(tissue: str, score_available: bool = True, score_reason: str = "") -> tuple[bool, str]:
    """Whether to run the neutrophil-adjusted refit for a cohort of this material, and why (not)."""
    if tissue not in TISSUES:
        raise InputError(
            f"cohort tissue {tissue!r} is not one of {list(TISSUES)}; fix the cohort's `tissue` in config."
        )
    if tissue == "pbmc":
        return False, (
            "skipped: PBMC lack mature neutrophils (removed by density-gradient separation), so a "
            "neutrophil score does not measure the composition shift of severe disease"
        )
    if tissue not in ADJUSTABLE_TISSUES:
        return False, (
            f"skipped: neutrophil content of tissue {tissue!r} is unknown; the adjustment is defined for "
            f"{', '.join(ADJUSTABLE_TISSUES)}"
        )
    if not score_available:
        return False, f"skipped: {score_reason or 'neutrophil score unavailable'}"
    return True, f"adjusting for the neutrophil score ({tissue} contains mature neutrophils)"


def _is_tested(table: pd.DataFrame) -> pd.Series:
    """A gene has a usable severity estimate: flagged tested, finite LFC and SE, and a Wald p-value."""
    flag = table["tested"].map(lambda v: str(v).strip().lower() in {"true", "1"})
    finite = np.isfinite(table[["log2FoldChange", "lfcSE", "pvalue"]].astype(float)).all(axis=1)
    return flag & finite


def _prepared(table: pd.DataFrame, which: str) -> pd.DataFrame:
    needed = ["gene", "log2FoldChange", "lfcSE", "pvalue", "padj", "tested"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise InputError(
            f"{which} DE table: missing column(s) {missing}; pass tables in the severe_vs_mild.tsv layout."
        )
    if table["gene"].duplicated().any():
        raise InputError(f"{which} DE table: duplicated gene rows; each gene must appear once.")
    out = table.set_index("gene")[["log2FoldChange", "lfcSE", "padj"]].astype(float)
    out["ok"] = _is_tested(table).to_numpy()
    return out


def compare_fits(
    primary: pd.DataFrame,
    adjusted: pd.DataFrame,
    threshold: float = ATTENUATION_THRESHOLD,
    alpha: float = 0.05,
    lfc_floor: float = LFC_FLOOR,
) -> pd.DataFrame:
    """Per gene: the severity effect without and with the neutrophil score, attenuation and a label.

    ``attenuation = 1 - lfc_adjusted / lfc_primary`` is computed only for genes significant in the primary
    fit with ``|lfc_primary| >= lfc_floor`` (otherwise NaN). Values above 1 mean the sign flipped; negative
    values mean the effect grew. Labels: see the module docstring. A primary-significant gene whose
    attenuation cannot be computed is labelled "robust to composition": the composition label needs
    positive evidence, and the note says why.
    """
    p = _prepared(primary, "primary")
    a = _prepared(adjusted, "adjusted")
    genes = p.index.union(a.index, sort=False)
    p, a = p.reindex(genes), a.reindex(genes)
    out = pd.DataFrame(
        {
            "lfc_primary": p["log2FoldChange"],
            "lfc_adjusted": a["log2FoldChange"],
            "se_primary": p["lfcSE"],
            "se_adjusted": a["lfcSE"],
            "padj_primary": p["padj"],
            "padj_adjusted": a["padj"],
        },
        index=genes,
    )
    tested = p["ok"].eq(True) & a["ok"].eq(True)
    sig_primary = tested & (out["padj_primary"] < alpha)
    # No padj after adjustment (independent filtering) counts as not significant.
    sig_adjusted = out["padj_adjusted"] < alpha
    computable = sig_primary & (out["lfc_primary"].abs() >= lfc_floor)
    out["attenuation"] = (1.0 - out["lfc_adjusted"] / out["lfc_primary"]).where(computable)
    driven = sig_primary & ~sig_adjusted & (out["attenuation"] >= threshold)
    out["label"] = np.select(
        [~tested, ~sig_primary, driven], [NOT_TESTED, NOT_SIGNIFICANT, COMPOSITION_DRIVEN], default=ROBUST
    )
    out["note"] = np.select(
        [
            ~p["ok"].eq(True),
            ~a["ok"].eq(True),
            sig_primary & ~computable,
            driven,
            sig_primary & ~sig_adjusted,
            sig_primary & sig_adjusted & (np.sign(out["lfc_adjusted"]) != np.sign(out["lfc_primary"])),
        ],
        [
            "no usable estimate in the primary fit",
            "no usable estimate in the adjusted fit",
            f"|lfc_primary| < {lfc_floor:g}: attenuation not computed",
            f"significance lost and attenuation >= {threshold:g}",
            f"significance lost but attenuation < {threshold:g} (power loss, not composition)",
            "severity effect changes sign after adjustment",
        ],
        default="",
    )
    out.index.name = "gene"
    return out.reset_index()


def run_composition(
    analysis: ad.AnnData,
    primary: pd.DataFrame,
    settings: DeSettings,
    alpha: float,
    adjusted_path: str | Path,
    comparison_path: str | Path,
    status_path: str | Path,
) -> dict:
    """Rule ``composition_sensitivity``: refit DE with the neutrophil score as covariate where the
    material allows, compare with the primary fit, and write the adjusted table, the comparison and the
    status (adjusted or why not)."""
    tissue = str(analysis.uns.get("tissue", "other"))
    score = analysis.obs.get(SCORE_COLUMN)
    available = score is not None and bool(np.isfinite(score.astype(float)).all())
    adjust, reason = should_adjust(tissue, available, str(analysis.uns.get("neutrophil_score", "")))
    status = {
        "cohort": analysis.uns.get("cohort", ""),
        "tissue": tissue,
        "adjusted": adjust,
        "reason": reason,
    }
    if adjust:
        covariates = [*analysis.uns.get("covariates", []), SCORE_COLUMN]
        adjusted = fit_severity(analysis, covariates, settings).table
        comparison = compare_fits(primary, adjusted, alpha=alpha)
        status["n_composition_driven"] = int((comparison["label"] == COMPOSITION_DRIVEN).sum())
    else:
        adjusted = primary.iloc[0:0]
        comparison = pd.DataFrame(columns=["gene", "label"])
    log.info("composition sensitivity: %s", reason)
    write_tsv(adjusted, adjusted_path)
    write_tsv(comparison, comparison_path)
    Path(status_path).write_text(json.dumps(status, indent=2) + "\n")
    return status
