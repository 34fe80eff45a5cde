"""Write the reads demo: synthetic transcriptome, paired FASTQs per run, run table, sample sheet, truth."""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)
import pandas as pd

from il6axis.reads.simulate import demo_design, simulate_and_write
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    named = [
        *pd.read_csv(smk.input.panel, sep="\t")["symbol"],
        *pd.read_csv(smk.input.markers, sep="\t")["symbol"],
    ]
    design = demo_design(smk.params.spec["n_per_group"], smk.params.spec["replicate_runs"])
    simulate_and_write(named, design, smk.params.spec, dict(smk.output))
