"""The demo simulator: deterministic, realistic NB counts, and a truth table that matches the counts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from il6axis.acquire.demo import DemoSpec, simulate, write_demo

NAMED = ["IL6", "IL6R", "SOCS3", "HLA-DRA", "XIST", "RPS4Y1"]
SMALL = DemoSpec(n_genes=400, n_severe=6, n_mild=6, n_healthy=3)


def test_same_seed_same_cohort_and_other_seed_differs():
    a, b = simulate(NAMED, SMALL), simulate(NAMED, SMALL)
    pd.testing.assert_frame_equal(a.counts, b.counts)
    c = simulate(NAMED, DemoSpec(n_genes=400, n_severe=6, n_mild=6, n_healthy=3, seed=7))
    assert not a.counts.equals(c.counts)


def test_layout_groups_and_covariates():
    cohort = simulate(NAMED, SMALL)
    assert cohort.counts.shape == (400, 15)
    assert cohort.counts.to_numpy().dtype == np.int64 and (cohort.counts.to_numpy() >= 0).all()
    assert list(cohort.counts.columns) == list(cohort.samples["sample_id"])
    assert cohort.samples["group"].value_counts().to_dict() == {"severe": 6, "mild": 6, "healthy": 3}
    for group in ("severe", "mild"):
        assert set(cohort.samples.loc[cohort.samples["group"] == group, "sex"]) == {"male", "female"}
    assert list(cohort.counts.index[: len(NAMED)]) == NAMED


def test_counts_follow_planted_means_and_dispersion_trend():
    """Mild-group means track the base means, and overdispersion rises towards low expression."""
    spec = DemoSpec(n_genes=3000, n_severe=40, n_mild=40, n_healthy=2)
    cohort = simulate(NAMED, spec)
    mild = cohort.counts.loc[:, cohort.samples.set_index("sample_id")["group"] == "mild"]
    truth = cohort.truth.set_index("gene")
    # Remove per-sample depth before comparing with the truth.
    size = mild.sum() / mild.sum().median()
    norm = mild / size
    null_genes = truth.index[(~truth["is_de"]) & truth.index.str.startswith("SIMG")]
    ratio = norm.loc[null_genes].mean(axis=1) / truth.loc[null_genes, "base_mean"]
    assert 0.85 < float(ratio.median()) < 1.15
    assert (truth["dispersion"] > 0).all()
    low = truth["base_mean"] < 20
    high = truth["base_mean"] > 500
    assert truth.loc[low, "dispersion"].median() > 2 * truth.loc[high, "dispersion"].median()


def test_sex_markers_follow_recorded_sex():
    cohort = simulate(NAMED, SMALL)
    sex = cohort.samples.set_index("sample_id")["sex"]
    xist, rps4y1 = cohort.counts.loc["XIST"], cohort.counts.loc["RPS4Y1"]
    assert (xist[sex == "female"] > 200).all() and (xist[sex == "male"] < 50).all()
    assert (rps4y1[sex == "male"] > 200).all() and (rps4y1[sex == "female"] < 5).all()


def test_truth_table_marks_planted_effects():
    cohort = simulate(NAMED, SMALL)
    truth = cohort.truth.set_index("gene")
    assert truth.loc["SOCS3", "true_log2FoldChange"] > 0
    assert truth.loc["HLA-DRA", "true_log2FoldChange"] < 0
    assert truth.loc["IL6", "true_log2FoldChange"] == 0
    planted = truth.loc[truth["is_de"], "true_log2FoldChange"].abs()
    direct = truth["direct_log2FoldChange"] != 0
    assert 0.05 < direct.mean() < 0.15 and (planted >= 0.5).all()
    # Composition-only genes: no direct effect, a marginal one through the neutrophil level.
    composition_only = (truth["neutrophil_loading"] > 0) & ~direct
    assert composition_only.sum() == SMALL.n_composition_genes
    assert np.allclose(truth.loc[composition_only, "true_log2FoldChange"], 0.6)


def test_neutrophil_level_is_higher_in_severe_and_drives_its_genes():
    spec = DemoSpec(n_genes=1000, n_severe=30, n_mild=30, n_healthy=2)
    cohort = simulate(["CSF3R", "FCGR3B", "CXCR2"], spec)
    samples = cohort.samples.set_index("sample_id")
    z = samples["true_neutrophil_z"]
    assert z[samples["group"] == "severe"].mean() - z[samples["group"] == "mild"].mean() > 0.5
    log_fcgr3b = np.log2(cohort.counts.loc["FCGR3B"] / cohort.counts.sum() * 1e6 + 1)
    assert np.corrcoef(log_fcgr3b, z)[0, 1] > 0.6


def test_written_files_are_byte_reproducible(tmp_path):
    cohort = simulate(NAMED, SMALL)
    paths_a = [tmp_path / "a" / n for n in ("counts.tsv.gz", "samples.tsv", "truth.tsv")]
    paths_b = [tmp_path / "b" / n for n in ("counts.tsv.gz", "samples.tsv", "truth.tsv")]
    write_demo(cohort, *paths_a)
    write_demo(simulate(NAMED, SMALL), *paths_b)
    for a, b in zip(paths_a, paths_b, strict=True):
        assert a.read_bytes() == b.read_bytes()
    back = pd.read_csv(paths_a[0], sep="\t", index_col=0)
    pd.testing.assert_frame_equal(back, cohort.counts, check_names=False)


def test_spec_from_config_block():
    """The config's demo block becomes the spec in one place: n_per_group severe and mild, half as many
    healthy (at least 2), and the seed and gene count as given."""
    spec = DemoSpec.from_config({"seed": 11, "n_genes": 500, "n_per_group": 7})
    assert (spec.n_severe, spec.n_mild, spec.n_healthy, spec.n_genes, spec.seed) == (7, 7, 3, 500, 11)
    assert DemoSpec.from_config({"seed": 1, "n_genes": 50, "n_per_group": 3}).n_healthy == 2
