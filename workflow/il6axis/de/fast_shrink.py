"""apeGLM LFC shrinkage (pydeseq2 0.5.4's ``nbinomGLM``) for many genes at once, checked against stock.

The same lock-step L-BFGS-B as the dispersion fits (lbfgsb_lockstep.py), here unbounded and on all design
coefficients at once (``minimize``'s n-dimensional workspace per gene, pydeseq2's ftol = gtol = 1e-8, its
start and its per-gene scale constant), then the same inverse Hessian (including stock's addition of the
prior curvature to every row, not only the diagonal). Genes that do not converge go to ``nbinomGLM`` itself
(re-run, then its grid search for two-coefficient designs). Before the vectorised objective is trusted with
a call, a few genes are fitted both ways (:func:`shrink_agrees_with_stock`); any difference beyond rounding
sends the call to stock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from pydeseq2 import utils
from threadpoolctl import threadpool_limits

from il6axis.de.lbfgsb_lockstep import SHRINK_FTOL, SHRINK_GTOL, lbfgsb_lockstep
from il6axis.de.nb_kernels import linear_predictor, scalar_square, weighted_gram

log = logging.getLogger(__name__)

# Genes per call compared with stock nbinomGLM before the vectorised shrinkage is trusted, and the largest
# |LFC| difference (natural log) accepted there.
SHRINK_SPOT_CHECK_GENES = 8
SHRINK_SPOT_CHECK_TOL = 1e-9


@dataclass(frozen=True)
class ShrinkPrior:
    """The gene-independent arguments of pydeseq2's ``nbinomGLM``: design, offset and the apeGLM prior."""

    design_matrix: np.ndarray
    offset: np.ndarray
    prior_no_shrink_scale: float
    prior_scale: float
    shrink_index: int

    def stock_fit(self, counts: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray, bool]:
        """Stock pydeseq2's fit of one gene (its counts over samples and its dispersion-derived size)."""
        return utils.nbinomGLM(
            design_matrix=self.design_matrix,
            counts=counts,
            size=size,
            offset=self.offset,
            prior_no_shrink_scale=self.prior_no_shrink_scale,
            prior_scale=self.prior_scale,
            optimizer="L-BFGS-B",
            shrink_index=self.shrink_index,
        )


class ShrinkObjective:
    """pydeseq2 ``nbinomGLM``'s objective for many genes: ``nbinomFn`` (NB negative log-likelihood plus the
    apeGLM prior: normal on the unshrunk coefficients, Cauchy on the shrunk one) and its gradient, each
    divided by the gene's scale constant ``max(nbinomFn(0), 1)``, term by term as stock evaluates them."""

    def __init__(self, counts: np.ndarray, size: np.ndarray, prior: ShrinkPrior) -> None:
        self.x = np.asarray(prior.design_matrix, dtype=float)
        shrink_index, prior_scale = prior.shrink_index, prior.prior_scale
        num_vars = self.x.shape[1]
        # genes x samples; stock mixes the integer counts into float arithmetic, exact below 2**53.
        self.counts = np.ascontiguousarray(counts.T, dtype=float)
        self.size = np.asarray(size, dtype=float)
        self.log_size = np.log(self.size)
        self.counts_plus_size = self.counts + self.size[:, None]  # the same sum stock forms at every call
        self.offset = np.asarray(prior.offset, dtype=float)
        self.shrink_index = shrink_index
        self.shrink_mask = np.zeros(num_vars)
        self.shrink_mask[shrink_index] = 1
        self.no_shrink_mask = np.ones(num_vars) - self.shrink_mask
        self.prior_no_shrink_scale = prior.prior_no_shrink_scale
        self.prior_scale = prior_scale
        # ``prior_scale ** 2`` on the object stock receives (a NumPy scalar squares with libm pow).
        self.prior_scale_sq = prior_scale**2
        rows = np.arange(len(self.size))
        self.cnst = np.maximum(self.value(rows, np.zeros((len(rows), num_vars))), 1)

    def value(self, rows: np.ndarray, beta: np.ndarray, xbeta: np.ndarray | None = None) -> np.ndarray:
        """``nbinomFn`` of genes ``rows`` at ``beta`` (rows x coefficients), unscaled."""
        if xbeta is None:
            xbeta = linear_predictor(self.x, beta)
        normal = ((beta * self.no_shrink_mask) ** 2 / (2 * self.prior_no_shrink_scale**2)).sum(axis=1)
        cauchy = np.log1p(scalar_square(beta[:, self.shrink_index] / self.prior_scale))
        log_mu_plus_size = np.logaddexp(xbeta + self.offset, self.log_size[rows, None])
        nll = (self.counts[rows] * xbeta - self.counts_plus_size[rows] * log_mu_plus_size).sum(axis=1)
        return (normal + cauchy) - nll

    def __call__(self, rows: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scaled objective and gradient of genes ``rows`` at ``beta``."""
        xbeta = linear_predictor(self.x, beta)
        cnst = self.cnst[rows]
        fun = self.value(rows, beta, xbeta) / cnst
        beta_k_sq = scalar_square(beta[:, self.shrink_index])
        d_neg_prior = (
            beta * self.no_shrink_mask / self.prior_no_shrink_scale**2
            + 2 * beta * self.shrink_mask / (self.prior_scale_sq + beta_k_sq)[:, None]
        )
        size = self.size[rows, None]
        resid = self.counts[rows] - self.counts_plus_size[rows] / (1 + size * np.exp(-xbeta - self.offset))
        d_nll = np.matmul(resid[:, None, :], self.x)[:, 0, :]  # a vector-matrix product per gene, as stock
        return fun, (d_neg_prior - d_nll) / cnst[:, None]

    def inverse_hessian(self, rows: np.ndarray, beta: np.ndarray) -> np.ndarray:
        """Inverse of ``nbinomGLM``'s unscaled Hessian at ``beta``, for genes ``rows``.

        Stock adds ``np.diag(np.diag(prior curvature))``, i.e. the prior curvature vector, to every row of
        X^T W X rather than to its diagonal; reproduced as is, since it decides which genes' shrunk
        values pydeseq2 keeps (those with a finite SE) and the SE it reports.
        """
        xbeta = linear_predictor(self.x, beta)
        size = self.size[rows, None]
        exp_xbeta_off = np.exp(xbeta + self.offset)
        frac = self.counts_plus_size[rows] * size * exp_xbeta_off / (size + exp_xbeta_off) ** 2
        h11 = 1 / self.prior_no_shrink_scale**2
        beta_k_sq = scalar_square(beta[:, self.shrink_index])
        h22 = 2 * (self.prior_scale_sq - beta_k_sq) / scalar_square(self.prior_scale_sq + beta_k_sq)
        curvature = self.no_shrink_mask * h11 + self.shrink_mask * h22[:, None]
        return np.linalg.inv(weighted_gram(self.x, frac) + curvature[:, None, :])


def shrink_block(
    counts: np.ndarray, size: np.ndarray, prior: ShrinkPrior
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pydeseq2 ``nbinomGLM`` (L-BFGS-B) for a (samples x genes) block, optimiser states in lock step."""
    objective = ShrinkObjective(counts, size, prior)
    n_genes, num_vars = counts.shape[1], objective.x.shape[1]
    beta_init = np.ones(num_vars) * 0.1 * (-1) ** (np.arange(num_vars))  # stock's start, every gene
    with np.errstate(all="ignore"):  # stock runs in workers that do not surface warnings either
        beta, converged = lbfgsb_lockstep(
            objective, np.tile(beta_init, (n_genes, 1)), None, None, SHRINK_FTOL, SHRINK_GTOL
        )
        # Converged genes only: a failed gene's iterate may not even give an invertible matrix, and stock
        # replaces both its LFCs and its inverse Hessian below.
        inv_hessian = np.full((n_genes, num_vars, num_vars), np.nan)
        done = np.flatnonzero(converged)
        inv_hessian[done] = objective.inverse_hessian(done, beta[done])
    for g in np.flatnonzero(~converged):
        # Stock re-runs the optimiser (it fails again) and, for a two-coefficient design, grid-searches.
        beta[g], inv_hessian[g], converged[g] = prior.stock_fit(counts[:, g], size[g])
    return beta, inv_hessian, converged


def _spot_genes(n_genes: int, n_check: int = SHRINK_SPOT_CHECK_GENES) -> np.ndarray:
    """Evenly spread gene indices for the stock comparison."""
    return np.unique(np.linspace(0, n_genes - 1, num=min(n_check, n_genes)).round().astype(int))


def shrink_agrees_with_stock(counts: np.ndarray, size: np.ndarray, prior: ShrinkPrior) -> bool:
    """Fit a few genes both ways before trusting the vectorised shrinkage with all of them.

    The lock-step driver is checked once against ``minimize``; this checks the objective, on this
    data and this NumPy/BLAS build. Bit-identical is the expectation; anything beyond rounding level
    (``SHRINK_SPOT_CHECK_TOL``) or a different convergence flag sends the whole call to stock.
    """
    genes = _spot_genes(counts.shape[1])
    if not len(genes):
        return True
    with threadpool_limits(limits=1, user_api="blas"):
        beta, _, ok = shrink_block(counts[:, genes], size[genes], prior)
        ref = [prior.stock_fit(counts[:, g], size[g]) for g in genes]
    ref_beta = np.array([r[0] for r in ref])
    ref_ok = np.array([bool(r[2]) for r in ref])
    with np.errstate(invalid="ignore"):
        diff = float(np.nanmax(np.abs(beta - ref_beta), initial=0.0))
    same_nan = bool((np.isnan(beta) == np.isnan(ref_beta)).all())
    if diff > SHRINK_SPOT_CHECK_TOL or not same_nan or not (ok == ref_ok).all():
        log.warning(
            "vectorised LFC shrinkage differs from stock on %d check genes (max |diff| %.3g): stock fits",
            len(genes), diff,
        )  # fmt: skip
        return False
    if diff:
        log.info("vectorised LFC shrinkage within %.3g of stock on the check genes", diff)
    return True
