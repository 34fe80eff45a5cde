"""Fetch the first of a cohort's count sources whose file exists; write it, its record and the choice."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from il6axis.acquire import fetch_first_available, write_choice  # noqa: E402
from il6axis.download import write_manifest  # noqa: E402
from il6axis.runlog import logged  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    result, choice = fetch_first_available(
        smk.wildcards.cohort,
        smk.params.sources,
        smk.output.file,
        smk.params.settings,
        accession=smk.params.accession,
    )
    write_manifest([result], smk.output.record)
    write_choice(choice, smk.output.choice)
