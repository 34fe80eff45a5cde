"""Streamed QC and donor x cell-type pseudobulk of one single-cell cohort."""

from pathlib import Path

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)

from il6axis.runlog import logged
from il6axis.singlecell.build import run_pseudobulk

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    run_pseudobulk(
        name=smk.wildcards.cohort,
        spec=smk.params.spec,
        h5ad_path=smk.input.h5ad,
        panel_path=smk.input.panel,
        outdir=Path(smk.output.qc_summary).parent,
        donor_sheet_path=smk.input.donor_sheet,
    )
