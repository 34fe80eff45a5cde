"""FASTQ files of one sequencing run from the European Nucleotide Archive (ENA), md5-checked.

ENA mirrors every public SRA / ENA / DDBJ run and serves FASTQ files it generated from them. Two
requests per run:

1. the Portal API file report,
   ``{portal_base}/filereport?accession=<run>&result=read_run&fields=run_accession,fastq_ftp,fastq_md5,
   fastq_bytes,library_layout&format=tsv``: a header line and one row per run, where ``fastq_ftp``,
   ``fastq_md5`` and ``fastq_bytes`` list the run's files separated by ``;``;
2. each FASTQ file, under ``vol1/fastq/`` of ``ftp.sra.ebi.ac.uk`` (also served over HTTPS):
   ``vol1/fastq/<first 6 characters>/<subfolder>/<run>/<run>_1.fastq.gz`` (see :func:`fastq_dir`).

A paired-end run has ``<run>_1`` and ``<run>_2`` and sometimes ``<run>.fastq.gz`` with reads whose mate
was lost, which is not used (the pairs are what is quantified); a single-end run has ``<run>.fastq.gz``
(rarely ``<run>_1.fastq.gz``). The report's paths are used as given, with their host replaced by the
configured ``fastq_base`` (a mirror, or the tests' local server).

Each file goes through the project's GEO download machinery (:func:`il6axis.acquire.download.fetch`:
retries with backoff, an HTML page is an error, the whole gzip stream must decode, atomic write) and is
then checked against ENA's md5: a mismatch is an error and leaves no file. A run ENA does not have (an
empty file report, HTTP 404, or no FASTQ files listed) stops with a message naming the run and the way
out: ``download: sra`` (fasterq-dump) or local files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from il6axis.acquire.download import (
    DownloadError,
    DownloadSettings,
    FetchResult,
    MissingFileError,
    SleepFn,
    fetch,
)
from il6axis.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_PORTAL_BASE = "https://www.ebi.ac.uk/ena/portal/api"
DEFAULT_FASTQ_BASE = "https://ftp.sra.ebi.ac.uk"
REPORT_FIELDS = ("run_accession", "fastq_ftp", "fastq_md5", "fastq_bytes", "library_layout")
FASTQ_FIRST_CHAR = "@"
_CHUNK = 1 << 20


class RunNotInEnaError(MissingFileError):
    """ENA has no FASTQ files for a run (unknown accession, or reads it could not convert)."""


@dataclass(frozen=True)
class EnaFile:
    """One FASTQ file of a run as ENA's file report lists it."""

    name: str
    url: str
    md5: str
    n_bytes: int | None


# --------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------


def filereport_url(run: str, portal_base: str = DEFAULT_PORTAL_BASE) -> str:
    """Portal API URL of a run's file report (TSV with the fields of :data:`REPORT_FIELDS`)."""
    query = urllib.parse.urlencode(
        {"accession": run, "result": "read_run", "fields": ",".join(REPORT_FIELDS), "format": "tsv"},
        safe=",",
    )
    return f"{portal_base.rstrip('/')}/filereport?{query}"


def fastq_dir(run: str) -> str:
    """ENA's folder of a run's FASTQ files, e.g. ``SRR18280823`` -> ``vol1/fastq/SRR182/023/SRR18280823``.

    The first folder is the accession's first six characters. A second folder depends on the number of
    digits: none for six, ``00`` + the last digit for seven, ``0`` + the last two for eight, the last
    three for nine or more.
    """
    digits = len(run) - 3
    if digits < 6 or not run[3:].isdigit():
        raise ValueError(f"{run!r} is not a run accession (three letters and at least six digits)")
    sub = "" if digits == 6 else "/" + run[-min(digits - 6, 3) :].rjust(3, "0")
    return f"vol1/fastq/{run[:6]}{sub}/{run}"


def fastq_url(report_path: str, fastq_base: str = DEFAULT_FASTQ_BASE) -> str:
    """URL of a file listed in ``fastq_ftp`` (``host/vol1/fastq/...``, scheme optional) on ``fastq_base``."""
    path = report_path.split("://", 1)[-1]
    _host, _, rest = path.partition("/")
    if not rest:
        raise ValueError(f"{report_path!r} is not a host/path entry of ENA's fastq_ftp field")
    return f"{fastq_base.rstrip('/')}/{urllib.parse.quote(rest)}"


# --------------------------------------------------------------------------------------------
# The file report
# --------------------------------------------------------------------------------------------


def _not_in_ena(run: str, why: str) -> RunNotInEnaError:
    return RunNotInEnaError(
        f"run {run}: ENA has no FASTQ files for it ({why}). Fix: check the run accession in the run table; "
        "if ENA lacks the run, set `download: sra` for the cohort (sra-tools fasterq-dump reads it from "
        "NCBI SRA), or give files you already have in the fastq_1 / fastq_2 columns of a sample sheet."
    )


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(";")] if value.strip() else []


def parse_filereport(text: str, run: str, fastq_base: str = DEFAULT_FASTQ_BASE) -> tuple[str, list[EnaFile]]:
    """(ENA's library layout in lower case, files) of ``run`` from a file report's TSV text.

    Raises :class:`RunNotInEnaError` when the report is empty or lists no FASTQ files for the run.
    """
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    if not text.strip() or not rows:
        raise _not_in_ena(run, "the file report is empty")
    missing = [f for f in ("run_accession", "fastq_ftp", "fastq_md5") if f not in (rows[0].keys())]
    if missing:
        raise DownloadError(
            f"run {run}: ENA's file report lacks the field(s) {', '.join(missing)}; its header is "
            f"{list(rows[0].keys())}. Fix: check reads.ena.portal_base (the Portal API may have changed)."
        )
    row = next((r for r in rows if r["run_accession"] == run), None)
    if row is None:
        listed = ", ".join(r["run_accession"] for r in rows[:5])
        raise _not_in_ena(run, f"the file report lists other runs: {listed}")
    paths = _split(row["fastq_ftp"])
    if not paths:
        raise _not_in_ena(run, "the file report lists the run with no FASTQ files")
    md5s = _split(row["fastq_md5"])
    sizes = _split(row.get("fastq_bytes") or "")
    if len(md5s) != len(paths) or (sizes and len(sizes) != len(paths)):
        raise DownloadError(
            f"run {run}: ENA's file report lists {len(paths)} file(s) but {len(md5s)} md5(s) and "
            f"{len(sizes)} size(s), so the files cannot be verified. Fix: retry later; if it persists use "
            "`download: sra`."
        )
    files = []
    for index, (path, md5) in enumerate(zip(paths, md5s, strict=True)):
        name = path.rsplit("/", 1)[-1]
        n_bytes = int(sizes[index]) if sizes and sizes[index].isdigit() else None
        files.append(EnaFile(name=name, url=fastq_url(path, fastq_base), md5=md5.lower(), n_bytes=n_bytes))
    layout = (row.get("library_layout") or "").strip().lower()
    return layout, files


def select_files(run: str, layout: str, ena_layout: str, files: Sequence[EnaFile]) -> list[EnaFile]:
    """The files to fetch for ``layout``: ``_1`` and ``_2`` for paired, the one read file for single.

    A layout that contradicts ENA's files is an :class:`InputError` (the run table is probably wrong).
    """
    by_name = {f.name: f for f in files}
    mates = [by_name.get(f"{run}_1.fastq.gz"), by_name.get(f"{run}_2.fastq.gz")]
    fix = "Fix: correct the run's layout in the run table (cohorts.<name>.counts.reads.runs)"
    listed = ", ".join(by_name) or "none"
    if layout == "paired":
        if mates[0] is None or mates[1] is None:
            raise InputError(
                f"run {run}: the run table says paired-end but ENA has no {run}_1 / {run}_2 pair (files: "
                f"{listed}; ENA layout {ena_layout or 'not given'}). {fix}, or use `download: sra`."
            )
        unpaired = by_name.get(f"{run}.fastq.gz")
        if unpaired is not None:
            log.info("run %s: %s (reads whose mate was lost) is not used", run, unpaired.name)
        return [mates[0], mates[1]]
    if mates[1] is not None:
        raise InputError(
            f"run {run}: the run table says single-end but ENA has two mate files (files: {listed}; ENA "
            f"layout {ena_layout or 'not given'}). {fix}."
        )
    single = by_name.get(f"{run}.fastq.gz") or mates[0]
    if single is None:
        raise InputError(
            f"run {run}: ENA lists no {run}.fastq.gz or {run}_1.fastq.gz (files: {listed}). {fix}."
        )
    return [single]


def _report_header_ok(first_line: str) -> str | None:
    """An empty report (run unknown) or one starting with ENA's field names; anything else is wrong."""
    if not first_line or first_line.startswith(REPORT_FIELDS[0]):
        return None
    return f"a file report should start with {REPORT_FIELDS[0]!r} but starts with {first_line[:80]!r}"


def _transport(download: Mapping[str, Any]) -> dict[str, Any]:
    """Retry policy of the ``download`` config block, as keyword arguments of ``fetch``."""
    settings = DownloadSettings.from_config(download)
    return {"retries": settings.retries, "backoff_s": settings.backoff_s, "timeout_s": settings.timeout_s}


def fetch_filereport(
    run: str, workdir: Path, ena: Mapping[str, Any], download: Mapping[str, Any], sleep: SleepFn = time.sleep
) -> str:
    """The file report text of ``run`` (retried like any download); RunNotInEnaError for an unknown run."""
    url = filereport_url(run, ena.get("portal_base", DEFAULT_PORTAL_BASE))
    tmp = workdir / f".{run}.filereport.tsv"
    try:
        fetch(
            url, tmp, expect_gzip=False, header_check=_report_header_ok, sleep=sleep, **_transport(download)
        )
        text = tmp.read_text(encoding="utf-8")
    except MissingFileError as exc:
        raise _not_in_ena(run, f"HTTP {exc.status} for the file report {url}") from exc
    except DownloadError as exc:
        if exc.status == 400:  # the Portal API refuses the accession itself
            raise _not_in_ena(run, f"HTTP {exc.status} for the file report {url}") from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)
    log.info("run %s: ENA file report %s:\n%s", run, url, text.rstrip())
    return text


# --------------------------------------------------------------------------------------------
# FASTQ files
# --------------------------------------------------------------------------------------------


def file_md5(path: Path) -> str:
    """Hex md5 of a file (ENA publishes md5s, not sha256s)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fastq_header_ok(first_line: str) -> str | None:
    if first_line.startswith(FASTQ_FIRST_CHAR):
        return None
    return f"a FASTQ file should start with '@' but starts with {first_line[:80]!r}"


def fetch_fastq(
    file: EnaFile, dest: Path, download: Mapping[str, Any], sleep: SleepFn = time.sleep
) -> FetchResult:
    """Download one ENA FASTQ to ``dest``, gzip and md5 verified; ``dest`` exists only if both pass."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    pending = dest.with_name(f".md5-pending-{dest.name}")
    try:
        result = fetch(
            file.url,
            pending,
            expect_gzip=True,
            header_check=_fastq_header_ok,
            sleep=sleep,
            **_transport(download),
        )
        md5 = file_md5(pending)
        if md5 != file.md5:
            size = f"{result.n_bytes} bytes" + (
                f", ENA lists {file.n_bytes}" if file.n_bytes is not None else ""
            )
            raise DownloadError(
                f"md5 mismatch for {file.url}: ENA lists {file.md5}, the download has {md5} ({size}); the "
                "file was deleted. Fix: run again (the copy on ENA's server or on the way was damaged); if "
                "it persists, set `download: sra` for the cohort or report it to ENA."
            )
        os.replace(pending, dest)
    finally:
        pending.unlink(missing_ok=True)
    log.info("%s: md5 %s matches ENA", dest, md5)
    return replace(result, path=dest)


def fetch_ena_run(
    run: str,
    layout: str,
    dests: Sequence[str | Path],
    ena: Mapping[str, Any],
    download: Mapping[str, Any],
    sleep: SleepFn = time.sleep,
) -> list[FetchResult]:
    """Fetch the FASTQ files of ``run`` into ``dests`` (two for paired, one for single); one record each.

    ``ena`` is the config block ``reads.ena`` (portal_base, fastq_base); ``download`` supplies retries,
    backoff_s and timeout_s. On any error no destination file is left behind.
    """
    dests = [Path(d) for d in dests]
    expected = 2 if layout == "paired" else 1
    if len(dests) != expected:
        raise ValueError(f"run {run}: {layout} layout needs {expected} destination(s), got {len(dests)}")
    dests[0].parent.mkdir(parents=True, exist_ok=True)
    text = fetch_filereport(run, dests[0].parent, ena, download, sleep)
    ena_layout, files = parse_filereport(text, run, ena.get("fastq_base", DEFAULT_FASTQ_BASE))
    chosen = select_files(run, layout, ena_layout, files)
    results: list[FetchResult] = []
    try:
        for file, dest in zip(chosen, dests, strict=True):
            results.append(fetch_fastq(file, dest, download, sleep))
    except BaseException:
        # The mates are one unit: without its partner a finished mate is of no use.
        for dest in dests:
            dest.unlink(missing_ok=True)
        raise
    return results


__all__ = [
    "DEFAULT_FASTQ_BASE",
    "DEFAULT_PORTAL_BASE",
    "EnaFile",
    "RunNotInEnaError",
    "fastq_dir",
    "fastq_url",
    "fetch_ena_run",
    "fetch_fastq",
    "fetch_filereport",
    "filereport_url",
    "parse_filereport",
    "select_files",
]
