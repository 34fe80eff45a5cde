"""Severe-vs-mild differential expression with pydeseq2's negative-binomial GLM (count cohorts).

The model frame, design and table columns are the shared contract's (contract.py); the engine that runs
the fit (R DESeq2's procedures or stock pydeseq2's) is nb_engines.py's, driven by the gene-vectorised
``FastInference``. Effects are reported with their standard error and a Wald 95% interval, not only
p-values.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import anndata as ad
import numpy as np
import pandas as pd
from pydeseq2.dds import DeseqDataSet
from pydeseq2.ds import DeseqStats
from scipy import stats

from il6axis.de.contract import (
    CONTRAST,
    ENGINE_R,
    FLAG_COLUMNS,
    REASON_COOKS,
    REASON_EXPRESSION,
    REASON_NO_FIT,
    SEVERITY_COEF,
    STAT_COLUMNS,
    DeResult,
    DeSettings,
    NbRefitInputs,
    check_reference_level,
    contrast_design_frame,
    design_formula,
    expression_filter,
)
from il6axis.de.fast_inference import FastInference
from il6axis.de.nb_engines import ChunkedCooksDataSet, RCompatibleDataSet, RCompatibleStats
from il6axis.de.r_compatible import R_RIDGE_NATURAL_LOG
from il6axis.errors import InputError
from il6axis.vocabulary import MILD, SEVERE

log = logging.getLogger(__name__)

Z_95 = float(stats.norm.ppf(0.975))
# pydeseq2's ridge on the coefficients in its IRLS and stock Wald test (natural-log scale).
PYDESEQ2_RIDGE = 1e-6


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
    check_reference_level(list(dds.obsm["design_matrix"].columns))
    stats_class = RCompatibleStats if settings.engine == ENGINE_R else DeseqStats
    ds = stats_class(
        dds,
        contrast=CONTRAST,
        alpha=settings.alpha,
        cooks_filter=settings.cooks_filter,
        independent_filter=settings.independent_filter,
        inference=inference,
        quiet=True,
    )
    ds.summary()
    refit_inputs = None
    if settings.refit_genes:  # before the shrinkage, which may touch the LFCs
        refit_inputs = nb_refit_inputs(dds, settings.refit_genes, engine_r=settings.engine == ENGINE_R)
    res = ds.results_df.copy()
    res["ci_low"] = res["log2FoldChange"] - Z_95 * res["lfcSE"]
    res["ci_high"] = res["log2FoldChange"] + Z_95 * res["lfcSE"]
    if settings.lfc_shrink:
        # Shrunk LFCs are for ranking and display only; the MLE and its SE feed the meta-analysis.
        ds.lfc_shrink(coeff=SEVERITY_COEF)
        res["log2FoldChange_shrunk"] = ds.results_df["log2FoldChange"]
    table = _full_table(res, genes, keep)
    threshold = getattr(ds, "filter_threshold", None)
    return DeResult(
        table=table,
        design=design,
        n_per_group=n_per_group,
        n_tested=int(table["tested"].sum()),
        engine=settings.engine,
        filter_threshold=threshold,
        refit_inputs=refit_inputs,
    )


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
    dataset_class = RCompatibleDataSet if settings.engine == ENGINE_R else ChunkedCooksDataSet
    return dataset_class(
        counts=counts,
        metadata=meta,
        design=design,
        refit_cooks=settings.refit_cooks,
        inference=inference,
        quiet=True,
    )


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
    """Results for every gene; genes without a test keep their row with NA statistics and the reason."""
    table = res.reindex(genes)
    table.index.name = "gene"
    fitted = keep.reindex(genes).to_numpy()
    has_p = table["pvalue"].notna().to_numpy()
    cooks = fitted & ~has_p & table["log2FoldChange"].notna().to_numpy()
    table["tested"] = fitted & has_p
    reason = np.where(fitted, "", REASON_EXPRESSION).astype(object)
    reason[cooks] = REASON_COOKS
    reason[fitted & ~has_p & ~cooks] = REASON_NO_FIT
    table["not_tested_reason"] = reason
    table["cooks_outlier"] = cooks
    table["independently_filtered"] = table["tested"] & table["padj"].isna()
    table = table.reset_index()
    order = STAT_COLUMNS + FLAG_COLUMNS
    rest = [c for c in table.columns if c not in order]
    return table[order + rest]


def nb_refit_inputs(dds: DeseqDataSet, genes: Iterable[str], engine_r: bool) -> NbRefitInputs | None:
    """The stability refits' inputs for ``genes`` (those fitted with counts left) from a fitted dataset.

    Genes DESeq2 refitted after replacing Cook's outliers take the replaced counts, as their full fit did.
    The Wald test of the refits is the engine's (``engine_r``: R's floored means and ridge).
    """
    names = pd.Index(dds.var_names)
    wanted = [g for g in dict.fromkeys(genes) if g in names]
    if not wanted:
        return None
    idx = names.get_indexer(wanted)
    counts = np.asarray(dds.X[:, idx], dtype=float)
    refit_set = getattr(dds, "counts_to_refit", None)
    if refit_set is not None and "refitted" in dds.var:
        refitted = pd.Index(refit_set.var_names)
        for j, gene in enumerate(wanted):
            if bool(dds.var["refitted"].iloc[idx[j]]) and gene in refitted:
                counts[:, j] = np.asarray(refit_set[:, gene].X, dtype=float).ravel()
    keep = counts.any(axis=0) & np.isfinite(dds.var["dispersions"].to_numpy()[idx])
    design = dds.obsm["design_matrix"]
    return NbRefitInputs(
        genes=[g for g, k in zip(wanted, keep, strict=True) if k],
        samples=[str(s) for s in dds.obs_names],
        counts=counts[:, keep],
        size_factors=dds.obs["size_factors"].to_numpy(dtype=float),
        design=design.to_numpy(dtype=float),
        coef_index=list(design.columns).index(SEVERITY_COEF),
        dispersions=dds.var["dispersions"].to_numpy(dtype=float)[idx][keep],
        beta=dds.varm["LFC"].to_numpy(dtype=float)[idx][keep],
        min_mu=float(dds.min_mu),
        irls_ridge=PYDESEQ2_RIDGE,
        wald_ridge=R_RIDGE_NATURAL_LOG if engine_r else PYDESEQ2_RIDGE,
        wald_floor_mu=engine_r,
    )
