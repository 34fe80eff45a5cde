"""Collect the per-file download records into results/downloads/manifest.tsv."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from il6axis.acquire import merge_records  # noqa: E402
from il6axis.runlog import logged  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]) as log:
    merge_records(list(smk.input.records), smk.output[0])
    log.info("manifest of %d downloaded files written", len(smk.input.records))
