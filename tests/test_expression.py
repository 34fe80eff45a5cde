"""Contrast counts, DESeq2 size factors, VST and panel-gene detection (il6axis.analysis.expression)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from pydeseq2.dds import DeseqDataSet
from pydeseq2.default_inference import DefaultInference

from il6axis.acquire.demo import DemoSpec, simulate
from il6axis.analysis.expression import (
    contrast_counts,
    contrast_values,
    detected_in,
    detection_note,
    normalised_counts,
    panel_expression,
    published_scales,
    size_factors,
    vst,
)
from il6axis.errors import InputError


def _adata(counts_gxs: pd.DataFrame, groups: pd.Series, categories: list[str]) -> ad.AnnData:
    severity = groups.map({"severe": "severe", "mild": "mild"}).fillna("excluded")
    obs = pd.DataFrame(
        {"severity": pd.Categorical(severity, categories=categories)}, index=counts_gxs.columns
    )
    return ad.AnnData(
        X=counts_gxs.T.to_numpy(dtype=np.int64), obs=obs, var=pd.DataFrame(index=counts_gxs.index)
    )


@pytest.fixture(scope="module")
def demo():
    return simulate(["IL6", "SOCS3"], DemoSpec(n_genes=300, n_severe=8, n_mild=8, n_healthy=4, seed=11))


@pytest.fixture(scope="module")
def contrast(demo):
    groups = demo.samples.set_index("sample_id")["group"]
    # Category order deliberately not mild-first: contrast_counts must normalise it.
    adata = _adata(demo.counts, groups, ["severe", "excluded", "mild"])
    return contrast_counts(adata)


@pytest.fixture(scope="module")
def blind_vst(contrast):
    counts, _ = contrast
    return vst(counts, n_cpus=1)


def test_contrast_counts_keeps_mild_and_severe_only(contrast, demo):
    counts, obs = contrast
    assert counts.shape == (16, 300) and counts.dtypes.eq(np.int64).all()
    assert list(obs["severity"].cat.categories) == ["mild", "severe"]
    assert obs["severity"].value_counts().to_dict() == {"mild": 8, "severe": 8}
    healthy = demo.samples.loc[demo.samples["group"] == "healthy", "sample_id"]
    assert not set(healthy) & set(counts.index)
    np.testing.assert_array_equal(counts.loc["DEMO001"].to_numpy(), demo.counts["DEMO001"].to_numpy())


def test_contrast_counts_rejects_fractional_counts():
    x = pd.DataFrame([[1.0, 2.5], [3.0, 4.0]], index=["g1", "g2"], columns=["s1", "s2"])
    adata = ad.AnnData(
        X=x.T.to_numpy(),
        obs=pd.DataFrame({"severity": pd.Categorical(["mild", "severe"])}, index=["s1", "s2"]),
        var=pd.DataFrame(index=["g1", "g2"]),
    )
    adata.uns["cohort"] = "GSEX"
    with pytest.raises(InputError, match="GSEX.*non-integer"):
        contrast_counts(adata)
    adata.X = np.round(adata.X)  # whole-number floats are accepted and cast
    counts, _ = contrast_counts(adata)
    assert counts.dtypes.eq(np.int64).all()


def test_size_factors_match_pydeseq2(contrast):
    counts, _ = contrast
    dds = DeseqDataSet(
        counts=counts,
        metadata=pd.DataFrame(index=counts.index),
        design=pd.DataFrame(1.0, index=counts.index, columns=["Intercept"]),
        inference=DefaultInference(n_cpus=1),
        quiet=True,
    )
    dds.fit_size_factors()
    np.testing.assert_allclose(size_factors(counts).to_numpy(), dds.obs["size_factors"].to_numpy(), rtol=1e-6)


def test_size_factor_tracks_sequencing_depth(contrast):
    counts, _ = contrast
    doubled = counts.copy()
    doubled.loc["DEMO001"] *= 2
    before, after = size_factors(counts), size_factors(doubled)
    ratio = (after["DEMO001"] / after["DEMO002"]) / (before["DEMO001"] / before["DEMO002"])
    assert ratio == pytest.approx(2.0, rel=1e-9)


def test_size_factors_undefined_when_every_gene_has_a_zero():
    counts = pd.DataFrame(
        [[0, 5, 3], [4, 0, 2], [1, 1, 0]], index=["a", "b", "c"], columns=["g1", "g2", "g3"]
    )
    with pytest.raises(InputError, match="every gene has a zero"):
        size_factors(counts)


def test_normalised_counts_divide_by_size_factor():
    counts = pd.DataFrame([[10, 20], [30, 40]], index=["a", "b"], columns=["g1", "g2"])
    sf = pd.Series({"b": 2.0, "a": 0.5})
    norm = normalised_counts(counts, sf)
    assert norm.loc["a"].tolist() == [20.0, 40.0] and norm.loc["b"].tolist() == [15.0, 20.0]
    with pytest.raises(InputError, match="missing for samples"):
        normalised_counts(counts, sf.drop("a"))


def test_vst_is_monotone_in_normalised_counts(contrast, blind_vst):
    counts, _ = contrast
    norm = normalised_counts(counts, size_factors(counts)).to_numpy().ravel()
    values = blind_vst.loc[counts.index, counts.columns].to_numpy().ravel()
    order = np.argsort(norm, kind="stable")
    assert np.all(np.diff(values[order]) >= -1e-9)
    assert np.isfinite(values).all()
    # log2-like at high counts: a 2-fold difference in normalised count is close to 1 unit.
    hi = norm > 1000
    slope = np.polyfit(np.log2(norm[hi]), values[hi], 1)[0]
    assert slope == pytest.approx(1.0, abs=0.05)


def test_vst_is_roughly_homoscedastic(contrast, blind_vst, demo):
    counts, _ = contrast
    truth = demo.truth.set_index("gene")
    null = truth.index[~truth["is_de"]]
    high = [g for g in null if truth.loc[g, "base_mean"] > 300]
    low = [g for g in null if 10 < truth.loc[g, "base_mean"] < 60]
    assert len(high) > 30 and len(low) > 30
    sd_vst = blind_vst.std(ddof=1)
    ratio_vst = sd_vst[high].median() / sd_vst[low].median()
    norm = normalised_counts(counts, size_factors(counts))
    ratio_norm = norm[high].std(ddof=1).median() / norm[low].std(ddof=1).median()
    assert 0.5 < ratio_vst < 2.0
    assert ratio_norm > 5.0  # the untransformed scale is far from homoscedastic: the check has teeth


def test_vst_with_subsampled_trend_is_close_to_full_fit(contrast, blind_vst):
    counts, _ = contrast
    sub = vst(counts, nsub=150, seed=3)
    assert sub.equals(vst(counts, nsub=150, seed=3))  # seeded gene subsample: deterministic
    diff = (sub - blind_vst).abs()
    assert diff.median().median() < 0.1
    well_expressed = normalised_counts(counts, size_factors(counts)).mean() > 50
    assert diff.loc[:, well_expressed].max().max() < 0.1


def test_vst_design_aware_sees_severity(contrast):
    counts, obs = contrast
    with pytest.raises(InputError, match="needs obs"):
        vst(counts, design_free=False)
    blind = vst(counts, nsub=120, seed=1)
    aware = vst(counts, design_free=False, obs=obs, nsub=120, seed=1)
    # With severity in the design the planted effects no longer inflate the dispersions, so the fitted
    # trend, and with it the transform, changes (monotonicity is tested separately).
    assert np.abs(blind.to_numpy() - aware.to_numpy()).max() > 1e-3


def _panel_inputs():
    rng = np.random.default_rng(5)
    samples = [f"s{i}" for i in range(6)]
    background = pd.DataFrame(
        rng.poisson(200, size=(6, 40)), index=samples, columns=[f"bg{i}" for i in range(40)]
    )
    counts = background.assign(
        ZERO=0,
        LOW=[0, 1, 2, 3, 0, 5],
        HIGH=[900, 1100, 1000, 3000, 2800, 3200],
    )
    obs = pd.DataFrame({"severity": pd.Categorical(["mild"] * 3 + ["severe"] * 3)}, index=samples)
    sf = size_factors(counts.drop(columns="ZERO"))
    fake_vst = np.log2(normalised_counts(counts, sf) + 1)  # any log-scale matrix works for the mean
    return counts, obs, sf, fake_vst


def test_panel_expression_detection_and_absent_genes():
    counts, obs, sf, fake_vst = _panel_inputs()
    table = panel_expression(counts, obs, sf, fake_vst, ["ZERO", "LOW", "HIGH", "NOPE", "LOW"]).set_index(
        "gene"
    )
    assert list(table.index) == ["ZERO", "LOW", "HIGH", "NOPE"]  # de-duplicated, order kept
    assert table.loc["ZERO", "detect_mild"] == 0 and table.loc["ZERO", "detect_severe"] == 0
    assert table.loc["ZERO", "note"] == "not detected (all counts zero)"
    assert not table.loc["NOPE", "present"] and table.loc["NOPE", "note"] == "absent from the count matrix"
    assert table.loc["NOPE", ["mean_norm_mild", "detect_severe", "cpm1_all"]].isna().all()
    assert table.loc["NOPE", "n_mild"] == 3 and table.loc["NOPE", "n_severe"] == 3
    assert table.loc["LOW", "detect_mild"] == pytest.approx(2 / 3)
    assert table.loc["LOW", "detect_severe"] == pytest.approx(2 / 3)
    lib = counts.sum(axis=1)
    cpm_low = counts["LOW"] / lib * 1e6
    assert table.loc["LOW", "cpm1_severe"] == pytest.approx((cpm_low.iloc[3:] >= 1).mean())
    norm_high = counts["HIGH"] / sf
    assert table.loc["HIGH", "mean_norm_severe"] == pytest.approx(norm_high.iloc[3:].mean())
    assert table.loc["HIGH", "median_norm_mild"] == pytest.approx(norm_high.iloc[:3].median())
    assert table.loc["HIGH", "mean_vst_mild"] == pytest.approx(fake_vst["HIGH"].iloc[:3].mean())
    assert table.loc["LOW", "note"].startswith("barely detected (median")
    assert table.loc["HIGH", "note"].startswith("detected (median")


@pytest.mark.parametrize(
    ("median_norm", "detect", "expected"),
    [(9.9, 1.0, "barely detected"), (10.0, 0.5, "detected"), (500.0, 0.49, "barely detected")],
)
def test_detection_note_thresholds(median_norm, detect, expected):
    row = {"present": True, "detect_all": detect, "median_norm_all": median_norm, "median_cpm_all": 2.0}
    assert detection_note(row).split(" (")[0] == expected


def test_published_log2_values_keep_their_scale_and_detection_floor():
    """log2 values: the log scale is the values (no second log), 2**x the linear layer; a gene counts as
    detected above its sample's floor, where a prior-count log puts the zeros (planted at -4.3)."""
    samples = [f"s{i}" for i in range(6)]
    floor = -4.321928
    values = pd.DataFrame(
        {
            "ZERO": [floor] * 6,
            "HALF": [floor, 2.0, floor, 3.0, floor, 2.5],
            "HIGH": [9.0, 9.5, 10.0, 11.0, 11.5, 12.0],
        },
        index=samples,
    )
    obs = pd.DataFrame(
        {
            "severity": pd.Categorical(
                ["mild"] * 3 + ["severe"] * 3, categories=["mild", "severe", "excluded"]
            )
        },
        index=samples,
    )
    adata = ad.AnnData(X=values.to_numpy(), obs=obs, var=pd.DataFrame(index=values.columns))
    adata.uns["value_type"] = "log2_normalised"
    kept, _ = contrast_values(adata)  # negatives are fine for log2 values
    linear, logged = published_scales(kept, "log2_normalised")
    pd.testing.assert_frame_equal(logged, values, check_names=False)
    np.testing.assert_allclose(linear.to_numpy(), np.exp2(values.to_numpy()))
    lin_n, log_n = published_scales(np.exp2(values), "normalised")
    np.testing.assert_allclose(log_n.to_numpy(), np.log2(np.exp2(values.to_numpy()) + 1))
    assert detected_in(kept, "normalised", ["HALF"]) is None
    detected = detected_in(kept, "log2_normalised", ["ZERO", "HALF", "HIGH", "NOPE"])
    assert detected["HALF"].tolist() == [False, True, False, True, False, True] and detected["HIGH"].all()
    assert not detected["ZERO"].any() and "NOPE" not in detected.columns
    sf = pd.Series(1.0, index=samples)
    table = panel_expression(linear, obs, sf, logged, ["ZERO", "HALF", "HIGH"], detected=detected).set_index(
        "gene"
    )
    assert table.loc["ZERO", "note"] == "not detected (all counts zero)"
    assert table.loc["HALF", "detect_mild"] == pytest.approx(1 / 3)
    assert table.loc["HALF", "detect_severe"] == pytest.approx(2 / 3)
    assert table.loc["HIGH", "mean_vst_all"] == pytest.approx(values["HIGH"].mean())
    assert table.loc["HIGH", "mean_norm_all"] == pytest.approx(np.exp2(values["HIGH"]).mean())
    adata.X[2, 1] = np.nan
    with pytest.raises(InputError, match="not finite"):
        contrast_values(adata)
