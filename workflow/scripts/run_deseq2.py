"""Severe vs mild for one cohort: genome-wide table, IL-6 panel table, panel stability, run summary."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anndata as ad  # noqa: E402
import pandas as pd  # noqa: E402

from il6axis.de import run_and_write, settings_from_params  # noqa: E402
from il6axis.runlog import logged  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    settings = settings_from_params(smk.params, smk.threads)
    run_and_write(
        adata=ad.read_h5ad(smk.input.h5ad),
        panel=pd.read_csv(smk.input.panel, sep="\t"),
        covariates=smk.params.covariates,
        settings=settings,
        cohort=smk.wildcards.cohort,
        results_path=smk.output.results,
        panel_path=smk.output.panel,
        summary_path=smk.output.summary,
        stability_path=smk.output.stability,
    )
