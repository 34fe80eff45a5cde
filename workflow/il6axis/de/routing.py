"""Which severe-vs-mild model a cohort gets, decided by what its values are.

- Raw or rounded expected counts (``counts.value_type: counts | expected_counts``): the negative-binomial
  GLM of pydeseq2 (:func:`il6axis.de.nb.run_deseq2`); effects are log2 fold changes of expected counts
  (scale ``log2_counts``).
- Normalised values only (``counts.value_type: normalised``, e.g. DESeq2-normalised counts or CPM): a
  per-gene linear model on log2(value + 1) with moderated variances
  (:func:`il6axis.de.linear.run_log_linear`, limma-trend's method). Rounding does not turn normalised
  values into counts, so these never enter the NB model.
- Normalised values that are already log2 (``counts.value_type: log2_normalised``, e.g. GSE172114's "log2
  normalized TMM counts", negatives allowed): the same linear model on the published values, without a
  second log.

Both linear-model routes report differences in mean log2 normalised expression, one effect scale
(``log2_normalised``): the two differ only in the small offset added before the log (a prior count of 1,
or whatever the submitters used), which matters for barely expressed genes alone. They are pooled with each
other. Either differs from an NB log2 fold change (a ratio of geometric, not arithmetic, means, with another
variance model), so the meta-analysis pools them with count cohorts only as a sensitivity analysis
(``il6axis.analysis.meta.run.run_meta``). The value type still names the log scale in figure labels
(:func:`log_scale_name`).

The choice is recorded in the cohort AnnData (``uns["value_type"]``) when it is built, so every later
step reads it from its input rather than from the config; the scale is derived from it here.
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad

from il6axis.cohort.value_scale import COUNTS, LINEAR_MODEL_TYPES, LOG2_NORMALISED, NORMALISED
from il6axis.de.contract import SCALE_COUNTS, SCALE_NORMALISED, DeResult, DeSettings

__all__ = [
    "fit_severity",
    "is_log2",
    "is_normalised",
    "log_scale_name",
    "model_of",
    "scale_of",
    "value_type_of",
]

MODEL_NB = "negative-binomial GLM (pydeseq2, Wald test)"
MODEL_LINEAR = "linear model on log2(value + 1), moderated t (limma-trend method)"
MODEL_LINEAR_LOG2 = (
    "linear model on the published log2 values (no second log), moderated t (limma-trend method)"
)
# Name of each value type's log expression scale (VST substitute) in figure labels and notes.
LOG_SCALE_NAMES = {
    COUNTS: "VST",
    NORMALISED: "log2(normalised + 1)",
    LOG2_NORMALISED: "published log2 normalised",
}


def value_type_of(adata: ad.AnnData) -> str:
    return str(adata.uns.get("value_type", COUNTS))


def is_normalised(adata: ad.AnnData) -> bool:
    """True when the cohort carries normalised values, linear or log2 (linear-model route), not counts."""
    return value_type_of(adata) in LINEAR_MODEL_TYPES


def is_log2(adata: ad.AnnData) -> bool:
    """True when the cohort's values are already log2 (used as they are; 2**x undoes them)."""
    return value_type_of(adata) == LOG2_NORMALISED


def scale_of(adata: ad.AnnData) -> str:
    return SCALE_NORMALISED if is_normalised(adata) else SCALE_COUNTS


def model_of(adata: ad.AnnData) -> str:
    if not is_normalised(adata):
        return MODEL_NB
    return MODEL_LINEAR_LOG2 if is_log2(adata) else MODEL_LINEAR


def log_scale_name(value_type: str) -> str:
    """'VST' for counts (and expected counts), 'log2(normalised + 1)', 'published log2 normalised'."""
    return LOG_SCALE_NAMES.get(value_type, LOG_SCALE_NAMES[COUNTS])


def fit_severity(adata: ad.AnnData, covariates: Sequence[str], settings: DeSettings) -> DeResult:
    """Severe-vs-mild fit with the model the cohort's values allow.

    Both routes return the same table columns (gene, baseMean, log2FoldChange, lfcSE, ci_low, ci_high,
    stat, pvalue, padj, tested, not_tested_reason), so panel tables, plots and the meta-analysis do not
    need to know which model ran; ``scale`` tells them what the effect means.
    """
    # The backends are imported here, not at the top: the cohort and figure steps read this module's
    # value-type helpers in environments without pydeseq2 / formulaic (envs/cohorts.yaml, envs/plots.yaml).
    if is_normalised(adata):
        from il6axis.de.linear import run_log_linear

        return run_log_linear(adata, covariates, settings, values_are_log2=is_log2(adata))
    from il6axis.de.nb import run_deseq2

    return run_deseq2(adata, covariates, settings)
