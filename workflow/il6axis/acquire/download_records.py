"""Download records and the manifest: which file came from where, with what sha256, after how many attempts.

Each download rule writes a one-line record beside its file; rule ``download_manifest`` merges them into
``results/downloads/manifest.tsv``, which records exactly what was analysed (for provenance and for
pinning checksums in config).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from il6axis.acquire.download import FetchResult, write_text_atomic

MANIFEST_COLUMNS = ("file", "url", "sha256", "bytes", "attempts")


def write_manifest(results: Iterable[FetchResult], path: str | os.PathLike[str]) -> None:
    """Write a TSV manifest (columns ``file, url, sha256, bytes, attempts``) atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for r in results:
        writer.writerow([str(r.path), r.url, r.sha256, r.n_bytes, r.attempts])
    write_text_atomic(path, buffer.getvalue())


def read_manifest(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a manifest written by :func:`write_manifest`; ``bytes`` and ``attempts`` become ints."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
            raise ValueError(
                f"{path}: not a download manifest (columns {reader.fieldnames}, expected {MANIFEST_COLUMNS})"
            )
        rows: list[dict[str, Any]] = []
        for row in reader:
            row["bytes"] = int(row["bytes"])
            row["attempts"] = int(row["attempts"])
            rows.append(row)
    return rows


def merge_records(record_paths: list[str | Path], manifest_path: str | Path) -> None:
    """Combine the per-file records into ``results/downloads/manifest.tsv`` (sorted by file)."""
    rows = [row for path in record_paths for row in read_manifest(path)]
    results = [
        FetchResult(
            url=r["url"], path=Path(r["file"]), sha256=r["sha256"], n_bytes=r["bytes"], attempts=r["attempts"]
        )
        for r in sorted(rows, key=lambda r: r["file"])
    ]
    write_manifest(results, manifest_path)
