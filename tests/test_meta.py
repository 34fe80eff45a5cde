"""Random-effects meta-analysis across cohorts: hand arithmetic, an independent PM solver, strata, I/O."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import PROJECT_ROOT
from scipy import optimize, stats
from snakemake.utils import validate
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.stats.multitest import multipletests

from il6axis.analysis.meta import estimators
from il6axis.analysis.meta.effects import read_cohort_effects
from il6axis.analysis.meta.estimators import REASON_FEW, random_effects, sign_consistency, stouffer
from il6axis.analysis.meta.fit import NOTE_K2, forest_table, meta_analyse
from il6axis.analysis.meta.plan import NOT_POOLED_CONTRAST, NOT_POOLED_SCALE, off_scale_cohorts, pooling_plan
from il6axis.analysis.meta.run import MetaSettings, run_meta
from il6axis.analysis.meta.sensitivity import SEVERITY_CONTRASTS
from il6axis.errors import InputError
from il6axis.vocabulary import stratum_of

Z95 = stats.norm.isf(0.025)


def _long(rows: list[tuple], tissues: dict[str, str], n: dict[str, int] | None = None) -> pd.DataFrame:
    """Long effects table from (cohort, feature, lfc, se[, padj]) tuples; stat = lfc / se like a Wald z."""
    records = []
    for row in rows:
        cohort, feature, lfc, se = row[:4]
        padj = row[4] if len(row) > 4 else 0.5
        records.append(
            {
                "cohort": cohort,
                "feature": feature,
                "log2FoldChange": lfc,
                "lfcSE": se,
                "stat": lfc / se,
                "padj": padj,
                "n": (n or {}).get(cohort, 20),
                "tissue": tissues[cohort],
            }
        )
    return pd.DataFrame(records)


def _pm_by_bisection(y: np.ndarray, v: np.ndarray) -> float:
    """Paule-Mandel tau2 written out: the tau2 >= 0 at which generalised Q equals k - 1 (bisection)."""
    df = len(y) - 1

    def q_gen(tau2: float) -> float:
        w = 1 / (v + tau2)
        mu = np.sum(w * y) / np.sum(w)
        return float(np.sum(w * (y - mu) ** 2))

    if q_gen(0.0) <= df:
        return 0.0
    lo, hi = 0.0, 10.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if q_gen(mid) > df else (lo, mid)
    return (lo + hi) / 2


def _pm_scipy(y: np.ndarray, v: np.ndarray) -> float:
    """Independent PM solver: scipy brentq on Q(tau2) - (k - 1), truncated at 0."""
    df = len(y) - 1

    def excess(tau2: float) -> float:
        w = 1 / (v + tau2)
        mu = w @ y / w.sum()
        return float(w @ (y - mu) ** 2 - df)

    if excess(0.0) <= 0:
        return 0.0
    return optimize.brentq(excess, 0.0, 1e3, xtol=1e-15, rtol=1e-14)


# Three whole-blood cohorts, heterogeneous: PM and DL tau2 clearly differ, so using DL would fail.
Y3 = np.array([1.0, -0.2, 0.4])
SE3 = np.array([0.10, 0.40, 0.15])
WB3 = {"A": "whole_blood", "B": "leukocytes", "C": "whole_blood"}


def test_three_cohorts_match_hand_arithmetic() -> None:
    v = SE3**2
    k, df = 3, 2
    # Fixed effect and Cochran's Q.
    w = 1 / v
    mu_fe = np.sum(w * Y3) / np.sum(w)
    q = np.sum(w * (Y3 - mu_fe) ** 2)
    # DerSimonian-Laird moment estimate (for contrast only).
    c = np.sum(w) - np.sum(w**2) / np.sum(w)
    tau2_dl = max(0.0, (q - df) / c)
    # Paule-Mandel, random-effects weights, pooled estimate, t interval with k - 1 df.
    tau2 = _pm_by_bisection(Y3, v)
    w_re = 1 / (v + tau2)
    mu = np.sum(w_re * Y3) / np.sum(w_re)
    se = np.sqrt(1 / np.sum(w_re))
    crit = stats.t.isf(0.025, df)
    p = 2 * stats.t.sf(abs(mu / se), df)
    i2 = (q - df) / q
    assert tau2 > 0 and abs(tau2 - tau2_dl) > 0.05  # the data separate PM from DL

    effects = _long([(c_, "SOCS3", y, s, 0.01) for c_, y, s in zip("ABC", Y3, SE3, strict=True)], WB3)
    row = meta_analyse(effects, strata=("whole_blood",)).iloc[0]
    assert row["k"] == k and row["cohorts"] == "A,B,C"
    assert row["tau2"] == pytest.approx(tau2, rel=1e-4)
    assert row["Q"] == pytest.approx(q, rel=1e-12)
    assert row["i2"] == pytest.approx(i2, rel=1e-12)
    assert row["fixed_log2FoldChange"] == pytest.approx(mu_fe, rel=1e-12)
    assert row["pooled_log2FoldChange"] == pytest.approx(mu, rel=1e-5)
    assert row["se"] == pytest.approx(se, rel=1e-5)
    assert row["ci_low"] == pytest.approx(mu - crit * se, rel=1e-5)
    assert row["ci_high"] == pytest.approx(mu + crit * se, rel=1e-5)
    assert row["p"] == pytest.approx(p, rel=1e-4)
    assert row["ci_method"] == "random_effect"
    assert row["reason"] == "" and row["note"] == ""
    assert row["sign_summary"] == (
        "up in 2/3 whole-blood cohorts (2 with padj < 0.05); "
        "down in 1/3 whole-blood cohorts (1 with padj < 0.05)"
    )


@pytest.mark.parametrize("seed", range(6))
def test_pm_matches_independent_scipy_root(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 8))
    se = rng.uniform(0.1, 0.5, k)
    true_tau = [0.0, 0.3, 0.8][seed % 3]
    y = 0.7 + rng.normal(0, true_tau, k) + rng.normal(0, se)
    tau2 = _pm_scipy(y, se**2)
    w = 1 / (se**2 + tau2)
    fit = random_effects(y, se, [f"c{i}" for i in range(k)])
    assert fit["tau2"] == pytest.approx(tau2, rel=1e-4, abs=1e-8)
    assert fit["estimate"] == pytest.approx(w @ y / w.sum(), rel=1e-5, abs=1e-8)
    assert fit["converged"]


def test_pm_reset_to_zero_by_statsmodels_is_repaired(monkeypatch: pytest.MonkeyPatch) -> None:
    # With a tight tolerance, statsmodels 0.15's PM iteration steps to a rounding-level negative
    # Q_gen - (k-1) and resets tau2 to 0 although Q >> k - 1; random_effects must restart at the root.
    y = np.array([0.357, 1.681, 0.028])
    se = np.array([0.23, 0.13, 0.28])
    tight = {"atol": 1e-10, "maxiter": 200}
    assert combine_effects(y, se**2, method_re="iterated", **tight).tau2 == 0
    monkeypatch.setattr(estimators, "_PM_KWDS", tight)
    fit = random_effects(y, se, list("abc"))
    assert fit["tau2"] == pytest.approx(_pm_scipy(y, se**2), rel=1e-6)
    assert fit["tau2"] > 0.3 and fit["converged"]


def test_k2_closed_form_and_wide_interval_note() -> None:
    y, se = np.array([1.4, 0.2]), np.array([0.2, 0.25])
    v = se**2
    # For k = 2, Q_gen(tau2) = (y1 - y2)^2 / (v1 + v2 + 2 tau2) = 1 gives tau2 in closed form.
    tau2 = max(0.0, ((y[0] - y[1]) ** 2 - v.sum()) / 2)
    w = 1 / (v + tau2)
    mu, s = w @ y / w.sum(), np.sqrt(1 / w.sum())
    crit = stats.t.isf(0.025, 1)  # 12.7
    effects = _long([("A", "IL6R", y[0], se[0]), ("B", "IL6R", y[1], se[1])], {"A": "pbmc", "B": "pbmc"})
    row = meta_analyse(effects, strata=("pbmc",)).iloc[0]
    assert row["k"] == 2 and row["note"] == NOTE_K2
    assert row["tau2"] == pytest.approx(tau2, rel=1e-4)
    assert row["ci_high"] - row["ci_low"] == pytest.approx(2 * crit * s, rel=1e-4)
    assert row["pooled_log2FoldChange"] == pytest.approx(mu, rel=1e-5)


def test_tau2_zero_keeps_wider_interval_than_hksj() -> None:
    y, se = np.array([0.50, 0.52, 0.49]), np.array([0.10, 0.15, 0.20])
    v, df = se**2, 2
    w = 1 / v
    mu = w @ y / w.sum()
    q = w @ (y - mu) ** 2
    assert q < df  # homogeneous: tau2 = 0 and the HKSJ scale q/df < 1
    se_fe = np.sqrt(1 / w.sum())
    se_hksj = np.sqrt(q / df) * se_fe
    crit = stats.t.isf(0.025, df)
    fit = random_effects(y, se, ["A", "B", "C"])
    assert fit["tau2"] == 0 and fit["i2"] == 0
    assert fit["ci_method"] == "random_effect"
    assert fit["ci_low"] == pytest.approx(mu - crit * se_fe, rel=1e-12)
    assert fit["ci_high"] == pytest.approx(mu + crit * se_fe, rel=1e-12)
    assert 2 * crit * se_hksj < fit["ci_high"] - fit["ci_low"]
    # Identical effects: Q = 0, statsmodels' I2 would be -inf; here I2 = 0 and the interval is finite.
    same = random_effects(np.full(3, 0.5), se, ["A", "B", "C"])
    assert same["i2"] == 0 and same["Q"] == 0 and np.isfinite(same["ci_low"])


def test_hksj_used_when_wider_and_negative_dl_tau2_clipped() -> None:
    v, df = SE3**2, 2
    w = 1 / v
    mu_fe = w @ Y3 / w.sum()
    q = w @ (Y3 - mu_fe) ** 2
    tau2_dl = (q - df) / (w.sum() - (w**2).sum() / w.sum())
    w_re = 1 / (v + tau2_dl)
    mu = w_re @ Y3 / w_re.sum()
    var_hksj = (w_re / w_re.sum()) @ (Y3 - mu) ** 2 / df
    assert var_hksj > 1 / w_re.sum()  # DL underestimates tau2 here, so HKSJ is the wider interval
    fit = random_effects(Y3, SE3, ["A", "B", "C"], method_re="dl")
    assert fit["ci_method"] == "hksj"
    assert fit["tau2"] == pytest.approx(tau2_dl, rel=1e-12)
    assert fit["se"] == pytest.approx(np.sqrt(var_hksj), rel=1e-12)
    assert fit["ci_high"] == pytest.approx(mu + stats.t.isf(0.025, df) * np.sqrt(var_hksj), rel=1e-12)
    # Homogeneous effects: raw DL tau2 is negative; it is truncated, giving the tau2 = 0 fit.
    y, se = np.array([0.50, 0.52, 0.49]), np.array([0.10, 0.15, 0.20])
    assert combine_effects(y, se**2, method_re="dl").tau2 < 0
    dl = random_effects(y, se, ["A", "B", "C"], method_re="dl")
    assert dl["tau2"] == 0
    assert dl["estimate"] == pytest.approx(random_effects(y, se, ["A", "B", "C"])["estimate"], rel=1e-12)


def test_single_cohort_gives_na_with_reason() -> None:
    fit = random_effects(np.array([0.4]), np.array([0.2]), ["A"])
    assert fit["k"] == 1 and fit["reason"] == REASON_FEW and np.isnan(fit["estimate"]) and np.isnan(fit["p"])
    effects = _long([("A", "SOCS3", 0.4, 0.2, 0.01), ("B", "SOCS3", 0.6, 0.2, 0.01)], WB3 | {"B": "pbmc"})
    row = meta_analyse(effects, strata=("pbmc",)).iloc[0]
    assert row["k"] == 1 and row["cohorts"] == "B" and row["reason"] == REASON_FEW
    assert np.isnan(row["pooled_log2FoldChange"]) and np.isnan(row["q"]) and np.isnan(row["stouffer_z"])
    assert row["sign_summary"] == "up in 1/1 PBMC cohorts (1 with padj < 0.05)"
    # Each stratum counts its own cohorts in its own words; "other" material reads as "other cohorts".
    effects = _long([("A", "SOCS3", 0.4, 0.2, 0.01), ("B", "SOCS3", -0.6, 0.2, 0.5)], WB3 | {"B": "other"})
    words = meta_analyse(effects, strata=("other", "whole_blood")).set_index("stratum")["sign_summary"]
    assert words["other"] == "down in 1/1 other cohorts (0 with padj < 0.05)"
    assert words["whole_blood"] == "up in 1/1 whole-blood cohorts (1 with padj < 0.05)"


def test_stouffer_matches_hand_formula_and_keeps_sign() -> None:
    z, n = np.array([-2.0, -1.0, -0.5]), np.array([100, 25, 9])
    w = np.array([10.0, 5.0, 3.0])
    expected = (w @ z) / np.sqrt(w @ w)
    z_comb, p = stouffer(z, n)
    assert z_comb == pytest.approx(expected, rel=1e-12) and z_comb < 0
    assert p == pytest.approx(2 * stats.norm.sf(abs(expected)), rel=1e-12)
    assert stouffer(np.array([2.0, -2.0]), np.array([30, 30])) == pytest.approx((0.0, 1.0))
    # Inside meta_analyse: stat is lfc/se per cohort, weights sqrt(n).
    ns = {"A": 100, "B": 25, "C": 9}
    effects = _long([(c_, "HLA-DRA", -y, s) for c_, y, s in zip("ABC", Y3, SE3, strict=True)], WB3, ns)
    row = meta_analyse(effects, strata=("all",)).iloc[0]
    zs = -Y3 / SE3
    assert row["stouffer_z"] == pytest.approx((w @ zs) / np.sqrt(w @ w), rel=1e-12)


def test_sign_consistency_text() -> None:
    up = sign_consistency(np.array([0.5, 1.0, 0.2]), np.array([0.01, 0.2, 0.04]), 0.05)
    assert up["text"] == "up in 3/3 cohorts (2 with padj < 0.05)"
    assert (up["n_up"], up["n_down"], up["n_up_sig"], up["n_down_sig"]) == (3, 0, 2, 0)
    mixed = sign_consistency(np.array([-0.3, 0.4, -0.2]), np.array([0.01, np.nan, 0.5]), 0.05, "PBMC cohorts")
    assert (
        mixed["text"]
        == "down in 2/3 PBMC cohorts (1 with padj < 0.05); up in 1/3 PBMC cohorts (0 with padj < 0.05)"
    )
    assert sign_consistency(np.array([]), np.array([]))["text"] == "no cohorts"


def test_bh_q_within_each_stratum_and_nan_aware() -> None:
    tissues = {"A": "whole_blood", "B": "whole_blood", "C": "pbmc", "D": "pbmc"}
    rng = np.random.default_rng(3)
    rows = []
    for i, mu in enumerate([1.0, 0.5, 0.2, 0.0, -0.4]):
        for c_ in "ABCD":
            rows.append((c_, f"G{i}", mu + rng.normal(0, 0.1), 0.2))
    rows.append(("A", "ONLY_A", 0.3, 0.2))  # one cohort: p NaN, must not count as a test
    table = meta_analyse(_long(rows, tissues))
    for stratum, sub in table.groupby("stratum"):
        ok = sub["p"].notna()
        assert ok.sum() == 5, stratum
        expected = multipletests(sub.loc[ok, "p"], method="fdr_bh")[1]
        np.testing.assert_allclose(sub.loc[ok, "q"], expected, rtol=1e-12)
        assert sub.loc[~ok, "q"].isna().all()
    # BH over all 15 stratum rows together would give different q: the families really are separate.
    pooled_q = multipletests(table["p"].dropna(), method="fdr_bh")[1]
    assert not np.allclose(pooled_q, table["q"].dropna())


def test_strata_split_primary_pbmc_and_all() -> None:
    assert [stratum_of(t) for t in ("whole_blood", "leukocytes", "pbmc", "other")] == [
        "whole_blood",
        "whole_blood",
        "pbmc",
        "other",
    ]
    with pytest.raises(InputError, match="tissue 'plasma'"):
        stratum_of("plasma")
    tissues = {"WB1": "whole_blood", "LEU": "leukocytes", "WB2": "whole_blood", "P1": "pbmc", "P2": "pbmc"}
    # Planted truth: SOCS3 up 1.0 in blood, null in PBMC.
    rows = [
        (c_, "SOCS3", 1.0 + d, 0.15) for c_, d in zip(["WB1", "LEU", "WB2"], [0.05, -0.05, 0.0], strict=True)
    ]
    rows += [("P1", "SOCS3", 0.05, 0.3), ("P2", "SOCS3", -0.05, 0.3)]
    table = meta_analyse(_long(rows, tissues)).set_index("stratum")
    assert table.loc["whole_blood", "cohorts"] == "WB1,LEU,WB2"
    assert table.loc["pbmc", "cohorts"] == "P1,P2"
    assert table.loc["all", "k"] == 5
    assert table.loc["whole_blood", "pooled_log2FoldChange"] == pytest.approx(1.0, abs=0.01)
    assert table.loc["whole_blood", "ci_low"] > 0.5
    assert abs(table.loc["pbmc", "pooled_log2FoldChange"]) < 0.01
    assert table.loc["pbmc", "ci_low"] < 0 < table.loc["pbmc", "ci_high"]
    assert table.loc["all", "tau2"] > 0.1  # pooling across materials is heterogeneous


def test_nan_effects_do_not_contribute() -> None:
    tissues = {c_: "whole_blood" for c_ in "ABCD"}
    rows = [(c_, "JAK2", y, s) for c_, y, s in zip("ABC", Y3, SE3, strict=True)]
    full = _long([*rows, ("D", "JAK2", np.nan, np.nan), ("D", "STAT3", 0.1, 0.2)], tissues)
    full.loc[(full["cohort"] == "C"), "lfcSE"] = np.nan  # C untested: no SE
    with_nan = meta_analyse(full, strata=("whole_blood",)).set_index("feature")
    clean = _long(rows[:2], tissues)
    without = meta_analyse(clean, strata=("whole_blood",)).set_index("feature")
    assert with_nan.loc["JAK2", "k"] == 2 and with_nan.loc["JAK2", "cohorts"] == "A,B"
    for col in ("pooled_log2FoldChange", "ci_low", "ci_high", "tau2", "stouffer_z"):
        assert with_nan.loc["JAK2", col] == pytest.approx(without.loc["JAK2", col], rel=1e-12)
    assert with_nan.loc["STAT3", "reason"] == REASON_FEW


def test_exclude_cohorts_equals_dropping_the_cohort() -> None:
    tissues = {"A": "whole_blood", "B": "whole_blood", "C": "whole_blood", "TMM": "whole_blood"}
    rows = [(c_, "SOCS3", y, s) for c_, y, s in zip("ABC", Y3, SE3, strict=True)] + [
        ("TMM", "SOCS3", 3.0, 0.2)
    ]
    effects = _long(rows, tissues)
    effects["scale"] = np.where(effects["cohort"] == "TMM", "log2_tmm", "log2_counts")
    with_tmm = meta_analyse(effects, strata=("whole_blood",)).iloc[0]
    without = meta_analyse(effects, strata=("whole_blood",), exclude_cohorts=["TMM"]).iloc[0]
    reference = meta_analyse(effects[effects["cohort"] != "TMM"], strata=("whole_blood",)).iloc[0]
    assert without["k"] == 3 and "TMM" not in without["cohorts"]
    assert without["pooled_log2FoldChange"] == pytest.approx(reference["pooled_log2FoldChange"], rel=1e-12)
    assert with_tmm["pooled_log2FoldChange"] > without["pooled_log2FoldChange"] + 0.2
    assert "mixed scales (log2_counts, log2_tmm)" in with_tmm["note"] and without["note"] == ""
    with pytest.raises(InputError, match="unknown cohort"):
        meta_analyse(effects, exclude_cohorts=["TMN"])


def test_forest_table_rows_and_weights() -> None:
    effects = _long([(c_, "SOCS3", y, s) for c_, y, s in zip("ABC", Y3, SE3, strict=True)], WB3)
    meta = meta_analyse(effects, strata=("whole_blood",))
    forest = forest_table(effects, meta)
    cohorts = forest[forest["row_type"] == "cohort"]
    fit = random_effects(Y3, SE3, ["A", "B", "C"])
    np.testing.assert_allclose(cohorts["weight"], [fit["weights"][c_] for c_ in "ABC"], rtol=1e-5)
    np.testing.assert_allclose(cohorts["ci_low"], Y3 - Z95 * SE3, rtol=1e-12)
    np.testing.assert_allclose(cohorts["ci_high"], Y3 + 1.96 * SE3, atol=1e-4)
    pooled = forest[forest["row_type"] == "pooled"].iloc[0]
    assert (
        pooled["effect"] == meta.iloc[0]["pooled_log2FoldChange"]
        and pooled["ci_low"] == meta.iloc[0]["ci_low"]
    )
    assert len(forest) == 4


def test_bad_inputs_name_the_problem() -> None:
    effects = _long([("A", "SOCS3", 0.1, 0.2), ("B", "SOCS3", 0.2, 0.2)], WB3)
    with pytest.raises(InputError, match="lfcSE"):
        meta_analyse(effects.drop(columns="lfcSE"))
    with pytest.raises(InputError, match="duplicate"):
        meta_analyse(pd.concat([effects, effects.iloc[:1]]))
    with pytest.raises(InputError, match="strata"):
        meta_analyse(effects, strata=("blood",))
    with pytest.raises(InputError, match="non-positive"):
        random_effects(np.array([0.1, 0.2]), np.array([0.2, 0.0]), ["A", "B"])
    with pytest.raises(TypeError):
        combine_effects([0.1, 0.2], [0.04, 0.04])  # why random_effects converts to numpy first


def _write_de(path, genes, lfc, se, tested, pvalue) -> None:
    pd.DataFrame(
        {
            "gene": genes,
            "baseMean": 100.0,
            "log2FoldChange": lfc,
            "lfcSE": se,
            "stat": np.asarray(lfc) / np.asarray(se),
            "pvalue": pvalue,
            "padj": [0.01, 0.2, np.nan, 0.5][: len(genes)],
            "tested": tested,
            "not_tested_reason": "",
        }
    ).to_csv(path, sep="\t", index=False)


def test_read_cohort_effects_from_tsv_and_json(tmp_path) -> None:
    _write_de(
        tmp_path / "a.tsv",
        ["SOCS3", "IL6R", "IL6", "ACTB"],
        [1.0, 0.3, np.nan, 0.0],
        [0.2, 0.1, np.nan, 0.05],
        [True, True, False, True],
        [0.001, 0.1, np.nan, 0.9],
    )
    # Cohort B: IL6R is a Cook's outlier (estimate kept, p = NA) and IL6 is absent from the table.
    _write_de(tmp_path / "b.tsv", ["SOCS3", "IL6R"], [0.8, 2.5], [0.3, 0.4], [True, True], [0.01, np.nan])
    (tmp_path / "a.json").write_text(
        json.dumps({"n_per_group": {"mild": 12, "severe": 9}, "tissue": "leukocytes"})
    )
    summaries = {"A": tmp_path / "a.json", "B": {"n_per_group": {"mild": 5, "severe": 5}, "tissue": "pbmc"}}
    long = read_cohort_effects(
        {"A": tmp_path / "a.tsv", "B": tmp_path / "b.tsv"}, summaries, ["SOCS3", "IL6R", "IL6"]
    )
    assert len(long) == 6 and set(long["feature"]) == {"SOCS3", "IL6R", "IL6"}
    a = long[long["cohort"] == "A"].set_index("feature")
    b = long[long["cohort"] == "B"].set_index("feature")
    assert (a["n"] == 21).all() and (b["n"] == 10).all()
    assert (a["tissue"] == "leukocytes").all() and (long["scale"] == "log2_counts").all()
    assert a.loc["SOCS3", "log2FoldChange"] == 1.0 and a.loc["SOCS3", "stat"] == pytest.approx(5.0)
    assert np.isnan(a.loc["IL6", "log2FoldChange"]) and np.isnan(b.loc["IL6", "log2FoldChange"])
    assert np.isnan(b.loc["IL6R", "log2FoldChange"])  # Cook's outlier does not contribute
    table = meta_analyse(long).set_index(["stratum", "feature"])
    assert table.loc[("all", "SOCS3"), "k"] == 2 and table.loc[("all", "IL6R"), "k"] == 1
    assert table.loc[("all", "IL6"), "k"] == 0 and table.loc[("all", "IL6"), "reason"] == REASON_FEW

    (tmp_path / "bad.json").write_text(json.dumps({"n_per_group": {"mild": 3}, "tissue": "pbmc"}))
    with pytest.raises(InputError, match="bad.json"):
        read_cohort_effects({"A": tmp_path / "a.tsv"}, {"A": tmp_path / "bad.json"})
    pd.DataFrame({"gene": ["X"], "log2FoldChange": [1.0]}).to_csv(
        tmp_path / "short.tsv", sep="\t", index=False
    )
    with pytest.raises(InputError, match="short.tsv"):
        read_cohort_effects({"A": tmp_path / "short.tsv"}, {"A": tmp_path / "a.json"})


def test_run_meta_pools_normalised_cohort_only_in_sensitivity(tmp_path) -> None:
    """A log2(normalised + 1) cohort is drawn in the forest but left out of the primary pooled fit."""
    genes = ["SOCS3", "IL6R"]
    tables, summaries = [], []
    specs = {  # cohort: (lfc, se, scale)
        "A": ([1.0, 0.2], [0.2, 0.1], "log2_counts"),
        "B": ([0.6, 0.4], [0.25, 0.2], "log2_counts"),
        "T": ([3.0, -1.0], [0.3, 0.3], "log2_normalised"),
    }
    for cohort, (lfc, se, scale) in specs.items():
        _write_de(tmp_path / f"{cohort}.tsv", genes, lfc, se, [True, True], [0.001, 0.1])
        (tmp_path / f"{cohort}.json").write_text(
            json.dumps({"n_per_group": {"mild": 10, "severe": 10}, "tissue": "whole_blood", "scale": scale})
        )
        tables.append(tmp_path / f"{cohort}.tsv")
        summaries.append(tmp_path / f"{cohort}.json")
    out = {name: tmp_path / f"out_{name}.tsv" for name in ("meta", "forest", "sens")}
    primary = run_meta(
        cohorts=list(specs),
        effect_tables=tables,
        summaries=summaries,
        features=genes,
        alpha=0.05,
        strata=["whole_blood"],
        method_re="iterated",
        sensitivity_exclude=["A", "T"],
        meta_path=out["meta"],
        forest_path=out["forest"],
        sensitivity_path=out["sens"],
    ).set_index("feature")
    assert primary.loc["SOCS3", "k"] == 2 and primary.loc["SOCS3", "cohorts"] == "A,B"
    long = read_cohort_effects(
        {c: tmp_path / f"{c}.tsv" for c in specs}, {c: tmp_path / f"{c}.json" for c in specs}, genes
    )
    assert off_scale_cohorts(long) == ["T"]
    without = meta_analyse(long, strata=["whole_blood"], exclude_cohorts=["T"]).set_index("feature")
    assert primary.loc["SOCS3", "pooled_log2FoldChange"] == pytest.approx(
        without.loc["SOCS3", "pooled_log2FoldChange"]
    )

    sens = pd.read_csv(out["sens"], sep="\t", keep_default_na=False)
    assert sorted(set(sens["analysis"])) == ["all scales pooled", "leave one out"]
    pooled_all = sens[sens["analysis"] == "all scales pooled"].set_index("feature")
    assert pooled_all.loc["SOCS3", "k"] == 3 and "mixed scales" in pooled_all.loc["SOCS3", "note"]
    loo = sens[sens["analysis"] == "leave one out"]
    assert set(loo["excluded"]) == {"A"}  # T is not in the primary fit, so leaving it out is no analysis
    assert (loo["k"] == 1).all()

    forest = pd.read_csv(out["forest"], sep="\t")
    t_rows = forest[forest["cohort"] == "T"]
    assert len(t_rows) == 2 and not t_rows["pooled"].any() and t_rows["weight"].isna().all()
    assert forest.loc[forest["cohort"] != "T", "pooled"].all()
    socs3_t = t_rows.set_index("feature").loc["SOCS3"]
    assert socs3_t["ci_low"] == pytest.approx(3.0 - Z95 * 0.3)


def test_all_normalised_cohorts_are_pooled_with_each_other() -> None:
    long = _long([("T1", "SOCS3", 1.0, 0.2), ("T2", "SOCS3", 0.5, 0.3)], {"T1": "whole_blood", "T2": "pbmc"})
    long["scale"] = "log2_normalised"
    assert off_scale_cohorts(long) == []
    long.loc[0, "scale"] = "log2_counts"
    assert off_scale_cohorts(long) == ["T2"]


def _kind_run(tmp_path, specs: dict, sensitivity_exclude=()) -> tuple[pd.DataFrame, dict]:
    """run_meta over cohorts given as cohort -> (socs3 lfc, se, tissue, contrast kind, scale)."""
    tables, summaries = [], []
    for cohort, (lfc, se, tissue, kind, scale) in specs.items():
        _write_de(
            tmp_path / f"{cohort}.tsv", ["SOCS3", "IL6R"], [lfc, 0.1], [se, 0.1], [True, True], [0.01, 0.5]
        )
        summary = {"n_per_group": {"mild": 10, "severe": 10}, "tissue": tissue, "scale": scale}
        if kind is not None:
            summary["contrast"] = {"kind": kind, "case": "case", "reference": "reference"}
        (tmp_path / f"{cohort}.json").write_text(json.dumps(summary))
        tables.append(tmp_path / f"{cohort}.tsv")
        summaries.append(tmp_path / f"{cohort}.json")
    out = {name: tmp_path / f"out_{name}.tsv" for name in ("meta", "forest", "sens")}
    meta = run_meta(
        cohorts=list(specs),
        effect_tables=tables,
        summaries=summaries,
        features=["SOCS3", "IL6R"],
        alpha=0.05,
        strata=["all", "whole_blood"],
        method_re="iterated",
        sensitivity_exclude=list(sensitivity_exclude),
        meta_path=out["meta"],
        forest_path=out["forest"],
        sensitivity_path=out["sens"],
    )
    read = {k: pd.read_csv(v, sep="\t", keep_default_na=False, na_values=[""]) for k, v in out.items()}
    return meta, read


def test_contrast_kinds_are_pooled_only_with_their_own_kind(tmp_path) -> None:
    """Severe-vs-mild cohorts near +1 and healthy-reference cohorts planted at +4: the primary severe-vs-mild
    fit recovers +1 untouched by the others; pooling them all is a labelled sensitivity run only."""
    specs = {
        "S1": (1.0, 0.2, "whole_blood", "severe_vs_mild", "log2_counts"),
        "S2": (1.1, 0.25, "leukocytes", None, "log2_counts"),  # no contrast in summary = severe vs mild
        "H1": (4.0, 0.2, "whole_blood", "disease_vs_healthy", "log2_counts"),
        "H2": (4.2, 0.3, "pbmc", "disease_vs_healthy", "log2_counts"),
    }
    meta, out = _kind_run(tmp_path, specs, sensitivity_exclude=["S1", "H2"])
    socs3 = meta[meta["feature"] == "SOCS3"].set_index(["contrast", "stratum"])
    assert set(meta["contrast"]) == {"severe_vs_mild", "disease_vs_healthy"}
    severity = socs3.loc[("severe_vs_mild", "all")]
    assert severity["cohorts"] == "S1,S2" and severity["contrast_kinds"] == "severe_vs_mild"
    assert 0.9 < severity["pooled_log2FoldChange"] < 1.2
    healthy = socs3.loc[("disease_vs_healthy", "all")]
    assert healthy["cohorts"] == "H1,H2" and healthy["pooled_log2FoldChange"] > 3.5
    assert socs3.loc[("disease_vs_healthy", "whole_blood"), "k"] == 1  # H2 is PBMC
    # Identical to pooling the severe-vs-mild cohorts alone.
    long = read_cohort_effects(
        {c: tmp_path / f"{c}.tsv" for c in ("S1", "S2")}, {c: tmp_path / f"{c}.json" for c in ("S1", "S2")}
    )
    alone = meta_analyse(long, strata=["all"]).set_index("feature")
    assert severity["pooled_log2FoldChange"] == pytest.approx(alone.loc["SOCS3", "pooled_log2FoldChange"])

    sens = out["sens"]
    assert set(sens["analysis"]) == {"leave one out", "all contrasts pooled"}
    crossed = sens[(sens["analysis"] == "all contrasts pooled") & (sens["stratum"] == "all")]
    crossed = crossed.set_index("feature").loc["SOCS3"]
    assert crossed["k"] == 4 and crossed["contrast"] == "all"
    assert "mixed contrasts (severe_vs_mild, disease_vs_healthy)" in crossed["note"]
    assert crossed["pooled_log2FoldChange"] > severity["pooled_log2FoldChange"] + 1  # the healthy pull
    loo = sens[sens["analysis"] == "leave one out"].set_index(["excluded", "stratum", "feature"])
    assert loo.loc[("S1", "all", "SOCS3"), "cohorts"] == "S2"  # within its own kind
    assert loo.loc[("H2", "all", "SOCS3"), "cohorts"] == "H1"

    forest = out["forest"]
    kinds = forest[forest["row_type"] == "cohort"].groupby("cohort")["contrast"].first().to_dict()
    assert kinds == {"S1": "severe_vs_mild", "S2": "severe_vs_mild", "H1": "disease_vs_healthy",
                     "H2": "disease_vs_healthy"}  # fmt: skip
    pooled_rows = forest[forest["row_type"] == "pooled"]
    assert set(pooled_rows["contrast"]) == {"severe_vs_mild", "disease_vs_healthy"}
    assert forest["pooled"].all()  # each in its own kind's fit


def test_other_kind_is_never_pooled_and_severity_kinds_pool_only_in_sensitivity(tmp_path) -> None:
    specs = {
        "S1": (1.0, 0.2, "whole_blood", "severe_vs_mild", "log2_counts"),
        "S2": (1.1, 0.25, "whole_blood", "severe_vs_mild", "log2_counts"),
        "C1": (0.4, 0.2, "whole_blood", "critical_vs_severe", "log2_counts"),
        "C2": (0.5, 0.3, "whole_blood", "critical_vs_severe", "log2_normalised"),
        "O1": (-2.0, 0.2, "whole_blood", "other", "log2_counts"),
    }
    meta, out = _kind_run(tmp_path, specs)
    assert set(meta["contrast"]) == {"severe_vs_mild", "critical_vs_severe"}
    assert not meta["cohorts"].fillna("").str.contains("O1|C2").any()
    critical = meta[(meta["contrast"] == "critical_vs_severe") & (meta["feature"] == "SOCS3")]
    assert (critical["k"] == 1).all()  # C2 is off the count scale, O1 pools with nothing

    plan = pooling_plan((c, k, s) for c, (_, _, _, k, s) in specs.items())
    assert plan.groups == {"severe_vs_mild": ["S1", "S2"], "critical_vs_severe": ["C1"]}
    assert plan.not_pooled == {"C2": NOT_POOLED_SCALE, "O1": NOT_POOLED_CONTRAST}

    forest = out["forest"]
    shown = forest[~forest["pooled"].astype(bool)].groupby("cohort")["not_pooled_reason"].first()
    assert shown.to_dict() == {"C2": "other effect scale", "O1": "contrast kind 'other'"}

    sens = out["sens"]
    by = {a: g.set_index(["stratum", "feature"]).loc[("all", "SOCS3")] for a, g in sens.groupby("analysis")}
    assert {a: r["cohorts"] for a, r in by.items()} == {
        "all scales pooled": "C1,C2",
        "severity contrasts pooled": "S1,S2,C1",  # the scale rule kept
        "severity contrasts and all scales pooled": "S1,S2,C1,C2",
        "all contrasts pooled": "S1,S2,C1,O1",
        "all contrasts and all scales pooled": "S1,S2,C1,C2,O1",
    }
    assert by["severity contrasts pooled"]["contrast"] == SEVERITY_CONTRASTS
    assert by["all contrasts pooled"]["contrast_kinds"] == "severe_vs_mild,critical_vs_severe,other"


def test_only_other_cohorts_give_an_empty_primary_fit(tmp_path) -> None:
    specs = {
        "O1": (1.0, 0.2, "whole_blood", "other", "log2_counts"),
        "O2": (1.2, 0.2, "whole_blood", "other", "log2_counts"),
    }
    meta, out = _kind_run(tmp_path, specs)
    assert (meta["k"] == 0).all() and meta["pooled_log2FoldChange"].isna().all()
    assert not out["forest"]["pooled"].astype(bool).any()
    assert set(out["sens"]["analysis"]) == {"all contrasts pooled"}
    crossed = out["sens"].set_index(["stratum", "feature"]).loc[("all", "SOCS3")]
    assert crossed["k"] == 2


def test_default_config_shape_keeps_a_log2_critical_cohort_in_one_sensitivity_fit(tmp_path) -> None:
    """Three severe-vs-mild count cohorts and GSE172114 (critical vs severe, published log2 values)."""
    specs = {
        "GSE157103": (0.5, 0.2, "leukocytes", "severe_vs_mild", "log2_counts"),
        "GSE152418": (0.1, 0.4, "pbmc", "severe_vs_mild", "log2_counts"),
        "GSE161731": (0.4, 0.3, "whole_blood", "severe_vs_mild", "log2_counts"),
        "GSE172114": (2.2, 0.2, "whole_blood", "critical_vs_severe", "log2_normalised"),
    }
    meta, out = _kind_run(tmp_path, specs)
    socs3 = meta[(meta["feature"] == "SOCS3") & (meta["stratum"] == "all")].set_index("contrast")
    assert socs3.loc["severe_vs_mild", "cohorts"] == "GSE157103,GSE152418,GSE161731"
    assert socs3.loc["critical_vs_severe", "cohorts"] == "GSE172114"  # alone: its kind has no count cohort
    sens = out["sens"]
    assert set(sens["analysis"]) == {"severity contrasts and all scales pooled"}
    row = sens[(sens["stratum"] == "all") & (sens["feature"] == "SOCS3")].iloc[0]
    assert row["k"] == 4 and "mixed scales" in row["note"] and "mixed contrasts" in row["note"]


def test_meta_settings_come_from_the_meta_block():
    config = yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())
    schema = str(PROJECT_ROOT / "workflow" / "schemas" / "config.schema.yaml")
    config["meta"] = {}
    validate(config, schema)  # fills the schema defaults, which are the dataclass defaults
    assert MetaSettings.from_config(config["meta"]) == MetaSettings()
    planted = {
        "alpha": 0.1,
        "strata": ["whole_blood", "other"],
        "method_re": "dl",
        "sensitivity_exclude": ["A"],
    }
    config["meta"] = dict(planted)
    validate(config, schema)
    settings = MetaSettings.from_config(config["meta"])
    assert (settings.alpha, settings.method_re) == (0.1, "dl")
    assert settings.strata == ("whole_blood", "other") and settings.sensitivity_exclude == ("A",)
