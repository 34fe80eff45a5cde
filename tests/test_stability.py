"""Stability rule of the IL-6 panel calls: planted robust and one-sample-driven genes, both model routes,
the leave-one-cohort-out rule of pooled calls, and the report's robust / borderline lists."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from pydeseq2 import utils as pydeseq2_utils
from scipy import stats

from il6axis.analysis.meta.run import run_meta
from il6axis.cohort.samples import to_anndata
from il6axis.de import stability as st
from il6axis.de.contract import DeSettings, LinearRefitInputs, StabilitySettings, benjamini_hochberg
from il6axis.de.linear import fit_linear_models, run_log_linear
from il6axis.de.nb import run_deseq2
from il6axis.de.outputs import run_and_write
from il6axis.errors import InputError
from il6axis.report.headlines import headlines_rst

PLANTED = ("ROBUSTG", "FRAGILEG")


def planted_cohort(
    seed: int = 4,
    n_per_group: int = 12,
    n_background: int = 800,
    robust_lfc: float = 1.2,
    fragile_lfc: float = 0.45,
    outlier_fold: float = 3.5,
    base: float = 300.0,
    disp: float = 0.05,
    normalised: bool = False,
):
    """A cohort with two planted panel genes and 800 background genes (10% with effects).

    ROBUSTG: +1.2 log2 in every severe sample. FRAGILEG: a small +0.45 shift, plus one severe sample (the
    first) at 3.5 times its group's mean, which carries the significance. Both are drawn without chance
    extremes (NB quantiles at evenly spaced levels, shuffled within each group), so the planted structure
    is all there is. Returns the AnnData and the planted outlier sample.
    """
    rng = np.random.default_rng(seed)
    n = 2 * n_per_group
    severe = np.arange(n) < n_per_group
    samples = [f"S{i + 1:02d}" for i in range(n)]
    sf = np.exp(rng.normal(0, 0.2, n))
    base_bg = np.exp(rng.normal(np.log(150), 1.3, n_background))
    disp_bg = (0.05 + 1 / base_bg) * np.exp(rng.normal(0, 0.3, n_background))
    effect = rng.choice([-1, 1], n_background) * rng.uniform(0.8, 2, n_background)
    lfc_bg = np.where(rng.random(n_background) < 0.1, effect, 0.0)
    mu = base_bg[:, None] * np.exp2(lfc_bg[:, None] * severe[None, :]) * sf[None, :]
    shape = 1 / disp_bg[:, None]
    background = rng.poisson(rng.gamma(shape, mu / shape))

    def typical(lfc: float) -> np.ndarray:
        y = np.empty(n, dtype=np.int64)
        levels = (np.arange(n_per_group) + 0.5) / n_per_group
        for group in (True, False):
            idx = np.flatnonzero(severe == group)
            mean = base * 2 ** (lfc * group) * sf[idx]
            y[idx] = stats.nbinom.ppf(rng.permutation(levels), 1 / disp, 1 / (1 + disp * mean))
        return y

    robust, fragile = typical(robust_lfc), typical(fragile_lfc)
    fragile[0] = int(round(outlier_fold * base * 2**fragile_lfc * sf[0]))
    genes = [*PLANTED, *(f"BG{i:04d}" for i in range(n_background))]
    counts = pd.DataFrame(np.vstack([robust, fragile, background]), index=genes, columns=samples)
    obs = pd.DataFrame({"severity": np.where(severe, "severe", "mild")}, index=samples)
    uns = {"cohort": "planted", "value_type": "normalised" if normalised else "counts", "tissue": "pbmc"}
    if normalised:  # size-factor-normalised values: the linear route's input
        counts = counts / sf[None, :]
    return to_anndata(counts, obs, uns), samples[0]


def _panel_table(result, genes=PLANTED) -> pd.DataFrame:
    refits = st.leave_one_out(result.refit_inputs)
    table = st.panel_stability(result.table, list(genes), refits, 0.05, StabilitySettings())
    return table.set_index("gene")


@pytest.fixture(scope="module")
def nb_fit():
    adata, outlier = planted_cohort()
    settings = DeSettings(n_cpus=1, lfc_shrink=False, refit_genes=PLANTED)
    return run_deseq2(adata, [], settings), outlier


def test_nb_rule_separates_the_planted_robust_and_one_sample_genes(nb_fit):
    result, outlier = nb_fit
    table = _panel_table(result)
    robust, fragile = table.loc["ROBUSTG"], table.loc["FRAGILEG"]
    # Both are called in the full fit, neither as a Cook's outlier.
    assert robust["called"] and fragile["called"]
    assert not result.table.set_index("gene").loc["FRAGILEG", "cooks_outlier"]
    assert robust["stability"] == st.ROBUST and robust["n_refits_holding"] == robust["n_refits"] == 24
    assert fragile["stability"] == st.BORDERLINE
    # The sample that carries FRAGILEG is found, and without it the p-value is far above the cut-off.
    assert fragile["influential_sample"] == outlier
    assert fragile["influential_pvalue"] > 2 * fragile["p_threshold"]
    assert fragile["pvalue"] < fragile["p_threshold"] / 5
    assert fragile["n_refits_holding"] == 23
    assert f"without {outlier}" in fragile["note"]
    # The refits' range brackets the full fit.
    for _, row in table.iterrows():
        assert row["refit_log2FoldChange_min"] <= row["log2FoldChange"] <= row["refit_log2FoldChange_max"]


def test_nb_refit_equals_pydeseq2_without_the_sample(nb_fit):
    """One refit checked against pydeseq2's own IRLS and Wald test on the counts without the sample,
    with the full fit's size factors and dispersion (what the rule holds fixed)."""
    result, outlier = nb_fit
    inp = result.refit_inputs
    refits = st.leave_one_out(inp)
    i, j = inp.samples.index(outlier), inp.genes.index("FRAGILEG")
    keep = np.arange(len(inp.samples)) != i
    x = inp.design[keep]
    beta, mu, _, converged = pydeseq2_utils.irls_solver(
        counts=inp.counts[keep, j],
        size_factors=inp.size_factors[keep],
        design_matrix=x,
        disp=inp.dispersions[j],
        min_mu=inp.min_mu,
        beta_tol=1e-10,
    )
    assert converged
    mu = np.maximum(inp.size_factors[keep] * np.exp(x @ beta), inp.min_mu)  # R's Wald: floored means
    contrast = np.eye(x.shape[1])[inp.coef_index]
    ridge = np.diag(np.repeat(inp.wald_ridge, x.shape[1]))
    p, stat, _ = pydeseq2_utils.wald_test(x, inp.dispersions[j], beta, mu, ridge, contrast, 0.0, None)
    assert refits.log2FoldChange[i, j] == pytest.approx(beta[inp.coef_index] / np.log(2), abs=1e-6)
    assert refits.stat[i, j] == pytest.approx(stat, rel=1e-5)
    assert refits.pvalue[i, j] == pytest.approx(p, rel=1e-4)


def test_nb_refit_with_every_sample_gives_back_the_full_fit(nb_fit):
    result, _ = nb_fit
    inp = result.refit_inputs
    full = result.table.set_index("gene").loc[inp.genes]
    assert st.self_check(inp, full["log2FoldChange"].to_numpy()) < 1e-4


def test_cooks_replaced_gene_is_refitted_on_the_counts_its_fit_used():
    """DESeq2 replaces a gross outlier (7+ replicates) and refits the gene: the refits start from those
    replaced counts, so the refit with every sample is again the reported fit."""
    adata, _ = planted_cohort()
    gene = "BG0003"
    col = list(adata.var_names).index(gene)
    adata.X[4, col] = adata.X[:, col].max() * 40
    genes = (*PLANTED, gene)
    result = run_deseq2(adata, [], DeSettings(n_cpus=1, lfc_shrink=False, refit_genes=genes))
    inp = result.refit_inputs
    j = inp.genes.index(gene)
    assert inp.counts[4, j] < adata.X[4, col] / 10  # the replaced count, not the raw outlier
    full = result.table.set_index("gene").loc[inp.genes, "log2FoldChange"].to_numpy()
    assert st.self_check(inp, full) < 1e-4


def test_stability_is_deterministic(nb_fit):
    result, _ = nb_fit
    first = _panel_table(result)
    settings = DeSettings(n_cpus=2, lfc_shrink=False, refit_genes=PLANTED)  # another fit, other workers
    again = _panel_table(run_deseq2(planted_cohort()[0], [], settings))
    pd.testing.assert_frame_equal(first, again, check_exact=True)


def test_linear_route_refits_with_the_full_fit_prior():
    # On the log scale one high sample also inflates the residual variance, so the linear route's planted
    # gene has a slightly larger typical shift and a milder outlier.
    adata, outlier = planted_cohort(3, fragile_lfc=0.4, outlier_fold=3.0, normalised=True)
    result = run_log_linear(adata, [], DeSettings(lfc_shrink=False, refit_genes=PLANTED))
    inp = result.refit_inputs
    assert isinstance(inp, LinearRefitInputs) and inp.genes == list(PLANTED)
    table = _panel_table(result)
    assert table.loc["ROBUSTG", "stability"] == st.ROBUST
    assert table.loc["FRAGILEG", "stability"] == st.BORDERLINE
    assert table.loc["FRAGILEG", "influential_sample"] == outlier
    # A refit with every sample is the full fit, to rounding.
    full = result.table.set_index("gene").loc[inp.genes]
    assert st.self_check(inp, full["log2FoldChange"].to_numpy()) < 1e-12
    # One refit written out: OLS without the sample, moderated with the full fit's d0 and s0^2.
    refits = st.leave_one_out(inp)
    i = inp.samples.index(outlier)
    keep = np.arange(len(inp.samples)) != i
    fit = fit_linear_models(inp.values[keep], inp.design[keep])
    d = fit.df_residual
    post = (inp.df_prior * inp.s2_prior + d * fit.s2) / (inp.df_prior + d)
    t = fit.coefficients[inp.coef_index] / (np.sqrt(post) * fit.stdev_unscaled[inp.coef_index])
    p = 2 * stats.t.sf(np.abs(t), min(d + inp.df_prior, d * inp.n_genes_fitted))
    np.testing.assert_allclose(refits.stat[i], t, rtol=1e-10)
    np.testing.assert_allclose(refits.pvalue[i], p, rtol=1e-8)


def test_a_level_of_one_sample_does_not_break_its_refit():
    """A covariate level only one sample has: its refit drops that column (linear) or leaves it to the
    ridge (NB) and still estimates severity, which that column never informed."""
    adata, _ = planted_cohort()
    adata.obs["batch"] = ["b2" if i == 5 else "b1" for i in range(adata.n_obs)]
    nb = run_deseq2(adata, ["batch"], DeSettings(n_cpus=1, lfc_shrink=False, refit_genes=PLANTED))
    refits = st.leave_one_out(nb.refit_inputs)
    assert np.isfinite(refits.pvalue).all()
    row = refits.samples.index("S06")
    full = nb.table.set_index("gene").loc[list(PLANTED), "log2FoldChange"].to_numpy()
    np.testing.assert_allclose(refits.log2FoldChange[row], full, atol=1e-3)
    normalised, _ = planted_cohort(normalised=True)
    normalised.obs["batch"] = adata.obs["batch"].to_numpy()
    lin = run_log_linear(normalised, ["batch"], DeSettings(lfc_shrink=False, refit_genes=PLANTED))
    assert np.isfinite(st.leave_one_out(lin.refit_inputs).pvalue).all()


def test_rejection_cutoff_is_the_bh_boundary():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0, 0.002, 30), rng.uniform(0, 1, 300)])
    table = pd.DataFrame({"pvalue": p, "padj": benjamini_hochberg(pd.Series(p)).to_numpy()})
    cut = st.rejection_cutoff(table, 0.05)
    np.testing.assert_array_equal(table["pvalue"] <= cut, table["padj"] < 0.05)
    assert np.isnan(st.rejection_cutoff(table.assign(padj=0.5), 0.05))


@pytest.mark.parametrize(
    ("lfc", "padj", "tested", "refit_lfc", "refit_p", "expected", "holding"),
    [
        (1.0, 0.01, True, [0.9, 1.1], [0.001, 0.004], st.ROBUST, 2),  # p* = 0.004 is still a call
        (1.0, 0.01, True, [0.9, 1.1], [0.001, 0.0041], st.BORDERLINE, 1),
        (1.0, 0.01, True, [0.9, -0.2], [0.001, 0.0001], st.BORDERLINE, 1),  # sign flips
        (1.0, 0.01, True, [0.9, np.nan], [0.001, np.nan], st.BORDERLINE, 1),  # no estimate
        (1.0, 0.09, True, [0.9, 1.1], [0.001, 0.5], st.NEAR_MISS, 1),
        (1.0, 0.10, True, [0.9, 1.1], [0.5, 0.5], st.NOT_CALLED, 0),
        (1.0, np.nan, True, [0.9, 1.1], [0.5, 0.5], st.NOT_CALLED, 0),
        (np.nan, np.nan, False, [], [], st.NOT_TESTED, 0),
    ],
)
def test_classify_rule(lfc, padj, tested, refit_lfc, refit_p, expected, holding):
    cls, n = st.classify(lfc, padj, tested, np.array(refit_lfc), np.array(refit_p), 0.004, 0.05, 2.0)
    assert (cls, n) == (expected, holding)


def test_settings_come_only_from_documented_keys():
    assert StabilitySettings.from_config({}) == StabilitySettings()
    assert StabilitySettings.from_config({"near_miss_factor": 3}).near_miss_factor == 3.0
    with pytest.raises(InputError, match="unknown key"):
        StabilitySettings.from_config({"enable": True})
    with pytest.raises(InputError, match="de.stability.method"):
        StabilitySettings.from_config({"method": "bootstrap"})
    with pytest.raises(InputError, match="near_miss_factor"):
        StabilitySettings.from_config({"near_miss_factor": 0.5})
    params = SimpleNamespace(alpha=0.05, min_count=10, lfc_shrink=False, cooks_refit=True)
    assert DeSettings.from_params(params, 1).stability is None  # a rule without the param: off
    params.stability = {"enabled": True, "method": "leave_one_out", "near_miss_factor": 2}
    assert DeSettings.from_params(params, 1).stability == StabilitySettings()


def test_run_and_write_adds_the_table_and_the_panel_column(tmp_path):
    adata, outlier = planted_cohort()
    adata.uns["contrast"] = json.dumps({"kind": "severe_vs_mild", "case": "severe", "reference": "mild"})
    panel = pd.DataFrame(
        {"symbol": [*PLANTED, "BG0001", "ABSENT"], "tier": "core", "role": ["a", "b", "c", "d"]}
    )
    paths = {k: str(tmp_path / f"{k}.tsv") for k in ("de", "panel", "stability")}
    for enabled in (True, False):
        settings = DeSettings(n_cpus=1, lfc_shrink=False, stability=StabilitySettings(enabled=enabled))
        run_and_write(adata, panel, [], settings, "planted", paths["de"], paths["panel"],
                      str(tmp_path / "summary.json"), paths["stability"])  # fmt: skip
        table = pd.read_csv(paths["stability"], sep="\t").set_index("gene")
        panel_out = pd.read_csv(paths["panel"], sep="\t").set_index("symbol")
        assert list(table.index) == [*PLANTED, "BG0001", "ABSENT"]
        assert (panel_out["stability"] == table["stability"]).all()
        if enabled:
            assert table.loc["FRAGILEG", "stability"] == st.BORDERLINE
            assert table.loc["FRAGILEG", "influential_sample"] == outlier
            assert table.loc["ROBUSTG", "stability"] == st.ROBUST
            assert table.loc["ABSENT", "stability"] == st.NOT_TESTED
        else:
            assert set(table["stability"]) == {st.NOT_ASSESSED}


# ----------------------------------------------------------------------------------- pooled calls


def _write_cohort(tmp_path, cohort: str, tissue: str, rows: dict[str, tuple[float, float, float]]):
    """A DE table (gene -> lfc, se, padj) and its summary.json."""
    table = pd.DataFrame(
        [
            {
                "gene": g,
                "log2FoldChange": lfc,
                "lfcSE": se,
                "stat": lfc / se,
                "pvalue": 2 * stats.norm.sf(abs(lfc / se)),
                "padj": padj,
                "tested": True,
            }
            for g, (lfc, se, padj) in rows.items()
        ]
    )
    table.to_csv(tmp_path / f"{cohort}.tsv", sep="\t", index=False)
    summary = {
        "n_per_group": {"mild": 20, "severe": 20},
        "tissue": tissue,
        "scale": "log2_counts",
        "design": "~ severity",
        "n_tested": len(rows),
        "contrast": {"kind": "severe_vs_mild", "case": "severe", "reference": "mild"},
    }
    (tmp_path / f"{cohort}.json").write_text(json.dumps(summary))
    return summary


NULLS = {f"NULL{i}": (0.02 * (i - 3), 0.15, 0.8) for i in range(7)}
# STEADY: the same strong effect in every whole-blood cohort. DRIVEN: carried by W1, a precise cohort; the
# other three are imprecise and, pooled without W1, no longer significant.
WHOLE_BLOOD = {
    "W1": {"STEADY": (1.0, 0.05, 1e-20), "DRIVEN": (0.5, 0.02, 1e-20), **NULLS},
    "W2": {"STEADY": (1.0, 0.05, 1e-20), "DRIVEN": (0.3, 0.2, 0.3), **NULLS},
    "W3": {"STEADY": (1.05, 0.05, 1e-20), "DRIVEN": (0.4, 0.2, 0.2), **NULLS},
    "W4": {"STEADY": (0.95, 0.05, 1e-20), "DRIVEN": (0.5, 0.2, 0.1), **NULLS},
}
PBMC_STABILITY = pd.DataFrame(
    {
        "gene": ["STEADY", "DRIVEN", "NULL0", "NULL1"],
        "log2FoldChange": [0.9, 0.6, 0.3, 0.01],
        "padj": [1e-4, 0.04, 0.07, 0.9],
        "stability": [st.ROBUST, st.BORDERLINE, st.NEAR_MISS, st.NOT_CALLED],
        "note": ["", "call holds in 13 of 14 refits; without GSM9: p = 0.02 > p* = 0.004", "", ""],
    }
)


@pytest.fixture
def pooled(tmp_path):
    cohorts = {**WHOLE_BLOOD, "P1": {"STEADY": (0.9, 0.2, 1e-4), "DRIVEN": (0.6, 0.2, 0.04), **NULLS}}
    summaries = {
        c: _write_cohort(tmp_path, c, "pbmc" if c == "P1" else "whole_blood", rows)
        for c, rows in cohorts.items()
    }
    out = {k: tmp_path / f"meta_{k}.tsv" for k in ("meta", "forest", "sens")}
    meta = run_meta(
        cohorts=list(cohorts),
        effect_tables=[tmp_path / f"{c}.tsv" for c in cohorts],
        summaries=[tmp_path / f"{c}.json" for c in cohorts],
        features=["STEADY", "DRIVEN", *NULLS],
        alpha=0.05,
        strata=["all", "whole_blood", "pbmc"],
        method_re="iterated",
        sensitivity_exclude=[],
        meta_path=out["meta"],
        forest_path=out["forest"],
        sensitivity_path=out["sens"],
    )
    return meta, summaries, pd.read_csv(out["forest"], sep="\t")


def test_pooled_call_is_robust_only_without_each_cohort_too(pooled):
    meta, _, _ = pooled
    wb = meta[meta["stratum"] == "whole_blood"].set_index("feature")
    assert wb.loc["STEADY", "q"] < 0.05 and wb.loc["DRIVEN", "q"] < 0.05  # both pooled calls
    assert wb.loc["STEADY", "stability"] == st.ROBUST
    assert wb.loc["DRIVEN", "stability"] == st.BORDERLINE
    assert wb.loc["DRIVEN", "stability_note"].startswith("without W1: q = ")
    assert "W2" not in wb.loc["DRIVEN", "stability_note"]  # W2, W3, W4 each can go
    assert set(wb.loc[list(NULLS), "stability"]) == {"not_called"}
    # A stratum with one cohort has no pooled estimate: its class is the within-cohort rule's.
    assert set(meta.loc[meta["stratum"] == "pbmc", "stability"]) == {"not_pooled"}


def test_two_cohorts_left_one_out_read_the_remaining_cohort(tmp_path):
    cohorts = {
        "A": {"BOTH": (1.0, 0.01, 1e-10), "ONE": (1.0, 0.01, 1e-10), **NULLS},
        "B": {"BOTH": (1.0, 0.01, 1e-10), "ONE": (1.0, 0.01, 0.2), **NULLS},
    }
    for c, rows in cohorts.items():
        _write_cohort(tmp_path, c, "whole_blood", rows)
    meta = run_meta(
        list(cohorts), [tmp_path / f"{c}.tsv" for c in cohorts], [tmp_path / f"{c}.json" for c in cohorts],
        ["BOTH", "ONE", *NULLS], 0.05, ["whole_blood"], "iterated", [],
        tmp_path / "m.tsv", tmp_path / "f.tsv", tmp_path / "s.tsv",
    ).set_index("feature")  # fmt: skip
    assert meta.loc["BOTH", "q"] < 0.05 and meta.loc["ONE", "q"] < 0.05
    assert meta.loc["BOTH", "stability"] == st.ROBUST
    assert meta.loc["ONE", "stability"] == st.BORDERLINE
    assert meta.loc["ONE", "stability_note"] == "without A: B alone has padj = 0.2"


def test_report_lists_robust_and_borderline_calls_apart(pooled):
    meta, summaries, forest = pooled
    text = headlines_rst(
        meta,
        meta.iloc[0:0],
        summaries,
        {},
        {},
        0.05,
        forest_genes=forest,
        stabilities={"P1": PBMC_STABILITY},
    )
    section = text[text.index("Robust and borderline calls") :]
    wb = section[section.index("**Whole blood") : section.index("**PBMC")]
    assert "- Robust (1): STEADY (+1.00, q = " in wb
    assert "- Borderline (1): DRIVEN (" in wb and "without W1" in wb
    pbmc = section[section.index("**PBMC") :]
    assert "- Robust (1): STEADY (+0.90, padj = 1.0e-04)" in pbmc
    assert "- Borderline (1): DRIVEN (+0.60, padj = 0.04; call holds in 13 of 14 refits; without GSM9" in pbmc
    assert "- Near misses (not called) (1): NULL0 (+0.30, padj = 0.07)" in pbmc
    # Without the per-cohort tables the lone cohort's stratum says so instead of inventing a class.
    bare = headlines_rst(meta, meta.iloc[0:0], summaries, {}, {}, 0.05, forest_genes=forest)
    assert "Stability not assessed (no ``panel_stability.tsv`` for this cohort)" in bare
