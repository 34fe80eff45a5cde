"""QC and trim one sequencing run with fastp, checking its FASTQ files (complete gzip, paired counts)."""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)

from il6axis.reads.fastp import run_fastp
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    run_fastp(
        smk.wildcards.run,
        list(smk.input.reads),
        smk.output.trimmed,
        smk.output.json,
        smk.output.html,
        smk.threads,
        smk.params.extra_args,
        log_path=smk.log[0],
    )
