"""de.engine r_compatible reproduces R DESeq2 1.38; de.engine pydeseq2 stays stock pydeseq2 0.5.4.

The expectations are R's own numbers on two small fixed cohorts (tests/fixtures/deseq2_r/, written by
bench/make_r_fixtures.py with Rscript; CI has no R). Each cohort has planted severity effects and planted
single-sample outliers: ``sex_severity`` (~ sex + severity, 8 vs 6; Cook's filtering without replacement,
RPS4Y1 with no female counts) and ``severity_refit`` (~ severity, 8 vs 8; Cook's replacement and refit,
and a trend that stock pydeseq2 fails to fit).
"""

from __future__ import annotations

import json
import math

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import PROJECT_ROOT
from pydeseq2.dds import DeseqDataSet
from pydeseq2.default_inference import DefaultInference
from pydeseq2.ds import DeseqStats
from pydeseq2.utils import lowess as pydeseq2_lowess
from scipy import special
from statsmodels.stats.multitest import multipletests

from il6axis.de import contract, nb, r_compatible
from il6axis.de.contract import benjamini_hochberg
from il6axis.de.fast_inference import FastInference
from il6axis.de.nb_engines import single_two_level_factor

FIXTURES = PROJECT_ROOT / "tests" / "fixtures" / "deseq2_r"
CASES = {"sex_severity": ["sex"], "severity_refit": []}
# Planted outliers (bench/make_r_fixtures.py): simulated genes 41-44 carry one extreme count each.
OUTLIER_GENES = ["SIMG00041", "SIMG00042", "SIMG00043", "SIMG00044"]


def _case(name: str) -> tuple[ad.AnnData, pd.DataFrame, dict]:
    counts = pd.read_csv(FIXTURES / f"{name}.counts.tsv", sep="\t", index_col=0)
    samples = pd.read_csv(FIXTURES / f"{name}.samples.tsv", sep="\t", index_col=0)
    r_table = pd.read_csv(FIXTURES / f"{name}.r_results.tsv", sep="\t", index_col=0, na_values=["NA"])
    info = json.loads((FIXTURES / f"{name}.r_info.json").read_text())
    adata = ad.AnnData(X=counts.T.to_numpy(), obs=samples, var=pd.DataFrame(index=counts.index))
    return adata, r_table, info


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    name = request.param
    adata, r_table, info = _case(name)
    covariates = CASES[name]
    runs = {
        engine: nb.run_deseq2(adata, covariates, contract.DeSettings(lfc_shrink=False, engine=engine))
        for engine in contract.ENGINES
    }
    return name, adata, covariates, r_table, info, runs


def _aligned(result: contract.DeResult, r_table: pd.DataFrame) -> pd.DataFrame:
    table = result.table.set_index("gene")
    assert set(r_table.index) <= set(table.index)
    return table.loc[r_table.index]


def test_r_compatible_results_equal_r(case):
    name, _, _, r_table, info, runs = case
    ours = _aligned(runs["r_compatible"], r_table)
    np.testing.assert_allclose(ours["baseMean"], r_table["baseMean"], rtol=1e-9)
    np.testing.assert_allclose(ours["log2FoldChange"], r_table["log2FoldChange"], atol=2e-4, rtol=0)
    np.testing.assert_allclose(ours["lfcSE"], r_table["lfcSE"], rtol=1e-5)
    # Same genes without a p-value (Cook's filter) and without a padj (independent filtering) ...
    assert (ours["pvalue"].isna() == r_table["pvalue"].isna()).all()
    assert (ours["padj"].isna() == r_table["padj"].isna()).all()
    np.testing.assert_allclose(ours["padj"], r_table["padj"], atol=1e-4, equal_nan=True)
    # ... the same calls, and the same independent-filtering threshold.
    assert ((ours["padj"] < 0.05) == (r_table["padj"] < 0.05)).all()
    assert (r_table["padj"] < 0.05).sum() >= 20
    assert runs["r_compatible"].filter_threshold == pytest.approx(info["filter_threshold"], rel=1e-9)


def test_stock_pydeseq2_differs_from_r_on_these_data(case):
    """The fixtures exercise the differences: stock pydeseq2 is off where the R-compatible engine is not."""
    name, _, _, r_table, _, runs = case
    stock = _aligned(runs["pydeseq2"], r_table)
    se_rel = (stock["lfcSE"] / r_table["lfcSE"] - 1).abs()
    assert se_rel.max() > 0.05
    if name == "severity_refit":  # pydeseq2's L-BFGS-B trend fit fails here and it falls back to the mean
        assert (se_rel > 0.01).mean() > 0.5


@pytest.mark.parametrize("name", list(CASES))
def test_r_compatible_dispersions_equal_r(name):
    """Gene-wise, trend, MAP and final dispersions, outlier flags and Cook's replacement, step by step."""
    adata, r_table, info = _case(name)
    covariates = CASES[name]
    meta = contract.contrast_design_frame(adata.obs, covariates)
    keep = np.isin(adata.var_names, r_table.index)
    settings = contract.DeSettings(engine="r_compatible")
    dds = nb._dataset(
        np.asarray(adata.X), keep, adata.obs_names, pd.Index(adata.var_names), meta,
        contract.design_formula(covariates), settings, FastInference(n_cpus=1),
    )  # fmt: skip
    nb._fit_dataset(dds)
    var = dds.var.loc[r_table.index]
    np.testing.assert_allclose(dds.obs["size_factors"], info["size_factors"], rtol=1e-9)
    np.testing.assert_allclose(dds.uns["trend_coeffs"], info["disp_trend_coefficients"], rtol=1e-6)
    assert float(dds.uns["_squared_logres"]) == pytest.approx(info["var_log_disp_ests"], rel=1e-6)
    assert float(dds.uns["prior_disp_var"]) == pytest.approx(info["disp_prior_var"], rel=1e-6)
    for ours, theirs in [
        ("genewise_dispersions", "dispGeneEst"),
        ("fitted_dispersions", "dispFit"),
        ("MAP_dispersions", "dispMAP"),
        ("dispersions", "dispersion"),
    ]:
        np.testing.assert_allclose(var[ours], r_table[theirs], rtol=1e-5, err_msg=ours)
    assert (var["_outlier_genes"].astype(bool) == r_table["dispOutlier"].astype(bool)).all()
    assert r_table["dispOutlier"].sum() >= 3
    if name == "severity_refit":
        replaced = var["replaced"].astype(bool)
        assert (replaced == r_table["replace"].astype(bool)).all()
        assert set(OUTLIER_GENES) <= set(replaced[replaced].index)


def test_cooks_filter_follows_r_and_flags_say_one_thing_each(case):
    """sex_severity: no design cell has 7 samples, so the planted outliers are not replaced, and R drops
    the p-value of those in samples of a cell with 3+ replicates (the others are not looked at)."""
    name, _, _, r_table, _, runs = case
    table = runs["r_compatible"].table.set_index("gene")
    if name == "sex_severity":
        dropped = r_table.loc[OUTLIER_GENES, "pvalue"].isna()
        assert dropped.sum() >= 2
        assert (table.loc[OUTLIER_GENES, "cooks_outlier"] == dropped).all()
    cooks = table["cooks_outlier"]
    assert (table.loc[cooks, "not_tested_reason"] == contract.REASON_COOKS).all()
    assert table.loc[cooks, "log2FoldChange"].notna().all() and not table.loc[cooks, "tested"].any()
    # tested <=> a Wald p-value; the reason is empty exactly for tested genes
    assert (table["tested"] == table["pvalue"].notna()).all()
    assert ((table["not_tested_reason"] == "") == table["tested"]).all()
    filtered = table["independently_filtered"]
    assert table.loc[filtered, "tested"].all() and table.loc[filtered, "padj"].isna().all()
    assert filtered.any() or name == "severity_refit"  # R filters nothing there (threshold = min baseMean)
    threshold = runs["r_compatible"].filter_threshold
    assert (table.loc[filtered, "baseMean"] < threshold).all()
    assert (table.loc[table["tested"] & ~filtered, "baseMean"] >= threshold).all()
    below = table["not_tested_reason"] == contract.REASON_EXPRESSION
    assert below.any() and table.loc[below, "log2FoldChange"].isna().all()
    assert runs["r_compatible"].n_tested == int(table["tested"].sum())


def test_pydeseq2_engine_is_stock_pydeseq2():
    """de.engine pydeseq2 gives exactly what stock pydeseq2 0.5.4 gives (its own DeseqDataSet,
    deseq2(), DeseqStats and per-gene DefaultInference), Cook's replacement and refit included."""
    adata, r_table, _ = _case("severity_refit")
    ours = nb.run_deseq2(adata, [], contract.DeSettings(lfc_shrink=False, engine="pydeseq2")).table
    ours = ours.set_index("gene").loc[r_table.index]
    counts = pd.DataFrame(np.asarray(adata.X), index=adata.obs_names, columns=adata.var_names)[r_table.index]
    meta = contract.contrast_design_frame(adata.obs, [])
    dds = DeseqDataSet(
        counts=counts, metadata=meta, design="~ severity", inference=DefaultInference(n_cpus=1), quiet=True
    )
    dds.deseq2()
    assert dds.var["refitted"].any()
    ds = DeseqStats(dds, contrast=contract.CONTRAST, inference=DefaultInference(n_cpus=1), quiet=True)
    ds.summary()
    stock = ds.results_df
    for column in ["baseMean", "log2FoldChange", "lfcSE", "stat", "pvalue", "padj"]:
        np.testing.assert_array_equal(ours[column].to_numpy(), stock[column].to_numpy(), err_msg=column)


def test_cooks_exception_only_for_one_two_level_factor():
    """R keeps a Cook's-flagged p-value when 3+ samples count higher only for designs like ~ severity."""
    obs = pd.DataFrame({"severity": ["mild", "severe"] * 3, "sex": ["f", "m", "m", "f", "m", "m"],
                        "age": [30.0, 41, 52, 63, 74, 85]})  # fmt: skip
    assert single_two_level_factor("~ severity", obs)
    assert not single_two_level_factor("~ sex + severity", obs)
    assert not single_two_level_factor("~ age", obs)


@pytest.mark.parametrize("name", list(CASES))
def test_independent_filtering_is_rs_on_rs_p_values(name):
    """R's baseMeans and p-values in, R's rejection curve, lowess, threshold and padj out."""
    _, r_table, info = _case(name)
    result = r_compatible.independent_filtering(
        r_table["baseMean"].to_numpy(), r_table["pvalue"].to_numpy(), 0.05
    )
    np.testing.assert_array_equal(result.rejections, info["filter_num_rej"])
    np.testing.assert_allclose(result.lowess, info["filter_lowess"], rtol=1e-8)
    assert result.threshold == pytest.approx(info["filter_threshold"], rel=1e-9)
    assert result.theta == pytest.approx(info["filter_theta"], rel=1e-12)
    np.testing.assert_allclose(result.padj, r_table["padj"], rtol=1e-8, equal_nan=True)
    # pydeseq2's own smoother is another curve through the same counts (the cause of its other thresholds)
    theirs = pydeseq2_lowess(result.theta_grid, result.rejections.astype(float), frac=1 / 5)
    assert np.abs(theirs - np.asarray(info["filter_lowess"])).max() > 0.1


def test_r_lowess_is_clevelands_robust_smoother():
    """A straight line with one gross outlier: the robustness iterations ignore the outlier."""
    x = np.linspace(0, 1, 50)
    y = 3.0 + 2.0 * x
    y[20] += 100.0
    fit = r_compatible.r_lowess(x, y, 0.2)
    clean = np.delete(np.arange(50), 20)
    np.testing.assert_allclose(fit[clean], 3.0 + 2.0 * x[clean], atol=1e-6)


def test_parametric_trend_recovers_planted_curve():
    rng = np.random.default_rng(5)
    means = np.exp(rng.uniform(np.log(5), np.log(1e5), 4000))
    truth = (0.08, 2.5)
    disps = r_compatible.trend_values(np.array(truth), means) * rng.gamma(4.0, 0.25, size=means.size)
    disps[:40] *= 1e4  # far above the curve: dropped by the (1e-4, 15) window after the first round
    disps[40:60] = 1e-9  # below 100 * minDisp: never used
    coefs = r_compatible.parametric_trend(means, disps)
    np.testing.assert_allclose(coefs, truth, rtol=0.06)
    with pytest.raises(r_compatible.DispersionTrendError):  # rising with the mean: extraPois <= 0
        r_compatible.parametric_trend(means, 1e-4 * means**0.5)


def test_genewise_line_search_finds_the_planted_dispersion():
    """NB counts with a known dispersion: R's line search ends at the maximum of the same posterior a
    fine grid finds, and the estimates scatter around the planted value."""
    rng = np.random.default_rng(9)
    n_genes, n_samples, alpha = 300, 40, 0.2
    design = np.column_stack([np.ones(n_samples), np.repeat([0.0, 1.0], n_samples // 2)])
    mu = np.full((n_genes, n_samples), 150.0)
    counts = rng.negative_binomial(1 / alpha, 1 / (1 + alpha * mu)).astype(float)
    start = np.full(n_genes, 0.05)
    fitted, iterations = r_compatible.genewise_dispersions(counts, design, mu, start)
    assert abs(np.median(np.log(fitted)) - math.log(alpha)) < 0.1
    assert (iterations < r_compatible.DISP_MAXIT).all()
    post = r_compatible.LogPosterior(counts, mu, design)
    grid = np.linspace(np.log(fitted) - 0.05, np.log(fitted) + 0.05, 201, axis=1)
    values = np.stack([post.value(np.arange(n_genes), grid[:, k]) for k in range(201)], axis=1)
    best = grid[np.arange(n_genes), values.argmax(axis=1)]
    assert np.abs(best - np.log(fitted)).max() < 2e-3


def test_gradient_is_the_derivative_of_the_log_posterior():
    rng = np.random.default_rng(3)
    design = np.column_stack([np.ones(12), np.repeat([0.0, 1.0], 6), rng.normal(size=12)])
    mu = rng.uniform(1, 500, size=(20, 12))
    counts = rng.poisson(mu).astype(float)
    post = r_compatible.LogPosterior(counts, mu, design, prior_mean=np.full(20, -2.0), prior_var=0.7)
    rows, a, h = np.arange(20), rng.uniform(-5, 1, 20), 1e-6
    numeric = (post.value(rows, a + h) - post.value(rows, a - h)) / (2 * h)
    np.testing.assert_allclose(post.gradient(rows, a), numeric, rtol=1e-5, atol=1e-5)


def _r_p_adjust_bh(p: np.ndarray) -> np.ndarray:
    """R's ``p.adjust(p, "BH")`` transcribed: ``pmin(1, cummin(n / i * p[o]))[ro]``, o decreasing."""
    n = len(p)
    order = np.argsort(p)[::-1]
    adjusted = np.empty(n)
    adjusted[order] = np.minimum(np.minimum.accumulate(n / np.arange(n, 0, -1) * p[order]), 1.0)
    return adjusted


def test_benjamini_hochberg_is_r_p_adjust():
    """The shared BH (SciPy's false_discovery_control) is R's arithmetic to the last bit, ties included,
    and reproduces R DESeq2's padj from R's own p-values (the fixtures carry 10 digits)."""
    rng = np.random.default_rng(1)
    p = np.concatenate([rng.uniform(size=80), rng.uniform(0, 1e-3, 15), [np.nan] * 5])
    ours = benjamini_hochberg(p)
    np.testing.assert_allclose(ours[:95], multipletests(p[:95], method="fdr_bh")[1], rtol=1e-12)
    assert np.isnan(ours[95:]).all()
    for p in (rng.uniform(size=5000) ** 4, np.round(rng.uniform(size=3000), 3)):  # the second with ties
        np.testing.assert_array_equal(benjamini_hochberg(p), _r_p_adjust_bh(p))
    for name in CASES:
        r_table = _case(name)[1]
        adjusted = r_table["padj"].notna()  # the genes R's independent filtering kept
        ours = benjamini_hochberg(r_table.loc[adjusted, "pvalue"])
        np.testing.assert_allclose(ours, r_table.loc[adjusted, "padj"], rtol=1e-9)


def test_prior_variance_floor_and_small_df():
    expected = 1.0 - float(special.polygamma(1, 9.0))  # 20 samples, 2 coefficients: trigamma(18 / 2)
    assert r_compatible.dispersion_prior_variance(1.0, 20, 2) == pytest.approx(expected, rel=1e-12)
    assert r_compatible.dispersion_prior_variance(0.1, 20, 2) == 0.25
    with pytest.raises(ValueError, match="simulates"):
        r_compatible.dispersion_prior_variance(1.0, 5, 2)
