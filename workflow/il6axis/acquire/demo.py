"""Seeded simulator of a small, realistic bulk blood RNA-seq cohort with planted severity effects.

The demo cohort lets the whole workflow run offline and gives the tests a ground truth to recover:
negative-binomial counts whose dispersion follows the DESeq2-style trend ``alpha(mu) = a0 + a1 / mu``
(with gene-level scatter around it), per-sample size factors, covariates (age, sex) with their own
effects, and a truth table of severe-vs-mild log2 fold changes (most genes null).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Planted severe-vs-mild log2 fold changes for named genes, chosen to mirror published direction:
# neutrophil/granulopoiesis and S100 markers up and MHC-II down (the orientation markers, so the check
# passes), and IL-6 axis genes such as SOCS3, CEBPD, OSM and IL6R up (genes under test, not markers).
NAMED_EFFECTS: dict[str, float] = {
    "SOCS3": 1.2,
    "CEBPD": 1.0,
    "IL1R2": 2.0,
    "ARG1": 2.2,
    "OLFM4": 1.8,
    "LCN2": 1.5,
    "MMP8": 1.6,
    "CD177": 2.5,
    "S100A8": 1.0,
    "S100A9": 1.0,
    "S100A12": 1.3,
    "HP": 1.4,
    "ORM1": 1.5,
    "OSM": 1.0,
    "HLA-DRA": -1.0,
    "CD74": -0.9,
    "HLA-DPA1": -0.8,
    "HLA-DPB1": -0.8,
    "IL6R": 0.6,
    "JAK2": 0.7,
    "STAT3": 0.5,
    "CD163": 1.2,
    "MYC": -0.7,
}
# Genes that are deliberately null in severe vs mild (the core axis machinery the user asks about).
NAMED_NULL = ["IL6", "IL6ST", "JAK1", "TYK2", "JAK3", "PTPN11", "STAT1"]
# Genes that read out the neutrophil level (the workflow's neutrophil score), log2 change per z unit.
NEUTROPHIL_LOADING: dict[str, float] = {"CSF3R": 0.8, "FCGR3B": 0.9, "CXCR2": 0.8}
# Base mean (counts at size factor 1) for named genes; unlisted named genes draw from the common law.
NAMED_BASE_MEAN: dict[str, float] = {"IL6": 3.0, "CRP": 1.0, "SAA2": 2.0, "FGB": 1.5, "HAMP": 2.0}


@dataclass(frozen=True)
class DemoSpec:
    """Size and effect parameters of the simulated cohort."""

    n_genes: int = 3000
    n_severe: int = 16
    n_mild: int = 16
    n_healthy: int = 8
    frac_de: float = 0.08
    min_abs_lfc: float = 0.8
    max_abs_lfc: float = 2.5
    disp_asymptote: float = 0.05  # a0: biological CV^2 at high expression (whole blood ~ 0.05-0.1)
    disp_extra_poisson: float = 1.0  # a1
    disp_log_sd: float = 0.35  # gene-level scatter of log dispersion around the trend
    # Blood composition: a per-sample neutrophil level (z units, higher in severe) drives the neutrophil
    # score genes and a set of composition-only genes that have no direct severity effect.
    neutrophil_shift: float = 1.0
    n_composition_genes: int = 40
    composition_loading: float = 0.6
    seed: int = 20201

    @classmethod
    def from_config(cls, demo: Mapping[str, Any]) -> DemoSpec:
        """The spec of the config's ``demo`` block: ``n_per_group`` severe and mild samples each, and half as
        many healthy donors (at least 2, so the excluded-group path is always exercised)."""
        n = int(demo["n_per_group"])
        return cls(
            n_genes=int(demo["n_genes"]),
            n_severe=n,
            n_mild=n,
            n_healthy=max(2, n // 2),
            seed=int(demo["seed"]),
        )


@dataclass(frozen=True)
class DemoCohort:
    counts: pd.DataFrame  # genes x samples, int64
    samples: pd.DataFrame  # one row per sample
    truth: pd.DataFrame  # one row per gene: planted log2FC severe vs mild, base mean, dispersion


def _gene_names(named: list[str], n_genes: int) -> list[str]:
    n_synthetic = n_genes - len(named)
    if n_synthetic < 0:
        raise ValueError(f"n_genes={n_genes} is smaller than the {len(named)} named genes")
    return named + [f"SIMG{i:05d}" for i in range(1, n_synthetic + 1)]


def _sample_table(spec: DemoSpec, rng: np.random.Generator) -> pd.DataFrame:
    groups = ["severe"] * spec.n_severe + ["mild"] * spec.n_mild + ["healthy"] * spec.n_healthy
    n = len(groups)
    # Severe patients are older on average, as in the real cohorts: age must be in the design.
    age_mean = np.where(np.array(groups) == "severe", 64.0, np.where(np.array(groups) == "mild", 55.0, 45.0))
    age = np.clip(np.round(rng.normal(age_mean, 10.0)), 20, 89).astype(int)
    sex = rng.choice(["male", "female"], size=n, p=[0.6, 0.4])
    # Guarantee both sexes in each patient group so sex is estimable.
    for g in ("severe", "mild"):
        idx = np.flatnonzero(np.array(groups) == g)
        sex[idx[0]], sex[idx[1]] = "male", "female"
    sample_id = [f"DEMO{i + 1:03d}" for i in range(n)]
    return pd.DataFrame({"sample_id": sample_id, "group": groups, "age": age, "sex": sex})


def simulate(named_genes: list[str], spec: DemoSpec | None = None) -> DemoCohort:
    """Simulate counts, samples and the planted truth. Deterministic for a given spec and gene list."""
    spec = spec or DemoSpec()
    rng = np.random.default_rng(spec.seed)
    named = list(dict.fromkeys(named_genes))  # de-duplicate, keep order
    genes = _gene_names(named, spec.n_genes)
    n_genes = len(genes)

    # Base expression: log-normal means spanning ~1 to ~10^4 counts, as in blood RNA-seq.
    base_mean = np.exp(rng.normal(np.log(120.0), 1.6, size=n_genes))
    for i, g in enumerate(genes):
        if g in NAMED_BASE_MEAN:
            base_mean[i] = NAMED_BASE_MEAN[g]
        elif g in NAMED_EFFECTS or g in NAMED_NULL or g in NEUTROPHIL_LOADING:
            base_mean[i] = max(base_mean[i], 150.0)  # named genes well expressed unless stated
    trend = spec.disp_asymptote + spec.disp_extra_poisson / base_mean
    dispersion = trend * np.exp(rng.normal(0.0, spec.disp_log_sd, size=n_genes))

    # Planted severity effects: named ones plus a random set of synthetic genes.
    lfc = np.zeros(n_genes)
    name_to_idx = {g: i for i, g in enumerate(genes)}
    for g, eff in NAMED_EFFECTS.items():
        if g in name_to_idx:
            lfc[name_to_idx[g]] = eff
    synthetic_idx = np.array([i for i, g in enumerate(genes) if g.startswith("SIMG")])
    n_random_de = int(round(spec.frac_de * n_genes))
    chosen = rng.choice(synthetic_idx, size=min(n_random_de, len(synthetic_idx)), replace=False)
    magnitude = rng.uniform(spec.min_abs_lfc, spec.max_abs_lfc, size=len(chosen))
    lfc[chosen] = magnitude * rng.choice([-1.0, 1.0], size=len(chosen))
    loading = np.zeros(n_genes)
    for g, load in NEUTROPHIL_LOADING.items():
        if g in name_to_idx:
            loading[name_to_idx[g]] = load
    null_synthetic = np.setdiff1d(synthetic_idx, chosen)
    composition_idx = rng.choice(
        null_synthetic, size=min(spec.n_composition_genes, len(null_synthetic)), replace=False
    )
    loading[composition_idx] = spec.composition_loading

    samples = _sample_table(spec, rng)
    n_samples = len(samples)
    # Covariate effects on a subset of genes (null for severity unless also planted).
    age_z = (samples["age"].to_numpy() - 55.0) / 10.0
    is_male = (samples["sex"] == "male").to_numpy().astype(float)
    age_effect = np.where(rng.random(n_genes) < 0.05, rng.normal(0.0, 0.3, n_genes), 0.0)
    sex_effect = np.where(rng.random(n_genes) < 0.02, rng.normal(0.0, 0.8, n_genes), 0.0)
    if "XIST" in name_to_idx:
        base_mean[name_to_idx["XIST"]] = 2000.0
        sex_effect[name_to_idx["XIST"]] = -9.0  # ~0 in males
    if "RPS4Y1" in name_to_idx:
        base_mean[name_to_idx["RPS4Y1"]] = 0.002
        sex_effect[name_to_idx["RPS4Y1"]] = 19.0  # ~1000 in males, ~0 in females
    group_arr = samples["group"].to_numpy()
    neutrophil_z = rng.normal(0.0, 1.0, n_samples) + spec.neutrophil_shift * (group_arr == "severe")
    samples["true_neutrophil_z"] = np.round(neutrophil_z, 4)
    # Healthy controls differ from mild by small random shifts (they are not part of the contrast).
    healthy_shift = np.where(rng.random(n_genes) < 0.1, rng.normal(0.0, 0.7, n_genes), 0.0)

    group = samples["group"].to_numpy()
    log2_mu = (
        np.log2(base_mean)[:, None]
        + lfc[:, None] * (group == "severe")[None, :]
        + healthy_shift[:, None] * (group == "healthy")[None, :]
        + age_effect[:, None] * age_z[None, :]
        + sex_effect[:, None] * is_male[None, :]
        + loading[:, None] * neutrophil_z[None, :]
    )
    size_factors = np.exp(rng.normal(0.0, 0.25, size=n_samples))
    mu = np.exp2(log2_mu) * size_factors[None, :]
    # NB(mean mu, dispersion a): Gamma-Poisson mixture with shape 1/a and scale a*mu.
    shape = 1.0 / dispersion[:, None]
    lam = rng.gamma(shape, mu / shape)
    counts = rng.poisson(lam).astype(np.int64)

    counts_df = pd.DataFrame(counts, index=pd.Index(genes, name="gene"), columns=samples["sample_id"])
    # The marginal severe-vs-mild effect a model without the neutrophil level estimates: direct effect
    # plus composition (loading x expected shift in neutrophil level).
    marginal = lfc + loading * spec.neutrophil_shift
    truth = pd.DataFrame(
        {
            "gene": genes,
            "true_log2FoldChange": marginal,
            "direct_log2FoldChange": lfc,
            "neutrophil_loading": loading,
            "is_de": marginal != 0.0,
            "base_mean": base_mean,
            "dispersion": dispersion,
        }
    )
    return DemoCohort(counts=counts_df, samples=samples, truth=truth)


def write_demo(cohort: DemoCohort, counts_path: Path, samples_path: Path, truth_path: Path) -> None:
    """Write the three demo files; gzip output is byte-reproducible (no timestamp in the header)."""
    for p in (counts_path, samples_path, truth_path):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    cohort.counts.to_csv(
        counts_path, sep="\t", compression={"method": "gzip", "mtime": 0}, lineterminator="\n"
    )
    cohort.samples.to_csv(samples_path, sep="\t", index=False, lineterminator="\n")
    cohort.truth.to_csv(truth_path, sep="\t", index=False, float_format="%.6g", lineterminator="\n")
