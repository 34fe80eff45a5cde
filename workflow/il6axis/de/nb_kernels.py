"""Closed-form negative-binomial GLM arithmetic, batched over genes, as pydeseq2 0.5.4 computes it per gene.

The products here call, per gene, the BLAS/LAPACK routine stock pydeseq2 calls (``np.matmul``
matrix-vector products, NumPy's batched ``inv``, SciPy's batched ``lstsq``), so the numbers are stock's
bit for bit on this stack (fast_inference.py says why that matters). Shared by the fast inference (Wald
tests, linear-model starts, and the iterative fits in fast_fits.py / fast_shrink.py) and by the
leave-one-out refits of stability.py; no pydeseq2 import, so the stability rule's readers need none.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import linalg
from scipy.stats import norm


def weighted_gram(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """X^T diag(w_g) X for every gene g: (genes, p, p)."""
    return (x.T[None, :, :] * w[:, None, :]) @ x


def linear_predictor(x: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """X @ beta_g for every gene (genes x samples), as one BLAS matrix-vector product per gene like stock."""
    return np.matmul(x, beta[:, :, None])[:, :, 0]


def scalar_square(v: np.ndarray) -> np.ndarray:
    """``t ** 2`` as stock computes it on a NumPy scalar (libm ``pow``), which differs from the array
    ``v ** 2`` (an exact ``v * v``) in the last bit for ~0.1% of values; one gene's optimiser path can
    hinge on such a bit, so we reproduce it."""
    return np.fromiter(map(math.pow, v.tolist(), itertools.repeat(2.0)), dtype=float, count=len(v))


def lin_mu_block(
    counts: np.ndarray, size_factors: np.ndarray, design_matrix: np.ndarray, min_mu: float
) -> np.ndarray:
    """pydeseq2 ``fit_lin_mu`` for a (samples x genes) block: the least-squares fit sklearn's
    ``LinearRegression`` (no intercept) makes per gene, i.e. SciPy ``lstsq`` (gelsd) per gene, batched."""
    x = np.asarray(design_matrix, dtype=float)
    y = np.ascontiguousarray((counts / size_factors[:, None]).T)
    coef = linalg.lstsq(np.broadcast_to(x, (y.shape[0], *x.shape)), y[:, :, None])[0]
    mu_hat = size_factors * (np.matmul(x, coef)[:, :, 0] + 0.0)
    return np.maximum(mu_hat, min_mu).T


def wald_block(
    design_matrix: np.ndarray,
    disp: np.ndarray,
    lfc: np.ndarray,
    mu: np.ndarray,
    ridge_factor: np.ndarray,
    contrast: np.ndarray,
    lfc_null: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pydeseq2 ``wald_test`` (two-sided, no alternative hypothesis) for a block of genes: p-values,
    statistics and standard errors. ``mu`` is samples x genes, ``lfc`` genes x coefficients (natural log);
    a sample whose mean is 0 gets weight 0."""
    x = np.asarray(design_matrix, dtype=float)
    mu_g = np.ascontiguousarray(mu.T, dtype=float)
    w = mu_g / (1 + mu_g * disp[:, None])
    gram = weighted_gram(x, w)
    h = np.linalg.inv(gram + ridge_factor)
    hc = np.matmul(h, contrast)
    # (Hc^T M) Hc as stock evaluates it: a vector-matrix then a vector-vector product per gene.
    hc_m = np.matmul(hc[:, None, :], gram)
    se = np.sqrt(np.matmul(hc_m, hc[:, :, None])[:, 0, 0])
    stat = np.matmul(lfc - lfc_null, contrast) / se
    pval = 2 * norm.sf(np.abs(stat))
    return pval, stat, se
