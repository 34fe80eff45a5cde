"""Neutrophil-score-adjusted DE beside the primary fit (sensitivity analysis; skipped for PBMC)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anndata as ad  # noqa: E402
import pandas as pd  # noqa: E402

from il6axis.cohort_analysis import run_composition  # noqa: E402
from il6axis.de import settings_from_params  # noqa: E402
from il6axis.runlog import logged  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    settings = settings_from_params(smk.params, smk.threads, lfc_shrink=False)
    run_composition(
        analysis=ad.read_h5ad(smk.input.h5ad),
        primary=pd.read_csv(smk.input.de, sep="\t"),
        settings=settings,
        alpha=smk.params.alpha,
        adjusted_path=smk.output.adjusted,
        comparison_path=smk.output.comparison,
        status_path=smk.output.status,
    )
