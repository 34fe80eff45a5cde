"""Fetch the first of a cohort's count sources whose file exists; write it, its record and the choice."""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)

from il6axis.acquire.download import DownloadSettings
from il6axis.acquire.download_records import write_manifest
from il6axis.acquire.sources import fetch_first_available, write_choice
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    result, choice = fetch_first_available(
        smk.wildcards.cohort,
        smk.params.sources,
        smk.output.file,
        DownloadSettings.from_config(smk.params.settings),
        accession=smk.params.accession,
    )
    write_manifest([result], smk.output.record)
    write_choice(choice, smk.output.choice)
