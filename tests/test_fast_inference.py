"""FastInference must give the numbers stock pydeseq2 gives, on data with planted effects."""

from __future__ import annotations

import warnings
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from pydeseq2 import utils as pydeseq2_utils
from pydeseq2.dds import DeseqDataSet
from pydeseq2.default_inference import DefaultInference
from pydeseq2.ds import DeseqStats
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from il6axis.de.fast_inference import FastInference
from il6axis.de.fast_shrink import SHRINK_SPOT_CHECK_GENES, ShrinkObjective
from il6axis.de.lbfgsb_lockstep import lbfgsb_lockstep


def _cohort(
    n_genes: int = 400, n_per_group: int = 16, seed: int = 3
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """NB counts, sex as a covariate, 10% of genes planted at |log2FC| = 1.5, one gross outlier count.

    Sex alternates so each sex x severity cell has 8 samples: Cook's outlier replacement needs >= 7
    replicates per design cell (DESeq2's minReplicatesForReplace), so the refit path runs.
    """
    rng = np.random.default_rng(seed)
    n = 2 * n_per_group
    meta = pd.DataFrame(
        {
            "sex": ["female", "male"] * n_per_group,
            "severity": pd.Categorical(["mild"] * n_per_group + ["severe"] * n_per_group, ["mild", "severe"]),
        },
        index=[f"S{i}" for i in range(n)],
    )
    base = np.exp(rng.normal(np.log(150), 1.5, n_genes))
    lfc = np.where(np.arange(n_genes) % 10 == 0, 1.5, 0.0) * rng.choice([-1, 1], n_genes)
    disp = 0.05 + 1 / base
    mu = base[None, :] * np.exp2(lfc[None, :] * (meta["severity"] == "severe").to_numpy()[:, None])
    mu = mu * np.exp(rng.normal(0, 0.2, n))[:, None]
    counts = rng.negative_binomial(1 / disp, 1 / (1 + mu * disp))
    # An outlier count, so the Cook's refit path runs too.
    counts[0, 5] = counts[:, 5].max() * 40
    genes = [f"G{i}" for i in range(n_genes)]
    return pd.DataFrame(counts, index=meta.index, columns=genes), meta, pd.Series(lfc, index=genes)


def _run(counts: pd.DataFrame, meta: pd.DataFrame, inference) -> tuple[pd.DataFrame, DeseqDataSet]:
    dds = DeseqDataSet(
        counts=counts, metadata=meta, design="~ sex + severity", inference=inference, quiet=True
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dds.deseq2()
        ds = DeseqStats(dds, contrast=["severity", "severe", "mild"], inference=inference, quiet=True)
        ds.summary()
    return ds.results_df, dds


@pytest.fixture(scope="module")
def both_runs():
    counts, meta, truth = _cohort()
    # Stock in-process with one BLAS thread: otherwise its per-gene L-BFGS-B crawls on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"):
        stock = _run(counts, meta, DefaultInference(n_cpus=1))
    fast = _run(counts, meta, FastInference(n_cpus=2, chunk_cells=2_000))  # several chunks, two threads
    return stock, fast, truth


def test_results_table_equals_stock(both_runs):
    (stock, _), (fast, _), _ = both_runs
    assert list(fast.index) == list(stock.index)
    for col in ["baseMean", "log2FoldChange", "lfcSE", "stat", "pvalue", "padj"]:
        np.testing.assert_allclose(fast[col], stock[col], rtol=1e-12, atol=0, equal_nan=True, err_msg=col)


def test_dispersions_convergence_and_refit_equal_stock(both_runs):
    (_, dds_s), (_, dds_f), _ = both_runs
    assert dds_s.var["refitted"].any(), "the planted outlier should trigger a Cook's refit"
    for col in ["genewise_dispersions", "fitted_dispersions", "MAP_dispersions", "dispersions"]:
        np.testing.assert_allclose(dds_f.var[col], dds_s.var[col], rtol=1e-12, atol=0, err_msg=col)
    for col in ["_genewise_converged", "_MAP_converged", "_LFC_converged", "refitted"]:
        assert dds_f.var[col].astype(str).equals(dds_s.var[col].astype(str)), col
    np.testing.assert_allclose(dds_f.layers["cooks"], dds_s.layers["cooks"], rtol=1e-10)


def test_planted_effects_are_recovered(both_runs):
    _, (fast, _), truth = both_runs
    planted = truth != 0
    called = fast["padj"] < 0.05
    assert (called & planted).sum() >= 0.8 * planted.sum()
    assert (called & ~planted).sum() <= 0.05 * (~planted).sum()
    signs = np.sign(fast.loc[planted & called, "log2FoldChange"]) == np.sign(truth[planted & called])
    assert signs.all()


def test_lockstep_lbfgsb_follows_scipy_minimize():
    rng = np.random.default_rng(0)
    centre, scale = rng.normal(0, 2, 60), rng.uniform(0.1, 5, 60)

    def fun_and_grad(rows, x):
        d = x - centre[rows]
        return scale[rows] * d**4 + np.cos(x), 4 * scale[rows] * d**3 - np.sin(x)

    x0 = rng.normal(0, 3, 60)
    got, ok = lbfgsb_lockstep(fun_and_grad, x0, -3.0, 2.0)
    for i in range(60):
        res = minimize(
            lambda v, i=i: fun_and_grad(np.array([i]), v)[0][0],
            x0=np.array([x0[i]]),
            jac=lambda v, i=i: fun_and_grad(np.array([i]), v)[1],
            method="L-BFGS-B",
            bounds=[(-3.0, 2.0)],
        )
        assert got[i] == res.x[0] and ok[i] == res.success


def test_lockstep_lbfgsb_follows_scipy_minimize_unbounded_nd():
    # The shape of the LFC-shrinkage fits: several coupled coordinates, no bounds, tighter tolerances.
    rng = np.random.default_rng(1)
    n_prob, dim = 40, 3
    centre = rng.normal(0, 1, (n_prob, dim))
    coupling = rng.uniform(0.1, 1.0, n_prob)

    def fun_and_grad(rows, x):
        d = x - centre[rows]
        s = x.sum(axis=1)
        f = (d**4).sum(axis=1) + coupling[rows] * np.log1p(s**2)
        g = 4 * d**3 + (coupling[rows] * 2 * s / (1 + s**2))[:, None]
        return f, g

    x0 = rng.normal(0, 2, (n_prob, dim))
    got, ok = lbfgsb_lockstep(fun_and_grad, x0, None, None, ftol=1e-8, gtol=1e-8)
    for i in range(n_prob):
        res = minimize(
            lambda v, i=i: fun_and_grad(np.array([i]), v[None, :])[0][0],
            x0=x0[i],
            jac=lambda v, i=i: fun_and_grad(np.array([i]), v[None, :])[1][0],
            method="L-BFGS-B",
            options={"ftol": 1e-8, "gtol": 1e-8},
        )
        assert np.array_equal(got[i], res.x) and ok[i] == res.success


SHRINK_COEF = "severity[T.severe]"


def _shrink(dds: DeseqDataSet, inference) -> tuple[DeseqStats, pd.Series]:
    """Wald tests then apeGLM shrinkage of the severity LFC on a fitted dataset; also the MLE LFCs."""
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = DeseqStats(dds, contrast=["severity", "severe", "mild"], inference=inference, quiet=True)
        ds.summary()
        mle = ds.results_df["log2FoldChange"].copy()
        ds.lfc_shrink(coeff=SHRINK_COEF)
    return ds, mle


@pytest.fixture(scope="module")
def shrink_runs():
    """One fitted dataset, shrunk by stock (in-process, per gene) and by FastInference (chunks, threads)."""
    counts, meta, truth = _cohort(n_genes=300, seed=5)
    _, dds = _run(counts, meta, FastInference(n_cpus=1))
    stock, mle = _shrink(dds, DefaultInference(n_cpus=1))
    calls = []
    original = pydeseq2_utils.nbinomGLM

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    with mock.patch.object(pydeseq2_utils, "nbinomGLM", counting):
        fast, _ = _shrink(dds, FastInference(n_cpus=2, chunk_cells=2_000))  # several chunks, two threads
    return stock, fast, mle, truth, len(calls)


def test_vectorised_shrinkage_equals_stock_bit_for_bit(shrink_runs):
    stock, fast, _, _, n_stock_calls = shrink_runs
    # The vectorised path ran: stock's per-gene fit only for the spot check (and non-converged genes).
    n_failed = int((~fast._LFC_shrink_converged.dropna().astype(bool)).sum())
    assert n_stock_calls <= SHRINK_SPOT_CHECK_GENES + n_failed < 30
    assert fast.LFC.equals(stock.LFC)
    assert fast.SE.equals(stock.SE)
    assert fast._LFC_shrink_converged.equals(stock._LFC_shrink_converged)
    assert fast.results_df["log2FoldChange"].equals(stock.results_df["log2FoldChange"])


def test_shrinkage_pulls_null_genes_to_zero_and_keeps_planted_signs(shrink_runs):
    _, fast, mle, truth, _ = shrink_runs
    res = fast.results_df
    shrunk, base_mean = res["log2FoldChange"], res["baseMean"]
    # pydeseq2 shrinks from the raw counts: a Cook's-refitted gene's MLE and shrunk value are not comparable.
    ok = mle.notna() & shrunk.notna() & ~fast.dds.var["refitted"].astype(bool)
    planted = (truth != 0) & ok & (res["padj"] < 0.05)
    null = (truth == 0) & ok
    assert planted.sum() >= 20
    assert (np.sign(shrunk[planted]) == np.sign(truth[planted])).all()
    assert (shrunk[planted].abs() - truth[planted].abs()).abs().median() < 0.3  # planted |log2FC| = 1.5
    # Null genes: closer to their planted 0 than the MLE (measured MSE 0.019 vs 0.028), low counts most.
    assert (shrunk[null] ** 2).mean() < 0.85 * (mle[null] ** 2).mean()
    low = null & (base_mean <= base_mean[null].quantile(0.25))
    high = null & (base_mean >= base_mean[null].quantile(0.75))
    ratio = (shrunk / mle).abs()
    assert ratio[low].median() < ratio[high].median() < 1
    assert (shrunk[ok].abs() <= mle[ok].abs() + 1e-6).mean() > 0.95


def test_shrinkage_spot_check_falls_back_to_stock(shrink_runs, caplog):
    stock, _, _, _, _ = shrink_runs
    original = ShrinkObjective.__call__

    def perturbed(self, rows, beta):  # a vectorised objective that no longer matches stock's
        f, g = original(self, rows, beta)
        return f, g + 1e-3

    with mock.patch.object(ShrinkObjective, "__call__", perturbed), caplog.at_level("WARNING"):
        fallback, _ = _shrink(stock.dds, FastInference(n_cpus=1))
    assert "differs from stock" in caplog.text
    assert fallback.LFC.equals(stock.LFC) and fallback.SE.equals(stock.SE)
