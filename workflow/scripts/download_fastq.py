"""Fetch the FASTQ files of one run (ENA, or fasterq-dump), verified, plus one manifest record per file."""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)

from il6axis.reads.fastq_fetch import fetch_run, write_records
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

# Outputs are named fastq / record (single-end) or fastq_1, fastq_2 / record_1, record_2 (paired-end).
fastq = [smk.output[key] for key in sorted(smk.output.keys()) if key.startswith("fastq")]
records = [smk.output[key] for key in sorted(smk.output.keys()) if key.startswith("record")]

with logged(smk.log[0]):
    results = fetch_run(
        smk.wildcards.run,
        smk.params.layout,
        smk.params.source,
        fastq,
        smk.params.settings,
        smk.params.download,
    )
    write_records(results, records)
