"""log2 linear-model DE route for normalised-only cohorts: OLS, limma-style moderation, the DE table.

Planted truth: a synthetic cohort whose log2(x + 1) values are exactly normal with a known mean-variance
trend, known per-gene variances drawn from the scaled-F prior (d0 = 8) and known severity effects. The
agreement with R limma itself is measured by bench/compare_with_limma.py (needs R).
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from il6axis.de import routing
from il6axis.de.contract import DeSettings
from il6axis.de.linear import (
    SCALE,
    fit_f_dist,
    fit_linear_models,
    log2_expression,
    moderated_t,
    run_log_linear,
    squeeze_variances,
    trigamma_inverse,
)
from il6axis.de.nb import run_deseq2
from il6axis.errors import InputError
from il6axis.vocabulary import EXCLUDED, MILD, SEVERE

NB_COLUMNS = ["gene", "baseMean", "log2FoldChange", "lfcSE", "ci_low", "ci_high", "stat", "pvalue", "padj",
              "tested", "not_tested_reason", "cooks_outlier", "independently_filtered"]  # fmt: skip

D0_TRUE = 8.0


def s0sq_trend(log2_mean: np.ndarray) -> np.ndarray:
    """Planted prior variance: high for weakly expressed genes, levelling off at 0.05 (log2 scale)."""
    return 0.05 + 0.5 * np.exp2(-(log2_mean - 7.0))


@dataclass
class Synthetic:
    adata: ad.AnnData
    truth: pd.DataFrame  # gene, beta (true severity effect on the log2(x + 1) scale), log2_mean, s0sq


def make_cohort(n_genes: int = 4000, n_per_group: int = 12, seed: int = 3) -> Synthetic:
    """log2(x + 1) = gene mean + severity effect + age/sex effects + N(0, s2_g), s2_g ~ s0^2(mean) F-prior.

    x = 2**z - 1 makes log2(x + 1) exactly the simulated z, so the truth is known on the model's scale.
    Severe samples come first and the severity categories are ordered [severe, mild, excluded], so nothing
    here hands the model a mild-first order.
    """
    rng = np.random.default_rng(seed)
    n = 2 * n_per_group
    group = np.array([SEVERE] * n_per_group + [MILD] * n_per_group)
    age = rng.normal(55.0, 10.0, n) + 6.0 * (group == SEVERE)  # severe older, as in the real cohorts
    sex = np.where(np.arange(n) % 3 == 0, "female", "male")
    log2_mean = rng.uniform(7.0, 14.0, n_genes)
    s0sq = s0sq_trend(log2_mean)
    s2 = s0sq * D0_TRUE / rng.chisquare(D0_TRUE, n_genes)
    beta = np.zeros(n_genes)
    de = rng.random(n_genes) < 0.2
    beta[de] = rng.uniform(0.3, 2.0, de.sum()) * rng.choice([-1.0, 1.0], de.sum())
    age_eff = np.where(rng.random(n_genes) < 0.1, rng.normal(0, 0.03, n_genes), 0.0)
    sex_eff = np.where(rng.random(n_genes) < 0.05, rng.normal(0, 0.8, n_genes), 0.0)
    z = (
        log2_mean[None, :]
        + beta[None, :] * (group == SEVERE)[:, None]
        + age_eff[None, :] * (age - 55.0)[:, None]
        + sex_eff[None, :] * (sex == "male")[:, None]
        + rng.normal(size=(n, n_genes)) * np.sqrt(s2)[None, :]
    )
    assert z.min() > 0, "simulation must keep x = 2**z - 1 non-negative"
    genes = [f"G{i:05d}" for i in range(n_genes)]
    obs = pd.DataFrame(
        {
            "sample_id": [f"S{i:02d}" for i in range(n)],
            "severity": pd.Categorical(group, categories=[SEVERE, MILD, EXCLUDED]),
            "age": age,
            "sex": sex,
        }
    ).set_index("sample_id", drop=False)
    obs.index.name = None
    adata = ad.AnnData(X=np.exp2(z) - 1.0, obs=obs, var=pd.DataFrame(index=genes))
    adata.uns["covariates"] = ["age", "sex"]
    truth = pd.DataFrame({"gene": genes, "beta": beta, "log2_mean": log2_mean, "s0sq": s0sq})
    return Synthetic(adata=adata, truth=truth)


@pytest.fixture(scope="module")
def synthetic() -> Synthetic:
    return make_cohort()


@pytest.fixture(scope="module")
def fitted(synthetic):
    return run_log_linear(synthetic.adata, ["age", "sex"], DeSettings(lfc_shrink=False))


# ------------------------------------------------------------------------------------- planted truth


def test_table_has_the_nb_columns_plus_scale_and_no_shrinkage(fitted, synthetic):
    table = fitted.table
    assert list(table.columns) == [*NB_COLUMNS, "df_total", "AveExpr", "scale", "value_type"]
    assert (table["value_type"] == "normalised").all()
    assert "log2FoldChange_shrunk" not in table.columns
    assert (table["scale"] == SCALE).all() and SCALE == "log2_normalised"
    assert fitted.design == "~ age + sex + severity (log2 linear model, moderated t)"
    assert fitted.n_per_group == {MILD: 12, SEVERE: 12}
    assert len(table) == synthetic.adata.n_vars and fitted.n_tested == int(table["tested"].sum())


def test_planted_effects_recovered(fitted, synthetic):
    t = fitted.table.merge(synthetic.truth, on="gene")
    t = t[t["tested"]]
    assert len(t) >= 3900
    strong = t[t["beta"].abs() >= 1.0]
    assert len(strong) > 300
    assert (np.sign(strong["log2FoldChange"]) == np.sign(strong["beta"])).all()
    assert (strong["padj"] < 0.05).mean() >= 0.9
    # Magnitude: errors are unbiased and scaled as the reported SE says.
    err = t["log2FoldChange"] - t["beta"]
    assert abs(err.mean()) < 0.01
    z = err / t["lfcSE"]
    assert 0.9 < float(np.sqrt(np.mean(z**2))) < 1.1
    # 95% t intervals on df_total cover the planted effect ~95% of the time (4,000 genes: sd ~0.0035).
    covered = (t["ci_low"] <= t["beta"]) & (t["beta"] <= t["ci_high"])
    assert 0.935 <= covered.mean() <= 0.965


def test_null_pvalues_uniform_and_fdr_controlled(fitted, synthetic):
    t = fitted.table.merge(synthetic.truth, on="gene")
    t = t[t["tested"]]
    null = t.loc[t["beta"] == 0, "pvalue"]
    assert len(null) > 3000
    assert stats.kstest(null, "uniform").pvalue > 0.001  # D = 0.0096 here (seeds 3-8: 0.010-0.026)
    assert 0.035 <= (null < 0.05).mean() <= 0.065
    called = t[t["padj"] < 0.05]
    false_share = (called["beta"] == 0).mean()
    assert len(called) > 400 and false_share <= 0.06  # BH at 0.05 with pi0 ~0.8 promises ~0.04


def test_variance_prior_recovered_with_trend(synthetic):
    """d0 and the s0^2(mean) trend come back from the moderation step (limma-trend)."""
    adata = synthetic.adata
    y = np.log2(np.asarray(adata.X) + 1.0)
    sev = (adata.obs["severity"] == SEVERE).to_numpy(float)
    age = adata.obs["age"].to_numpy()
    male = (adata.obs["sex"] == "male").to_numpy(float)
    design = np.column_stack([np.ones_like(sev), (age - age.mean()) / age.std(), male, sev])
    fit = fit_linear_models(y, design, ["Intercept", "age", "sex", "severity"])
    test = moderated_t(fit, "severity", trend=True)
    assert 7.0 < test.df_prior < 9.0  # planted 8; measured 7.7 (seeds 3-8: 7.6-8.2)
    rel = np.abs(test.s2_prior / synthetic.truth["s0sq"].to_numpy() - 1)
    assert np.median(rel) < 0.06  # measured 0.027 (seeds 3-8: 0.027-0.037)
    # Without the trend the prior is one number and fits worse where variance depends on expression.
    flat = moderated_t(fit, "severity", trend=False)
    assert np.ptp(flat.s2_prior) == 0 and flat.df_prior < test.df_prior
    assert np.all(test.df_total == min(fit.df_residual + test.df_prior, fit.df_residual * y.shape[1]))


def test_severity_order_in_obs_does_not_flip_signs(fitted, synthetic):
    """Severe-first samples with categories [severe, mild] (as built) vs mild-first with [mild, severe]."""
    adata = synthetic.adata
    order = np.argsort((adata.obs["severity"] == SEVERE).to_numpy(), kind="stable")  # mild first
    other = adata[order].copy()
    other.obs["severity"] = pd.Categorical(other.obs["severity"].astype(str), categories=[MILD, SEVERE])
    again = run_log_linear(other, ["age", "sex"], DeSettings())
    a = fitted.table.set_index("gene")
    b = again.table.set_index("gene").loc[a.index]
    np.testing.assert_allclose(a["log2FoldChange"], b["log2FoldChange"], rtol=1e-9, atol=1e-10)
    truth = synthetic.truth.set_index("gene")
    up = truth.index[truth["beta"] >= 1.0]
    assert (a.loc[up, "log2FoldChange"] > 0).all()


def test_excluded_samples_and_filter(synthetic):
    """Excluded samples stay out; a gene below the filter keeps its row with the reason."""
    adata = synthetic.adata.copy()
    obs = adata.obs.copy()
    obs["severity"] = obs["severity"].astype(str)
    obs.iloc[0, obs.columns.get_loc("severity")] = EXCLUDED
    adata.obs = obs
    x = np.asarray(adata.X).copy()
    x[:, 0] = 0.5  # first gene barely expressed everywhere
    x[0, 1] = 1e6  # a huge value in the excluded sample must not matter
    adata.X = x
    res = run_log_linear(adata, ["age", "sex"], DeSettings())
    assert res.n_per_group == {MILD: 12, SEVERE: 11}
    row0, row1 = res.table.iloc[0], res.table.iloc[1]
    assert not row0["tested"] and row0["not_tested_reason"] == "below expression filter"
    assert np.isnan(row0["pvalue"]) and np.isnan(row0["padj"])
    assert row1["tested"] and row1["baseMean"] < 1e5


# ------------------------------------------------------------------ values published as log2 already

# edgeR's cpm(log = TRUE) puts every zero count of a sample at one floor; a matrix at around 40 M reads
# has it near -4.3, as GSE172114's "log2 normalized TMM counts" (range about -4.3 to 11.7).
LOG2_FLOOR = -4.321928
SHIFT = -5.0  # the planted log2 means 7-14 become 2-9: a log2-CPM-like range with negatives


def _log2_cohort(synthetic: Synthetic, shift: float = 0.0, n_floor: int = 0) -> ad.AnnData:
    """The planted cohort as published log2 values: z + shift (log2(x + 1) = z exactly, so z is the
    planted scale), plus ``n_floor`` unexpressed genes at the zero-count floor."""
    adata = synthetic.adata.copy()
    z = np.log2(np.asarray(adata.X) + 1.0) + shift
    if n_floor:
        floor = pd.DataFrame(
            np.full((adata.n_obs, n_floor), LOG2_FLOOR),
            index=adata.obs_names,
            columns=[f"F{i:03d}" for i in range(n_floor)],
        )
        z = np.hstack([z, floor.to_numpy()])
        adata = ad.AnnData(
            X=z, obs=adata.obs.copy(), var=pd.DataFrame(index=[*adata.var_names, *floor.columns])
        )
    else:
        adata.X = z
    adata.uns.update({"covariates": ["age", "sex"], "value_type": "log2_normalised"})
    return adata


def test_log2_values_recover_planted_effects_on_their_own_scale(synthetic):
    """Published log2 values (negatives, a zero floor) are modelled as they are: log2FC = planted beta.

    A second log would shrink every effect several-fold (d log2(y) / dy = 1 / (y ln 2)) and fail on the
    negative values; the planted betas are recovered with unbiased, correctly scaled errors instead.
    """
    adata = _log2_cohort(synthetic, shift=SHIFT, n_floor=50)
    assert np.asarray(adata.X).min() < 0
    result = routing.fit_severity(adata, ["age", "sex"], DeSettings(lfc_shrink=False))
    table = result.table
    assert (table["scale"] == SCALE).all() and (table["value_type"] == "log2_normalised").all()
    floor_rows = table[table["gene"].str.startswith("F")]
    assert len(floor_rows) == 50 and not floor_rows["tested"].any()
    t = table.merge(synthetic.truth, on="gene")
    t = t[t["tested"]]
    # filter on the log scale: log2 mean (2 to 9 here) >= log2(10 + 1) = 3.46 in 12 samples
    assert 2500 < len(t) < 3800
    err = t["log2FoldChange"] - t["beta"]
    assert abs(err.mean()) < 0.01
    assert 0.9 < float(np.sqrt(np.mean((err / t["lfcSE"]) ** 2))) < 1.1
    strong = t[t["beta"].abs() >= 1.0]
    assert len(strong) > 200 and (strong["padj"] < 0.05).mean() >= 0.9
    # AveExpr is the mean of the values as given; baseMean the mean of 2**x.
    x = pd.DataFrame(np.asarray(adata.X), columns=adata.var_names)
    g = t["gene"].iloc[0]
    row = table.set_index("gene").loc[g]
    assert row["AveExpr"] == pytest.approx(x[g].mean())
    assert row["baseMean"] == pytest.approx(np.exp2(x[g]).mean())


def test_log2_route_equals_normalised_route_on_2_pow_x_minus_1(synthetic, fitted):
    """The same data as log2 values (log2_normalised) and as 2**x - 1 (normalised): identical fits.

    ``fitted`` is the normalised route on x = 2**z - 1; the log2 route gets z = log2(x + 1). Everything but
    baseMean (mean of 2**z, i.e. one more) must agree, including which genes pass the expression filter.
    """
    log2 = _log2_cohort(synthetic)
    via_log2 = routing.fit_severity(log2, ["age", "sex"], DeSettings(lfc_shrink=False))
    a = fitted.table.set_index("gene")
    b = via_log2.table.set_index("gene").loc[a.index]
    assert (a["tested"] == b["tested"]).all() and via_log2.n_tested == fitted.n_tested
    for column in ("log2FoldChange", "lfcSE", "ci_low", "ci_high", "stat", "pvalue", "padj", "AveExpr"):
        np.testing.assert_allclose(b[column], a[column], rtol=1e-8, atol=1e-10, err_msg=column)
    np.testing.assert_allclose(b["baseMean"], a["baseMean"] + 1.0, rtol=1e-9)
    assert via_log2.design == fitted.design
    assert routing.model_of(log2) != routing.model_of(synthetic.adata)


def test_log2_route_rejects_non_finite_values(synthetic):
    adata = _log2_cohort(synthetic, shift=SHIFT)
    adata.X[3, 7] = -np.inf  # log2(0) of a matrix logged without a prior count
    with pytest.raises(InputError, match=r"column 'G00007' row 'S03' value -inf.*-inf is log2\(0\)"):
        run_log_linear(adata, ["age", "sex"], DeSettings())


# ------------------------------------------------------------------------------ moderation machinery


def test_fit_f_dist_recovers_planted_prior():
    rng = np.random.default_rng(11)
    d, d0, s0sq = 4.0, 10.0, 0.2
    x = s0sq * stats.f.rvs(d, d0, size=20000, random_state=rng)
    prior = fit_f_dist(x, d)
    assert prior.df2 == pytest.approx(d0, rel=0.1)
    assert prior.scale[0] == pytest.approx(s0sq, rel=0.03)


def test_fit_f_dist_with_covariate_recovers_trend():
    rng = np.random.default_rng(12)
    d, d0 = 6.0, 15.0
    a = rng.uniform(0, 10, 20000)
    s0sq = 0.05 + 0.5 * np.exp(-a / 2)
    x = s0sq * stats.f.rvs(d, d0, size=a.size, random_state=rng)
    prior = fit_f_dist(x, d, covariate=a)
    assert prior.df2 == pytest.approx(d0, rel=0.15)
    assert np.median(np.abs(prior.scale / s0sq - 1)) < 0.03  # measured 0.003-0.014 over seeds 11-15


def test_no_extra_variability_gives_infinite_prior_df():
    """Identical variances: nothing beyond sampling error, so d0 = inf and every gene gets the prior."""
    s2 = np.full(500, 0.3)
    squeezed = squeeze_variances(s2, 5.0)
    assert np.isinf(squeezed.df_prior)
    np.testing.assert_allclose(squeezed.s2_post, 0.3)
    # Pure chi-square sampling variances: d0 is infinite or very large.
    rng = np.random.default_rng(13)
    chi = 0.3 * rng.chisquare(5.0, 50000) / 5.0
    assert fit_f_dist(chi, 5.0).df2 > 100
    # and the moderated t then uses the pooled residual df
    y = rng.normal(size=(6, 300))
    x = np.column_stack([np.ones(6), [0, 0, 0, 1, 1, 1]])
    fit = fit_linear_models(y, x)
    fit.s2[:] = 1.0  # force the d0 = inf branch
    test = moderated_t(fit, 1, trend=False)
    assert np.isinf(test.df_prior) and (test.df_total == 4 * 300).all()


def test_trigamma_inverse_round_trip():
    x = np.array([1e-8, 1e-3, 0.1, 1.0, 10.0, 1e3, 1e8])
    y = trigamma_inverse(x)
    np.testing.assert_allclose(special.polygamma(1, y), x, rtol=1e-6)


def test_fit_linear_models_matches_per_gene_lstsq():
    rng = np.random.default_rng(14)
    x = np.column_stack([np.ones(10), rng.normal(size=10), np.repeat([0.0, 1.0], 5)])
    y = rng.normal(size=(10, 7))
    fit = fit_linear_models(y, x, ["a", "b", "c"])
    for g in range(7):
        coef, rss, _, _ = np.linalg.lstsq(x, y[:, g], rcond=None)
        np.testing.assert_allclose(fit.coefficients[:, g], coef, atol=1e-12)
        assert fit.s2[g] == pytest.approx(rss[0] / 7)
    np.testing.assert_allclose(fit.stdev_unscaled, np.sqrt(np.diag(np.linalg.inv(x.T @ x))))
    assert fit.df_residual == 7


def test_rank_deficient_design_rejected():
    x = np.column_stack([np.ones(8), np.repeat([0.0, 1.0], 4), np.repeat([0.0, 1.0], 4)])
    with pytest.raises(InputError, match="rank-deficient"):
        fit_linear_models(np.ones((8, 3)), x, ["Intercept", "severity", "icu"])


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(("value", "problem"), [(-1.0, "negative"), (np.nan, "NaN"), (np.inf, "infinite")])
def test_invalid_values_raise_input_error(value, problem):
    frame = pd.DataFrame([[1.0, 2.0], [3.0, value]], index=["s1", "s2"], columns=["A", "B"])
    with pytest.raises(InputError, match=problem) as err:
        log2_expression(frame)
    assert "'s2'" in str(err.value) and "'B'" in str(err.value)


def test_route_rejects_bad_values_and_log_scale_input(synthetic):
    bad = synthetic.adata.copy()
    bad.X[2, 5] = -3.0
    with pytest.raises(InputError, match="negative"):
        run_log_linear(bad, ["age", "sex"], DeSettings())
    logged = synthetic.adata.copy()
    logged.X = np.log2(np.asarray(logged.X) + 1.0)
    with pytest.raises(InputError, match="log-transformed already"):
        run_log_linear(logged, ["age", "sex"], DeSettings())


def test_log2_expression_values():
    frame = pd.DataFrame([[0.0, 1.0], [3.0, 7.0]])
    np.testing.assert_allclose(log2_expression(frame).to_numpy(), [[0, 1], [2, 3]])
    np.testing.assert_allclose(log2_expression(frame, prior=0.5).to_numpy()[0], np.log2([0.5, 1.5]))


# -------------------------------------------------------------------------------------------- real data


def _gse293708(shared_data) -> tuple[ad.AnnData, ad.AnnData]:
    """Normalised and reconstructed raw-count AnnData; Severe + Critical (8) vs Mild (4), Normal excluded."""
    folder = shared_data / "GSE293708"
    norm = pd.read_csv(folder / "GSE293708_DESeq2_normalized_counts.csv.gz", index_col=0)
    norm = norm.drop(columns=["geneID", "Symbol"])
    raw = pd.read_csv(folder / "GSE293708_reconstructed_raw_counts.csv.gz", index_col=0).drop(
        columns="Symbol"
    )
    raw = raw.loc[norm.index, norm.columns]
    sheet = pd.read_csv(folder / "GSE293708_sample_sheet_from_colnames.csv.gz").set_index("sample")
    label = {"Severe": SEVERE, "Critical": SEVERE, "Mild": MILD, "Normal": EXCLUDED}
    obs = pd.DataFrame({"sample_id": norm.columns}, index=norm.columns)
    obs["severity"] = pd.Categorical(sheet.loc[obs.index, "severity"].map(label), [MILD, SEVERE, EXCLUDED])
    var = pd.DataFrame(index=norm.index)

    def make(x: np.ndarray) -> ad.AnnData:
        adata = ad.AnnData(X=x, obs=obs.copy(), var=var.copy())
        adata.uns["covariates"] = []
        return adata

    return make(norm.T.to_numpy(float)), make(raw.T.to_numpy(np.int64))


@pytest.mark.e2e
def test_gse293708_linear_route_agrees_with_nb_route(shared_data):
    normalised, counts = _gse293708(shared_data)
    lin = run_log_linear(normalised, [], DeSettings(lfc_shrink=False))
    nb = run_deseq2(counts, [], DeSettings(lfc_shrink=False, n_cpus=1))
    assert lin.n_per_group == nb.n_per_group == {MILD: 4, SEVERE: 8}
    a, b = lin.table.set_index("gene"), nb.table.set_index("gene").loc[lin.table["gene"]]
    well = (a["tested"] & b["tested"] & b["log2FoldChange"].notna() & (b["baseMean"] >= 50)).to_numpy()
    assert well.sum() > 4000  # measured 4,643 genes
    lfc_lin, lfc_nb = a.loc[well, "log2FoldChange"], b.loc[well, "log2FoldChange"]
    # Different scales (log2(x + 1) mean difference vs NB log ratio of means) and estimators: measured
    # Pearson r = 0.945 over these genes; every gene with |NB log2FC| > 1 (527) had the same sign.
    assert np.corrcoef(lfc_lin, lfc_nb)[0, 1] > 0.92
    big = lfc_nb.abs() > 1
    assert big.sum() > 400 and (np.sign(lfc_lin[big]) == np.sign(lfc_nb[big])).mean() >= 0.99


def test_missing_covariate_value_is_an_input_error(synthetic):
    """A NaN age must fail naming the design, not silently drop the sample (formulaic's default)."""
    adata = synthetic.adata.copy()
    adata.obs["age"] = adata.obs["age"].astype(float)
    adata.obs.iloc[3, adata.obs.columns.get_loc("age")] = np.nan
    with pytest.raises(InputError, match="missing covariates"):
        run_log_linear(adata, ["age", "sex"], DeSettings())


def test_expression_filter_threshold_and_override(synthetic):
    """>= min_count in at least as many samples as the smaller group (12): 12 samples pass, 11 do not."""
    adata = synthetic.adata.copy()
    x = np.full(adata.shape, 1.0)
    x[:, 2:] = np.asarray(adata.X)[:, 2:]
    x[:12, 0] = 10.0  # gene 0: exactly min_count in 12 samples
    x[:11, 1] = 10.0  # gene 1: in 11 samples only
    adata.X = x
    table = run_log_linear(adata, ["age", "sex"], DeSettings(min_count=10)).table
    assert table["tested"].iloc[0] and not table["tested"].iloc[1]
    lenient = run_log_linear(adata, ["age", "sex"], DeSettings(min_count=10), min_value=1.0).table
    assert lenient["tested"].iloc[:2].all()
