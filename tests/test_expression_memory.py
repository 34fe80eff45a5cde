"""The expression_scores step's memory savings leave every number as the libraries compute it.

The step no longer runs gseapy's prerank (which holds every permutation at once, ~0.8 GB for 1,000
permutations of 17,600 genes), no longer imports scanpy (~60 MB), and runs small VST fits without joblib
process workers (~0.4 GB). il6axis.analysis.prerank and il6axis.analysis.scores.score_genes_scores
reproduce gseapy and
scanpy: these tests run the libraries themselves on planted data and require identical numbers, so any drift
(a gseapy or scanpy upgrade, a slip in the port) fails here. bench/bench_expression_memory.py measures the
memory.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from il6axis.analysis import prerank, scores

N_GENES = 2000


def _ranking(n_genes: int = N_GENES, seed: int = 3) -> pd.Series:
    """Decreasing statistic with ties (rounded), as the DE table's Wald stat sorted by competitive_test."""
    rng = np.random.default_rng(seed)
    stat = np.round(np.sort(rng.normal(0.0, 2.0, n_genes))[::-1], 2)
    return pd.Series(stat, index=[f"G{i:05d}" for i in range(n_genes)], name="stat")


def _planted_sets(ranking: pd.Series) -> dict[str, list[str]]:
    """Sets at the top (up), at the bottom (down), spread at random (null), in two libraries."""
    genes = list(ranking.index)
    rng = np.random.default_rng(11)
    return {
        "up": genes[:40:2],
        "down": genes[-60::3],
        "null": list(rng.choice(genes, 25, replace=False)),
        "lib__up_small": genes[5:12],
        "lib__null_big": list(rng.choice(genes, 300, replace=False)),
        "lib__mixed": genes[:6] + genes[-6:],
    }


def _gseapy(ranking: pd.Series, sets: dict[str, list[str]], permutations: int, seed: int) -> pd.DataFrame:
    import gseapy

    return gseapy.prerank(
        rnk=ranking.rename_axis("gene").reset_index(),
        gene_sets=sets,
        outdir=None,
        min_size=3,
        max_size=500,
        permutation_num=permutations,
        ascending=None,
        threads=1,
        seed=seed,
        no_plot=True,
        verbose=False,
    ).res2d.set_index("Term")


@pytest.mark.parametrize(("permutations", "seed"), [(1000, 0), (250, 123), (60, 2**63 + 5)])
def test_prerank_equals_gseapy_bit_for_bit(permutations, seed):
    ranking = _ranking()
    sets = _planted_sets(ranking)
    ours = prerank.prerank(ranking, sets, permutations, seed)
    theirs = _gseapy(ranking, sets, permutations, seed)
    assert ours is not None and set(ours) == set(sets) == set(theirs.index)
    for name, result in ours.items():
        row = theirs.loc[name]
        assert result.es == float(row["ES"]), name
        assert result.nes == float(row["NES"]), name
        assert result.pval == float(row["NOM p-val"]), name
        assert result.fdr == float(row["FDR q-val"]), name
        assert result.lead_genes == row["Lead_genes"], name
    # The planted sets are found, so equality is not between two degenerate results.
    assert ours["up"].nes > 1.5 and ours["down"].nes < -1.5 and ours["up"].pval < 0.01


def test_prerank_equals_gseapy_beyond_65536_genes():
    """From 65,536 items on, each swap index takes a whole bounded draw (no packing)."""
    ranking = _ranking(70_000, seed=5)
    sets = _planted_sets(ranking)
    ours = prerank.prerank(ranking, sets, 5, 9)
    theirs = _gseapy(ranking, sets, 5, 9)
    for name, result in ours.items():
        assert (result.es, result.nes, result.pval) == tuple(
            float(theirs.loc[name, c]) for c in ("ES", "NES", "NOM p-val")
        )


def test_generator_and_shuffle_follow_rand():
    """Draws continue across blocks, and a followed position matches a literal Fisher-Yates shuffle."""
    small, large = prerank._Draws(7, lanes=4, lane_steps=8), prerank._Draws(7)
    first = small.take(100)
    small.consume(100)
    assert first + small.take(50) == large.take(150)
    n = 3000
    plan, draws = prerank._ShufflePlan.build(n), prerank._Draws(1)
    items = np.arange(n)
    where = np.arange(n)
    for _ in range(3):
        swap = plan.swap_indices(draws)
        for i, j in enumerate(swap):
            items[i], items[j] = items[j], items[i]
        where = prerank._follow(swap, where)
    assert np.array_equal(items[where], np.arange(n))
    assert not np.array_equal(items, np.arange(n))


def test_prerank_leaves_gseapy_cases_it_does_not_cover():
    ranking = _ranking()
    sets = _planted_sets(ranking)
    assert prerank.prerank(ranking, sets, 100, 0) is not None
    # Mostly lower-case ranking, upper-case sets: gseapy upper-cases the ranking's names (left to gseapy).
    in_sets = {g for genes in sets.values() for g in genes}
    mixed = ranking.rename(index=lambda g: g if g in in_sets else g.lower())
    assert prerank.prerank(mixed, sets, 100, 0) is None
    assert prerank.prerank(ranking, sets, 0, 0) is None
    assert prerank.prerank(ranking, {"all": list(ranking.index)}, 100, 0) is None


def test_competitive_test_matches_gseapy_path(monkeypatch):
    ranking = _ranking()
    de = pd.DataFrame({"gene": ranking.index, "stat": ranking.to_numpy(), "tested": True})
    sets = {**_planted_sets(ranking), "too_small": ["G00001", "G00002"]}
    ours = scores.competitive_test(de, sets, permutations=300, seed=4)
    monkeypatch.setattr(prerank, "prerank", lambda *args, **kwargs: None)
    theirs = scores.competitive_test(de, sets, permutations=300, seed=4)
    pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
    assert ours.set_index("set").loc["too_small", "note"].startswith("2 genes in the ranking")


def _scanpy_score_genes(
    vst: pd.DataFrame, sets: dict[str, list[str]], ctrl_size: int, n_bins: int, seed: int
) -> dict[str, np.ndarray]:
    """score_genes_scores as it was: scanpy itself on an AnnData of the VST matrix."""
    import anndata as ad
    import scanpy as sc

    adata = ad.AnnData(
        X=vst.to_numpy(dtype=np.float64),
        obs=pd.DataFrame(index=vst.index.astype(str)),
        var=pd.DataFrame(index=vst.columns.astype(str)),
    )
    out = {}
    for name, genes in sets.items():
        sc.tl.score_genes(
            adata,
            genes,
            ctrl_as_ref=False,
            ctrl_size=ctrl_size,
            n_bins=n_bins,
            random_state=seed,
            use_raw=False,
            score_name="_score",
        )
        out[name] = adata.obs["_score"].to_numpy()
    return out


@pytest.mark.parametrize(("ctrl_size", "n_bins", "seed"), [(50, 25, 0), (100, 10, 3), (5, 40, 1)])
def test_score_genes_equals_scanpy_bit_for_bit(ctrl_size, n_bins, seed):
    rng = np.random.default_rng(8)
    n_samples, n_genes = 16, 1200
    level = rng.uniform(2.0, 14.0, n_genes)
    vst = pd.DataFrame(
        level[None, :] + rng.normal(0.0, 0.5, (n_samples, n_genes)),
        index=[f"S{i}" for i in range(n_samples)],
        columns=[f"G{i:04d}" for i in range(n_genes)],
    )
    severe = np.arange(n_samples) < n_samples // 2
    vst.iloc[severe, :20] += 1.0  # planted: the first 20 genes up in half the samples
    sets = {
        "planted": list(vst.columns[:20]),
        "spread": list(vst.columns[::97]),
        "high": list(vst.columns[np.argsort(level)[-12:]]),
    }
    ours, _ = scores.score_genes_scores(vst, sets, ctrl_size=ctrl_size, n_bins=n_bins, random_state=seed)
    theirs = _scanpy_score_genes(vst, sets, ctrl_size, n_bins, seed)
    for name in sets:
        assert np.array_equal(ours[name].to_numpy(), theirs[name]), name
    planted = ours["planted"].to_numpy()
    assert planted[severe].mean() - planted[~severe].mean() > 0.8


def test_vst_trend_fit_runs_in_process_and_large_fits_keep_workers(monkeypatch):
    """Process workers only for fits on >= VST_WORKER_MIN_GENES genes; the nsub trend fit stays in-process."""
    from il6axis.analysis import expression

    rng = np.random.default_rng(2)
    mean = np.exp(rng.normal(np.log(200.0), 1.2, 1500))
    shape = 1.0 / (0.05 + 2.0 / mean)  # negative binomial with DESeq2's dispersion trend a0 + a1 / mu
    counts = pd.DataFrame(
        rng.poisson(rng.gamma(shape, mean / shape, (12, 1500))),
        index=[f"S{i}" for i in range(12)],
        columns=[f"G{i:04d}" for i in range(1500)],
    )
    asked: list[int] = []
    inference = expression.DefaultInference

    def recording(n_cpus):
        asked.append(n_cpus)
        return inference(n_cpus=n_cpus)

    monkeypatch.setattr(expression, "DefaultInference", recording)
    in_process = expression.vst(counts, n_cpus=2, nsub=300, seed=0)
    assert asked == [1, 1]  # the 300-gene trend fit, then the transform of all 1,500 genes
    monkeypatch.setattr(expression, "VST_WORKER_MIN_GENES", 300)
    asked.clear()
    with_workers = expression.vst(counts, n_cpus=2, nsub=300, seed=0)
    assert asked == [2, 2]
    pd.testing.assert_frame_equal(in_process, with_workers, check_exact=True)
