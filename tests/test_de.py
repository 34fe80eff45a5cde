"""pydeseq2 wrapper: reference level, planted effects on a small simulation, filtering, panel table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydeseq2.dds import DeseqDataSet
from pydeseq2.ds import DeseqStats
from scipy.stats import f as f_dist
from statsmodels.stats.multitest import multipletests

from il6axis.acquire.demo import DemoSpec, simulate
from il6axis.cohort.samples import define_contrast, to_anndata
from il6axis.de.contract import DeSettings, benjamini_hochberg, contrast_design_frame, design_formula
from il6axis.de.fast_inference import FastInference
from il6axis.de.nb import _contrast_counts, _fit_dataset, run_deseq2
from il6axis.de.nb_engines import ChunkedCooksDataSet, gene_blocks
from il6axis.de.outputs import panel_table
from il6axis.errors import InputError

NAMED = ["IL6", "IL6R", "IL6ST", "SOCS3", "HLA-DRA", "CD177", "XIST", "RPS4Y1"]
SPEC = DemoSpec(n_genes=600, n_severe=8, n_mild=8, n_healthy=2, seed=11)


@pytest.fixture(scope="module")
def small_cohort():
    return simulate(NAMED, SPEC)


def _adata(cohort, severe_label="severe", mild_label="mild"):
    """Relabel groups (e.g. GSE172114-style Critical / Non-critical) and define the contrast from config."""
    meta = cohort.samples.set_index("sample_id")
    meta["label"] = meta["group"].map({"severe": severe_label, "mild": mild_label, "healthy": "Healthy"})
    spec = {
        "severity": {
            "field": "label",
            "severe": [severe_label],
            "mild": [mild_label],
            "exclude": ["Healthy"],
        },
        "covariates": {"age": {"field": "age", "type": "numeric"}, "sex": {"field": "sex", "type": "sex"}},
    }
    obs = define_contrast(meta, spec, "sim")
    return to_anndata(cohort.counts, obs, {"cohort": "sim"})


@pytest.fixture(scope="module")
def fitted(small_cohort):
    return run_deseq2(_adata(small_cohort), ["age", "sex"], DeSettings(n_cpus=1, lfc_shrink=False))


def test_design_formula_puts_severity_last():
    assert design_formula(["age", "sex"]) == "~ age + sex + severity"
    assert design_formula([]) == "~ severity"


def test_planted_effects_recovered_with_sign(fitted, small_cohort):
    table = fitted.table.merge(small_cohort.truth, on="gene")
    strong = table[table["is_de"] & (table["true_log2FoldChange"].abs() >= 1.5) & (table["baseMean"] > 50)]
    assert len(strong) >= 10
    assert (np.sign(strong["log2FoldChange"]) == np.sign(strong["true_log2FoldChange"])).all()
    assert (strong["padj"] < 0.05).mean() >= 0.8
    assert fitted.n_per_group == {"mild": 8, "severe": 8}
    assert fitted.design == "~ age + sex + severity"


def test_labels_sorting_the_other_way_do_not_flip_signs(fitted, small_cohort):
    """'Critical' sorts before 'Non-critical': a naive alphabetical reference would flip every sign."""
    flipped = run_deseq2(
        _adata(small_cohort, severe_label="Critical", mild_label="Non-critical"),
        ["age", "sex"],
        DeSettings(n_cpus=1, lfc_shrink=False),
    )
    a = fitted.table.set_index("gene")["log2FoldChange"].dropna()
    b = flipped.table.set_index("gene")["log2FoldChange"].dropna()
    np.testing.assert_allclose(a, b.loc[a.index], rtol=1e-6, atol=1e-8)
    assert a["SOCS3"] > 0 and a["HLA-DRA"] < 0


def test_every_gene_has_a_row_and_untested_genes_say_why(fitted, small_cohort):
    table = fitted.table
    assert len(table) == small_cohort.counts.shape[0]
    untested = table[~table["tested"]]
    assert len(untested) > 0 and (untested["not_tested_reason"] == "below expression filter").all()
    assert untested["pvalue"].isna().all()
    il6 = table.set_index("gene").loc["IL6"]  # planted at ~3 counts: filtered, not forced into a test
    assert not il6["tested"]
    ok = table[table["tested"] & table["lfcSE"].notna()]
    np.testing.assert_allclose(ok["ci_high"] - ok["ci_low"], 2 * 1.959964 * ok["lfcSE"], rtol=1e-5)


def test_shrinkage_adds_a_column_and_keeps_mle(small_cohort, fitted):
    shrunk = run_deseq2(_adata(small_cohort), ["age", "sex"], DeSettings(n_cpus=1, lfc_shrink=True))
    a = fitted.table.set_index("gene")
    b = shrunk.table.set_index("gene")
    np.testing.assert_allclose(a["log2FoldChange"].dropna(), b["log2FoldChange"].dropna(), rtol=1e-6)
    tested = b["log2FoldChange_shrunk"].notna()
    assert (
        b.loc[tested, "log2FoldChange_shrunk"].abs() <= b.loc[tested, "log2FoldChange"].abs() + 1e-6
    ).mean() > 0.95


def test_benjamini_hochberg_matches_statsmodels():
    rng = np.random.default_rng(0)
    p = pd.Series(np.concatenate([rng.uniform(size=50), rng.uniform(0, 1e-3, size=10), [np.nan] * 3]))
    ours = benjamini_hochberg(p)
    ref = multipletests(p.dropna(), method="fdr_bh")[1]
    np.testing.assert_allclose(ours.dropna(), ref)
    assert ours.isna().sum() == 3


def test_panel_table_reports_absent_and_detection(fitted, small_cohort):
    panel = pd.DataFrame(
        {"symbol": ["IL6", "SOCS3", "NOTAGENE"], "tier": ["core"] * 3, "role": ["ligand", "feedback", "x"]}
    )
    table = panel_table(fitted.table, panel, _adata(small_cohort)).set_index("symbol")
    assert table.loc["NOTAGENE", "not_tested_reason"] == "gene absent from the count matrix"
    assert not table.loc["NOTAGENE", "present"]
    assert 0 <= table.loc["IL6", "detection_mild"] <= 1 and table.loc["SOCS3", "detection_severe"] == 1
    assert table.loc["SOCS3", "padj_panel"] == pytest.approx(table.loc["SOCS3", "pvalue"])  # only test


def test_settings_from_rule_params():
    from types import SimpleNamespace

    params = SimpleNamespace(alpha=0.1, min_count=5, lfc_shrink=True, cooks_refit=False)
    settings = DeSettings.from_params(params, 3)
    assert (
        settings.alpha,
        settings.min_count,
        settings.lfc_shrink,
        settings.refit_cooks,
        settings.n_cpus,
    ) == (
        0.1,
        5,
        True,
        False,
        3,
    )
    assert not DeSettings.from_params(params, 1, lfc_shrink=False).lfc_shrink
    assert settings.engine == "r_compatible"  # the default when the rule declares no engine
    params.engine = "pydeseq2"
    assert DeSettings.from_params(params, 1).engine == "pydeseq2"
    params.engine = "edgeR"
    with pytest.raises(InputError, match="de.engine"):
        DeSettings.from_params(params, 1)


def test_staged_fit_equals_deseq2_and_frees_intermediates(small_cohort):
    """run_deseq2 fits step by step to free memory, Cook's distances in gene blocks; the fit must be
    ``deseq2()``'s, Cook's refit included."""
    adata = _adata(small_cohort)
    adata = adata[adata.obs["severity"].isin(["mild", "severe"])]
    counts = pd.DataFrame(np.asarray(adata.X), index=adata.obs_names, columns=adata.var_names)
    counts = counts.loc[:, (counts >= 10).sum() >= 8].copy()
    counts.iloc[3, 7] = counts.iloc[:, 7].max() * 50  # a gross outlier: Cook's replacement and refit run
    meta = contrast_design_frame(adata.obs, [])
    fits = []
    for staged in (False, True):
        # The staged fit also runs the chunked Cook's distances (blocks of ~7 genes) through the refit.
        cls = ChunkedCooksDataSet if staged else DeseqDataSet
        dds = cls(counts=counts, metadata=meta, design="~ severity", inference=FastInference(), quiet=True)
        dds.genes_per_chunk = 7
        _fit_dataset(dds) if staged else dds.deseq2()
        ds = DeseqStats(dds, contrast=["severity", "severe", "mild"], inference=FastInference(), quiet=True)
        ds.summary()
        fits.append((dds, ds.results_df))
    (plain, plain_res), (staged, staged_res) = fits
    assert plain.var["refitted"].any()
    pd.testing.assert_frame_equal(staged.var, plain.var, check_exact=True)
    pd.testing.assert_frame_equal(staged.varm["LFC"], plain.varm["LFC"], check_exact=True)
    pd.testing.assert_frame_equal(staged_res, plain_res, check_exact=True)
    assert {"_mu_hat", "cooks", "normed_counts"} <= set(plain.layers) and not set(staged.layers)
    assert not {"_mu_LFC", "_hat_diagonals"} & set(staged.obsm)


def test_all_samples_in_contrast_uses_the_cohort_matrix_without_copying(small_cohort):
    adata = _adata(small_cohort)
    everyone = np.ones(adata.n_obs, dtype=bool)
    assert np.shares_memory(_contrast_counts(adata, everyone), adata.X)
    some = adata.obs["severity"].isin(["mild", "severe"]).to_numpy()
    assert not some.all()
    sub = _contrast_counts(adata, some)
    assert sub.shape == (int(some.sum()), adata.n_vars)
    np.testing.assert_array_equal(sub, np.asarray(adata.X)[some])


def _cooks_cohort(seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """NB counts, 12 v 12 samples x 60 genes with an age covariate, one all-zero gene (column 4) and one
    planted gross outlier (sample 5, gene 9)."""
    rng = np.random.default_rng(seed)
    n, g = 24, 60
    means = rng.lognormal(4, 1.2, g)
    depth = rng.lognormal(0, 0.3, (n, 1))
    counts = rng.negative_binomial(8, 8 / (8 + means[None, :] * depth))
    counts[:, 4] = 0
    counts[5, 9] = counts[:, 9].max() * 40
    samples = [f"s{i}" for i in range(n)]
    meta = pd.DataFrame(
        {"age": rng.normal(size=n), "severity": pd.Categorical(["mild", "severe"] * (n // 2))}, index=samples
    )
    return pd.DataFrame(counts, index=samples, columns=[f"g{i}" for i in range(g)]), meta


def test_chunked_cooks_equal_pydeseq2s_and_flag_the_planted_outlier():
    """Cook's distances and rough dispersions in blocks of a few genes are pydeseq2's whole-matrix ones,
    bit for bit."""
    counts, meta = _cooks_cohort()
    layers, var = [], []
    for cls in (DeseqDataSet, ChunkedCooksDataSet):
        dds = cls(
            counts=counts, metadata=meta, design="~ age + severity", inference=FastInference(), quiet=True
        )
        dds.genes_per_chunk = 7  # 60 genes -> 9 blocks
        dds.fit_size_factors()
        dds.fit_genewise_dispersions()
        dds.fit_dispersion_trend()
        dds.fit_dispersion_prior()
        dds.fit_MAP_dispersions()
        dds.fit_LFC()
        dds.calculate_cooks()
        layers.append(dds.layers["cooks"])
        var.append(dds.var)
    stock, chunked = layers
    assert np.array_equal(chunked, stock, equal_nan=True)
    pd.testing.assert_frame_equal(var[1], var[0], check_exact=True)  # _MoM_dispersions included
    assert var[1]["_MoM_dispersions"].notna().sum() == 59
    assert np.isnan(chunked[:, 4]).all() and not np.isnan(np.delete(chunked, 4, axis=1)).any()
    cutoff = f_dist.ppf(0.99, 3, len(counts) - 3)
    assert chunked[5, 9] > cutoff and np.argmax(chunked[:, 9]) == 5


def test_gene_blocks_cover_every_gene_once_and_never_one_gene_alone():
    for n_genes, per_block in [(60, 7), (17_601, 1000), (20_000, 1000), (3, 1), (5, 2), (1, 1000)]:
        blocks = gene_blocks(n_genes, per_block)
        widths = [hi - lo for lo, hi in blocks]
        assert blocks[0][0] == 0 and blocks[-1][1] == n_genes
        assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:], strict=False))
        assert min(widths) >= min(2, n_genes)
        assert max(widths) <= max(per_block, 3)
