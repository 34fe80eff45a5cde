"""Neutrophil-score-adjusted DE beside the primary fit (sensitivity analysis; skipped for PBMC)."""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)
import anndata as ad
import pandas as pd

from il6axis.analysis.composition import run_composition
from il6axis.de.contract import DeSettings
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    settings = DeSettings.from_params(smk.params, smk.threads, lfc_shrink=False)
    run_composition(
        analysis=ad.read_h5ad(smk.input.h5ad),
        primary=pd.read_csv(smk.input.de, sep="\t"),
        settings=settings,
        alpha=smk.params.alpha,
        adjusted_path=smk.output.adjusted,
        comparison_path=smk.output.comparison,
        status_path=smk.output.status,
    )
