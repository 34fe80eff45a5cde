"""The two ``de.engine`` implementations as pydeseq2 0.5.4 subclasses, and the memory-bounded Cook's step.

* ``pydeseq2``: stock pydeseq2's procedures in :class:`ChunkedCooksDataSet`, which only computes the Cook's
  distances and rough dispersions a block of genes at a time (same numbers, smaller peak memory).
* ``r_compatible`` (the default): :class:`RCompatibleDataSet` and :class:`RCompatibleStats` run R DESeq2
  1.38's procedures (r_compatible.py) where pydeseq2's differ: dispersion fits and trend, their prior, the
  Cook's refit and filter, the Wald covariance and independent filtering.

nb.py builds the dataset of the engine a run asks for and fits it step by step.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from pydeseq2 import utils as pydeseq2_utils
from pydeseq2.dds import DeseqDataSet
from pydeseq2.ds import DeseqStats
from pydeseq2.utils import n_or_more_replicates, robust_method_of_moments_disp
from scipy import stats
from scipy.special import polygamma
from scipy.stats import trim_mean
from sklearn.linear_model import LinearRegression

from il6axis.de import r_compatible
from il6axis.de.fast_inference import FastInference

log = logging.getLogger(__name__)


class ChunkedCooksDataSet(DeseqDataSet):
    """A DeseqDataSet whose Cook's distances and rough dispersions are computed a block of genes at a time.

    pydeseq2 0.5.4's ``calculate_cooks`` works on the whole matrix: the trimmed-moment dispersions make
    sorted and squared-error copies of the normalised counts, and the distances themselves three more
    full-size float64 temporaries, on top of the counts, normalised counts, IRLS means and hat diagonals
    it holds; that was the DE step's memory peak. Every quantity in it is per gene (the trimmed moments
    are column-wise; residuals and leverages element-wise), so running the same code on column blocks
    gives the same numbers, bit for bit, with temporaries of samples x ``genes_per_chunk``. The same holds
    for the initial (method-of-moments) dispersions, the next-largest step. tests/test_de.py and
    bench/README.md check the equality; both overrides follow pydeseq2 0.5.4 (pinned) line by line.
    """

    genes_per_chunk: int = 1000

    def _fit_MoM_dispersions(self) -> None:  # noqa: N802 (pydeseq2's name)
        """``DeseqDataSet._fit_MoM_dispersions`` (pydeseq2 0.5.4) with its per-gene arithmetic in blocks.

        Whole-matrix, the rough dispersions' fitted values and squared residuals and the moments
        dispersions' variances were four full-size temporaries, the next-highest step after the Cook's
        distances (see ``_rough_dispersions`` for the part that stays whole-matrix).
        """
        if "normed_counts" not in self.layers:
            self.fit_size_factors(fit_type=self.size_factors_fit_type)
        normed_counts = self.layers["normed_counts"][:, self.non_zero_idx]
        design = self.obsm["design_matrix"].values
        blocks = gene_blocks(normed_counts.shape[1], self.genes_per_chunk)
        if self.inference.fit_rough_dispersions is pydeseq2_utils.fit_rough_dispersions:
            rde = _rough_dispersions(normed_counts, design, blocks)
        else:  # an inference with its own estimator: run it as pydeseq2 would
            rde = self.inference.fit_rough_dispersions(normed_counts, design)
        mde = np.empty(normed_counts.shape[1])
        for lo, hi in blocks:
            mde[lo:hi] = self.inference.fit_moments_dispersions(
                normed_counts[:, lo:hi], self.obs["size_factors"]
            )
        alpha_hat = np.minimum(rde, mde)
        self.var["_MoM_dispersions"] = np.full(self.n_vars, np.nan)
        self.var.loc[self.var["non_zero"], "_MoM_dispersions"] = np.clip(
            alpha_hat, self.min_disp, self.max_disp
        )

    def calculate_cooks(self) -> None:
        """``DeseqDataSet.calculate_cooks`` (pydeseq2 0.5.4), one gene block at a time."""
        if "dispersions" not in self.var:
            self.fit_MAP_dispersions()
        design = self.obsm["design_matrix"]
        num_vars = design.shape[-1]
        mu = self.obsm["_mu_LFC"]  # columns: the non-zero genes, in order
        hat = self.obsm["_hat_diagonals"]
        non_zero = np.flatnonzero(self.var["non_zero"].to_numpy())
        cooks = np.full((self.n_obs, self.n_vars), np.nan)
        for lo, hi in gene_blocks(len(non_zero), self.genes_per_chunk):
            cols = non_zero[lo:hi]
            dispersions = robust_method_of_moments_disp(self.layers["normed_counts"][:, cols], design)
            # The operations and their order are pydeseq2's, so every element is rounded the same way.
            sq_pearson = self.X[:, cols] - mu[:, lo:hi]
            sq_pearson **= 2
            variance = mu[:, lo:hi] ** 2
            variance *= dispersions[None, :]
            variance += mu[:, lo:hi]
            sq_pearson /= variance
            sq_pearson /= num_vars
            del variance
            leverage = 1 - hat[:, lo:hi]
            leverage **= 2
            leverage = hat[:, lo:hi] / leverage
            sq_pearson *= leverage
            cooks[:, cols] = sq_pearson
        if self.low_memory:
            del self.obsm["_mu_LFC"]
            del self.obsm["_hat_diagonals"]
        self.layers["cooks"] = cooks


def _rough_dispersions(
    normed_counts: np.ndarray, design: np.ndarray, blocks: list[tuple[int, int]]
) -> np.ndarray:
    """pydeseq2 0.5.4's ``utils.fit_rough_dispersions``, its residual arithmetic a block at a time.

    The regression and its fitted values are pydeseq2's calls on all genes at once: BLAS and LAPACK
    blocking make a gene's coefficients and fitted values depend, in the last bit, on how many genes share
    the call. The fitted values are floored in place; the four full-size temporaries after them are not.
    """
    num_samples, num_vars = design.shape
    if num_samples == num_vars:
        return pydeseq2_utils.fit_rough_dispersions(normed_counts, design)  # pydeseq2's own error
    reg = LinearRegression(fit_intercept=False)
    reg.fit(design, normed_counts)
    y_hat = reg.predict(design)
    np.maximum(y_hat, 1, out=y_hat)
    alpha_rde = np.empty(normed_counts.shape[1])
    for lo, hi in blocks:
        fitted = y_hat[:, lo:hi]
        alpha_rde[lo:hi] = (
            ((normed_counts[:, lo:hi] - fitted) ** 2 - fitted) / ((num_samples - num_vars) * fitted**2)
        ).sum(axis=0)
    return np.maximum(alpha_rde, 0)


def gene_blocks(n_genes: int, per_block: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` bounds splitting ``n_genes`` into near-equal blocks of at most ``per_block``.

    No block is a single gene unless there is only one: numpy sums a one-column block along its
    contiguous axis pairwise, where a wider block (and the whole matrix) is summed row by row, so a
    one-gene block could differ from pydeseq2's whole-matrix mean in the last bit.
    """
    n_blocks = max(1, min(-(-n_genes // max(per_block, 1)), n_genes // 2))
    edges = np.linspace(0, n_genes, n_blocks + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


class RCompatibleDataSet(ChunkedCooksDataSet):
    """The DESeq2 steps where pydeseq2 0.5.4 does not compute what R DESeq2 1.38 computes, done R's way.

    Gene-wise and MAP dispersions (R's line search and its rules around it; R's least-squares means
    where every coefficient is a group), the dispersion trend (R's Gamma GLM), the spread of the log
    dispersions (R's ``mad``), the Cook's refit (re-run with these same steps; pydeseq2 builds a stock
    dataset for it) and the Cook's filter rule; ``RCompatibleStats`` does the Wald SE and independent
    filtering. Everything else (size factors, GLM means, moments, the LFC fit, Cook's distances) is
    pydeseq2's, through ``FastInference``; ``r_compatible.py`` says what differs and why. Dispersions are
    fitted in gene chunks on the inference's workers.
    """

    def fit_genewise_dispersions(self, vst: bool = False) -> None:
        """``estimateDispersionsGeneEst``: pydeseq2's starting values and means, then R's fit."""
        if vst:
            super().fit_genewise_dispersions(vst)
            return
        if "size_factors" not in self.obs:
            self.fit_size_factors(fit_type=self.size_factors_fit_type)
        self.var["non_zero"] = ~(self.X == 0).all(axis=0)
        self.non_zero_idx = np.arange(self.n_vars)[self.var["non_zero"]]
        self.non_zero_genes = self.var_names[self.var["non_zero"]]
        self._fit_MoM_dispersions()
        design = self.obsm["design_matrix"].values
        size_factors = self.obs["size_factors"].values
        counts = self.X[:, self.non_zero_idx]
        alpha_init = self.var.loc[self.var["non_zero"], "_MoM_dispersions"].to_numpy()
        # R fits the means by least squares when each coefficient is one group, else by the GLM.
        if len(self.obsm["design_matrix"].value_counts()) == design.shape[-1]:
            mu = r_compatible.linear_model_mu(counts, size_factors, design)
        else:
            _, mu, _, _ = self.inference.irls(
                counts, size_factors, design, alpha_init, self.min_mu, self.beta_tol
            )
        np.maximum(mu, self.min_mu, out=mu)
        self.layers["_mu_hat"] = np.full((self.n_obs, self.n_vars), np.nan)
        self.layers["_mu_hat"][:, self.non_zero_idx] = mu
        alpha, iterations = self._per_gene(
            lambda c, m, rows: r_compatible.genewise_dispersions(
                c, design, m, alpha_init[rows], self.min_disp, self.max_disp
            ),
            counts,
            mu,
        )
        self.var["genewise_dispersions"] = np.nan
        self.var.loc[self.var["non_zero"], "genewise_dispersions"] = alpha
        self.var["_genewise_converged"] = pd.array([pd.NA] * self.n_vars, dtype="boolean")
        converged = (iterations < r_compatible.DISP_MAXIT) & (iterations != 1)
        self.var.loc[self.var["non_zero"], "_genewise_converged"] = converged

    def fit_dispersion_trend(self, vst: bool = False) -> None:
        """R's ``parametricDispersionFit``; where R would switch to a local fit, the mean (logged)."""
        if vst:
            super().fit_dispersion_trend(vst)
            return
        if "genewise_dispersions" not in self.var:
            self.fit_genewise_dispersions()
        nz = self.var["non_zero"].to_numpy()
        means = self.var.loc[nz, "_normed_means"].to_numpy()
        genewise = self.var.loc[nz, "genewise_dispersions"].to_numpy()
        try:
            coefs = r_compatible.parametric_trend(means, genewise, self.min_disp)
        except r_compatible.DispersionTrendError as exc:
            # R substitutes a local regression (locfit) here, which we do not reproduce.
            log.warning("%s; R would fit a local trend, this run uses the mean dispersion", exc)
            self.uns["mean_disp"] = trim_mean(genewise[genewise > 10 * self.min_disp], 0.001)
            self.uns["disp_function_type"] = "mean"
        else:
            self.uns["trend_coeffs"] = pd.Series(coefs, index=["a0", "a1"])
            self.uns["disp_function_type"] = "parametric"
        self.var["fitted_dispersions"] = np.nan
        self.var.loc[nz, "fitted_dispersions"] = self.disp_function(means)

    def fit_dispersion_prior(self) -> None:
        """R's ``varLogDispEsts`` (mad squared) and ``estimateDispersionsPriorVar``."""
        if "fitted_dispersions" not in self.var:
            self.fit_dispersion_trend()
        nz = self.var["non_zero"].to_numpy()
        var_log = r_compatible.var_log_dispersion(
            self.var.loc[nz, "genewise_dispersions"].to_numpy(),
            self.var.loc[nz, "fitted_dispersions"].to_numpy(),
            self.min_disp,
        )
        n_samples, n_coefs = self.obsm["design_matrix"].shape
        try:
            prior_var = r_compatible.dispersion_prior_variance(var_log, n_samples, n_coefs)
        except ValueError:
            # R matches simulated residual distributions here (its own random numbers); not reproduced.
            log.warning(
                "%d residual degrees of freedom: R simulates the dispersion prior variance; this run "
                "uses max(var - trigamma(df / 2), 0.25)",
                n_samples - n_coefs,
            )
            prior_var = max(var_log - float(polygamma(1, (n_samples - n_coefs) / 2)), 0.25)
        self.uns["_squared_logres"] = var_log
        self.uns["prior_disp_var"] = np.array(prior_var)

    def fit_MAP_dispersions(self) -> None:
        """``estimateDispersionsMAP``: R's start, line search, grid refit and outlier rule."""
        if "prior_disp_var" not in self.uns:
            self.fit_dispersion_prior()
        nz = self.var["non_zero"].to_numpy()
        design = self.obsm["design_matrix"].values
        genewise = self.var.loc[nz, "genewise_dispersions"].to_numpy()
        fitted = self.var.loc[nz, "fitted_dispersions"].to_numpy()
        prior_var = float(self.uns["prior_disp_var"])
        alpha, iterations = self._per_gene(
            lambda c, m, rows: r_compatible.map_dispersions(
                c, design, m, genewise[rows], fitted[rows], prior_var, self.min_disp, self.max_disp
            ),
            self.X[:, self.non_zero_idx],
            self.layers["_mu_hat"][:, self.non_zero_idx],
        )
        outlier = r_compatible.dispersion_outliers(genewise, fitted, float(self.uns["_squared_logres"]))
        self.var["MAP_dispersions"] = np.nan
        self.var.loc[nz, "MAP_dispersions"] = alpha
        self.var["_MAP_converged"] = pd.array([pd.NA] * self.n_vars, dtype="boolean")
        self.var.loc[nz, "_MAP_converged"] = iterations < r_compatible.DISP_MAXIT
        self.var["_outlier_genes"] = False
        self.var.loc[nz, "_outlier_genes"] = outlier
        self.var["dispersions"] = np.nan
        self.var.loc[nz, "dispersions"] = np.where(outlier, genewise, alpha)

    def _per_gene(self, fit, counts: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run ``fit(counts, mu, rows)`` (genes x samples blocks) over gene chunks on the inference's
        workers; returns the concatenated (values, iterations)."""
        n_samples, n_genes = counts.shape
        values, iterations = np.empty(n_genes), np.empty(n_genes, dtype=int)

        def run(s: slice) -> tuple[np.ndarray, np.ndarray]:
            rows = np.arange(n_genes)[s]
            block = np.ascontiguousarray(counts[:, s].T, dtype=float)
            return fit(block, np.ascontiguousarray(mu[:, s].T), rows)

        def store(s: slice, part: tuple[np.ndarray, np.ndarray]) -> None:
            values[s], iterations[s] = part

        if isinstance(self.inference, FastInference):
            self.inference.map_chunks(run, n_genes, n_samples, lambda s: (s,), store)
        else:
            store(slice(0, n_genes), run(slice(0, n_genes)))
        return values, iterations

    def _refit_without_outliers(self) -> None:
        """R's ``refitWithoutOutliers``: the replaced genes re-run these same steps (gene-wise, MAP
        with the cohort's trend, prior variance and spread, then the LFC fit). pydeseq2 0.5.4 builds a
        stock ``DeseqDataSet`` for this; otherwise the bookkeeping below follows it line by line."""
        if "replaced" not in self.var:
            self._replace_outliers()
        new_all_zeroes = (self.counts_to_refit.X == 0).all(axis=0)
        self.new_all_zeroes_genes = self.counts_to_refit.var_names[new_all_zeroes]
        self.var["refitted"] = self.var["replaced"].copy()
        self.var.loc[self.var["refitted"], "refitted"] = ~new_all_zeroes
        if new_all_zeroes.sum() > 0:
            self.var.loc[self.new_all_zeroes_genes, "_normed_means"] = 0
            self.varm["LFC"].loc[self.new_all_zeroes_genes, :] = 0
        if self.var["refitted"].sum() == 0:
            return
        self.counts_to_refit = self.counts_to_refit[:, ~new_all_zeroes].copy()
        sub = type(self)(
            counts=pd.DataFrame(
                self.counts_to_refit.X,
                index=self.counts_to_refit.obs_names,
                columns=self.counts_to_refit.var_names,
            ),
            metadata=self.obs,
            design=self.design,
            min_mu=self.min_mu,
            min_disp=self.min_disp,
            max_disp=self.max_disp,
            refit_cooks=self.refit_cooks,
            min_replicates=self.min_replicates,
            beta_tol=self.beta_tol,
            inference=self.inference,
            quiet=True,
        )
        sub.obs["size_factors"] = self.counts_to_refit.obs["size_factors"]
        sub.layers["normed_counts"] = sub.X / sub.obs["size_factors"].values[:, None]
        sub.var["_normed_means"] = sub.layers["normed_counts"].mean(axis=0)
        sub.fit_genewise_dispersions()
        for key in ("disp_function_type", "trend_coeffs", "mean_disp", "_squared_logres", "prior_disp_var"):
            if key in self.uns:
                sub.uns[key] = self.uns[key]
        sub.var["fitted_dispersions"] = sub.disp_function(sub.var["_normed_means"])
        sub.fit_MAP_dispersions()
        sub.fit_LFC()
        refitted = self.var["refitted"]
        # pydeseq2 copies back the first four; R also replaces the MAP estimate and the outlier flag.
        for column in ("_normed_means", "genewise_dispersions", "fitted_dispersions", "dispersions",
                       "MAP_dispersions", "_outlier_genes"):  # fmt: skip
            self.var.loc[refitted, column] = sub.var[column].to_numpy()
        self.varm["LFC"][refitted] = sub.varm["LFC"]
        self.layers["replace_cooks"] = self.layers["cooks"].copy()
        for col in np.where(refitted)[0]:
            self.layers["replace_cooks"][self.obs["replaceable"], col] = 0.0

    def cooks_outlier(self) -> pd.Series:
        """Genes whose p-value R's ``results()`` sets to NA for a Cook's distance above the cutoff.

        The largest distance over samples with 3+ replicates; after a refit, the replaceable samples'
        distances count as 0 (none at all if every sample is replaceable). The exception for genes
        with 3+ samples above the outlier's count holds, as in R, only for a design of one two-level
        factor (pydeseq2 applies it to every design).
        """
        if "_pvalue_cooks_outlier" in self.var:
            return self.var["_pvalue_cooks_outlier"]
        n_samples, n_coefs = self.obsm["design_matrix"].shape
        cutoff = stats.f.ppf(0.99, n_coefs, n_samples - n_coefs)
        use_for_max = n_or_more_replicates(self.obsm["design_matrix"], 3).to_numpy()
        cooks = self.layers["cooks"]
        refitted = self.refit_cooks and "refitted" in self.var and bool(self.var["refitted"].any())
        if refitted and bool(self.obs["replaceable"].all()):
            outlier = np.zeros(self.n_vars, dtype=bool)
        else:
            considered = use_for_max.copy()
            if refitted:
                considered &= ~self.obs["replaceable"].to_numpy()
            with np.errstate(invalid="ignore"):
                outlier = (cooks[considered] > cutoff).any(axis=0)
        if outlier.any() and single_two_level_factor(self.design, self.obs):
            cols = np.flatnonzero(outlier)
            at_max = np.nanargmax(cooks[:, cols], axis=0)
            outlier_count = self.X[at_max, cols]
            outlier[cols] = (self.X[:, cols] > outlier_count).sum(axis=0) < 3
        self.var["_pvalue_cooks_outlier"] = outlier
        return self.var["_pvalue_cooks_outlier"]


def single_two_level_factor(design: str, obs: pd.DataFrame) -> bool:
    """True for a design of one categorical variable with two levels (``~ severity``), the only
    design for which R DESeq2 keeps a Cook's-flagged gene's p-value when 3+ samples count higher."""
    terms = [t.strip() for t in str(design).lstrip("~ ").split("+") if t.strip()]
    if len(terms) != 1 or terms[0] not in obs:
        return False
    column = obs[terms[0]]
    is_factor = not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)
    return bool(is_factor and column.nunique() == 2)


class RCompatibleStats(DeseqStats):
    """``DeseqStats`` with R's Wald covariance and R's ``pvalueAdjustment`` (R's lowess)."""

    filter_threshold: float | None = None

    def run_wald_test(self) -> None:
        """``DeseqStats.run_wald_test`` with R's covariance: the weights use the means floored at
        ``min_mu`` (R's ``fitBeta`` / ``fitNbinomGLMsOptim``) and the ridge is R's 1e-6 on the log2
        scale. pydeseq2 uses the unfloored means, which matters where a coefficient runs off to
        -infinity (e.g. a Y gene in a design with sex: the female samples then carry no weight)."""
        if self.prior_LFC_var is not None:  # not used by this workflow; keep pydeseq2's own
            super().run_wald_test()
            return
        sf = self.dds.obs["size_factors"].to_numpy()
        mu = np.exp(self.design_matrix.to_numpy() @ self.LFC.to_numpy().T) * sf[:, None]
        np.maximum(mu, self.dds.min_mu, out=mu)
        num_vars = self.design_matrix.shape[1]
        pvals, stat, se = self.inference.wald_test(
            design_matrix=self.design_matrix.to_numpy(),
            disp=self.dds.var["dispersions"].to_numpy(),
            lfc=self.LFC.to_numpy(),
            mu=mu,
            ridge_factor=np.diag(np.repeat(r_compatible.R_RIDGE_NATURAL_LOG, num_vars)),
            contrast=self.contrast_vector,
            lfc_null=np.log(2) * self.lfc_null,
            alt_hypothesis=self.alt_hypothesis,
        )
        self.p_values = pd.Series(pvals, index=self.dds.var_names)
        self.statistics = pd.Series(stat, index=self.dds.var_names)
        self.SE = pd.Series(se, index=self.dds.var_names)
        if self.dds.refit_cooks and self.dds.var["replaced"].sum() > 0:
            self.SE.loc[self.dds.new_all_zeroes_genes] = 0.0
            self.statistics.loc[self.dds.new_all_zeroes_genes] = 0.0
            self.p_values.loc[self.dds.new_all_zeroes_genes] = 1.0

    def _independent_filtering(self) -> None:
        if not hasattr(self, "p_values"):
            self.run_wald_test()
        result = r_compatible.independent_filtering(
            self.base_mean.to_numpy(), self.p_values.to_numpy(), self.alpha
        )
        self.padj = pd.Series(result.padj, index=self.dds.var_names)
        self.filter_threshold = result.threshold
