"""Write the seeded demo cohort (counts, sample sheet, planted truth)."""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)
import pandas as pd

from il6axis.acquire.demo import DemoSpec, simulate, write_demo
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]) as log:
    named = [
        *pd.read_csv(smk.input.panel, sep="\t")["symbol"],
        *pd.read_csv(smk.input.markers, sep="\t")["symbol"],
    ]
    spec = DemoSpec.from_config(smk.params.demo)
    cohort = simulate(named, spec)
    write_demo(cohort, smk.output.counts, smk.output.samples, smk.output.truth)
    log.info(
        "demo cohort: %d genes x %d samples, %d planted DE genes (seed %d)",
        *cohort.counts.shape,
        int(cohort.truth["is_de"].sum()),
        spec.seed,
    )
