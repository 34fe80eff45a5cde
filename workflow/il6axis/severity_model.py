"""Which severe-vs-mild model a cohort gets, decided by what its values are.

- Raw or rounded expected counts (``counts.value_type: counts | expected_counts``): the negative-binomial
  GLM of pydeseq2 (:func:`il6axis.de.run_deseq2`); effects are log2 fold changes of expected counts
  (scale ``log2_counts``).
- Normalised values only (``counts.value_type: normalised``, e.g. GSE172114's TMM matrix): a per-gene
  linear model on log2(value + 1) with moderated variances (:func:`il6axis.linear_de.run_log_linear`,
  limma-trend's method). Rounding does not turn normalised values into counts, so these never enter the
  NB model. Effects are differences of log2(value + 1) (scale ``log2_normalised``): close to, but not the
  same quantity as, an NB log2 fold change, so the meta-analysis pools them only as a sensitivity
  analysis (``il6axis.meta.run_meta``).

The choice is recorded in the cohort AnnData (``uns["value_type"]``) when it is built, so every later
step reads it from its input rather than from the config; the scale is derived from it here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import anndata as ad

if TYPE_CHECKING:  # the fitting modules import pydeseq2; building a cohort needs only the constants
    from il6axis.de import DeResult, DeSettings

NORMALISED = "normalised"
SCALE_COUNTS = "log2_counts"
SCALE_NORMALISED = "log2_normalised"
MODEL_NB = "negative-binomial GLM (pydeseq2, Wald test)"
MODEL_LINEAR = "linear model on log2(value + 1), moderated t (limma-trend method)"


def is_normalised(adata: ad.AnnData) -> bool:
    """True when the cohort carries normalised values (linear-model route) rather than counts."""
    return str(adata.uns.get("value_type", "counts")) == NORMALISED


def scale_of(adata: ad.AnnData) -> str:
    return SCALE_NORMALISED if is_normalised(adata) else SCALE_COUNTS


def model_of(adata: ad.AnnData) -> str:
    return MODEL_LINEAR if is_normalised(adata) else MODEL_NB


def fit_severity(adata: ad.AnnData, covariates: Sequence[str], settings: DeSettings) -> DeResult:
    """Severe-vs-mild fit with the model the cohort's values allow.

    Both routes return the same table columns (gene, baseMean, log2FoldChange, lfcSE, ci_low, ci_high,
    stat, pvalue, padj, tested, not_tested_reason), so panel tables, plots and the meta-analysis do not
    need to know which model ran; ``scale`` tells them what the effect means.
    """
    if is_normalised(adata):
        from il6axis.linear_de import run_log_linear

        return run_log_linear(adata, covariates, settings)
    from il6axis.de import run_deseq2

    return run_deseq2(adata, covariates, settings)
