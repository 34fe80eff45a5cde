"""Get the FASTQ files of one run the workflow downloads (``ena`` or ``sra``), with a record per file.

The file names are fixed here so the download rule, the QC rule that reads them and the manifest
agree: ``<run>_1.fastq.gz`` and ``<run>_2.fastq.gz`` for paired-end runs, ``<run>.fastq.gz`` for
single-end runs. Local runs are never fetched or copied: the workflow reads the user's files in place.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from il6axis.acquire.download import FetchResult, SleepFn
from il6axis.acquire.download_records import write_manifest
from il6axis.errors import InputError
from il6axis.reads.ena import fetch_ena_run
from il6axis.reads.fastq_sra import fetch_sra_run
from il6axis.reads.runs import Run

__all__ = ["download_names", "downloaded_paths", "fastq_paths", "fetch_run", "find_run", "write_records"]


def download_names(run: str, layout: str) -> list[str]:
    """File names of a downloaded run: two mates for ``paired``, one file for ``single``."""
    if layout == "paired":
        return [f"{run}_1.fastq.gz", f"{run}_2.fastq.gz"]
    if layout == "single":
        return [f"{run}.fastq.gz"]
    raise ValueError(f"unknown layout {layout!r}; expected paired or single")


def fastq_paths(run: Run, fastq_dir: str) -> list[str]:
    """The FASTQ files of a run as QC reads them: the user's own files, or ``<fastq_dir>/<run>/<name>``."""
    if run.source == "local":
        return list(run.fastq)
    return [f"{fastq_dir}/{run.run}/{name}" for name in download_names(run.run, run.layout)]


def downloaded_paths(runs_by_cohort: Mapping[str, Sequence[Run]], fastq_dir: str) -> list[str]:
    """Every file the workflow downloads for these runs (local runs add nothing), sorted, once each."""
    return sorted(
        {
            path
            for runs in runs_by_cohort.values()
            for run in runs
            if run.source != "local"
            for path in fastq_paths(run, fastq_dir)
        }
    )


def find_run(run_id: str, runs_by_cohort: Mapping[str, Sequence[Run]]) -> Run:
    """The run with this ID among the cohorts' runs.

    A run may belong to several cohorts (the same library analysed twice) as long as its layout,
    download and files agree: it is fetched and trimmed once.
    """
    found = {cohort: run for cohort, runs in runs_by_cohort.items() for run in runs if run.run == run_id}
    if not found:
        raise InputError(f"run {run_id} is in the run table of no enabled cohort with counts.source: reads")
    if len({(r.layout, r.source, r.fastq) for r in found.values()}) > 1:
        raise InputError(
            f"run {run_id} has another layout, download or files in cohorts {', '.join(sorted(found))}. "
            "Fix: make their run tables (cohorts.<name>.counts.reads.runs) agree."
        )
    return next(iter(found.values()))


def fetch_run(
    run: str,
    layout: str,
    source: str,
    dests: Sequence[str | Path],
    source_settings: Mapping[str, Any],
    download_settings: Mapping[str, Any],
    sleep: SleepFn = time.sleep,
) -> list[FetchResult]:
    """Fetch run ``run`` into ``dests`` from ENA (``source`` ena) or with fasterq-dump (``source`` sra).

    ``source_settings`` is the config block ``reads.ena`` or ``reads.sra``; ``download_settings`` the
    block ``download`` (retries, backoff_s, timeout_s). Only what decides the files is passed (not the
    sample name), so a renamed sample does not fetch the run again.
    """
    names = download_names(run, layout)
    if [Path(d).name for d in dests] != names:
        raise ValueError(f"run {run}: destinations {list(map(str, dests))} should be named {names}")
    if source == "ena":
        return fetch_ena_run(run, layout, dests, source_settings, download_settings, sleep)
    if source == "sra":
        return fetch_sra_run(run, layout, dests, source_settings, download_settings, sleep)
    raise ValueError(f"run {run} has source {source!r}: only ena and sra runs are downloaded")


def write_records(results: Sequence[FetchResult], record_paths: Sequence[str | Path]) -> None:
    """One manifest record (file, url, sha256, bytes, attempts) per downloaded file, for the manifest rule."""
    for result, record in zip(results, record_paths, strict=True):
        write_manifest([result], record)
