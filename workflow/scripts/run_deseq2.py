"""Severe vs mild for one cohort: genome-wide table, IL-6 panel table, panel stability, run summary."""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)
import anndata as ad
import pandas as pd

from il6axis.de.contract import DeSettings
from il6axis.de.outputs import run_and_write
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    settings = DeSettings.from_params(smk.params, smk.threads)
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
