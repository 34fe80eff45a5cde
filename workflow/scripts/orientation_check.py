"""Orientation check: do neutrophil markers go up and MHC-II down in severe, as expected?"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from il6axis.cohort_analysis import run_orientation  # noqa: E402
from il6axis.genesets import tables_under_test  # noqa: E402
from il6axis.orientation import load_markers  # noqa: E402
from il6axis.runlog import logged  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    summary = json.loads(Path(smk.input.summary).read_text())
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
