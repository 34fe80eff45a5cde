"""What every severe-vs-mild DE backend shares: settings, result, design, table columns and BH.

The two backends (``nb``: pydeseq2's negative-binomial GLM; ``linear``: the moderated log2 linear model)
and the routing between them (``routing``) build on this module; it imports neither, and no pydeseq2, so
the cohort and report steps can read its constants in environments without the DE stack.

The reference level is always ``mild``: labels are recoded to exactly ``mild``/``severe`` upstream, the
model frame makes severity a ``[mild, severe]`` categorical, and every backend checks the design column
(:func:`check_reference_level`), so a cohort whose raw labels sort the other way (``Critical`` <
``Non-critical``) cannot flip signs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from il6axis.errors import InputError
from il6axis.vocabulary import MILD, SEVERE

REFERENCE_LEVEL = MILD
SEVERITY_COEF = "severity[T.severe]"
CONTRAST = ["severity", SEVERE, REFERENCE_LEVEL]
# de.engine: R DESeq2's procedures where pydeseq2's differ (r_compatible.py), or stock pydeseq2 0.5.4.
ENGINE_R = "r_compatible"
ENGINE_PYDESEQ2 = "pydeseq2"
ENGINES = (ENGINE_R, ENGINE_PYDESEQ2)
# Effect scale of a DE table: NB log2 fold changes of expected counts, or differences in mean log2
# normalised expression (the linear model); routing.py says which cohort gets which.
SCALE_COUNTS = "log2_counts"
SCALE_NORMALISED = "log2_normalised"

# DE table columns every backend writes, in order, and the flags (one meaning each; documented in
# config/README.md, "DE table columns"): tested = the gene was fitted and has a p-value;
# not_tested_reason says why not (empty when tested); cooks_outlier = fitted, but DESeq2 withholds p and
# padj for a Cook's distance above the cutoff; independently_filtered = tested, but padj is NA because its
# baseMean is below the independent-filtering threshold (its p-value did not enter the BH correction).
STAT_COLUMNS = ["gene", "baseMean", "log2FoldChange", "lfcSE", "ci_low", "ci_high", "stat", "pvalue", "padj"]
FLAG_COLUMNS = ["tested", "not_tested_reason", "cooks_outlier", "independently_filtered"]
REASON_EXPRESSION = "below expression filter"
REASON_COOKS = "Cook's distance outlier"
REASON_NO_FIT = "no estimate (all counts zero after outlier replacement)"

STABILITY_METHODS = ("leave_one_out",)


# --------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class StabilitySettings:
    """``de.stability`` of the config (schema defaults: enabled, leave_one_out, near-miss factor 2)."""

    enabled: bool = True
    method: str = "leave_one_out"
    near_miss_factor: float = 2.0

    def __post_init__(self) -> None:
        if self.method not in STABILITY_METHODS:
            raise InputError(
                f"de.stability.method is {self.method!r}; use one of {', '.join(STABILITY_METHODS)}."
            )
        if not (isinstance(self.near_miss_factor, int | float) and self.near_miss_factor >= 1):
            raise InputError(
                f"de.stability.near_miss_factor is {self.near_miss_factor!r}; use a number >= 1 (e.g. 2: "
                "a gene with padj < 2 * alpha that is not called is a near miss)."
            )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> StabilitySettings:
        """Settings from the ``de.stability`` mapping; unknown keys are refused, missing ones default."""
        known = {"enabled", "method", "near_miss_factor"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise InputError(f"de.stability has unknown key(s) {unknown}; known: {sorted(known)}.")
        return cls(
            enabled=bool(config.get("enabled", True)),
            method=str(config.get("method", "leave_one_out")),
            near_miss_factor=float(config.get("near_miss_factor", 2.0)),
        )


@dataclass
class DeSettings:
    """One DE run's settings: the rule's ``de.*`` params (:meth:`from_params`) plus per-call options."""

    alpha: float = 0.05
    min_count: int = 10
    lfc_shrink: bool = True
    refit_cooks: bool = True
    cooks_filter: bool = True
    independent_filter: bool = True
    n_cpus: int = 1
    extra_covariates: Sequence[str] = field(default_factory=tuple)
    engine: str = ENGINE_R
    # de.stability (leave-one-sample-out refits of the panel genes; None = off) and the genes whose fit
    # inputs are kept for those refits (outputs.run_and_write sets them to the panel).
    stability: StabilitySettings | None = None
    refit_genes: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise InputError(f"de.engine is {self.engine!r}; use one of {', '.join(ENGINES)}.")

    @classmethod
    def from_params(cls, params: Any, threads: int, lfc_shrink: bool | None = None) -> DeSettings:
        """Settings from a rule's declared params (alpha, min_count, cooks_refit[, engine, lfc_shrink,
        stability]) and threads.

        ``lfc_shrink`` overrides the param: sensitivity refits and pseudobulk runs report MLEs only. A rule
        whose params leave out ``engine`` or ``stability`` (e.g. a module user's override) gets the default
        engine and no stability refits.
        """
        stability = getattr(params, "stability", None)
        return cls(
            alpha=params.alpha,
            min_count=params.min_count,
            lfc_shrink=params.lfc_shrink if lfc_shrink is None else lfc_shrink,
            refit_cooks=params.cooks_refit,
            n_cpus=threads,
            engine=getattr(params, "engine", ENGINE_R),
            stability=None if stability is None else StabilitySettings.from_config(stability),
        )


# ----------------------------------------------------------------------------------------------- result


@dataclass
class NbRefitInputs:
    """What the NB refits of some genes need from the full fit (natural-log coefficients, as pydeseq2)."""

    genes: list[str]
    samples: list[str]
    counts: np.ndarray  # samples x genes: the counts the full fit used (Cook's replacements included)
    size_factors: np.ndarray  # samples
    design: np.ndarray  # samples x p
    coef_index: int  # the severity column
    dispersions: np.ndarray  # genes
    beta: np.ndarray  # genes x p, the full fit's coefficients (start of the IRLS)
    min_mu: float
    irls_ridge: float  # pydeseq2's IRLS ridge (natural-log scale)
    wald_ridge: float
    wald_floor_mu: bool  # R's Wald: means floored at min_mu


@dataclass
class LinearRefitInputs:
    """What the linear-model refits need from the full fit: the modelled log2 values and the prior."""

    genes: list[str]
    samples: list[str]
    values: np.ndarray  # samples x genes, log2 scale as modelled
    design: np.ndarray  # samples x p
    coef_index: int
    s2_prior: np.ndarray  # genes: the full fit's prior variance s0^2 (trend at the gene's AveExpr)
    df_prior: float  # d0 (may be inf)
    n_genes_fitted: int  # genes in the full fit (limma caps the total df at their pooled residual df)


@dataclass
class DeResult:
    """What every backend returns: the per-gene table (``STAT_COLUMNS`` + ``FLAG_COLUMNS`` first)."""

    table: pd.DataFrame  # one row per gene of the cohort (tested or not)
    design: str
    n_per_group: dict[str, int]
    n_tested: int  # genes with a test (the table's ``tested`` column)
    engine: str | None = None  # de.engine of a DESeq2 fit; None for other models
    # baseMean below which independent filtering set padj to NA (None: no filtering / not DESeq2)
    filter_threshold: float | None = None
    # the panel genes' full-fit inputs for the stability refits (settings.refit_genes; None = not kept)
    refit_inputs: NbRefitInputs | LinearRefitInputs | None = None


# ----------------------------------------------------------------------------------------------- design


def design_formula(covariates: Sequence[str]) -> str:
    """Covariates first, severity last, e.g. ``~ age + sex + severity``."""
    return "~ " + " + ".join([*covariates, "severity"])


def contrast_design_frame(obs: pd.DataFrame, covariates: Sequence[str]) -> pd.DataFrame:
    """Metadata for the model: severity as a mild/severe categorical, numeric covariates standardised.

    Standardising numeric covariates (mean 0, sd 1) changes neither the severity estimate nor its test;
    it keeps the IRLS well conditioned when, e.g., age in years sits beside 0/1 indicators.
    """
    meta = pd.DataFrame(index=obs.index)
    for name in covariates:
        col = obs[name]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            sd = float(col.std(ddof=0))
            meta[name] = (col - col.mean()) / (sd if sd > 0 else 1.0)
        else:
            meta[name] = col.astype(str)
            if meta[name].nunique() < 2:
                raise InputError(
                    f"covariate {name!r} has a single level ({meta[name].iloc[0]!r}) among the samples in "
                    f"the contrast; remove it from the cohort's covariates."
                )
    meta["severity"] = pd.Categorical(obs["severity"].astype(str), categories=[REFERENCE_LEVEL, SEVERE])
    return meta


def check_reference_level(columns: Sequence[str]) -> None:
    """Refuse a design whose severity column is not ``severity[T.severe]`` (i.e. mild is not the
    reference): a programming error, never a data problem, since the model frame fixes the levels."""
    if SEVERITY_COEF not in columns:
        raise RuntimeError(f"reference level is not mild: design columns are {list(columns)}")


def design_matrix(meta: pd.DataFrame, formula: str) -> pd.DataFrame:
    """Treatment-coded design from the model frame (:func:`contrast_design_frame`), via formulaic as in
    pydeseq2.

    formulaic takes the level order of a pandas Categorical, and the model frame builds severity with
    categories ``[mild, severe]``, so the severity column is ``severity[T.severe]`` (mild = reference);
    this is checked, never assumed. Missing covariate values raise instead of dropping rows.
    """
    from formulaic import model_matrix  # the DE environment's; the cohort steps never build a design

    try:
        mm = model_matrix(formula, meta, na_action="raise")
    except Exception as exc:  # formulaic raises its own types for NA and unknown names
        raise InputError(
            f"cannot build the design {formula!r} from the contrast samples' metadata ({exc}); fill or drop "
            f"samples with missing covariates and check the covariate names in the cohort config"
        ) from exc
    frame = pd.DataFrame(np.asarray(mm, dtype=float), index=meta.index, columns=list(mm.columns))
    check_reference_level(list(frame.columns))
    return frame


def expression_filter(counts: pd.DataFrame, severity: pd.Series, min_count: float) -> pd.Series:
    """Genes with >= ``min_count`` reads in at least as many samples as the smaller group.

    A gene below this cannot reach significance and only adds multiple-testing burden; the rule mirrors
    the common ``rowSums(counts >= 10) >= smallest group`` pre-filter used with R DESeq2.
    """
    smallest = int(severity.value_counts().min())
    return (counts >= min_count).sum(axis=0) >= smallest


# ----------------------------------------------------------------------------------- multiple testing


def benjamini_hochberg(pvalues: pd.Series | np.ndarray) -> pd.Series | np.ndarray:
    """BH-adjusted p-values (``scipy.stats.false_discovery_control``); NaN stays NaN and does not count
    as a test. A Series comes back as a Series on the same index, an array as an array.

    SciPy forms ``p * (m / i)`` as R's ``p.adjust(p, "BH")`` does, so the numbers equal R's to the last
    bit (tests/test_r_compatible.py checks this on R's output).
    """
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full_like(p, np.nan)
    tested = ~np.isnan(p)
    if tested.any():
        adjusted[tested] = stats.false_discovery_control(p[tested])
    if isinstance(pvalues, pd.Series):
        return pd.Series(adjusted, index=pvalues.index)
    return adjusted
