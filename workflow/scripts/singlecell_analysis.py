"""Per cell type: pydeseq2 severe vs mild on donor pseudobulk, panel and pathway tables, figures."""

from pathlib import Path

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)
import pandas as pd

from il6axis.analysis.genesets import load_gene_sets
from il6axis.de.contract import DeSettings
from il6axis.runlog import logged
from il6axis.singlecell.analysis import analyse_celltypes

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    gene_sets = load_gene_sets(
        Path(smk.params.resources_dir),
        list(smk.params.user_files),
        panel_path=smk.input.panel,
        markers_path=smk.input.markers,
    )
    settings = DeSettings.from_params(smk.params, smk.threads, lfc_shrink=False)
    # Writes de/, pathway tables and cell_types_analysed.tsv under outdir, figures under plots_dir.
    analyse_celltypes(
        name=smk.wildcards.cohort,
        outdir=smk.params.outdir,
        panel=pd.read_csv(smk.input.panel, sep="\t"),
        gene_sets={name: list(gs.genes) for name, gs in gene_sets.items()},
        de_settings=settings,
        plots_dir=smk.output.plots,
    )
