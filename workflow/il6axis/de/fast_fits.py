"""The iterative per-gene fits of pydeseq2 0.5.4, driven for many genes at once: IRLS and the dispersion MLE.

Each gene runs its own stock algorithm and ends where stock ends (fast_inference.py: why and how this is
checked):

* IRLS (:func:`irls_block`) runs the identical per-gene iteration (same start from the QR fit, same ridge,
  same deviance stopping rule, same final hat diagonals) for all genes at once, each gene stopping on its
  own. A gene whose iteration diverges (|beta| > max_beta or maxiter) is handed to pydeseq2's own
  ``irls_solver``, which re-runs it from scratch and switches to L-BFGS-B exactly as stock does.
* Dispersions (:func:`alpha_mle_block`) use SciPy's L-BFGS-B through :func:`lbfgsb_lockstep`: one
  optimiser state per gene, the objective and gradient of all genes that asked for them evaluated in one
  call. A gene whose optimiser does not converge is handed to pydeseq2's ``fit_alpha_mle`` (which then
  falls back to its grid search, as stock does).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydeseq2 import utils
from scipy import linalg
from scipy.special import digamma, gammaln

from il6axis.de.lbfgsb_lockstep import lbfgsb_lockstep
from il6axis.de.nb_kernels import linear_predictor, scalar_square, weighted_gram

# --------------------------------------------------------------------------------------------------- IRLS


def _nb_nll_rows(counts: np.ndarray, mu: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """pydeseq2 ``nb_nll`` (scalar-dispersion branch) for each row: genes x samples, one alpha per gene."""
    n = counts.shape[1]
    a = alpha[:, None]
    alpha_neg1 = 1 / a
    logbinom = gammaln(counts + alpha_neg1) - gammaln(counts + 1) - gammaln(alpha_neg1)
    rest = (-logbinom + (counts + alpha_neg1) * np.log(alpha_neg1 + mu) - counts * np.log(mu)).sum(axis=1)
    return n * alpha_neg1[:, 0] * np.log(alpha) + rest


def irls_block(
    counts: np.ndarray,
    size_factors: np.ndarray,
    design_matrix: np.ndarray,
    disp: np.ndarray,
    min_mu: float,
    beta_tol: float,
    min_beta: float,
    max_beta: float,
    optimizer: Literal["BFGS", "L-BFGS-B"],
    maxiter: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """pydeseq2 ``irls_solver`` for a (samples x genes) block, all genes iterated together.

    Each operation is the batched form of the one stock applies per gene and calls the same LAPACK/BLAS
    routine per gene (SciPy's batched ``solve`` with ``assume_a="pos"`` is one Cholesky solve per gene),
    so the iterates match stock's bit for bit on the builds we checked, not just to rounding.
    """
    x = np.asarray(design_matrix, dtype=float)
    c = np.ascontiguousarray(counts.T)  # genes x samples, integer as stock receives it
    n_genes = c.shape[0]
    num_vars = x.shape[1]
    sf = np.asarray(size_factors, dtype=float)
    disp = np.asarray(disp, dtype=float)

    if np.linalg.matrix_rank(x) == num_vars:
        q, r = np.linalg.qr(x)
        y = np.log(c / sf + 0.1)
        qty = np.matmul(q.T, y[:, :, None])
        beta = linalg.solve(np.broadcast_to(r, (n_genes, num_vars, num_vars)), qty)[:, :, 0]
    else:
        beta = np.zeros((n_genes, num_vars))
        with np.errstate(divide="ignore"):
            beta[:, 0] = np.log(c / sf).mean(axis=1)
    ridge = np.diag(np.repeat(1e-6, num_vars))
    mu = np.maximum(sf * np.exp(linear_predictor(x, beta)), min_mu)
    dev = np.full(n_genes, 1000.0)
    dev_ratio = np.ones(n_genes)
    n_iter = np.zeros(n_genes, dtype=int)
    fallback = np.zeros(n_genes, dtype=bool)
    active = dev_ratio > beta_tol

    while active.any():
        idx = np.flatnonzero(active)
        mu_a, d_a, c_a = mu[idx], disp[idx, None], c[idx]
        w = mu_a / (1.0 + mu_a * d_a)
        z = np.log(mu_a / sf) + (c_a - mu_a) / mu_a
        h = weighted_gram(x, w) + ridge
        rhs = np.matmul(x.T, (w * z)[:, :, None])
        beta_hat = linalg.solve(h, rhs, assume_a="pos")[:, :, 0]
        n_iter[idx] += 1
        diverged = (np.abs(beta_hat) > max_beta).any(axis=1) | (n_iter[idx] >= maxiter)
        fallback[idx[diverged]] = True
        keep = ~diverged
        idx, beta_hat = idx[keep], beta_hat[keep]
        beta[idx] = beta_hat
        mu[idx] = np.maximum(sf * np.exp(linear_predictor(x, beta_hat)), min_mu)
        old_dev = dev[idx]
        dev[idx] = -2 * _nb_nll_rows(c[idx], mu[idx], disp[idx])
        dev_ratio[idx] = np.abs(dev[idx] - old_dev) / (np.abs(dev[idx]) + 0.1)
        active = (dev_ratio > beta_tol) & ~fallback

    w = mu / (1.0 + mu * disp[:, None])
    inv = np.linalg.inv(weighted_gram(x, w) + ridge)
    hat = np.einsum("ij,gjk,ik->gi", x, inv, x)
    w_sq = np.sqrt(w)
    hat = w_sq * hat * w_sq
    mu_out = sf * np.exp(linear_predictor(x, beta))
    converged = np.ones(n_genes, dtype=bool)

    for g in np.flatnonzero(fallback):
        # Diverging genes: pydeseq2's own solver, from scratch, so they follow stock exactly.
        b, m, hd, ok = utils.irls_solver(
            counts=counts[:, g],
            size_factors=size_factors,
            design_matrix=design_matrix,
            disp=disp[g],
            min_mu=min_mu,
            beta_tol=beta_tol,
            min_beta=min_beta,
            max_beta=max_beta,
            optimizer=optimizer,
            maxiter=maxiter,
        )
        beta[g], mu_out[g], hat[g], converged[g] = b, m, hd, ok
    return beta, mu_out.T, hat.T, converged


# ------------------------------------------------------------------------------------- dispersion MLE


class _DispersionObjective:
    """pydeseq2 ``fit_alpha_mle`` loss and gradient in log-dispersion, for many genes at once."""

    def __init__(
        self,
        counts: np.ndarray,
        design_matrix: np.ndarray,
        mu: np.ndarray,
        log_alpha_hat: np.ndarray,
        prior_disp_var: float | None,
        cr_reg: bool,
        prior_reg: bool,
    ) -> None:
        self.x = np.asarray(design_matrix, dtype=float)
        self.counts = np.ascontiguousarray(counts.T, dtype=float)  # genes x samples
        self.mu = np.ascontiguousarray(mu.T, dtype=float)
        self.log_alpha_hat = log_alpha_hat
        self.prior_disp_var = prior_disp_var
        self.cr_reg = cr_reg
        self.prior_reg = prior_reg
        # Terms that do not depend on the dispersion, computed once (same values as stock recomputes).
        self.gammaln_counts1 = gammaln(self.counts + 1)
        self.counts_log_mu = self.counts * np.log(self.mu)

    def __call__(self, genes: np.ndarray, log_alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Loss and d loss / d log_alpha for ``genes`` (row indices) at ``log_alpha``."""
        c, mu = self.counts[genes], self.mu[genes]
        n = c.shape[1]
        alpha = np.exp(log_alpha)
        a = alpha[:, None]
        alpha_neg1 = 1 / a
        logbinom = gammaln(c + alpha_neg1) - self.gammaln_counts1[genes] - gammaln(alpha_neg1)
        nll = n * alpha_neg1[:, 0] * np.log(alpha) + (
            -logbinom + (c + alpha_neg1) * np.log(alpha_neg1 + mu) - self.counts_log_mu[genes]
        ).sum(axis=1)
        dnll = -(
            scalar_square(alpha_neg1[:, 0])
            * (
                digamma(alpha_neg1)
                - digamma(c + alpha_neg1)
                + np.log(1 + mu * a)
                + (c - mu) / (mu + alpha_neg1)
            ).sum(axis=1)
        )
        reg = np.zeros(len(genes))
        reg_grad = np.zeros(len(genes))
        if self.cr_reg:
            w = mu / (1 + mu * a)
            gram = weighted_gram(self.x, w)
            reg += 0.5 * np.linalg.slogdet(gram)[1]
            d_gram = weighted_gram(self.x, -(w**2))
            reg_grad += 0.5 * (np.linalg.inv(gram) * d_gram).sum(axis=(1, 2)) * alpha
        if self.prior_reg:
            diff = log_alpha - self.log_alpha_hat[genes]
            reg += scalar_square(diff) / (2 * self.prior_disp_var)
            reg_grad += diff / self.prior_disp_var
        return nll + reg, alpha * dnll + reg_grad


def alpha_mle_block(
    counts: np.ndarray,
    design_matrix: np.ndarray,
    mu: np.ndarray,
    alpha_hat: np.ndarray,
    min_disp: float,
    max_disp: float,
    prior_disp_var: float | None,
    cr_reg: bool,
    prior_reg: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """pydeseq2 ``fit_alpha_mle`` for a (samples x genes) chunk, L-BFGS-B states in lock step."""
    log_alpha_hat = np.log(alpha_hat)
    objective = _DispersionObjective(
        counts, design_matrix, mu, log_alpha_hat, prior_disp_var, cr_reg, prior_reg
    )
    with np.errstate(all="ignore"):  # stock runs these in workers that do not surface warnings either
        log_alpha, success = lbfgsb_lockstep(objective, log_alpha_hat, np.log(min_disp), np.log(max_disp))
    alpha = np.exp(log_alpha)
    for g in np.flatnonzero(~success):
        # Stock re-runs the optimiser (it fails again) and then grid-searches; keep its exact behaviour.
        alpha[g], success[g] = utils.fit_alpha_mle(
            counts=counts[:, g],
            design_matrix=design_matrix,
            mu=mu[:, g],
            alpha_hat=alpha_hat[g],
            min_disp=min_disp,
            max_disp=max_disp,
            prior_disp_var=prior_disp_var,
            cr_reg=cr_reg,
            prior_reg=prior_reg,
        )
    return alpha, success
