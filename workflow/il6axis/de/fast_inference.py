"""Gene-vectorised drop-in for pydeseq2's ``DefaultInference``: same algorithms, same answers, less overhead.

pydeseq2 0.5.4 fits every gene separately in Python (a joblib task per gene): one IRLS loop, two scipy
L-BFGS-B dispersion fits and one Wald test each, plus the Cook's refit and, on request, one L-BFGS-B
apeGLM shrinkage fit. On 20,000 genes almost all of the time goes to Python call overhead around tiny
(100-sample) numpy operations, not to arithmetic.

This module keeps each gene's algorithm and numbers and only changes how they are driven:

* IRLS (``irls``) runs the identical per-gene iteration (same start from the QR fit, same ridge, same
  deviance stopping rule, same final hat diagonals) for all genes at once, each gene stopping on its own.
  A gene whose iteration diverges (|beta| > max_beta or maxiter) is handed to pydeseq2's own
  ``irls_solver``, which re-runs it from scratch and switches to L-BFGS-B exactly as stock does.
* Dispersions (``alpha_mle``) still use SciPy's L-BFGS-B, the same compiled routine that
  ``scipy.optimize.minimize`` drives, through its reverse-communication entry point ``setulb``: one
  optimiser state per gene, advanced in lock step, with the objective and gradient of all genes that
  asked for them evaluated in one vectorised call. Every gene therefore follows the same iterates as the
  stock per-gene ``minimize`` call; a gene whose optimiser does not converge is handed to pydeseq2's
  ``fit_alpha_mle`` (which then falls back to its grid search, as stock does).
* apeGLM LFC shrinkage (``lfc_shrink_nbinom_glm``, pydeseq2's ``nbinomGLM``) is the same lock-step
  L-BFGS-B, here unbounded and on all design coefficients at once (``minimize``'s n-dimensional workspace
  per gene, pydeseq2's ftol = gtol = 1e-8, its start and its per-gene scale constant), then the same
  inverse Hessian (including stock's addition of the prior curvature to every row, not only the
  diagonal). Genes that do not converge go to ``nbinomGLM`` itself (re-run, then its grid search for
  two-coefficient designs). Before trusting the vectorised objective with a call, a few genes are fitted
  both ways (``SHRINK_SPOT_CHECK_GENES``); any difference beyond rounding sends the call to stock.
* Wald tests and the linear-model start (``wald_test``, ``lin_reg_mu``) are closed forms, vectorised.

Results are bit-for-bit those of stock pydeseq2 0.5.4 on this stack (NumPy 2.4, SciPy 1.17): every
batched operation calls, per gene, the same BLAS/LAPACK routine stock calls (SciPy's batched
``solve(assume_a="pos")`` / ``lstsq``, ``np.matmul`` matrix-vector products, NumPy's batched ``inv`` and
``slogdet``) and the element-wise maths is the same, down to squaring NumPy scalars with libm ``pow`` as
stock does. This matters: for ~1% of genes stock's L-BFGS-B ends at rounding level, so a 1e-14 relative
change in its input flips its convergence flag, and pydeseq2's grid fallback for a failed MAP fit ignores
the dispersion prior; an earlier version that was "only" 1e-14 close moved a few genes' dispersions by up
to 0.17 (log) and padj by 0.05. ``bench/compare_with_r.py --fast`` reports the differences (0 on the
demo, GSE152418 and 20,000 x 100 synthetic cohorts; the shrunk LFCs are identical too, there and on
20,000 x 500 / 2,000, bench/README.md); the tolerance we hold to is max |log2FC difference| < 1e-6 on
genes with baseMean >= 10, with identical padj < alpha calls. On another BLAS build the agreement may
drop to rounding level, with those same few genes as the exceptions.

Genes are processed in chunks (at most ``CHUNK_CELLS`` cells and ``MAX_CHUNK_GENES`` genes), each written
straight into the preallocated outputs, so the extra memory is bounded whatever the cohort size (the
outputs pydeseq2 asks for plus O(chunk) work arrays), and chunks run on ``n_cpus`` threads (NumPy/SciPy
release the GIL in the batched kernels) with one BLAS thread each: stock's per-gene L-BFGS-B calls BLAS
on length-1 vectors, and with OpenBLAS's own threads on a loaded 2-core machine each such call costs ~1-2
ms (measured: 37 ms vs 1.2 ms per ``minimize`` call), which is why stock is slowest with ``n_cpus=1``.
``backend="loky"`` runs chunks in processes instead (measured slower here). ``setulb`` is a private SciPy
entry point: it is checked against ``scipy.optimize.minimize`` on first use (a bounded 1-D and an
unbounded 3-D problem), and if it is missing or disagrees, ``alpha_mle`` and ``lfc_shrink_nbinom_glm``
fall back to the stock per-gene path.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from joblib import Parallel, delayed, parallel_backend
from pydeseq2 import utils
from pydeseq2.default_inference import DefaultInference
from scipy import linalg
from scipy.optimize import minimize
from scipy.special import digamma, gammaln
from scipy.stats import norm
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

try:  # The compiled L-BFGS-B that scipy.optimize.minimize(method="L-BFGS-B") drives.
    from scipy.optimize import _lbfgsb as _LBFGSB
except ImportError:  # pragma: no cover - depends on the SciPy build
    _LBFGSB = None

# scipy.optimize.minimize(method="L-BFGS-B") defaults, which pydeseq2 uses unchanged.
LBFGSB_MAXCOR = 10
LBFGSB_FTOL = 2.2204460492503131e-09
LBFGSB_GTOL = 1e-5
LBFGSB_MAXLS = 20
LBFGSB_MAXITER = 15000
LBFGSB_MAXFUN = 15000
# pydeseq2's nbinomGLM (apeGLM LFC shrinkage) passes these to minimize(method="L-BFGS-B"), no bounds.
SHRINK_FTOL = 1e-8
SHRINK_GTOL = 1e-8
# Genes per call compared with stock nbinomGLM before the vectorised shrinkage is trusted (see
# ``FastInference.lfc_shrink_nbinom_glm``), and the largest |LFC| difference (natural log) accepted there.
SHRINK_SPOT_CHECK_GENES = 8
SHRINK_SPOT_CHECK_TOL = 1e-9
# setulb task codes (scipy/optimize/__lbfgsb.c): 1 = new iterate, 3 = evaluate f and g, 4 = converged.
TASK_NEW_X, TASK_FG, TASK_CONVERGENCE = 1, 3, 4
# Target number of float64 cells (genes x samples) in one chunk: ~4 MB per work array, ~25 MB for the
# (genes, design columns, samples) products; bounds the extra memory whatever the cohort size.
CHUNK_CELLS = 500_000
# At most this many genes per chunk: each gene's L-BFGS-B state (``lbfgsb_lockstep``) takes ~10 KB
# whatever the number of samples, so on small cohorts the cell bound alone would allow chunks whose optimiser
# work arrays (~50 MB at 5,000 genes) outweigh the data.
MAX_CHUNK_GENES = 1_000
# Below this many genes per worker, a second worker costs more (start-up, GIL hand-offs) than it saves.
MIN_GENES_PER_WORKER = 500


def _chunks(
    n_genes: int, n_samples: int, n_workers: int, cells: int = CHUNK_CELLS, max_genes: int = MAX_CHUNK_GENES
) -> list[slice]:
    """Gene slices small enough for bounded memory, and at least one per worker."""
    size = max(1, min(cells // max(n_samples, 1), max_genes, -(-n_genes // max(n_workers, 1))))
    return [slice(start, min(start + size, n_genes)) for start in range(0, n_genes, size)]


# --------------------------------------------------------------------------------------------------- IRLS


def _nb_nll_rows(counts: np.ndarray, mu: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """pydeseq2 ``nb_nll`` (scalar-dispersion branch) for each row: genes x samples, one alpha per gene."""
    n = counts.shape[1]
    a = alpha[:, None]
    alpha_neg1 = 1 / a
    logbinom = gammaln(counts + alpha_neg1) - gammaln(counts + 1) - gammaln(alpha_neg1)
    rest = (-logbinom + (counts + alpha_neg1) * np.log(alpha_neg1 + mu) - counts * np.log(mu)).sum(axis=1)
    return n * alpha_neg1[:, 0] * np.log(alpha) + rest


def _weighted_gram(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """X^T diag(w_g) X for every gene g: (genes, p, p)."""
    return (x.T[None, :, :] * w[:, None, :]) @ x


def _linear_predictor(x: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """X @ beta_g for every gene (genes x samples), as one BLAS matrix-vector product per gene like stock."""
    return np.matmul(x, beta[:, :, None])[:, :, 0]


def _irls_chunk(
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
    """pydeseq2 ``irls_solver`` for a (samples x genes) chunk, all genes iterated together.

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
    mu = np.maximum(sf * np.exp(_linear_predictor(x, beta)), min_mu)
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
        h = _weighted_gram(x, w) + ridge
        rhs = np.matmul(x.T, (w * z)[:, :, None])
        beta_hat = linalg.solve(h, rhs, assume_a="pos")[:, :, 0]
        n_iter[idx] += 1
        diverged = (np.abs(beta_hat) > max_beta).any(axis=1) | (n_iter[idx] >= maxiter)
        fallback[idx[diverged]] = True
        keep = ~diverged
        idx, beta_hat = idx[keep], beta_hat[keep]
        beta[idx] = beta_hat
        mu[idx] = np.maximum(sf * np.exp(_linear_predictor(x, beta_hat)), min_mu)
        old_dev = dev[idx]
        dev[idx] = -2 * _nb_nll_rows(c[idx], mu[idx], disp[idx])
        dev_ratio[idx] = np.abs(dev[idx] - old_dev) / (np.abs(dev[idx]) + 0.1)
        active = (dev_ratio > beta_tol) & ~fallback

    w = mu / (1.0 + mu * disp[:, None])
    inv = np.linalg.inv(_weighted_gram(x, w) + ridge)
    hat = np.einsum("ij,gjk,ik->gi", x, inv, x)
    w_sq = np.sqrt(w)
    hat = w_sq * hat * w_sq
    mu_out = sf * np.exp(_linear_predictor(x, beta))
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


def _scalar_square(v: np.ndarray) -> np.ndarray:
    """``t ** 2`` as stock computes it on a NumPy scalar (libm ``pow``), which differs from the array
    ``v ** 2`` (an exact ``v * v``) in the last bit for ~0.1% of values; one gene's optimiser path can
    hinge on such a bit, so we reproduce it."""
    return np.fromiter(map(math.pow, v.tolist(), itertools.repeat(2.0)), dtype=float, count=len(v))


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
            _scalar_square(alpha_neg1[:, 0])
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
            gram = _weighted_gram(self.x, w)
            reg += 0.5 * np.linalg.slogdet(gram)[1]
            d_gram = _weighted_gram(self.x, -(w**2))
            reg_grad += 0.5 * (np.linalg.inv(gram) * d_gram).sum(axis=(1, 2)) * alpha
        if self.prior_reg:
            diff = log_alpha - self.log_alpha_hat[genes]
            reg += _scalar_square(diff) / (2 * self.prior_disp_var)
            reg_grad += diff / self.prior_disp_var
        return nll + reg, alpha * dnll + reg_grad


def lbfgsb_lockstep(
    fun_and_grad: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    x0: np.ndarray,
    lower: float | None = None,
    upper: float | None = None,
    ftol: float = LBFGSB_FTOL,
    gtol: float = LBFGSB_GTOL,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise many independent small problems with SciPy's L-BFGS-B, one optimiser state each.

    ``x0`` is ``(problems,)`` for 1-D problems or ``(problems, n)`` for n-D ones; ``lower``/``upper`` bound
    every coordinate (both given) or none (both None). ``fun_and_grad(rows, x)`` returns the objectives
    ``(rows,)`` and gradients (shaped like ``x``) of problems ``rows`` at ``x``. Each problem goes through
    exactly the calls ``scipy.optimize.minimize(method="L-BFGS-B", options={"ftol": ftol, "gtol": gtol})``
    makes; only the evaluations are batched. Returns the solutions (shaped like ``x0``) and a success flag
    per problem.
    """
    x0 = np.asarray(x0, dtype=float)
    one_d = x0.ndim == 1
    n_prob = x0.shape[0]
    x = np.array(x0.reshape(n_prob, -1), dtype=float, order="C")
    n = x.shape[1]
    m = LBFGSB_MAXCOR
    factr = ftol / np.finfo(float).eps
    if (lower is None) != (upper is None):
        raise ValueError("give both bounds or neither")
    if lower is None:
        lo, up = np.zeros(n), np.zeros(n)
        nbd = np.zeros(n, dtype=np.int32)  # unbounded, as minimize() sets it for bounds=None
    else:
        lo, up = np.full(n, lower, dtype=float), np.full(n, upper, dtype=float)
        nbd = np.full(n, 2, dtype=np.int32)  # both bounds finite
        x = np.clip(x, lo, up)  # minimize() clips x0 into the bounds
    g = np.zeros((n_prob, n))
    wa = np.zeros((n_prob, 2 * m * n + 5 * n + 11 * m * m + 8 * m))
    iwa = np.zeros((n_prob, 3 * n), dtype=np.int32)
    task = np.zeros((n_prob, 2), dtype=np.int32)
    ln_task = np.zeros((n_prob, 2), dtype=np.int32)
    lsave = np.zeros((n_prob, 4), dtype=np.int32)
    isave = np.zeros((n_prob, 44), dtype=np.int32)
    dsave = np.zeros((n_prob, 29))
    # Each problem's setulb arguments as row views, built once: setulb updates them in place, and indexing
    # nine arrays on every call cost as much as the call itself. Plain lists for the per-problem scalars.
    head = [(m, x[i], lo, up, nbd) for i in range(n_prob)]
    tail = [
        (g[i], factr, gtol, wa[i], iwa[i], task[i], lsave[i], isave[i], dsave[i], LBFGSB_MAXLS, ln_task[i])
        for i in range(n_prob)
    ]
    f = [0.0] * n_prob
    n_iter = [0] * n_prob
    n_fev = [0] * n_prob

    # minimize() evaluates at x0 first and setulb's first request is x0 again; evaluating at that first
    # request instead gives the same numbers (the objective is deterministic).
    pending = list(range(n_prob))
    setulb = _LBFGSB.setulb
    while pending:
        ask: list[int] = []
        again: list[int] = []
        for i in pending:
            setulb(*head[i], f[i], *tail[i])
            state = tail[i][5]  # this problem's task row
            code = state[0]
            if code == TASK_FG:
                ask.append(i)
            elif code == TASK_NEW_X:
                n_iter[i] += 1
                if n_iter[i] >= LBFGSB_MAXITER or n_fev[i] > LBFGSB_MAXFUN:
                    state[0] = 5  # STOP, as minimize() sets it; counts as not converged
                    continue
                again.append(i)
        if ask:
            rows = np.asarray(ask)
            fx, gx = fun_and_grad(rows, x[rows, 0] if one_d else x[rows])
            for i, value in zip(ask, np.asarray(fx, dtype=float).tolist(), strict=True):
                f[i] = value
                n_fev[i] += 1
            g[rows] = np.reshape(gx, (len(rows), n))
        pending = sorted(ask + again)
    return (x[:, 0] if one_d else x), task[:, 0] == TASK_CONVERGENCE


def _check_against_minimize(
    fun_and_grad: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    x0: np.ndarray,
    bounds: tuple[float, float] | None,
    options: dict[str, float],
) -> bool:
    """True when ``lbfgsb_lockstep`` ends exactly where ``scipy.optimize.minimize`` does on one problem."""
    lower, upper = bounds if bounds is not None else (None, None)
    got, ok = lbfgsb_lockstep(fun_and_grad, x0[None, :], lower, upper, options["ftol"], options["gtol"])
    row = np.zeros(1, dtype=int)
    ref = minimize(
        lambda v: fun_and_grad(row, v[None, :])[0][0],
        x0=x0,
        jac=lambda v: fun_and_grad(row, v[None, :])[1][0],
        method="L-BFGS-B",
        bounds=None if bounds is None else [bounds] * len(x0),
        options=options,
    )
    return bool(np.array_equal(got[0], ref.x)) and bool(ok[0]) == bool(ref.success)


@functools.cache
def lockstep_available() -> bool:
    """True when SciPy's ``setulb`` is there and the lock-step driver reproduces ``minimize`` exactly,
    on a bounded 1-D problem (as the dispersion fits) and an unbounded 3-D one (as the LFC shrinkage)."""
    if _LBFGSB is None:
        log.warning("scipy.optimize._lbfgsb is unavailable: stock per-gene optimiser fits")
        return False

    def fun_and_grad(rows: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # A non-quadratic, coupled test function: (x - c)^4 terms plus a cosine of the sum.
        centre = np.array([0.3, -1.2, 2.0])[: x.shape[1]]
        d = x - centre
        s = x.sum(axis=1)
        return (d**4).sum(axis=1) + np.cos(s), 4 * d**3 - np.sin(s)[:, None]

    try:
        bounded = _check_against_minimize(
            fun_and_grad, np.array([2.0]), (-3.0, 3.0), {"ftol": LBFGSB_FTOL, "gtol": LBFGSB_GTOL}
        )
        free = _check_against_minimize(
            fun_and_grad, np.array([0.1, -0.1, 0.1]), None, {"ftol": SHRINK_FTOL, "gtol": SHRINK_GTOL}
        )
    except (TypeError, ValueError, AttributeError) as exc:  # setulb's private signature changed
        log.warning("SciPy setulb unusable (%s): stock per-gene optimiser fits", exc)
        return False
    if not (bounded and free):
        log.warning(
            "lock-step L-BFGS-B disagrees with scipy.optimize.minimize: stock per-gene optimiser fits"
        )
        return False
    return True


def _alpha_mle_chunk(
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


def _lin_mu_chunk(
    counts: np.ndarray, size_factors: np.ndarray, design_matrix: np.ndarray, min_mu: float
) -> np.ndarray:
    """pydeseq2 ``fit_lin_mu`` for a chunk: the least-squares fit sklearn's ``LinearRegression``
    (no intercept) makes per gene, i.e. SciPy ``lstsq`` (gelsd) per gene, batched."""
    x = np.asarray(design_matrix, dtype=float)
    y = np.ascontiguousarray((counts / size_factors[:, None]).T)
    coef = linalg.lstsq(np.broadcast_to(x, (y.shape[0], *x.shape)), y[:, :, None])[0]
    mu_hat = size_factors * (np.matmul(x, coef)[:, :, 0] + 0.0)
    return np.maximum(mu_hat, min_mu).T


# ----------------------------------------------------------------------------------------- Wald test


def _wald_chunk(
    design_matrix: np.ndarray,
    disp: np.ndarray,
    lfc: np.ndarray,
    mu: np.ndarray,
    ridge_factor: np.ndarray,
    contrast: np.ndarray,
    lfc_null: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pydeseq2 ``wald_test`` (two-sided, no alternative hypothesis) for a chunk of genes."""
    x = np.asarray(design_matrix, dtype=float)
    mu_g = np.ascontiguousarray(mu.T, dtype=float)
    w = mu_g / (1 + mu_g * disp[:, None])
    gram = _weighted_gram(x, w)
    h = np.linalg.inv(gram + ridge_factor)
    hc = np.matmul(h, contrast)
    # (Hc^T M) Hc as stock evaluates it: a vector-matrix then a vector-vector product per gene.
    hc_m = np.matmul(hc[:, None, :], gram)
    se = np.sqrt(np.matmul(hc_m, hc[:, :, None])[:, 0, 0])
    stat = np.matmul(lfc - lfc_null, contrast) / se
    pval = 2 * norm.sf(np.abs(stat))
    return pval, stat, se


# ------------------------------------------------------------------------------- apeGLM LFC shrinkage


@dataclass(frozen=True)
class _ShrinkPrior:
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


class _ShrinkObjective:
    """pydeseq2 ``nbinomGLM``'s objective for many genes: ``nbinomFn`` (NB negative log-likelihood plus the
    apeGLM prior: normal on the unshrunk coefficients, Cauchy on the shrunk one) and its gradient, each
    divided by the gene's scale constant ``max(nbinomFn(0), 1)``, term by term as stock evaluates them."""

    def __init__(self, counts: np.ndarray, size: np.ndarray, prior: _ShrinkPrior) -> None:
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
            xbeta = _linear_predictor(self.x, beta)
        normal = ((beta * self.no_shrink_mask) ** 2 / (2 * self.prior_no_shrink_scale**2)).sum(axis=1)
        cauchy = np.log1p(_scalar_square(beta[:, self.shrink_index] / self.prior_scale))
        log_mu_plus_size = np.logaddexp(xbeta + self.offset, self.log_size[rows, None])
        nll = (self.counts[rows] * xbeta - self.counts_plus_size[rows] * log_mu_plus_size).sum(axis=1)
        return (normal + cauchy) - nll

    def __call__(self, rows: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scaled objective and gradient of genes ``rows`` at ``beta``."""
        xbeta = _linear_predictor(self.x, beta)
        cnst = self.cnst[rows]
        fun = self.value(rows, beta, xbeta) / cnst
        beta_k_sq = _scalar_square(beta[:, self.shrink_index])
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
        xbeta = _linear_predictor(self.x, beta)
        size = self.size[rows, None]
        exp_xbeta_off = np.exp(xbeta + self.offset)
        frac = self.counts_plus_size[rows] * size * exp_xbeta_off / (size + exp_xbeta_off) ** 2
        h11 = 1 / self.prior_no_shrink_scale**2
        beta_k_sq = _scalar_square(beta[:, self.shrink_index])
        h22 = 2 * (self.prior_scale_sq - beta_k_sq) / _scalar_square(self.prior_scale_sq + beta_k_sq)
        curvature = self.no_shrink_mask * h11 + self.shrink_mask * h22[:, None]
        return np.linalg.inv(_weighted_gram(self.x, frac) + curvature[:, None, :])


def _shrink_chunk(
    counts: np.ndarray, size: np.ndarray, prior: _ShrinkPrior
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pydeseq2 ``nbinomGLM`` (L-BFGS-B) for a (samples x genes) chunk, optimiser states in lock step."""
    objective = _ShrinkObjective(counts, size, prior)
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


# ------------------------------------------------------------------------------------------ interface


class FastInference(DefaultInference):
    """``DefaultInference`` with gene-vectorised IRLS, dispersion fits, Wald tests, linear starts and
    apeGLM LFC shrinkage.

    Drop-in: ``DeseqDataSet(..., inference=FastInference(n_cpus=2))`` and the same object for
    ``DeseqStats``. Methods not listed above (trend GLM, moments, Wald tests with an alternative
    hypothesis) are inherited unchanged and run as in stock. Each method writes its chunks' results
    straight into its preallocated outputs, so its memory is the outputs plus O(chunk) work arrays.
    """

    def __init__(
        self, n_cpus: int | None = 1, backend: str = "threading", chunk_cells: int = CHUNK_CELLS
    ) -> None:
        # The inherited per-gene methods (one-sided Wald tests, and any stock fallback) keep stock's loky
        # workers; ``backend`` ("threading" or a joblib process backend) only runs this class's chunks.
        super().__init__(n_cpus=n_cpus, backend="loky")
        self._chunk_backend = backend
        self._chunk_cells = chunk_cells

    def _map_chunks(
        self,
        func: Callable,
        n_genes: int,
        n_samples: int,
        make_args: Callable[[slice], tuple],
        store: Callable[[slice, Any], None],
    ) -> None:
        """Run ``func(*make_args(slice))`` over gene chunks, in parallel when it pays, handing each result
        to ``store(slice, result)`` as it arrives (so finished chunks are not all held at once)."""
        workers = self.n_cpus if n_genes >= MIN_GENES_PER_WORKER * self.n_cpus else 1
        chunks = _chunks(n_genes, n_samples, workers, self._chunk_cells)
        if workers == 1 or self._chunk_backend == "threading":
            # One BLAS thread, as stock gives its joblib workers: SciPy's L-BFGS-B calls BLAS on tiny
            # vectors, and with OpenBLAS threads on a busy machine each of those calls costs milliseconds.
            with threadpool_limits(limits=1, user_api="blas"):
                if workers == 1:
                    for s in chunks:
                        store(s, func(*make_args(s)))
                    return
                # NumPy/SciPy release the GIL inside the batched kernels, so threads overlap there.
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    for s, result in zip(
                        chunks, pool.map(lambda s: func(*make_args(s)), chunks), strict=True
                    ):
                        store(s, result)
                return
        with parallel_backend(self._chunk_backend, inner_max_num_threads=1):
            results = Parallel(n_jobs=workers, verbose=self._joblib_verbosity, return_as="generator")(
                delayed(func)(*make_args(s)) for s in chunks
            )
            for s, result in zip(chunks, results, strict=True):
                store(s, result)

    def lin_reg_mu(  # noqa: D102
        self,
        counts: np.ndarray,
        size_factors: np.ndarray,
        design_matrix: np.ndarray,
        min_mu: float,
    ) -> np.ndarray:
        mu = np.empty(counts.shape)

        def store(s: slice, part: np.ndarray) -> None:
            mu[:, s] = part

        self._map_chunks(
            _lin_mu_chunk,
            counts.shape[1],
            counts.shape[0],
            lambda s: (counts[:, s], size_factors, design_matrix, min_mu),
            store,
        )
        return mu

    def irls(  # noqa: D102
        self,
        counts: np.ndarray,
        size_factors: np.ndarray,
        design_matrix: np.ndarray,
        disp: np.ndarray,
        min_mu: float,
        beta_tol: float,
        min_beta: float = -30,
        max_beta: float = 30,
        optimizer: Literal["BFGS", "L-BFGS-B"] = "L-BFGS-B",
        maxiter: int = 250,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n_samples, n_genes = counts.shape
        beta = np.empty((n_genes, np.shape(design_matrix)[1]))
        mu = np.empty((n_samples, n_genes))
        hat = np.empty((n_samples, n_genes))
        converged = np.empty(n_genes, dtype=bool)

        def store(s: slice, part: tuple) -> None:
            beta[s], mu[:, s], hat[:, s], converged[s] = part

        self._map_chunks(
            _irls_chunk,
            n_genes,
            n_samples,
            lambda s: (
                counts[:, s],
                size_factors,
                design_matrix,
                disp[s],
                min_mu,
                beta_tol,
                min_beta,
                max_beta,
                optimizer,
                maxiter,
            ),  # fmt: skip
            store,
        )
        return beta, mu, hat, converged

    def alpha_mle(  # noqa: D102
        self,
        counts: np.ndarray,
        design_matrix: np.ndarray,
        mu: np.ndarray,
        alpha_hat: np.ndarray,
        min_disp: float,
        max_disp: float,
        prior_disp_var: float | None = None,
        cr_reg: bool = True,
        prior_reg: bool = False,
        optimizer: Literal["BFGS", "L-BFGS-B"] = "L-BFGS-B",
    ) -> tuple[np.ndarray, np.ndarray]:
        if optimizer != "L-BFGS-B" or not lockstep_available() or (prior_reg and prior_disp_var is None):
            return super().alpha_mle(
                counts, design_matrix, mu, alpha_hat, min_disp, max_disp, prior_disp_var, cr_reg,
                prior_reg, optimizer,
            )  # fmt: skip
        alpha_hat = np.asarray(alpha_hat, dtype=float)
        n_genes = counts.shape[1]
        alpha = np.empty(n_genes)
        success = np.empty(n_genes, dtype=bool)

        def store(s: slice, part: tuple) -> None:
            alpha[s], success[s] = part

        self._map_chunks(
            _alpha_mle_chunk,
            n_genes,
            counts.shape[0],
            lambda s: (
                counts[:, s],
                design_matrix,
                mu[:, s],
                alpha_hat[s],
                min_disp,
                max_disp,
                prior_disp_var,
                cr_reg,
                prior_reg,
            ),  # fmt: skip
            store,
        )
        return alpha, success

    def wald_test(  # noqa: D102
        self,
        design_matrix: np.ndarray,
        disp: np.ndarray,
        lfc: np.ndarray,
        mu: np.ndarray,
        ridge_factor: np.ndarray,
        contrast: np.ndarray,
        lfc_null: np.ndarray,
        alt_hypothesis: Literal["greaterAbs", "lessAbs", "greater", "less"] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if alt_hypothesis is not None:
            return super().wald_test(
                design_matrix, disp, lfc, mu, ridge_factor, contrast, lfc_null, alt_hypothesis
            )
        disp = np.asarray(disp, dtype=float)
        lfc = np.asarray(lfc, dtype=float)
        contrast = np.asarray(contrast, dtype=float)
        n_genes = mu.shape[1]
        pvals, stats, se = np.empty(n_genes), np.empty(n_genes), np.empty(n_genes)

        def store(s: slice, part: tuple) -> None:
            pvals[s], stats[s], se[s] = part

        self._map_chunks(
            _wald_chunk,
            n_genes,
            mu.shape[0],
            lambda s: (design_matrix, disp[s], lfc[s], mu[:, s], ridge_factor, contrast, lfc_null),
            store,
        )
        return pvals, stats, se

    def lfc_shrink_nbinom_glm(  # noqa: D102
        self,
        design_matrix: np.ndarray,
        counts: np.ndarray,
        size: np.ndarray,
        offset: np.ndarray,
        prior_no_shrink_scale: float,
        prior_scale: float,
        optimizer: str,
        shrink_index: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        stock_args = (design_matrix, counts, size, offset, prior_no_shrink_scale, prior_scale, optimizer,
                      shrink_index)  # fmt: skip
        if optimizer != "L-BFGS-B" or not lockstep_available():
            return super().lfc_shrink_nbinom_glm(*stock_args)
        size = np.asarray(size, dtype=float)
        prior = _ShrinkPrior(
            design_matrix, np.asarray(offset, dtype=float), prior_no_shrink_scale, prior_scale, shrink_index
        )
        if not self._shrink_agrees_with_stock(counts, size, prior):
            return super().lfc_shrink_nbinom_glm(*stock_args)
        n_genes, num_vars = counts.shape[1], np.shape(design_matrix)[1]
        beta = np.empty((n_genes, num_vars))
        inv_hessian = np.empty((n_genes, num_vars, num_vars))
        converged = np.empty(n_genes, dtype=bool)

        def store(s: slice, part: tuple) -> None:
            beta[s], inv_hessian[s], converged[s] = part

        self._map_chunks(
            _shrink_chunk,
            n_genes,
            counts.shape[0],
            lambda s: (counts[:, s], size[s], prior),
            store,
        )
        return beta, inv_hessian, converged

    def _shrink_agrees_with_stock(self, counts: np.ndarray, size: np.ndarray, prior: _ShrinkPrior) -> bool:
        """Fit a few genes both ways before trusting the vectorised shrinkage with all of them.

        The lock-step driver is checked once against ``minimize``; this checks the objective, on this
        data and this NumPy/BLAS build. Bit-identical is the expectation; anything beyond rounding level
        (``SHRINK_SPOT_CHECK_TOL``) or a different convergence flag sends the whole call to stock.
        """
        genes = _spot_genes(counts.shape[1])
        if not len(genes):
            return True
        with threadpool_limits(limits=1, user_api="blas"):
            beta, _, ok = _shrink_chunk(counts[:, genes], size[genes], prior)
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
