"""Collect the per-file download records into results/downloads/manifest.tsv."""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)

from il6axis.acquire.download_records import merge_records
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]) as log:
    merge_records(list(smk.input.records), smk.output[0])
    log.info("manifest of %d downloaded files written", len(smk.input.records))
