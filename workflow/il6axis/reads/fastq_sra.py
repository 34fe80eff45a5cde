"""FASTQ files of one run with sra-tools ``fasterq-dump``, for runs ENA lacks (config ``download: sra``).

``fasterq-dump`` fetches the run from NCBI SRA and writes plain FASTQ. It runs in a scratch folder next
to the destination (its own temporary files included), and each file is then gzipped into place via a
``.partial-*`` file and ``os.replace``, so a destination exists only when complete.

Splitting: ``--split-3``, fasterq-dump's default made explicit. Mates stay in step in ``<run>_1`` /
``<run>_2``, and reads whose mate is missing go to ``<run>.fastq``, which is left out (logged with its
read count), the same split as ENA's FASTQ files. ``--split-files`` would put such reads into ``_1`` or
``_2`` alone and shift every later pair. The two mate files must then hold the same number of reads.

A failing fasterq-dump (network, disk) is retried like an HTTP download (``download.retries`` attempts,
backoff doubling from ``download.backoff_s``); a missing executable stops at once with the fix.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from il6axis.acquire.download import DownloadError, DownloadSettings, FetchResult, SleepFn

log = logging.getLogger(__name__)

DEFAULT_EXECUTABLE = "fasterq-dump"
# Plain files are compressed once, for the QC step that reads them and deletes them (temp): speed
# matters more than size.
GZIP_LEVEL = 1
_CHUNK = 1 << 20
_STDERR_TAIL = 2000

__all__ = ["DEFAULT_EXECUTABLE", "fasterq_dump_command", "fetch_sra_run", "gzip_fastq"]


def fasterq_dump_command(
    run: str, outdir: str | Path, tmpdir: str | Path, threads: int = 1, executable: str = DEFAULT_EXECUTABLE
) -> list[str]:
    """The fasterq-dump command writing ``run``'s FASTQ into ``outdir`` (temporary files in ``tmpdir``)."""
    return [
        executable,
        run,
        "--split-3",
        "--outdir",
        str(outdir),
        "--temp",
        str(tmpdir),
        "--threads",
        str(max(int(threads), 1)),
    ]


def _resolve_executable(executable: str) -> str:
    found = shutil.which(executable)
    if found is None:
        raise DownloadError(
            f"{executable!r} was not found (needed for runs with `download: sra`). Fix: install sra-tools "
            "(Debian/Ubuntu: apt-get install sra-toolkit; conda: the reads environment under envs/), point "
            "reads.sra.fasterq_dump at the executable, or set `download: ena`."
        )
    return found


def gzip_fastq(src: Path, dest: Path) -> tuple[str, int, int]:
    """Gzip a plain FASTQ into ``dest`` atomically; return (sha256 of the gzip, its bytes, reads).

    Reads are counted as lines / 4; a file that does not start with '@' or whose line count is not a
    multiple of four is an error (a cut-off or foreign file), and ``dest`` is not written.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".partial-", suffix="-" + dest.name)
    tmp = Path(tmp_name)
    lines = 0
    first = b""
    last = b"\n"
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL) as gz,
        ):
            with src.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    if not first:
                        first = chunk[:1]
                    lines += chunk.count(b"\n")
                    last = chunk[-1:]
                    gz.write(chunk)
        if last != b"\n":
            lines += 1
        if lines and (first != b"@" or lines % 4):
            raise DownloadError(
                f"{src}: not a complete FASTQ file ({lines} lines, first byte {first!r}). Fix: run the job "
                "again; if it persists, the run's SRA data are damaged: use `download: ena` or local files."
            )
        digest = hashlib.sha256()
        with tmp.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest.hexdigest(), dest.stat().st_size, lines // 4


def _dumped_files(run: str, layout: str, outdir: Path) -> list[Path]:
    """The files fasterq-dump wrote that are used for ``layout``, checked against the layout."""
    written = sorted(p.name for p in outdir.iterdir() if p.is_file())
    mates = [outdir / f"{run}_1.fastq", outdir / f"{run}_2.fastq"]
    unpaired = outdir / f"{run}.fastq"
    fix = "Fix: correct the run's layout in the run table (cohorts.<name>.counts.reads.runs)"
    if layout == "paired":
        if not (mates[0].is_file() and mates[1].is_file()):
            raise DownloadError(
                f"run {run}: the run table says paired-end but fasterq-dump wrote "
                f"{written or 'nothing'}. {fix}."
            )
        if unpaired.is_file():
            log.info("run %s: %s (reads whose mate is missing) is not used", run, unpaired.name)
        return mates
    if mates[1].is_file():
        raise DownloadError(
            f"run {run}: the run table says single-end but fasterq-dump wrote {written}. {fix}."
        )
    if unpaired.is_file():
        return [unpaired]
    if mates[0].is_file():
        return [mates[0]]
    raise DownloadError(f"run {run}: fasterq-dump wrote no FASTQ file ({written or 'nothing'}).")


def _run_fasterq_dump(command: list[str], run: str) -> None:
    log.info("running: %s", " ".join(command))
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    for stream in (proc.stdout, proc.stderr):
        if stream.strip():
            log.info("fasterq-dump: %s", stream.strip()[-_STDERR_TAIL:])
    if proc.returncode != 0:
        raise DownloadError(
            f"fasterq-dump failed for run {run} (exit status {proc.returncode}): "
            f"{proc.stderr.strip()[-_STDERR_TAIL:] or 'no message'}",
            retryable=True,
        )
    log.info("fasterq-dump finished run %s in %.1f s", run, time.monotonic() - started)


def fetch_sra_run(
    run: str,
    layout: str,
    dests: Sequence[str | Path],
    sra: Mapping[str, Any],
    download: Mapping[str, Any],
    sleep: SleepFn = time.sleep,
) -> list[FetchResult]:
    """Dump ``run`` with fasterq-dump and gzip its reads into ``dests`` (two for paired, one for single).

    ``sra`` is the config block ``reads.sra`` (fasterq_dump, threads); ``download`` gives retries and
    backoff_s. The record's URL is ``fasterq-dump:<run>``. On any error no destination file is left.
    """
    dests = [Path(d) for d in dests]
    expected = 2 if layout == "paired" else 1
    if len(dests) != expected:
        raise ValueError(f"run {run}: {layout} layout needs {expected} destination(s), got {len(dests)}")
    executable = _resolve_executable(str(sra.get("fasterq_dump", DEFAULT_EXECUTABLE)))
    policy = DownloadSettings.from_config(download)
    retries, backoff_s = policy.retries, policy.backoff_s
    if retries < 1:
        raise ValueError(f"download.retries must be >= 1, got {retries}")
    dests[0].parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries):
        scratch = Path(tempfile.mkdtemp(dir=dests[0].parent, prefix=f".sra-{Path(run).name}-"))
        try:
            outdir = scratch / "out"
            command = fasterq_dump_command(
                run, outdir, scratch / "tmp", int(sra.get("threads", 1)), executable
            )
            try:
                _run_fasterq_dump(command, run)
            except DownloadError as exc:
                if attempt + 1 >= retries:
                    raise DownloadError(
                        f"{exc} Gave up after {retries} attempt(s). Fix: check the network and the run "
                        "accession; retry later, or use `download: ena` or local files.",
                        retryable=False,
                    ) from exc
                wait = backoff_s * 2**attempt
                log.warning(
                    "attempt %d/%d for run %s failed: %s; retrying in %.3g s",
                    attempt + 1,
                    retries,
                    run,
                    exc,
                    wait,
                )
                sleep(wait)
                continue
            return _gzip_run(run, layout, outdir, dests, attempt + 1)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _gzip_run(run: str, layout: str, outdir: Path, dests: list[Path], attempts: int) -> list[FetchResult]:
    results = []
    reads = []
    try:
        for src, dest in zip(_dumped_files(run, layout, outdir), dests, strict=True):
            sha256, n_bytes, n_reads = gzip_fastq(src, dest)
            reads.append(n_reads)
            results.append(
                FetchResult(
                    url=f"fasterq-dump:{run}", path=dest, sha256=sha256, n_bytes=n_bytes, attempts=attempts
                )
            )
        if len(set(reads)) > 1:
            raise DownloadError(
                f"run {run}: fasterq-dump wrote {reads[0]} reads to {dests[0].name} but {reads[1]} to "
                f"{dests[1].name}; mates must pair up. Fix: run again; if it persists use `download: ena`."
            )
    except BaseException:
        for dest in dests:
            dest.unlink(missing_ok=True)
        raise
    log.info("run %s: %s reads per file from fasterq-dump", run, reads[0] if reads else 0)
    return results
