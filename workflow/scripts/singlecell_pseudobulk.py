"""Streamed QC and donor x cell-type pseudobulk of one single-cell cohort."""

from pathlib import Path

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)
import pandas as pd

from il6axis.runlog import logged
from il6axis.singlecell.analysis import (
    SingleCellSettings,
    build_pseudobulk,
    read_donor_sheet,
    write_pseudobulk,
)

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    spec = smk.params.spec
    block = spec["single_cell"]
    sheet = (
        read_donor_sheet(smk.input.donor_sheet, block["donor_sheet_column"]) if block["donor_sheet"] else None
    )
    result = build_pseudobulk(
        name=smk.wildcards.cohort,
        spec=spec,
        h5ad_path=smk.input.h5ad,
        settings=SingleCellSettings.from_config(block),
        plot_genes=pd.read_csv(smk.input.panel, sep="\t")["symbol"].tolist(),
        donor_sheet=sheet,
    )
    write_pseudobulk(result, Path(smk.output.qc_summary).parent)
