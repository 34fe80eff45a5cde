"""Severe-vs-mild DE for cohorts that publish only normalised expression: log2 linear model, moderated t.

Normalised values (DESeq2 normalised counts of GSE293708; GSE172114's log2 TMM values) are not counts, and
rounding does not make them counts, so they never enter the negative-binomial model. This module is the
brief's alternative route (statistics.md, section 2): ``log2(x + 1)`` of linear values, or values that are
already log2 as they are (``counts.value_type: log2_normalised``: no second log), one ordinary least-squares
fit per gene with the NB route's design (covariates first, severity last, ``mild`` the reference level), and
the empirical Bayes variance moderation of limma (Smyth 2004, Stat Appl Genet Mol Biol 3:3), including the
"limma-trend" variant in which the prior variance follows the mean log expression.

The moderation, written from the published method:

* Each gene's residual variance ``s2`` (``d`` residual df) is modelled as ``s2 ~ s0^2 F(d, d0)``. On the log
  scale, ``E[log s2] = log s0^2 + digamma(d/2) - log(d/2)`` and
  ``Var[log s2] = trigamma(d/2) + trigamma(d0/2)``, so the moments of ``e = log s2 - digamma(d/2) + log(d/2)``
  give ``d0`` by inverting the trigamma function and ``s0^2`` from the mean (:func:`fit_f_dist`).
* With ``trend=True`` the mean of ``e`` is a smooth function of the gene's average log2 expression: a
  natural cubic regression spline with ``1 + [n >= 3] + [n >= 6] + [n >= 30]`` degrees of freedom (``n``
  genes; 4 for any genome-wide fit), interior knots at equally spaced quantiles of the average expression
  and boundary knots at its range. This is the natural-spline regression limma-trend documents
  (``splines::ns`` with an intercept); any basis of the same spline space gives the same fitted trend, and
  we use the truncated-power basis of Hastie, Tibshirani & Friedman (ESL, eq. 5.4-5.5). The variance of
  ``e`` is the residual mean square of that regression.
* When the observed spread of ``e`` is no larger than sampling alone explains, ``d0`` is infinite: every gene
  gets the prior variance (the pooled mean without a trend, the fitted trend with one).
* Posterior variance ``s2_post = (d0 s0^2 + d s2) / (d0 + d)``, moderated ``t = coef / (sqrt(s2_post) * u)``
  with ``u`` the unscaled standard deviation of the coefficient, on ``d + d0`` df capped at the pooled
  residual df of all genes (as limma does, so that an infinite ``d0`` gives a finite df).

What is *not* done here, on purpose: no independent filtering and no Cook's-distance outlier handling
(both are DESeq2 procedures for the NB model), and no log-fold-change shrinkage (NB-specific; the moderated t
already borrows strength across genes for the variance). BH runs over the genes that pass the expression
filter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
from scipy import special, stats

from il6axis.acquire.count_tables import normalised_array
from il6axis.cohort.value_scale import CPM_TOTAL_RANGE, LOG2_MAX, LOG2_NORMALISED, NORMALISED, log2_values
from il6axis.de.contract import (
    FLAG_COLUMNS,
    REASON_EXPRESSION,
    SCALE_NORMALISED,
    SEVERITY_COEF,
    STAT_COLUMNS,
    DeResult,
    DeSettings,
    LinearRefitInputs,
    benjamini_hochberg,
    contrast_design_frame,
    design_formula,
    design_matrix,
    expression_filter,
)
from il6axis.errors import InputError
from il6axis.vocabulary import MILD, SEVERE

log = logging.getLogger(__name__)

# Effects are differences of log2 normalised values: log2(value + 1), or the published log2 values.
SCALE = SCALE_NORMALISED
MODEL_LABEL = "(log2 linear model, moderated t)"
# A genome-wide matrix of normalised counts always has values far above this; a matrix whose largest value is
# below it has almost certainly been log-transformed already, and logging it again would be silently wrong.
LOG_SCALE_MAX = LOG2_MAX
# Variances are floored at this fraction of the median before taking logs (an exactly constant gene has
# s2 = 0 and log 0 = -inf); the floor is far below any real gene's variance.
VARIANCE_FLOOR = 1e-5


# ------------------------------------------------------------------------------------------ input scale


def log2_expression(values: pd.DataFrame, prior: float = 1.0) -> pd.DataFrame:
    """``log2(values + prior)`` for a samples x genes matrix of normalised expression (not log-scaled).

    The prior count keeps zeros finite and damps the variance of barely expressed genes. Negative, NaN or
    infinite values mean the matrix is not normalised expression on the linear scale (already logged, centred,
    or corrupted), so they raise :class:`InputError` rather than being clipped.
    """
    if not prior > 0 or not np.isfinite(prior):
        raise InputError(f"log2 prior count must be a positive finite number, got {prior!r}; use e.g. 1.0")
    arr = normalised_array(values, "normalised expression matrix (samples x genes)")
    return pd.DataFrame(np.log2(arr + prior), index=values.index, columns=values.columns)


# ------------------------------------------------------------------------------------------ OLS, all genes


@dataclass
class LinearFit:
    """Per-gene OLS fits sharing one design (limma's ``lmFit`` without weights or missing values)."""

    coefficients: np.ndarray  # p x genes
    stdev_unscaled: np.ndarray  # p: sqrt(diag((X'X)^-1)), the same for every gene
    s2: np.ndarray  # genes: residual variance, RSS / df_residual
    df_residual: int  # n - rank
    ave_expr: np.ndarray  # genes: mean of y over samples (limma's AveExpr / Amean)
    columns: list[str]  # design column names


def fit_linear_models(y: np.ndarray, design: np.ndarray, columns: Sequence[str] | None = None) -> LinearFit:
    """OLS of every gene (column of ``y``, samples x genes) on ``design`` (samples x p) in one QR.

    All genes share the design, so one QR factorisation ``X = QR`` gives every coefficient vector as
    ``R^-1 Q'y``; the unscaled coefficient SDs ``sqrt(diag(R^-1 R^-T))`` are gene-independent. A
    rank-deficient design (a covariate collinear with severity or with another covariate) has no unique
    estimate and is rejected rather than silently pivoted.
    """
    y = np.asarray(y, dtype=float)
    x = np.asarray(design, dtype=float)
    names = list(columns) if columns is not None else [f"x{i}" for i in range(x.shape[1])]
    if y.ndim != 2 or x.ndim != 2 or y.shape[0] != x.shape[0]:
        raise InputError(
            f"expression ({y.shape}) and design ({x.shape}) must both be samples x ... with the same number "
            f"of samples; pass y as samples x genes"
        )
    n, p = x.shape
    rank = int(np.linalg.matrix_rank(x))
    if rank < p:
        raise InputError(
            f"design matrix with columns {names} is rank-deficient (rank {rank} < {p} columns): a covariate "
            f"is constant or collinear with severity/another covariate among the contrast samples; drop it "
            f"from the cohort's covariates"
        )
    df_residual = n - p
    if df_residual < 1:
        raise InputError(
            f"{n} samples for {p} design columns {names} leave no residual degrees of freedom; the linear "
            f"model needs more samples than columns: drop covariates or add samples"
        )
    q, r = np.linalg.qr(x)
    coefficients = np.linalg.solve(r, q.T @ y)
    resid = y - x @ coefficients
    s2 = np.einsum("ij,ij->j", resid, resid) / df_residual
    r_inv = np.linalg.solve(r, np.eye(p))
    stdev_unscaled = np.sqrt(np.einsum("ij,ij->i", r_inv, r_inv))
    return LinearFit(
        coefficients=coefficients,
        stdev_unscaled=stdev_unscaled,
        s2=s2,
        df_residual=df_residual,
        ave_expr=y.mean(axis=0),
        columns=names,
    )


# ---------------------------------------------------------------------------- empirical Bayes moderation


def trigamma_inverse(x: np.ndarray | float) -> np.ndarray:
    """Solve ``trigamma(y) = x`` for ``y > 0`` (elementwise), by Newton's method on ``1 / trigamma``.

    ``1 / trigamma(y)`` is nearly linear in ``y`` (about ``y - 1/2`` for large ``y``), so Newton on it
    converges in a few steps from ``y = 1/2 + 1/x`` (Smyth 2004, appendix). Extreme arguments use the
    asymptotes ``trigamma(y) ~ 1/y^2`` (small y) and ``~ 1/y`` (large y).
    """
    x = np.atleast_1d(np.asarray(x, dtype=float))
    if (x <= 0).any() or not np.isfinite(x).all():
        raise ValueError("trigamma_inverse needs positive finite arguments")
    y = 0.5 + 1.0 / x
    small, large = x < 1e-6, x > 1e7
    for _ in range(100):
        tri = special.polygamma(1, y)
        step = tri * (1.0 - tri / x) / special.polygamma(2, y)
        y = y + step
        if np.max(np.where(small | large, 0.0, np.abs(step) / y)) < 1e-8:
            break
    y = np.where(small, 1.0 / x, y)
    return np.where(large, 1.0 / np.sqrt(np.where(large, x, 1.0)), y)


def _natural_spline_basis(x: np.ndarray, df: int) -> np.ndarray:
    """A basis of natural cubic splines in ``x`` with ``df`` columns (intercept included).

    Knots: the range of ``x`` as boundary knots and ``df - 2`` interior knots at equally spaced quantiles
    (R's default quantile definition), the knot placement of ``splines::ns(x, df, intercept = TRUE)``. The
    truncated-power construction of ESL eq. 5.4-5.5 spans the same space, hence the same fitted values;
    ``x`` is rescaled to [0, 1] first to keep the cubes well conditioned.
    """
    lo, hi = float(x.min()), float(x.max())
    u = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    inner = np.quantile(u, np.linspace(0.0, 1.0, df)[1:-1]) if df > 2 else np.empty(0)
    # tied quantiles (heavily discrete x) would give a zero-width knot interval: keep distinct knots only
    knots = np.unique(np.concatenate([[0.0], inner, [1.0]]))
    cols = [np.ones_like(u), u]
    last = knots[-1]

    def d(k: float) -> np.ndarray:
        return (np.clip(u - k, 0, None) ** 3 - np.clip(u - last, 0, None) ** 3) / (last - k)

    d_before_last = d(knots[-2])
    for k in knots[:-2]:
        cols.append(d(k) - d_before_last)
    return np.column_stack(cols)


def default_spline_df(n_genes: int) -> int:
    """Trend flexibility by number of genes: 1 + [n >= 3] + [n >= 6] + [n >= 30] (limma's documented rule)."""
    return 1 + int(n_genes >= 3) + int(n_genes >= 6) + int(n_genes >= 30)


@dataclass
class FDist:
    """Fitted scaled-F prior of the gene variances: ``s2 ~ scale * F(df1, df2)``."""

    scale: np.ndarray  # s0^2 per gene (constant without a covariate)
    df2: float  # d0 (may be inf)


def fit_f_dist(x: np.ndarray, df1: float, covariate: np.ndarray | None = None) -> FDist:
    """Moment estimates of ``s0^2`` and ``d0`` for ``x ~ s0^2 F(df1, d0)`` (Smyth 2004, section 6.2).

    ``x``: sample variances of the genes, each on ``df1`` df. With ``covariate`` (the genes' average log
    expression), ``log s0^2`` is a natural-spline trend in it (see the module docstring).
    """
    x = np.asarray(x, dtype=float)
    n = x.size
    if n < 2:
        raise ValueError("fit_f_dist needs variances of at least two genes")
    if not np.isfinite(x).all() or (x < 0).any():
        raise ValueError("fit_f_dist needs finite non-negative variances")
    if not df1 > 0:
        raise ValueError("fit_f_dist needs positive residual degrees of freedom")
    median = float(np.median(x))
    if median == 0:
        log.warning("more than half of the residual variances are zero: the variance prior is unreliable")
        median = 1.0
    x = np.maximum(x, VARIANCE_FLOOR * median)
    e = np.log(x) - special.digamma(df1 / 2) + np.log(df1 / 2)

    spline_df = 1
    if covariate is not None:
        covariate = np.asarray(covariate, dtype=float)
        spline_df = min(default_spline_df(n), len(np.unique(covariate)))
    if spline_df < 2:
        e_mean = np.full(n, e.mean())
        e_var = float(np.sum((e - e.mean()) ** 2) / (n - 1))
    else:
        basis = _natural_spline_basis(covariate, spline_df)
        coef, _, rank, _ = np.linalg.lstsq(basis, e, rcond=None)
        e_mean = basis @ coef
        # residual mean square of the trend regression: sum of squared residuals over n - rank
        e_var = float(np.sum((e - e_mean) ** 2) / (n - rank))

    excess = e_var - float(special.polygamma(1, df1 / 2))
    if excess > 0:
        df2 = float(2 * trigamma_inverse(excess)[0])
        scale = np.exp(e_mean + special.digamma(df2 / 2) - np.log(df2 / 2))
    else:
        # No variability beyond sampling: the prior is exact (d0 = inf). Without a trend the MLE of the
        # common variance is the mean of x; with one, the fitted trend itself.
        df2 = float("inf")
        scale = np.full(n, x.mean()) if spline_df < 2 else np.exp(e_mean)
    return FDist(scale=scale, df2=df2)


@dataclass
class SqueezedVariances:
    s2_post: np.ndarray
    s2_prior: np.ndarray  # per gene
    df_prior: float


def squeeze_variances(s2: np.ndarray, df: float, covariate: np.ndarray | None = None) -> SqueezedVariances:
    """Posterior variances ``(d0 s0^2 + d s2) / (d0 + d)``; with ``d0 = inf`` the prior itself."""
    prior = fit_f_dist(s2, df, covariate)
    if np.isinf(prior.df2):
        post = prior.scale.copy()
    else:
        post = (prior.df2 * prior.scale + df * np.asarray(s2, dtype=float)) / (prior.df2 + df)
    return SqueezedVariances(s2_post=post, s2_prior=prior.scale, df_prior=prior.df2)


@dataclass
class ModeratedTest:
    """Moderated t statistics for one coefficient of a :class:`LinearFit` (limma's ``eBayes``)."""

    coefficient: np.ndarray
    se: np.ndarray  # sqrt(s2_post) * stdev_unscaled
    t: np.ndarray
    pvalue: np.ndarray
    df_total: np.ndarray
    s2_post: np.ndarray
    s2_prior: np.ndarray
    df_prior: float


def moderated_t(fit: LinearFit, coef: str | int, trend: bool = True) -> ModeratedTest:
    """Empirical Bayes moderated t test of one coefficient, optionally with the mean-variance trend."""
    j = fit.columns.index(coef) if isinstance(coef, str) else int(coef)
    squeezed = squeeze_variances(fit.s2, fit.df_residual, fit.ave_expr if trend else None)
    n_genes = fit.s2.size
    # limma caps the total df at the pooled residual df of all genes: the posterior variance can never be
    # better determined than by pooling every gene.
    df_total = np.minimum(fit.df_residual + squeezed.df_prior, fit.df_residual * n_genes)
    df_total = np.full(n_genes, df_total, dtype=float)
    beta = fit.coefficients[j]
    se = np.sqrt(squeezed.s2_post) * fit.stdev_unscaled[j]
    t = beta / se
    pvalue = 2 * stats.t.sf(np.abs(t), df_total)
    return ModeratedTest(
        coefficient=beta,
        se=se,
        t=t,
        pvalue=pvalue,
        df_total=df_total,
        s2_post=squeezed.s2_post,
        s2_prior=squeezed.s2_prior,
        df_prior=squeezed.df_prior,
    )


# ------------------------------------------------------------------------------------------- the DE route


def run_log_linear(
    adata: ad.AnnData,
    covariates: Sequence[str],
    settings: DeSettings,
    layer: str | None = None,
    prior: float = 1.0,
    trend: bool = True,
    min_value: float | None = None,
    values_are_log2: bool | None = None,
) -> DeResult:
    """Severe vs mild on ``log2(normalised + prior)``: per-gene OLS, limma-trend moderated t, BH.

    ``adata``: samples x genes of *normalised* values on the linear, count-like scale (normalised counts,
    ``layer`` if not in ``X``); ``obs["severity"]`` as in the cohort contract; only severe and mild samples
    are used. With ``values_are_log2`` (default: ``adata.uns["value_type"] == "log2_normalised"``) the
    values are already log2 (negatives allowed) and are modelled as they are, with no second log: the route
    is then the linear route applied to ``2**x - prior``, up to baseMean (the mean of ``2**x``, ``prior``
    higher). Design: the NB route's model frame (``contrast_design_frame``: numeric covariates
    standardised, severity mild/severe) and formula, with ``settings.extra_covariates`` appended.

    Expression filter: a gene is tested when its normalised value is >= ``min_value`` (default
    ``settings.min_count``) in at least as many samples as the smaller group, i.e. the NB route's rule
    applied to the normalised values; for log2 values the same rule on the log scale,
    ``x >= log2(min_value + prior)``, so both inputs of one data set test the same genes. Normalised counts
    (DESeq2 median-of-ratios, TMM-scaled counts) keep the raw-count scale up to per-sample factors near 1,
    so the threshold keeps its meaning ("about 10 reads in most samples of one group"), and both routes
    test comparable genes. It assumes a count-like scale:
    for CPM/TPM input the same number would be 10 CPM, a much stricter filter (a warning is logged when
    column totals look like CPM/TPM); pass a ``min_value`` suited to such a scale (filterByExpr's equivalent
    is min_count / median library size in millions, e.g. 0.5 CPM at 20 M reads).

    The table has the NB table's columns (gene, baseMean, log2FoldChange, lfcSE, ci_low, ci_high, stat,
    pvalue, padj, tested, not_tested_reason) plus ``df_total``, ``AveExpr`` and ``scale``
    (= ``log2_normalised``) and ``value_type`` (``normalised`` or ``log2_normalised``, for labels):
    log2FoldChange is the severity coefficient on the log2 scale, lfcSE the moderated SE, stat the moderated
    t, the CI a t interval on ``df_total`` df; baseMean is the mean normalised value on the linear scale
    (``2**x`` for log2 values) and AveExpr the mean log2 value over the contrast samples (given for every
    gene).
    """
    if values_are_log2 is None:
        values_are_log2 = str(adata.uns.get("value_type", "")) == LOG2_NORMALISED
    in_contrast = adata.obs["severity"].astype(str).isin([SEVERE, MILD]).to_numpy()
    sub = adata[in_contrast]
    matrix = sub.layers[layer] if layer is not None else sub.X
    values = pd.DataFrame(np.asarray(matrix, dtype=float), index=sub.obs_names, columns=sub.var_names)
    if values_are_log2:
        # Already log2: model the values as they are. The filter and baseMean need the linear scale.
        label = "log2 expression matrix (samples x genes)"
        logged = pd.DataFrame(log2_values(values, label), index=values.index, columns=values.columns)
        values = np.exp2(logged)
        _warn_if_cpm_like(values)
    else:
        logged = log2_expression(values, prior)  # validates before anything else
        _check_linear_scale(values)

    covariates = [*covariates, *settings.extra_covariates]
    meta = contrast_design_frame(sub.obs, covariates)
    n_per_group = {g: int((meta["severity"] == g).sum()) for g in (MILD, SEVERE)}
    if min(n_per_group.values()) == 0:
        raise InputError(
            f"the contrast needs samples in both groups, got {n_per_group}; check the severity map"
        )
    formula = design_formula(covariates)
    design = design_matrix(meta, formula)

    threshold = settings.min_count if min_value is None else min_value
    if values_are_log2:  # value >= t on the linear route <=> log2(value + prior) >= log2(t + prior)
        keep = expression_filter(logged, meta["severity"], float(np.log2(threshold + prior)))
    else:
        keep = expression_filter(values, meta["severity"], threshold)
    n_tested = int(keep.sum())
    if n_tested < 2:
        scale = f"log2 scale (>= log2({threshold:g} + {prior:g}))" if values_are_log2 else "normalised scale"
        raise InputError(
            f"only {n_tested} gene(s) reach {threshold:g} on the {scale} in "
            f"{int(meta['severity'].value_counts().min())} samples; is `counts.value_type` right for these "
            f"values? Lower the expression threshold (min_count) if the scale is right"
        )
    log.info(
        "design %s %s; %s; %d/%d genes pass the expression filter",
        formula,
        MODEL_LABEL,
        n_per_group,
        n_tested,
        len(keep),
    )

    fit = fit_linear_models(logged.loc[:, keep].to_numpy(), design.to_numpy(), list(design.columns))
    test = moderated_t(fit, SEVERITY_COEF, trend=trend)
    log.info(
        "variance prior: d0 = %.3g, s0^2 median %.3g (trend=%s)",
        test.df_prior,
        float(np.median(test.s2_prior)),
        trend,
    )

    genes = values.columns
    tested_genes = genes[keep.to_numpy()]
    refit_inputs = None
    if settings.refit_genes:  # the panel genes' values and the full fit's prior, for stability refits
        refit_inputs = linear_refit_inputs(
            logged, design, SEVERITY_COEF,
            pd.Series(test.s2_prior, index=tested_genes), test.df_prior, n_tested, settings.refit_genes,
        )  # fmt: skip
    t_crit = stats.t.ppf(0.975, test.df_total)
    res = pd.DataFrame(
        {
            "log2FoldChange": test.coefficient,
            "lfcSE": test.se,
            "ci_low": test.coefficient - t_crit * test.se,
            "ci_high": test.coefficient + t_crit * test.se,
            "stat": test.t,
            "pvalue": test.pvalue,
            "df_total": test.df_total,
        },
        index=tested_genes,
    )
    table = res.reindex(genes)
    table.insert(0, "baseMean", values.mean(axis=0).to_numpy())
    table["padj"] = benjamini_hochberg(table["pvalue"])
    table["tested"] = keep.to_numpy()
    table["not_tested_reason"] = np.where(table["tested"], "", REASON_EXPRESSION)
    table["cooks_outlier"] = table["independently_filtered"] = False  # NB-model flags; never set here
    table["AveExpr"] = logged.mean(axis=0).to_numpy()
    table["scale"] = SCALE
    table["value_type"] = LOG2_NORMALISED if values_are_log2 else NORMALISED
    table.index.name = "gene"
    table = table.reset_index()
    order = [*STAT_COLUMNS, *FLAG_COLUMNS, "df_total", "AveExpr", "scale", "value_type"]
    return DeResult(
        table=table[order],
        design=f"{formula} {MODEL_LABEL}",
        n_per_group=n_per_group,
        n_tested=n_tested,
        refit_inputs=refit_inputs,
    )


def linear_refit_inputs(
    values: pd.DataFrame,
    design: pd.DataFrame,
    coef: str,
    s2_prior: pd.Series,
    df_prior: float,
    n_genes_fitted: int,
    genes: Iterable[str],
) -> LinearRefitInputs | None:
    """The stability refits' inputs for ``genes`` (those the linear fit tested): the modelled log2 values
    (samples x genes), the design and the full fit's prior (``s2_prior`` indexed by gene)."""
    wanted = [g for g in dict.fromkeys(genes) if g in s2_prior.index and g in values.columns]
    if not wanted:
        return None
    return LinearRefitInputs(
        genes=wanted,
        samples=[str(s) for s in values.index],
        values=values.loc[:, wanted].to_numpy(dtype=float),
        design=design.to_numpy(dtype=float),
        coef_index=list(design.columns).index(coef),
        s2_prior=s2_prior.loc[wanted].to_numpy(dtype=float),
        df_prior=float(df_prior),
        n_genes_fitted=int(n_genes_fitted),
    )


def _check_linear_scale(values: pd.DataFrame) -> None:
    """Refuse values that are evidently log-scaled already; warn on CPM/TPM-like column totals."""
    top = float(values.to_numpy().max()) if values.size else 0.0
    if top < LOG_SCALE_MAX:
        raise InputError(
            f"the largest normalised value is {top:.3g}: the matrix looks log-transformed already, and the "
            f"linear DE route would log it again; set `counts.value_type: log2_normalised` to model the "
            f"values as they are, or give it normalised values on the linear scale"
        )
    _warn_if_cpm_like(values)


def _warn_if_cpm_like(values: pd.DataFrame) -> None:
    """Warn when samples total about a million (CPM/TPM): min_count then means min_count CPM."""
    # TMM-scaled CPM totals scatter around 1e6 by the normalisation factors, so test the median loosely.
    median_total = float(values.sum(axis=1).median())
    if CPM_TOTAL_RANGE[0] <= median_total <= CPM_TOTAL_RANGE[1]:
        log.warning(
            "samples total %.3g on median: values look like CPM/TPM, not normalised counts; the expression "
            "filter (>= min_count) then means min_count CPM, stricter than on normalised counts",
            median_total,
        )
