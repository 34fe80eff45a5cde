"""Streamed QC and donor x cell-type pseudobulk of one single-cell cohort."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from il6axis.runlog import logged  # noqa: E402
from il6axis.singlecell import SingleCellSettings, build_pseudobulk, read_donor_sheet, write_pseudobulk  # noqa: E402

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
