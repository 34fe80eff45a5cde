"""Fetch one GEO / NCBI file (or copy it from download.local_dir), verified, plus its manifest record."""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)

from il6axis.acquire.download import DownloadSettings
from il6axis.acquire.download_records import write_manifest
from il6axis.acquire.sources import retrieve
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    result = retrieve(
        smk.params.kind,
        smk.output.file,
        DownloadSettings.from_config(smk.params.settings),
        accession=smk.wildcards.get("accession"),
        filename=smk.wildcards.get("file"),
        expected_sha256=smk.params.sha256,
        config_key=smk.params.get("config_key"),
    )
    write_manifest([result], smk.output.record)
