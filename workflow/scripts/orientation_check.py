"""Orientation check: do neutrophil markers go up and MHC-II down in severe, as expected?"""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)
import pandas as pd

from il6axis.analysis.genesets import tables_under_test
from il6axis.analysis.orientation import load_markers, run_orientation
from il6axis.jsonio import read_json
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    summary = read_json(smk.input.summary, what="DE summary", rule="deseq2", required=("tissue",))
    run_orientation(
        de_table=pd.read_csv(smk.input.de, sep="\t"),
        markers=load_markers(
            smk.input.markers,
            genes_under_test=tables_under_test(smk.params.resources_dir, panel_path=smk.input.panel),
        ),
        tissue=summary["tissue"],
        alpha=smk.params.alpha,
        cohort=smk.wildcards.cohort,
        table_path=smk.output.table,
        verdict_path=smk.output.verdict,
        fail_on_reversed=smk.params.fail_on_reversed,
    )
