"""Severe-vs-mild differential expression with pydeseq2.

The reference level is always ``mild``: labels are recoded to exactly ``mild``/``severe`` upstream,
the contrast is passed explicitly, and the design matrix column is asserted, so a cohort whose raw labels
sort the other way (``Critical`` < ``Non-critical``) cannot flip signs. Effects are reported with their
standard error and a Wald 95% interval, not only p-values.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
from pydeseq2 import utils as pydeseq2_utils
from pydeseq2.dds import DeseqDataSet
from pydeseq2.ds import DeseqStats
from pydeseq2.utils import robust_method_of_moments_disp
from scipy import stats
from sklearn.linear_model import LinearRegression

from il6axis import severity_model
from il6axis.errors import InputError
from il6axis.fast_inference import FastInference
from il6axis.groups import MILD, SEVERE

log = logging.getLogger("il6axis.de")

SEVERITY_COEF = "severity[T.severe]"
CONTRAST = ["severity", SEVERE, MILD]
Z_95 = float(stats.norm.ppf(0.975))


@dataclass
class DeSettings:
    alpha: float = 0.05
    min_count: int = 10
    lfc_shrink: bool = True
    refit_cooks: bool = True
    cooks_filter: bool = True
    independent_filter: bool = True
    n_cpus: int = 1
    extra_covariates: Sequence[str] = field(default_factory=tuple)


def settings_from_params(params, threads: int, lfc_shrink: bool | None = None) -> DeSettings:
    """DeSettings from a rule's declared params (alpha, min_count, cooks_refit[, lfc_shrink]) and threads.

    ``lfc_shrink`` overrides the param: sensitivity refits and pseudobulk runs report MLEs only.
    """
    return DeSettings(
        alpha=params.alpha,
        min_count=params.min_count,
        lfc_shrink=params.lfc_shrink if lfc_shrink is None else lfc_shrink,
        refit_cooks=params.cooks_refit,
        n_cpus=threads,
    )


@dataclass
class DeResult:
    table: pd.DataFrame  # one row per gene of the cohort (tested or not)
    design: str
    n_per_group: dict[str, int]
    n_tested: int


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
    meta["severity"] = pd.Categorical(obs["severity"].astype(str), categories=[MILD, SEVERE])
    return meta


def expression_filter(counts: pd.DataFrame, severity: pd.Series, min_count: int) -> pd.Series:
    """Genes with >= ``min_count`` reads in at least as many samples as the smaller group.

    A gene below this cannot reach significance and only adds multiple-testing burden; the rule mirrors
    the common ``rowSums(counts >= 10) >= smallest group`` pre-filter used with R DESeq2.
    """
    smallest = int(severity.value_counts().min())
    return (counts >= min_count).sum(axis=0) >= smallest


def run_deseq2(adata: ad.AnnData, covariates: Sequence[str], settings: DeSettings) -> DeResult:
    """Fit the NB GLM on the severe and mild samples of ``adata`` and return a per-gene table."""
    in_contrast = adata.obs["severity"].isin([SEVERE, MILD]).to_numpy()
    sub = adata[in_contrast]
    genes = pd.Index(sub.var_names)
    values = _contrast_counts(adata, in_contrast)
    if not np.issubdtype(values.dtype, np.integer):
        raise InputError("count matrix is not integer: round expected counts before DE (value_type)")
    covariates = [*covariates, *settings.extra_covariates]
    meta = contrast_design_frame(sub.obs, covariates)
    n_per_group = {g: int((meta["severity"] == g).sum()) for g in (MILD, SEVERE)}

    keep = expression_filter(
        pd.DataFrame(values, index=sub.obs_names, columns=genes, copy=False),
        meta["severity"],
        settings.min_count,
    )
    design = design_formula(covariates)
    log.info(
        "design %s; %s; %d/%d genes pass the expression filter",
        design,
        n_per_group,
        int(keep.sum()),
        len(keep),
    )
    # pydeseq2's own per-gene algorithms, vectorised over genes: identical numbers, ~10x faster
    # (bench/compare_with_r.py; fast_inference.py falls back to stock code where it cannot match it).
    inference = FastInference(n_cpus=settings.n_cpus)
    dds = _dataset(values, keep.to_numpy(), sub.obs_names, genes, meta, design, settings, inference)
    del values  # pydeseq2 keeps its own copy; ours (if any) is not needed any more
    _fit_dataset(dds)
    coef_names = list(dds.obsm["design_matrix"].columns)
    if SEVERITY_COEF not in coef_names:
        raise RuntimeError(f"reference level is not mild: design columns are {coef_names}")
    ds = DeseqStats(
        dds,
        contrast=CONTRAST,
        alpha=settings.alpha,
        cooks_filter=settings.cooks_filter,
        independent_filter=settings.independent_filter,
        inference=inference,
        quiet=True,
    )
    ds.summary()
    res = ds.results_df.copy()
    res["ci_low"] = res["log2FoldChange"] - Z_95 * res["lfcSE"]
    res["ci_high"] = res["log2FoldChange"] + Z_95 * res["lfcSE"]
    if settings.lfc_shrink:
        # Shrunk LFCs are for ranking and display only; the MLE and its SE feed the meta-analysis.
        ds.lfc_shrink(coeff=SEVERITY_COEF)
        res["log2FoldChange_shrunk"] = ds.results_df["log2FoldChange"]
    table = _full_table(res, genes, keep)
    return DeResult(table=table, design=design, n_per_group=n_per_group, n_tested=int(keep.sum()))


def _contrast_counts(adata: ad.AnnData, in_contrast: np.ndarray) -> np.ndarray:
    """The contrast samples' counts (samples x genes); the cohort's own matrix, not a copy, when every
    sample is in the contrast."""
    if in_contrast.all():
        return np.asarray(adata.X)
    return np.asarray(adata[in_contrast].X)


def _dataset(
    values: np.ndarray,
    keep: np.ndarray,
    samples: pd.Index,
    genes: pd.Index,
    meta: pd.DataFrame,
    design: str,
    settings: DeSettings,
    inference: FastInference,
) -> DeseqDataSet:
    """The DeseqDataSet of the genes that pass the filter.

    pydeseq2 stores ``counts.astype(int)``, a copy, whatever we pass; handing it a frame over our array
    (no pandas copy) and dropping that array afterwards leaves the dataset's copy as the only one we hold.
    """
    kept = values if keep.all() else values[:, keep]
    counts = pd.DataFrame(kept, index=samples, columns=genes[keep], copy=False)
    return _ChunkedCooksDataSet(
        counts=counts,
        metadata=meta,
        design=design,
        refit_cooks=settings.refit_cooks,
        inference=inference,
        quiet=True,
    )


class _ChunkedCooksDataSet(DeseqDataSet):
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
        blocks = _gene_blocks(normed_counts.shape[1], self.genes_per_chunk)
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
        for lo, hi in _gene_blocks(len(non_zero), self.genes_per_chunk):
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


def _gene_blocks(n_genes: int, per_block: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` bounds splitting ``n_genes`` into near-equal blocks of at most ``per_block``.

    No block is a single gene unless there is only one: numpy sums a one-column block along its
    contiguous axis pairwise, where a wider block (and the whole matrix) is summed row by row, so a
    one-gene block could differ from pydeseq2's whole-matrix mean in the last bit.
    """
    n_blocks = max(1, min(-(-n_genes // max(per_block, 1)), n_genes // 2))
    edges = np.linspace(0, n_genes, n_blocks + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _fit_dataset(dds: DeseqDataSet) -> None:
    """``dds.deseq2()`` step by step, freeing each large intermediate once no later step reads it.

    The steps and their order are pydeseq2 0.5.4's ``DeseqDataSet.deseq2`` (pinned in requirements.txt;
    tests/test_de.py checks the result equals ``deseq2()``'s). pydeseq2 keeps every intermediate
    (samples x genes, float64) to the end: the first-pass means, the IRLS means and hat diagonals, the
    Cook's distances and the normalised counts, five more copies of the count matrix through the Wald
    tests and the shrinkage. Its own ``low_memory`` flag drops most of them but would break its iterative
    size-factor fallback (which reads the first-pass means after the MAP fit), so we free them here.
    ``DeseqStats`` reads only the counts, the size factors, the dispersions, the LFCs, the normalised
    means and the cached Cook's outlier flags.
    """
    dds.fit_size_factors(fit_type=dds.size_factors_fit_type, control_genes=dds.control_genes)
    dds.fit_genewise_dispersions()
    dds.fit_dispersion_trend()
    dds.fit_dispersion_prior()
    dds.fit_MAP_dispersions()
    _drop(dds.layers, "_mu_hat")  # read by the gene-wise and MAP dispersion fits only
    dds.fit_LFC()
    dds.calculate_cooks()
    _drop(dds.obsm, "_mu_LFC", "_hat_diagonals")  # read by calculate_cooks only
    if dds.refit_cooks:
        dds.refit()
    dds.cooks_outlier()  # caches the per-gene outlier flags that DeseqStats reads
    _drop(dds.layers, "cooks", "replace_cooks", "normed_counts")


def _drop(mapping, *keys: str) -> None:
    """Delete ``keys`` from an AnnData layers/obsm mapping where present."""
    for key in keys:
        if key in mapping:
            del mapping[key]


def _full_table(res: pd.DataFrame, genes: pd.Index, keep: pd.Series) -> pd.DataFrame:
    """Results for every gene; filtered genes keep their row with NA statistics and the reason."""
    table = res.reindex(genes)
    table.index.name = "gene"
    table["tested"] = keep.reindex(genes).to_numpy()
    table["not_tested_reason"] = np.where(table["tested"], "", "below expression filter")
    independent = table["tested"] & table["pvalue"].notna() & table["padj"].isna()
    table.loc[independent, "not_tested_reason"] = "removed by independent filtering"
    cooks = table["tested"] & table["pvalue"].isna() & table["log2FoldChange"].notna()
    table.loc[cooks, "not_tested_reason"] = "Cook's distance outlier"
    table = table.reset_index()
    order = ["gene", "baseMean", "log2FoldChange", "lfcSE", "ci_low", "ci_high", "stat", "pvalue", "padj"]
    rest = [c for c in table.columns if c not in order]
    return table[order + rest]


def benjamini_hochberg(pvalues: pd.Series) -> pd.Series:
    """BH-adjusted p-values; NaN stays NaN and does not count as a test."""
    p = pvalues.to_numpy(dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    n = int(ok.sum())
    if n:
        order = np.argsort(p[ok])
        ranked = p[ok][order] * n / np.arange(1, n + 1)
        adjusted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
        vals = np.empty(n)
        vals[order] = adjusted
        out[ok] = vals
    return pd.Series(out, index=pvalues.index)


def panel_table(de_table: pd.DataFrame, panel: pd.DataFrame, adata: ad.AnnData) -> pd.DataFrame:
    """One row per pre-specified panel gene: present?, tested?, effect with CI, genome-wide and panel BH.

    Detection (fraction of contrast samples with a count > 0) is reported per group so that a barely
    detected gene (IL6 in blood) is visible instead of silently missing.
    """
    in_contrast = adata.obs["severity"].isin([SEVERE, MILD]).to_numpy()
    sub = adata[in_contrast]
    counts = pd.DataFrame(np.asarray(sub.X), index=sub.obs_names, columns=sub.var_names)
    groups = sub.obs["severity"].astype(str)
    rows = panel[["symbol", "tier", "role"]].copy()
    rows["present"] = rows["symbol"].isin(counts.columns)
    for g in (MILD, SEVERE):
        present = rows.loc[rows["present"], "symbol"]
        det = (counts.loc[groups == g, present] > 0).mean(axis=0)
        rows[f"detection_{g}"] = rows["symbol"].map(det)
    merged = rows.merge(de_table, how="left", left_on="symbol", right_on="gene").drop(columns="gene")
    merged["tested"] = merged["tested"].eq(True)
    merged.loc[~merged["present"], "not_tested_reason"] = "gene absent from the count matrix"
    merged["padj_panel"] = benjamini_hochberg(merged["pvalue"])
    return merged


def run_and_write(
    adata: ad.AnnData,
    panel: pd.DataFrame,
    covariates: Sequence[str],
    settings: DeSettings,
    cohort: str,
    results_path: str,
    panel_path: str,
    summary_path: str,
) -> DeResult:
    """Run DE for one cohort and write the genome-wide table, the panel table and a JSON summary.

    The model follows the cohort's values (``severity_model``): NB GLM for counts, the moderated log2
    linear model for cohorts that publish normalised values only.
    """
    import pydeseq2

    result = severity_model.fit_severity(adata, covariates, settings)
    table = result.table
    table.to_csv(results_path, sep="\t", index=False, float_format="%.6g")
    panel_table(table, panel, adata).to_csv(panel_path, sep="\t", index=False, float_format="%.6g")
    called = table["padj"] < settings.alpha
    summary = {
        "cohort": cohort,
        "contrast": "severe vs mild",
        "reference_level": MILD,
        "design": result.design,
        "model": severity_model.model_of(adata),
        "scale": severity_model.scale_of(adata),
        "n_per_group": result.n_per_group,
        "alpha": settings.alpha,
        "n_cpus": settings.n_cpus,
        "n_genes": int(len(table)),
        "n_tested": result.n_tested,
        "n_up": int((called & (table["log2FoldChange"] > 0)).sum()),
        "n_down": int((called & (table["log2FoldChange"] < 0)).sum()),
        "tissue": str(adata.uns.get("tissue", "")),
        "pydeseq2_version": pydeseq2.__version__,
    }
    with open(summary_path, "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    log.info("summary %s", summary)
    return result
