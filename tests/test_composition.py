"""Composition sensitivity: neutrophil score, when to adjust, and labelling genes composition-driven."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from test_orientation import gse152418_cohort

from il6axis.analysis.composition import (
    COMPOSITION_DRIVEN,
    NOT_SIGNIFICANT,
    NOT_TESTED,
    ROBUST,
    SCORE_COLUMN,
    compare_fits,
    neutrophil_score,
    should_adjust,
)
from il6axis.analysis.expression import contrast_counts, normalised_counts, size_factors
from il6axis.cohort.samples import to_anndata
from il6axis.de.contract import DeSettings
from il6axis.de.nb import run_deseq2
from il6axis.errors import InputError


def log_normalise(counts: pd.DataFrame) -> pd.DataFrame:
    """log2(normalised count + 1): a cheap monotone stand-in for the workflow's VST in these tests."""
    return np.log2(normalised_counts(counts, size_factors(counts)) + 1.0)


# ---------------------------------------------------------------------------------------------- score


def test_neutrophil_score_is_mean_z_and_tracks_planted_neutrophil_content():
    rng = np.random.default_rng(7)
    latent = rng.normal(0.0, 1.0, size=12)
    vst = pd.DataFrame(
        {
            "CSF3R": 10 + 1.0 * latent + rng.normal(0, 0.1, 12),
            "FCGR3B": 8 + 2.0 * latent + rng.normal(0, 0.1, 12),
            "CXCR2": 6 + 0.5 * latent + rng.normal(0, 0.1, 12),
            "OTHER": rng.normal(5, 1, 12),
        },
        index=[f"s{i}" for i in range(12)],
    )
    score, reason = neutrophil_score(vst)
    assert score is not None and score.name == SCORE_COLUMN
    manual = ((vst.iloc[:, :3] - vst.iloc[:, :3].mean()) / vst.iloc[:, :3].std()).mean(axis=1)
    np.testing.assert_allclose(score, manual)
    assert np.corrcoef(score, latent)[0, 1] > 0.95  # different loadings: z-scoring equalises them
    assert "CSF3R, FCGR3B, CXCR2" in reason


def test_neutrophil_score_needs_min_genes_and_says_which_are_missing():
    vst = pd.DataFrame({"CSF3R": [1.0, 2.0, 3.0], "CXCR2": [4.0, 4.0, 4.0]}, index=["a", "b", "c"])
    score, reason = neutrophil_score(vst, min_genes=2)
    assert score is None
    assert "FCGR3B (absent)" in reason and "CXCR2 (constant across samples)" in reason
    score, _ = neutrophil_score(vst, min_genes=1)
    assert score is not None and list(score.round(6)) == [-1.0, 0.0, 1.0]


def test_should_adjust_by_tissue():
    assert should_adjust("whole_blood")[0]
    assert should_adjust("leukocytes")[0]
    ok, why = should_adjust("pbmc", score_available=True)
    assert not ok and "PBMC lack mature neutrophils" in why
    ok, why = should_adjust("whole_blood", score_available=False, score_reason="only 1 of 3 genes usable")
    assert not ok and "only 1 of 3 genes usable" in why
    assert not should_adjust("other")[0]
    with pytest.raises(InputError, match="tissue 'blood'"):
        should_adjust("blood")


# ------------------------------------------------------------------------------- compare_fits by hand


def _de(rows: dict[str, tuple[float, float, float]]) -> pd.DataFrame:
    """DE table from gene -> (log2FoldChange, lfcSE, padj); NaN LFC means not tested."""
    genes = list(rows)
    lfc, se, padj = (np.array([rows[g][i] for g in genes], dtype=float) for i in range(3))
    tested = np.isfinite(lfc)
    return pd.DataFrame(
        {
            "gene": genes,
            "log2FoldChange": lfc,
            "lfcSE": se,
            "pvalue": np.where(tested, padj / 2, np.nan),
            "padj": padj,
            "tested": tested,
        }
    )


def test_compare_fits_labels_hand_built_cases():
    primary = _de(
        {
            "NEUTRO": (2.0, 0.3, 1e-6),  # effect vanishes with the score
            "DIRECT": (1.5, 0.3, 1e-5),  # effect stays
            "POWER": (0.8, 0.3, 0.02),  # loses significance but keeps most of its effect
            "STRONGATT": (3.0, 0.3, 1e-9),  # attenuated by 60 % but still significant
            "NULL": (0.1, 0.3, 0.8),
            "LOW": (np.nan, np.nan, np.nan),
        }
    )
    adjusted = _de(
        {
            "NEUTRO": (0.3, 0.4, 0.6),
            "DIRECT": (1.4, 0.35, 1e-3),
            "POWER": (0.7, 0.4, 0.12),
            "STRONGATT": (1.2, 0.3, 1e-3),
            "NULL": (0.0, 0.3, 0.99),
            "LOW": (np.nan, np.nan, np.nan),
        }
    )
    out = compare_fits(primary, adjusted).set_index("gene")
    assert out.loc["NEUTRO", "label"] == COMPOSITION_DRIVEN
    assert out.loc["NEUTRO", "attenuation"] == pytest.approx(0.85)
    assert out.loc["DIRECT", "label"] == ROBUST
    assert out.loc["POWER", "label"] == ROBUST and "power loss" in out.loc["POWER", "note"]
    assert out.loc["STRONGATT", "label"] == ROBUST
    assert out.loc["STRONGATT", "attenuation"] == pytest.approx(0.6)
    assert out.loc["NULL", "label"] == NOT_SIGNIFICANT and np.isnan(out.loc["NULL", "attenuation"])
    assert out.loc["LOW", "label"] == NOT_TESTED
    # The threshold is a parameter: at 0.9 NEUTRO (0.85) is no longer called composition-driven.
    assert compare_fits(primary, adjusted, threshold=0.9).set_index("gene").loc["NEUTRO", "label"] == ROBUST


def test_compare_fits_gene_missing_from_adjusted_fit_is_not_tested():
    primary = _de({"A": (2.0, 0.3, 1e-6), "B": (1.0, 0.3, 1e-3)})
    adjusted = _de({"A": (0.1, 0.3, 0.9)})
    out = compare_fits(primary, adjusted).set_index("gene")
    assert out.loc["B", "label"] == NOT_TESTED and "adjusted fit" in out.loc["B", "note"]
    with pytest.raises(InputError, match="adjusted DE table: missing column"):
        compare_fits(primary, adjusted.drop(columns="lfcSE"))


# ------------------------------------------------------------------------ NB simulation + pydeseq2


N_PER_GROUP = 8
N_COMPOSITION = 12
N_DIRECT = 12


def _simulate_composition(seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """NB counts (samples x genes) where severe patients carry more neutrophils.

    Planted truth: COMP* genes follow the latent neutrophil content only (no direct severity effect);
    DIR* genes have a direct severity effect of +/-1.5 log2 and ignore neutrophils; CSF3R/FCGR3B/CXCR2
    measure the neutrophil content; NULL* genes have neither.
    """
    rng = np.random.default_rng(seed)
    severe = np.repeat([1.0, 0.0], N_PER_GROUP)
    n = severe.size
    # log2 neutrophil shift per sample: group means exactly +/-0.75 (so the confounding planted is the
    # confounding realised, whatever the seed) and within-group spread sd 0.6 (so the score is not just
    # a relabelled severity column and both effects stay estimable).
    noise = rng.normal(size=(2, N_PER_GROUP))
    noise = (noise - noise.mean(axis=1, keepdims=True)) / noise.std(axis=1, ddof=1, keepdims=True)
    neutro = np.concatenate([0.75 + 0.6 * noise[0], -0.75 + 0.6 * noise[1]])
    genes, base, load, sev = [], [], [], []

    def add(name: str, b: float, loading: float, effect: float) -> None:
        genes.append(name)
        base.append(b)
        load.append(loading)
        sev.append(effect)

    for g in ("CSF3R", "FCGR3B", "CXCR2"):
        add(g, 3000.0, 1.0, 0.0)
    for i in range(N_COMPOSITION):
        add(f"COMP{i:02d}", float(rng.uniform(300, 3000)), 1.2, 0.0)
    for i in range(N_DIRECT):
        add(f"DIR{i:02d}", float(rng.uniform(300, 3000)), 0.0, 1.5 * (1 if i % 2 == 0 else -1))
    for i in range(200 - len(genes)):
        add(f"NULL{i:03d}", float(np.exp(rng.normal(np.log(200), 1.2))), 0.0, 0.0)
    base_a, load_a, sev_a = np.array(base), np.array(load), np.array(sev)
    log2_mu = np.log2(base_a)[None, :] + np.outer(neutro, load_a) + np.outer(severe, sev_a)
    mu = np.exp2(log2_mu) * np.exp(rng.normal(0, 0.2, size=n))[:, None]
    disp = 0.04 + 1.0 / base_a
    lam = rng.gamma(1.0 / disp, mu * disp)
    counts = pd.DataFrame(rng.poisson(lam).astype(np.int64), columns=genes)
    counts.index = [f"S{i:02d}" for i in range(n)]
    obs = pd.DataFrame(
        {
            "severity": pd.Categorical(np.where(severe == 1, "severe", "mild")),
            "latent_neutrophils": neutro,
        },
        index=counts.index,
    )
    return counts, obs


@pytest.fixture(scope="module")
def composition_fits():
    counts, obs = _simulate_composition()
    score, reason = neutrophil_score(log_normalise(counts))
    assert score is not None, reason
    obs[SCORE_COLUMN] = score
    adata = to_anndata(counts.T, obs, {"cohort": "sim", "tissue": "whole_blood"})
    settings = DeSettings(n_cpus=1, lfc_shrink=False)
    with warnings.catch_warnings():
        # 200 genes, a quarter of them planted at low dispersion, are too few for pydeseq2's parametric
        # dispersion trend; its documented fallback (mean-based trend) is adequate for this test.
        warnings.filterwarnings("ignore", message="The dispersion trend curve fitting did not converge")
        primary = run_deseq2(adata, [], settings)
        adjusted = run_deseq2(adata, [], replace(settings, extra_covariates=(SCORE_COLUMN,)))
    return obs, primary, adjusted


def test_simulated_score_tracks_planted_neutrophils(composition_fits):
    obs, _, _ = composition_fits
    assert np.corrcoef(obs[SCORE_COLUMN], obs["latent_neutrophils"])[0, 1] > 0.9


def test_composition_driven_genes_recovered_from_nb_fits(composition_fits):
    _, primary, adjusted = composition_fits
    assert adjusted.design == f"~ {SCORE_COLUMN} + severity"
    out = compare_fits(primary.table, adjusted.table).set_index("gene")
    comp = out.loc[out.index.str.startswith("COMP")]
    direct = out.loc[out.index.str.startswith("DIR")]
    nulls = out.loc[out.index.str.startswith("NULL")]
    # Confounded genes look severity-driven in the primary fit ...
    assert (comp["padj_primary"] < 0.05).sum() >= 10
    # ... and are flagged once the score is in the model; direct effects are not.
    assert (comp["label"] == COMPOSITION_DRIVEN).sum() >= 9
    assert (direct["label"] == ROBUST).sum() >= 10
    assert (direct["label"] == COMPOSITION_DRIVEN).sum() == 0
    assert (nulls["label"] == COMPOSITION_DRIVEN).sum() <= 3


# ------------------------------------------------------------------- real cohort GSE152418 (PBMC)


def test_gse152418_pbmc_is_not_adjusted(project_root, shared_data):
    """The score can be computed on PBMC (CSF3R etc. are expressed by monocytes) but is not used."""
    adata = gse152418_cohort(project_root, shared_data)
    score, reason = neutrophil_score(log_normalise(contrast_counts(adata)[0]))
    assert score is not None and len(score) == 14, reason  # 10 ICU+Severe, 4 Moderate
    ok, why = should_adjust(adata.uns["tissue"], score_available=True)
    assert not ok and "PBMC lack mature neutrophils" in why
