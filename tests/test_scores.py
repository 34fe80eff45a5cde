"""Gene-set scores, their severity model and the competitive test recover a planted pathway shift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from real_cohorts import gse155454_local_spec
from scipy import stats

from il6axis.analysis.expression import contrast_counts, normalised_counts, size_factors, vst
from il6axis.analysis.scores import competitive_test, mean_z_scores, score_genes_scores, score_model
from il6axis.errors import InputError

N_GENES = 1500
PLANTED = [f"G{i:05d}" for i in range(15)]  # +1 log2 in severe
NULL = [f"G{i:05d}" for i in range(15, 30)]  # no effect


def _simulate(seed: int = 7, n_per_group: int = 12) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """NB counts (samples x genes) with a planted +1 log2 set, a null set and balanced background DE."""
    rng = np.random.default_rng(seed)
    genes = [f"G{i:05d}" for i in range(N_GENES)]
    base = np.exp(rng.normal(np.log(150.0), 1.4, N_GENES))
    base[:30] = np.exp(rng.uniform(np.log(40.0), np.log(2000.0), 30))  # both sets reasonably expressed
    dispersion = (0.05 + 1.0 / base) * np.exp(rng.normal(0.0, 0.3, N_GENES))
    lfc = np.zeros(N_GENES)
    lfc[:15] = 1.0
    background = rng.choice(np.arange(30, N_GENES), size=N_GENES // 10, replace=False)
    lfc[background] = rng.uniform(0.5, 1.5, len(background)) * rng.choice([-1.0, 1.0], len(background))
    severity = np.array(["severe"] * n_per_group + ["mild"] * n_per_group)
    sf = np.exp(rng.normal(0.0, 0.25, 2 * n_per_group))
    mu = base[None, :] * np.exp2(lfc[None, :] * (severity == "severe")[:, None]) * sf[:, None]
    shape = 1.0 / dispersion[None, :]
    counts = rng.poisson(rng.gamma(shape, mu / shape)).astype(np.int64)
    samples = [f"S{i:02d}" for i in range(2 * n_per_group)]
    obs = pd.DataFrame(
        {
            "severity": pd.Categorical(severity, categories=["mild", "severe"]),
            "age": np.round(rng.normal(60.0, 10.0, 2 * n_per_group)),
            "sex": np.tile(["male", "female"], n_per_group),
        },
        index=samples,
    )
    return pd.DataFrame(counts, index=samples, columns=genes), obs, lfc


@pytest.fixture(scope="module")
def pathway():
    counts, obs, lfc = _simulate()
    expression = vst(counts, nsub=300, seed=0)
    non_de = [g for g, v in zip(counts.columns, lfc, strict=True) if v == 0.0 and g not in NULL]
    rng = np.random.default_rng(99)
    null_sets = {f"null_{k:02d}": list(rng.choice(non_de[30:], 15, replace=False)) for k in range(8)}
    gene_sets = {"planted": PLANTED, "null": NULL, **null_sets}
    # A per-gene Welch t on log2 normalised counts stands in for the Wald stat of the DE table.
    logn = np.log2(normalised_counts(counts, size_factors(counts)) + 1.0)
    severe = (obs["severity"] == "severe").to_numpy()
    t = stats.ttest_ind(logn[severe], logn[~severe], axis=0, equal_var=False).statistic
    de = pd.DataFrame({"gene": counts.columns, "stat": t, "tested": True})
    return {"counts": counts, "obs": obs, "vst": expression, "sets": gene_sets, "de": de}


def _null_names(gene_sets) -> list[str]:
    return [n for n in gene_sets if n.startswith("null")]


@pytest.mark.parametrize("method", ["mean_z", "score_genes"])
def test_scores_recover_planted_shift_and_stay_calibrated_on_null_sets(pathway, method):
    if method == "mean_z":
        scores, coverage = mean_z_scores(pathway["vst"], pathway["sets"])
    else:
        scores, coverage = score_genes_scores(pathway["vst"], pathway["sets"], ctrl_size=50, n_bins=25)
    assert coverage["scored"].all() and (coverage["n_present"] == 15).all()
    model = score_model(scores, pathway["obs"], ["age", "sex"], alpha=0.05, method=method).set_index("set")
    planted = model.loc["planted"]
    assert planted["method"] == method and planted["effect"] > 0 and planted["p"] < 1e-4
    assert planted["ci_low"] > 0 and planted["padj"] < 0.05
    assert (planted["n_mild"], planted["n_severe"], planted["df_resid"]) == (12, 12, 20.0)
    if method == "score_genes":
        # Score on the VST (log2-like) scale: close to the planted +1 log2, a little shrunk at low counts.
        assert 0.6 < planted["effect"] < 1.1
    nulls = model.loc[_null_names(pathway["sets"])]
    assert model.loc["null", "p"] > 0.01
    assert (nulls["p"] < 0.05).sum() <= 2  # 9 null sets: about 0.45 expected by chance
    assert nulls["effect"].abs().max() < planted["effect"] / 3


def test_score_model_sign_does_not_depend_on_label_order(pathway):
    scores, _ = mean_z_scores(pathway["vst"], {"planted": PLANTED})
    obs = pathway["obs"]
    reference = score_model(scores, obs, ["age", "sex"])
    reordered = obs.assign(
        severity=pd.Categorical(obs["severity"].astype(str), categories=["severe", "mild"])
    )
    as_text = obs.assign(severity=obs["severity"].astype(str))
    for other in (reordered, as_text):
        pd.testing.assert_frame_equal(score_model(scores, other, ["age", "sex"]), reference)
    swapped = obs.assign(severity=obs["severity"].astype(str).map({"mild": "severe", "severe": "mild"}))
    assert score_model(scores, swapped, ["age", "sex"])["effect"].iloc[0] == pytest.approx(
        -reference["effect"].iloc[0]
    )


def test_score_model_drops_nan_scores_and_excluded_samples_and_quotes_names(pathway):
    scores, _ = mean_z_scores(pathway["vst"], {"planted": PLANTED, "null": NULL})
    obs = pathway["obs"].rename(columns={"age": "age (years)", "sex": "sex/gender"})
    obs = obs.assign(severity=obs["severity"].astype(str))
    extra = pd.DataFrame(
        {"severity": ["excluded"], "age (years)": [40.0], "sex/gender": ["male"]}, index=["H1"]
    )
    obs = pd.concat([obs, extra])
    scores = pd.concat([scores, pd.DataFrame({"planted": [5.0], "null": [5.0]}, index=["H1"])])
    scores.loc["S00", "planted"] = np.nan  # S00 is severe
    model = score_model(scores, obs, ["age (years)", "sex/gender"]).set_index("set")
    assert model.loc["planted", "n_dropped"] == 1 and model.loc["planted", "n_severe"] == 11
    assert model.loc["null", "n_dropped"] == 0 and model.loc["null", "n_severe"] == 12
    assert model.loc["null", "n_mild"] == 12  # the excluded sample never enters
    with pytest.raises(InputError, match="not columns of obs"):
        score_model(scores, obs, ["age"])
    with pytest.raises(InputError, match="same cohort"):
        score_model(scores.rename(index=lambda s: f"other_{s}"), obs, [])


def test_coverage_reports_missing_constant_and_too_small_sets(pathway):
    expression = pathway["vst"].assign(FLAT=3.0)
    sets = {
        "small": ["G00000", "G00001", "NOT_A_GENE", "FLAT"],
        "ok": ["G00000", "G00001", "G00002", "G00001"],
    }
    for scorer in (mean_z_scores, score_genes_scores):
        scores, coverage = scorer(expression, sets)
        coverage = coverage.set_index("set")
        assert scores["small"].isna().all() and scores["ok"].notna().all()
        assert (
            coverage.loc["small", "missing"] == "NOT_A_GENE" and coverage.loc["small", "constant"] == "FLAT"
        )
        assert coverage.loc["small", "n_present"] == 2 and "min_genes=3" in coverage.loc["small", "reason"]
        assert coverage.loc["ok", "n_genes"] == 3 and coverage.loc["ok", "present"] == "G00000;G00001;G00002"
    model = score_model(scores, pathway["obs"], []).set_index("set")
    assert np.isnan(model.loc["small", "effect"]) and model.loc["small", "note"] == "no score (see coverage)"
    assert model.loc["ok", "padj"] == model.loc["ok", "p"]  # BH over the one testable set


def test_scores_are_deterministic(pathway):
    first = score_genes_scores(pathway["vst"], pathway["sets"], random_state=0)[0]
    np.random.seed(12345)  # global RNG state must not leak into the scores
    again = score_genes_scores(pathway["vst"], pathway["sets"], random_state=0)[0]
    pd.testing.assert_frame_equal(first, again)
    other_seed = score_genes_scores(pathway["vst"], pathway["sets"], random_state=1)[0]
    assert not first.equals(other_seed)  # the seed does pick the control genes
    pd.testing.assert_frame_equal(
        mean_z_scores(pathway["vst"], pathway["sets"])[0], mean_z_scores(pathway["vst"], pathway["sets"])[0]
    )


def test_score_genes_needs_a_genome_wide_matrix(pathway):
    with pytest.raises(InputError, match="n_bins=25"):
        score_genes_scores(pathway["vst"].iloc[:, :40], {"planted": PLANTED})


def test_competitive_test_ranks_planted_set_up(pathway):
    result = competitive_test(pathway["de"], pathway["sets"], permutations=1000, seed=0).set_index("set")
    planted = result.loc["planted"]
    assert planted["nes"] > 0 and planted["fdr"] < 0.05 and planted["n_genes_in_ranking"] == 15
    assert set(planted["leading_edge"].split(";")) <= set(PLANTED)
    assert result.loc["null", "fdr"] > 0.05
    assert (result.loc[_null_names(pathway["sets"]), "fdr"] < 0.05).sum() <= 1


def test_competitive_test_deterministic_with_ties_and_row_order(pathway):
    de = pathway["de"].assign(stat=pathway["de"]["stat"].round(1))  # many tied statistics
    sets = {"planted": PLANTED, "null": NULL}
    first = competitive_test(de, sets, permutations=200, seed=4)
    shuffled = de.sample(frac=1.0, random_state=1)
    pd.testing.assert_frame_equal(first, competitive_test(shuffled, sets, permutations=200, seed=4))
    pd.testing.assert_frame_equal(first, competitive_test(de, sets, permutations=200, seed=4))


def test_competitive_test_uses_tested_genes_and_size_limits(pathway):
    de = pathway["de"].copy()
    de.loc[de["gene"].isin(PLANTED[2:]), "tested"] = False  # 2 planted genes left in the ranking
    result = competitive_test(de, {"planted": PLANTED, "null": NULL}, permutations=100).set_index("set")
    assert result.loc["planted", "n_genes_in_ranking"] == 2 and np.isnan(result.loc["planted", "nes"])
    assert "outside [3, 500]" in result.loc["planted", "note"]
    assert np.isfinite(result.loc["null", "nes"])
    as_text = de.assign(tested=de["tested"].map({True: "True", False: "False"}))  # as read from a TSV
    text_result = competitive_test(as_text, {"planted": PLANTED, "null": NULL}, permutations=100)
    pd.testing.assert_frame_equal(text_result.set_index("set"), result)
    with pytest.raises(InputError, match="stat"):
        competitive_test(de.drop(columns="stat"), {"null": NULL})


def test_real_gse155454_scores_and_missing_il6(shared_data):
    from il6axis.cohort.build import build_cohort

    spec = gse155454_local_spec()
    built = build_cohort(
        "GSE155454",
        spec,
        shared_data / "GSE155454" / "GSE155454_counts_kuanrongchan_v1.csv.gz",
        shared_data / "GSE155454" / "GSE155454_sample_sheet_from_colnames.csv.gz",
        shared_data / "NCBI_gene_info" / "Homo_sapiens.gene_info.gz",
    )
    counts, obs = contrast_counts(built.adata)
    assert obs["severity"].value_counts().to_dict() == {"mild": 9, "severe": 7}
    expression = vst(counts, nsub=200, seed=0)
    sets = {
        "reactome_il6": "CBL IL6 IL6R IL6ST JAK1 JAK2 PTPN11 SOCS3 STAT1 STAT3 TYK2".split(),
        "neutrophil": ["CSF3R", "FCGR3B", "CXCR2"],
        "acute_phase": ["CRP", "SAA1", "SAA2", "FGB", "HAMP"],
    }
    covariates = list(built.adata.uns["covariates"])
    for scorer, method in ((mean_z_scores, "mean_z"), (score_genes_scores, "score_genes")):
        scores, coverage = scorer(expression, sets)
        coverage = coverage.set_index("set")
        assert "IL6" in coverage.loc["reactome_il6", "missing"].split(";")
        assert coverage.loc["reactome_il6", "n_present"] == 10
        model = score_model(scores, obs, covariates, method=method).set_index("set")
        for name in ("reactome_il6", "neutrophil"):
            row = model.loc[name]
            assert np.isfinite([row["effect"], row["se"], row["p"]]).all()
            assert (row["n_mild"], row["n_severe"]) == (9, 7)
        # The curated GSE155454 table has no hepatic acute-phase genes: reported, not scored.
        assert coverage.loc["acute_phase", "n_present"] == 0 and not coverage.loc["acute_phase", "scored"]
        assert np.isnan(model.loc["acute_phase", "effect"])
