"""Choose where one GEO / NCBI file comes from (public host, mirror URL or local directory) and get it.

The download rules call :func:`retrieve` with the file's kind, accession and name plus the ``download``
config block; it builds the URL (or the path inside ``download.local_dir``), applies the header check for
that kind of file, enforces an expected checksum when the config gives one, and writes a one-line record
(file, url, sha256, bytes, attempts) that the manifest rule collects.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from il6axis import download as dl

log = logging.getLogger("il6axis.acquire")

# First line each kind of file must start with; anything else is a wrong file or an error page.
HEADER_PREFIX = {
    dl.KIND_SERIES_MATRIX: "!Series_title",
    dl.KIND_NCBI_COUNTS: "GeneID",
    dl.KIND_GENE_INFO: "#tax_id",
}


def source_url(kind: str, accession: str | None, filename: str | None, settings: Mapping[str, Any]) -> str:
    """The URL of a file on the configured hosts (public NCBI by default, or a mirror)."""
    if kind == dl.KIND_SERIES_MATRIX:
        return dl.series_matrix_url(accession, settings["geo_base"])
    if kind == dl.KIND_NCBI_COUNTS:
        return dl.ncbi_counts_url(accession, settings["geo_download_base"])
    if kind == dl.KIND_SUPPLEMENTARY:
        return dl.supplementary_url(accession, filename, settings["geo_base"])
    if kind == dl.KIND_GENE_INFO:
        return dl.gene_info_url(settings["ncbi_gene_base"])
    raise ValueError(f"unknown kind of file {kind!r}; expected one of {dl.KINDS}")


def retrieve(
    kind: str,
    dest: str | Path,
    settings: Mapping[str, Any],
    *,
    accession: str | None = None,
    filename: str | None = None,
    expected_sha256: str | None = None,
) -> dl.FetchResult:
    """Download (or copy from ``settings['local_dir']``) one file, verified and written atomically."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    prefix = HEADER_PREFIX.get(kind)
    header_check = dl.expect_first_line_prefix(prefix) if prefix else None
    local_dir = settings.get("local_dir")
    if local_dir:
        src = Path(local_dir) / dl.local_relpath(kind, accession, filename)
        log.info("copying %s from local directory %s", src.name, local_dir)
        return dl.copy_local(src, dest, expected_sha256=expected_sha256, header_check=header_check)
    url = source_url(kind, accession, filename, settings)
    return dl.fetch(
        url,
        dest,
        expected_sha256=expected_sha256,
        header_check=header_check,
        retries=int(settings["retries"]),
        backoff_s=float(settings["backoff_s"]),
        timeout_s=float(settings["timeout_s"]),
    )


def merge_records(record_paths: list[str | Path], manifest_path: str | Path) -> None:
    """Combine the per-file records into ``results/downloads/manifest.tsv`` (sorted by file)."""
    rows = [row for path in record_paths for row in dl.read_manifest(path)]
    results = [
        dl.FetchResult(
            url=r["url"], path=Path(r["file"]), sha256=r["sha256"], n_bytes=r["bytes"], attempts=r["attempts"]
        )
        for r in sorted(rows, key=lambda r: r["file"])
    ]
    dl.write_manifest(results, manifest_path)
