"""R DESeq2 (1.38) behaviour at the steps where pydeseq2 (0.5.4) computes something else.

pydeseq2 follows DESeq2's model, but a few of its numerical procedures are not DESeq2's, and on real
cohorts they move some genes' dispersions, standard errors and calls (bench/README.md, "R-compatible
DESeq2"). This module holds R's procedures, vectorised over genes:

* **Dispersion fits.** R maximises each gene's (log-)posterior in log dispersion with its own Armijo
  line search (``fitDisp`` in DESeq2's C++): steepest ascent from a given start, step ``kappa`` halved on
  rejection, grown by 1.1 (capped at 1) on acceptance and halved every fifth acceptance, stopping when an
  accepted step gains less than ``1e-6`` in log posterior, or after 100 proposals. pydeseq2 runs SciPy's
  L-BFGS-B to its own tolerances. Both stop short of the exact optimum where the posterior is flat,
  but at different places; and the rules around the fit differ too:

  - gene-wise: R keeps the starting value (the moments estimate) when the search gains almost nothing
    (``noIncrease``), and re-fits by a two-stage grid a gene whose search used 1 or 100 proposals;
  - MAP: R starts at the gene-wise estimate (or the trend, if the gene-wise is below a tenth of it),
    pydeseq2 at the trend; with a bimodal posterior (a gene with one extreme count) the two searches
    climb different modes. R re-fits a non-converged gene on the grid *with* the prior.

* **Dispersion trend.** R fits ``a + b / mean`` by a Gamma-family GLM with identity link (IRLS, R's
  ``glm``), on genes with a gene-wise dispersion above ``100 * minDisp``, dropping genes whose ratio to the
  previous fit is outside (1e-4, 15) before each refit. pydeseq2 minimises the same deviance with
  L-BFGS-B on all genes in the first round (its tolerance leaves the coefficients ~1% off).

* **Independent filtering.** Both pick the first ``theta`` whose number of rejections exceeds the lowess
  fit's maximum minus the residual RMS; R's lowess is Cleveland's (``clowess``, three robustness
  iterations after the first fit, ``delta = 1%`` of the range), pydeseq2's is a simplified smoother
  whose fit differs by several rejections, enough to move the chosen threshold (GSE152418: baseMean
  13.1 vs R's 15.1). statsmodels' lowess is Cleveland's algorithm and matches R's to ~1e-8.

* **Cook's filtering of p-values.** R keeps a flagged gene's p-value when 3 or more samples have a
  higher count than the outlier only for a design with a single two-level factor; pydeseq2 applies
  that exception to every design.

* **Wald covariance.** R floors the means at ``min_mu`` in the weights and puts a ridge of 1e-6 on the
  log2-scale coefficients (:data:`R_RIDGE_NATURAL_LOG`); pydeseq2 uses the unfloored means.

The functions take genes-by-samples arrays (one row per gene) and are independent of pydeseq2;
nb_engines.py wires them into its dataset and statistics classes. BH is the shared
``contract.benjamini_hochberg``: SciPy's arithmetic is R's ``p.adjust`` to the last bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, gammaln, polygamma
from statsmodels.nonparametric.smoothers_lowess import lowess as cleveland_lowess

from il6axis.de.contract import benjamini_hochberg

# DESeq2 estimateDispersions* defaults.
MIN_DISP = 1e-8
KAPPA_0 = 1.0
DISP_TOL = 1e-6
DISP_MAXIT = 100
# fitDisp: Armijo constant and the bounds it keeps log(alpha) within.
ARMIJO_EPSILON = 1e-4
LOG_ALPHA_MIN, LOG_ALPHA_MAX = -30.0, 10.0
# fitDispGridWrapper: 20 points from log(1e-8) to log(max(10, samples)), then 20 around the best.
GRID_POINTS = 20
# R's mad() constant (1 / qnorm(3/4), rounded as R rounds it).
MAD_CONSTANT = 1.4826
# parametricDispersionFit: start, residual window, convergence and iteration limit; glm.fit's control.
TREND_START = (0.1, 1.0)
TREND_RESIDUAL_RANGE = (1e-4, 15.0)
TREND_COEF_TOL = 1e-6
TREND_MAX_ITER = 10
GLM_EPSILON = 1e-8
GLM_MAXIT = 25
# R's ridge on the coefficients (lambda = 1e-6 on the log2 scale), on the natural-log scale of the fit.
R_RIDGE_NATURAL_LOG = 1e-6 / np.log(2) ** 2
# pvalueAdjustment: theta grid and lowess span.
FILTER_GRID = 50
FILTER_LOWESS_FRAC = 1 / 5


class DispersionTrendError(RuntimeError):
    """R's parametric trend fit fails (a coefficient <= 0, or no convergence in 10 rounds)."""


# ---------------------------------------------------------------------------------- log posterior


@dataclass
class LogPosterior:
    """DESeq2's log posterior of log(alpha) (``log_posterior`` / ``dlog_posterior`` in its C++), per gene.

    NB log-likelihood (terms free of alpha dropped, as R drops them), the Cox-Reid adjustment
    ``-0.5 log det(X^T W X)`` with ``W = diag(1 / (1/mu + alpha))``, and optionally a normal prior on
    log(alpha) with per-gene mean and common variance. Arrays are genes x samples.
    """

    counts: np.ndarray
    mu: np.ndarray
    design: np.ndarray
    prior_mean: np.ndarray | None = None
    prior_var: float = 1.0
    use_cr: bool = True

    def value(self, rows: np.ndarray, log_alpha: np.ndarray) -> np.ndarray:
        y, mu = self.counts[rows], self.mu[rows]
        alpha = np.exp(log_alpha)[:, None]
        alpha_neg1 = 1.0 / alpha
        ll = (
            gammaln(y + alpha_neg1)
            - gammaln(alpha_neg1)
            - y * np.log(mu + alpha_neg1)
            - alpha_neg1 * np.log(1.0 + mu * alpha)
        ).sum(axis=1)
        if self.use_cr:
            w = 1.0 / (1.0 / mu + alpha)
            ll = ll - 0.5 * np.linalg.slogdet(_gram(self.design, w))[1]
        if self.prior_mean is not None:
            ll = ll - 0.5 * (log_alpha - self.prior_mean[rows]) ** 2 / self.prior_var
        return ll

    def gradient(self, rows: np.ndarray, log_alpha: np.ndarray) -> np.ndarray:
        """d log posterior / d log(alpha)."""
        y, mu = self.counts[rows], self.mu[rows]
        alpha = np.exp(log_alpha)
        a = alpha[:, None]
        alpha_neg1 = 1.0 / a
        mu_a = mu * a
        dll = (alpha_neg1[:, 0] ** 2) * (
            digamma(alpha_neg1)
            + np.log(1.0 + mu_a)
            - mu_a / (1.0 + mu_a)
            - digamma(y + alpha_neg1)
            + y / (mu + alpha_neg1)
        ).sum(axis=1)
        if self.use_cr:
            inv_mu_a = 1.0 / mu + a
            b = _gram(self.design, 1.0 / inv_mu_a)
            db = _gram(self.design, -1.0 / inv_mu_a**2)
            # d log det(B) / d alpha = trace(B^-1 dB)
            dll = dll - 0.5 * np.einsum("gij,gji->g", np.linalg.inv(b), db)
        grad = dll * alpha
        if self.prior_mean is not None:
            grad = grad - (log_alpha - self.prior_mean[rows]) / self.prior_var
        return grad


def _gram(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """X^T diag(w_g) X for every gene g (rows of ``w``): (genes, p, p)."""
    return np.einsum("si,gs,sj->gij", x, w, x, optimize=True)


# -------------------------------------------------------------------------------- optimisers


@dataclass
class LineSearchResult:
    log_alpha: np.ndarray
    iterations: np.ndarray
    initial_lp: np.ndarray
    last_lp: np.ndarray


def line_search(
    posterior: LogPosterior,
    log_alpha_start: np.ndarray,
    min_log_alpha: float,
    kappa_0: float = KAPPA_0,
    tol: float = DISP_TOL,
    maxit: int = DISP_MAXIT,
) -> LineSearchResult:
    """DESeq2's ``fitDisp`` Armijo line search, every gene in lock step with its own state.

    Each pass proposes ``a + kappa * dlp`` for every gene still searching (``kappa`` shortened so the
    proposal stays within [-30, 10]), accepts it when the log posterior rises by at least
    ``kappa * 1e-4 * dlp^2`` and otherwise halves ``kappa``. A gene stops when an accepted step gains less
    than ``tol``, when log(alpha) falls below ``min_log_alpha``, or after ``maxit`` proposals.
    """
    n = len(log_alpha_start)
    rows_all = np.arange(n)
    a = np.array(log_alpha_start, dtype=float)
    lp = posterior.value(rows_all, a)
    dlp = posterior.gradient(rows_all, a)
    initial_lp = lp.copy()
    kappa = np.full(n, kappa_0)
    iterations = np.zeros(n, dtype=int)
    accepts = np.zeros(n, dtype=int)
    active = np.ones(n, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(maxit):
            rows = np.flatnonzero(active)
            if not len(rows):
                break
            iterations[rows] += 1
            a_r, dlp_r, k_r = a[rows], dlp[rows], kappa[rows]
            proposal = a_r + k_r * dlp_r
            k_r = np.where(proposal < LOG_ALPHA_MIN, (LOG_ALPHA_MIN - a_r) / dlp_r, k_r)
            k_r = np.where(proposal > LOG_ALPHA_MAX, (LOG_ALPHA_MAX - a_r) / dlp_r, k_r)
            step = k_r * dlp_r
            theta_kappa = -posterior.value(rows, a_r + step)
            theta_hat_kappa = -lp[rows] - k_r * ARMIJO_EPSILON * dlp_r**2
            accept = theta_kappa <= theta_hat_kappa
            kappa[rows] = np.where(accept, k_r, k_r / 2.0)
            acc = rows[accept]
            if not len(acc):
                continue
            accepts[acc] += 1
            a[acc] = a[acc] + step[accept]
            lp_new = -theta_kappa[accept]  # R re-evaluates at the accepted point: the same number
            change = lp_new - lp[acc]
            lp[acc] = lp_new
            done = (change < tol) | (a[acc] < min_log_alpha)
            active[acc[done]] = False
            go = acc[~done]
            if len(go):
                dlp[go] = posterior.gradient(go, a[go])
                k = np.minimum(kappa[go] * 1.1, kappa_0)
                kappa[go] = np.where(accepts[go] % 5 == 0, k / 2.0, k)
    return LineSearchResult(a, iterations, initial_lp, lp)


def grid_search(posterior: LogPosterior, n_samples: int) -> np.ndarray:
    """DESeq2's ``fitDispGrid``: the best of 20 log(alpha) values from log(1e-8) to log(max(10, n)),
    then the best of 20 values spanning one coarse step either side of it. Returns log(alpha)."""
    coarse = np.linspace(math.log(1e-8), math.log(max(10, n_samples)), GRID_POINTS)
    delta = coarse[1] - coarse[0]
    rows = np.arange(len(posterior.counts))
    best = coarse[_argmax_over_grid(posterior, rows, lambda t: np.full(len(rows), coarse[t]))]
    fine = np.linspace(best - delta, best + delta, GRID_POINTS, axis=1)  # genes x 20
    return fine[rows, _argmax_over_grid(posterior, rows, lambda t: fine[:, t])]


def _argmax_over_grid(
    posterior: LogPosterior, rows: np.ndarray, points: Callable[[int], np.ndarray]
) -> np.ndarray:
    """Per gene, the index of the first grid point with the highest log posterior (``points(t)`` is
    the t-th point of every gene)."""
    values = np.empty((len(rows), GRID_POINTS))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for t in range(GRID_POINTS):
            values[:, t] = posterior.value(rows, points(t))
    values = np.where(np.isnan(values), -np.inf, values)
    return np.argmax(values, axis=1)


# --------------------------------------------------------------------------- dispersion steps


def linear_model_mu(counts: np.ndarray, size_factors: np.ndarray, design: np.ndarray) -> np.ndarray:
    """R's ``linearModelMuNormalized``: least-squares fitted values of the normalised counts, through
    the design's hat matrix ``X R^-1 Q^T`` (one product for all genes), times the size factors.
    ``counts`` is samples x genes. R uses it for the gene-wise means when every coefficient is a group."""
    q, r = np.linalg.qr(np.asarray(design, dtype=float))
    hat = design @ np.linalg.solve(r, q.T)
    sf = np.asarray(size_factors, dtype=float)[:, None]
    return (hat @ (counts / sf)) * sf


def genewise_dispersions(
    counts: np.ndarray,
    design: np.ndarray,
    mu: np.ndarray,
    alpha_init: np.ndarray,
    min_disp: float = MIN_DISP,
    max_disp: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``estimateDispersionsGeneEst`` after the means are fitted (one iteration, no weights).

    ``counts``/``mu`` are genes x samples; ``alpha_init`` is the clipped minimum of the rough and
    moments estimates. Returns the gene-wise dispersions and R's ``dispGeneIter``.
    """
    n_samples = counts.shape[1]
    max_disp = max(10, n_samples) if max_disp is None else max_disp
    alpha_init = np.clip(alpha_init, min_disp, max_disp)
    post = LogPosterior(counts, mu, design)
    fit = line_search(post, np.log(alpha_init), math.log(min_disp / 10))
    alpha = np.minimum(np.exp(fit.log_alpha), max_disp)
    no_increase = fit.last_lp < fit.initial_lp + np.abs(fit.initial_lp) / 1e6
    alpha = np.where(no_increase, alpha_init, alpha)
    converged = (fit.iterations < DISP_MAXIT) & (fit.iterations != 1)
    refit = np.flatnonzero(~converged & (alpha > min_disp * 10))
    if len(refit):
        sub = LogPosterior(counts[refit], mu[refit], design)
        alpha[refit] = np.exp(grid_search(sub, n_samples))
    return np.clip(alpha, min_disp, max_disp), fit.iterations


def map_dispersions(
    counts: np.ndarray,
    design: np.ndarray,
    mu: np.ndarray,
    genewise: np.ndarray,
    fitted: np.ndarray,
    prior_var: float,
    min_disp: float = MIN_DISP,
    max_disp: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``estimateDispersionsMAP`` up to the clipping (the outlier rule is ``dispersion_outliers``).

    Starts each gene at its gene-wise estimate, or at the trend when the gene-wise is below a tenth of
    it; the prior is normal on log(alpha) around log(trend). Returns the MAP dispersions and R's
    ``dispIter``.
    """
    n_samples = counts.shape[1]
    max_disp = max(10, n_samples) if max_disp is None else max_disp
    start = np.where(genewise > 0.1 * fitted, genewise, fitted)
    start = np.where(np.isnan(start), fitted, start)
    post = LogPosterior(counts, mu, design, prior_mean=np.log(fitted), prior_var=prior_var)
    fit = line_search(post, np.log(start), math.log(min_disp / 10))
    alpha = np.exp(fit.log_alpha)
    refit = np.flatnonzero(fit.iterations >= DISP_MAXIT)
    if len(refit):
        sub = LogPosterior(
            counts[refit], mu[refit], design, prior_mean=np.log(fitted[refit]), prior_var=prior_var
        )
        alpha[refit] = np.exp(grid_search(sub, n_samples))
    return np.clip(alpha, min_disp, max_disp), fit.iterations


def dispersion_outliers(
    genewise: np.ndarray, fitted: np.ndarray, var_log_disp: float, outlier_sd: float = 2.0
) -> np.ndarray:
    """Genes whose gene-wise dispersion lies more than 2 SD (of the log residuals) above the trend; R
    keeps their gene-wise estimate instead of the MAP."""
    with np.errstate(divide="ignore", invalid="ignore"):
        flag = np.log(genewise) > np.log(fitted) + outlier_sd * math.sqrt(var_log_disp)
    return np.where(np.isnan(flag), False, flag).astype(bool)


def var_log_dispersion(genewise: np.ndarray, fitted: np.ndarray, min_disp: float = MIN_DISP) -> float:
    """R's ``varLogDispEsts``: mad()^2 of log(gene-wise) - log(trend) over genes >= 100 * minDisp."""
    use = genewise >= min_disp * 100
    residuals = np.log(genewise[use]) - np.log(fitted[use])
    residuals = residuals[~np.isnan(residuals)]
    return float((MAD_CONSTANT * np.median(np.abs(residuals - np.median(residuals)))) ** 2)


def dispersion_prior_variance(var_log_disp: float, n_samples: int, n_coefs: int) -> float:
    """``estimateDispersionsPriorVar`` for more than 3 residual degrees of freedom.

    With 3 or fewer, R matches the residual distribution to simulated ones (R's random generator, seed
    2); that is not reproduced here, and the caller is told (``ValueError``).
    """
    df = n_samples - n_coefs
    if df <= 3:
        raise ValueError(f"{df} residual degrees of freedom: R simulates the prior variance")
    return float(max(var_log_disp - polygamma(1, df / 2), 0.25))


def parametric_trend(means: np.ndarray, disps: np.ndarray, min_disp: float = MIN_DISP) -> np.ndarray:
    """``parametricDispersionFit``: coefficients (asymptDisp, extraPois) of ``a + b / mean``.

    Genes with a gene-wise dispersion above ``100 * minDisp`` take part. Each round keeps the genes
    whose dispersion is within (1e-4, 15) times the current curve and refits a Gamma GLM with identity
    link from the current coefficients; it stops when the squared log changes sum below 1e-6. Raises
    ``DispersionTrendError`` where R gives up on the parametric form.
    """
    use = disps > 100 * min_disp
    means, disps = np.asarray(means, float)[use], np.asarray(disps, float)[use]
    x = np.column_stack([np.ones_like(means), 1.0 / means])
    coefs = np.array(TREND_START)
    for _ in range(TREND_MAX_ITER + 1):
        residuals = disps / (coefs[0] + coefs[1] / means)
        good = (residuals > TREND_RESIDUAL_RANGE[0]) & (residuals < TREND_RESIDUAL_RANGE[1])
        new, converged = _gamma_identity_glm(x[good], disps[good], coefs)
        if not (new > 0).all():
            raise DispersionTrendError("parametric dispersion fit failed (a coefficient <= 0)")
        old, coefs = coefs, new
        if np.sum(np.log(coefs / old) ** 2) < TREND_COEF_TOL and converged:
            return coefs
    raise DispersionTrendError("parametric dispersion fit did not converge in 10 rounds")


def _gamma_identity_glm(x: np.ndarray, y: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, bool]:
    """R ``glm(y ~ x, family = Gamma(link = "identity"), start = start)``: IRLS with weights 1/mu^2
    (the working response is y itself), stopping when the deviance changes by < 1e-8 relatively."""

    def deviance(mu: np.ndarray) -> float:
        return float(np.sum(-2.0 * (np.log(np.where(y == 0, 1.0, y / mu)) - (y - mu) / mu)))

    coefs = np.asarray(start, dtype=float)
    mu = x @ coefs
    dev_old = deviance(mu)
    for _ in range(GLM_MAXIT):
        w = 1.0 / mu
        new = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)[0]
        mu_new = x @ new
        if not (np.isfinite(mu_new).all() and (mu_new > 0).all()):
            return new, False  # R halves the step here; coefficients <= 0 end the fit anyway
        coefs, mu = new, mu_new
        dev = deviance(mu)
        if abs(dev - dev_old) / (abs(dev) + 0.1) < GLM_EPSILON:
            return coefs, True
        dev_old = dev
    return coefs, False


def trend_values(coefs: np.ndarray, means: np.ndarray) -> np.ndarray:
    return coefs[0] + coefs[1] / np.asarray(means, dtype=float)


# -------------------------------------------------------------------------- independent filtering


@dataclass
class FilterResult:
    padj: np.ndarray
    threshold: float
    theta: float
    theta_grid: np.ndarray
    rejections: np.ndarray
    lowess: np.ndarray


def independent_filtering(base_mean: np.ndarray, pvalues: np.ndarray, alpha: float) -> FilterResult:
    """DESeq2 ``pvalueAdjustment`` (BH, filter = baseMean, default theta grid).

    For 50 quantiles ``theta`` of the base means (from the fraction of zero means to 0.95), BH-adjust
    the p-values of the genes at or above the quantile and count rejections at ``alpha``; smooth the
    counts with R's lowess (span 1/5) and take the first theta whose count exceeds the smooth's maximum
    minus the RMS of its residuals (the first theta when no count exceeds 10).
    """
    base_mean = np.asarray(base_mean, dtype=float)
    pvalues = np.asarray(pvalues, dtype=float)
    lower = float(np.mean(base_mean == 0))
    upper = 0.95 if lower < 0.95 else 1.0
    theta = np.linspace(lower, upper, FILTER_GRID)
    cutoffs = np.quantile(base_mean, theta)  # R quantile type 7 = numpy's default "linear"
    padj_grid = np.full((len(base_mean), FILTER_GRID), np.nan)
    for i, cutoff in enumerate(cutoffs):
        use = base_mean >= cutoff
        if use.any():
            padj_grid[use, i] = benjamini_hochberg(pvalues[use])
    with np.errstate(invalid="ignore"):
        rejections = (padj_grid < alpha).sum(axis=0)
    fit = r_lowess(theta, rejections.astype(float), FILTER_LOWESS_FRAC)
    if rejections.max() <= 10:
        j = 0
    else:
        positive = rejections > 0
        residual = rejections[positive] - fit[positive] if positive.any() else np.zeros(1)
        threshold = fit.max() - math.sqrt(float(np.mean(residual**2)))
        above = np.flatnonzero(rejections > threshold)
        j = int(above[0]) if len(above) else 0
    return FilterResult(padj_grid[:, j], float(cutoffs[j]), float(theta[j]), theta, rejections, fit)


def r_lowess(x: np.ndarray, y: np.ndarray, frac: float) -> np.ndarray:
    """R ``lowess(x, y, f = frac)$y`` (iter = 3, delta = 1% of the x range) for sorted ``x``."""
    delta = 0.01 * float(np.ptp(x))
    return cleveland_lowess(y, x, frac=frac, it=3, delta=delta, return_sorted=False)
