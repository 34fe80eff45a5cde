"""Fetch one GEO / NCBI file (or copy it from download.local_dir), verified, plus its manifest record."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from il6axis.acquire import retrieve  # noqa: E402
from il6axis.download import write_manifest  # noqa: E402
from il6axis.runlog import logged  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    result = retrieve(
        smk.params.kind,
        smk.output.file,
        smk.params.settings,
        accession=smk.wildcards.get("accession"),
        filename=smk.wildcards.get("file"),
        expected_sha256=smk.params.sha256,
        config_key=smk.params.get("config_key"),
    )
    write_manifest([result], smk.output.record)
