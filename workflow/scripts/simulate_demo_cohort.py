"""Write the seeded demo cohort (counts, sample sheet, planted truth)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from il6axis.demo import DemoSpec, simulate, write_demo  # noqa: E402
from il6axis.runlog import logged  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]) as log:
    named = [
        *pd.read_csv(smk.input.panel, sep="\t")["symbol"],
        *pd.read_csv(smk.input.markers, sep="\t")["symbol"],
    ]
    n = smk.params.n_per_group
    spec = DemoSpec(
        n_genes=smk.params.n_genes, n_severe=n, n_mild=n, n_healthy=max(2, n // 2), seed=smk.params.seed
    )
    cohort = simulate(named, spec)
    write_demo(cohort, smk.output.counts, smk.output.samples, smk.output.truth)
    log.info(
        "demo cohort: %d genes x %d samples, %d planted DE genes (seed %d)",
        *cohort.counts.shape,
        int(cohort.truth["is_de"].sum()),
        spec.seed,
    )
