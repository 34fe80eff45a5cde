"""Which sequencing runs make up a cohort's samples, read from a run table (config ``counts.reads``).

Two kinds of table are accepted, told apart by their columns rather than their file name (GEO's Run
Selector hands out ``SraRunTable.txt`` files that are comma-separated):

- a GEO/SRA ``SraRunTable`` (CSV with quoted fields): ``Run``, ``Sample Name`` (the GSM accession),
  ``LibraryLayout`` (``PAIRED`` / ``SINGLE``) and many more columns, which are ignored;
- a plain sample sheet (TSV or CSV): ``sample``, ``run``, ``layout`` and, for files already on disk,
  ``fastq_1`` / ``fastq_2``.

Either may be gzipped. Several rows may name the same sample: they are technical replicates (e.g. one
library sequenced on two lanes), quantified per run and summed per sample downstream. Every problem
(unknown layout, duplicate run, a run without a sample, a local FASTQ that does not exist, a paired run
without its second file, ...) raises :class:`~il6axis.errors.InputError` naming the file, the row, the
column and the fix: this runs when the workflow is parsed, before any job starts.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from il6axis.errors import InputError

log = logging.getLogger(__name__)

LAYOUTS = ("paired", "single")
SOURCES = ("ena", "sra", "local")
DOWNLOAD_DEFAULT = "ena"

# Column names looked for when the config leaves a column unset (null), in order; matched ignoring case.
RUN_COLUMNS = ("Run", "run", "run_accession")
SAMPLE_COLUMNS = ("Sample Name", "sample", "sample_id")
LAYOUT_COLUMNS = ("LibraryLayout", "layout", "library_layout")
FASTQ_COLUMNS = ("fastq_1", "fastq_2")

# INSDC run accessions (SRA / ENA / DDBJ): what ENA and fasterq-dump can fetch.
ACCESSION_RE = re.compile(r"^[SED]RR\d{6,}$")
# Run and sample IDs end up in file paths and Snakemake wildcards: keep them plain.
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
SAMPLE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Run:
    """One sequencing run: its ID, the sample it belongs to, its layout and where its reads come from.

    ``source`` is ``ena`` / ``sra`` (downloaded by the workflow) or ``local`` (files the user already
    has, listed in ``fastq``: one path for single-end, two for paired-end; empty for downloads).
    """

    run: str
    sample: str
    layout: str
    source: str
    fastq: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# Reading the table
# --------------------------------------------------------------------------------------------


def _read_text(path: Path, key: str) -> str:
    if not path.is_file():
        raise InputError(
            f"{key}: run table {path} does not exist. Fix: give the path of an SraRunTable (GEO's SRA Run "
            "Selector, 'Metadata' download) or of a sample sheet with sample, run and layout columns."
        )
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise InputError(
                f"{path}: gzip file is truncated or corrupt ({exc}). Fix: copy it again."
            ) from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc}). Fix: save the run table as UTF-8.") from exc


def _delimiter(header_line: str) -> str:
    """Tab when the header holds a tab (sample sheets), else comma (SraRunTable)."""
    return "\t" if "\t" in header_line else ","


def _find_column(
    header: Sequence[str], configured: str | None, candidates: Sequence[str], what: str, path: Path, key: str
) -> str:
    if configured is not None:
        if configured in header:
            return configured
        raise InputError(
            f"{path}: no column {configured!r} ({key}). The table has: {', '.join(header)}. "
            f"Fix: set {key} to the column holding the {what}."
        )
    lowered = {name.lower(): name for name in reversed(header)}
    for candidate in candidates:
        if candidate.lower() in lowered:
            return lowered[candidate.lower()]
    raise InputError(
        f"{path}: no {what} column (looked for {', '.join(map(repr, candidates))}). The table has: "
        f"{', '.join(header)}. Fix: set {key} to the column holding the {what}."
    )


def _rows(text: str, path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(header, [(line number, row)]) of a CSV/TSV text; blank lines are skipped."""
    first_line = text.split("\n", 1)[0]
    reader = csv.reader(io.StringIO(text), delimiter=_delimiter(first_line))
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    for fields in reader:
        if not any(f.strip() for f in fields):
            continue
        if header is None:
            header = [f.strip() for f in fields]
            continue
        if len(fields) > len(header):
            raise InputError(
                f"{path}, line {reader.line_num}: {len(fields)} fields but the header has {len(header)}. "
                "Fix: quote fields that contain the delimiter, or remove the extra fields."
            )
        fields = fields + [""] * (len(header) - len(fields))
        rows.append(
            (reader.line_num, {name: value.strip() for name, value in zip(header, fields, strict=True)})
        )
    if header is None or not rows:
        raise InputError(f"{path}: the run table has no rows. Fix: list at least one run.")
    return header, rows


def _layout(value: str, where: str, column: str) -> str:
    layout = value.strip().lower()
    if layout in LAYOUTS:
        return layout
    shown = repr(value) if value else "empty"
    raise InputError(
        f"{where}, column {column!r}: unknown library layout {shown}. Fix: write PAIRED or SINGLE "
        "(any case); for a run mixing read types, list each read type as its own run in a sample sheet."
    )


def _local_fastq(
    row: Mapping[str, str], layout: str, where: str, base: Path, has_columns: Sequence[str]
) -> tuple[str, ...]:
    """The run's local FASTQ paths (relative ones resolved against the table's folder), checked."""
    given = [row.get(col, "") for col in FASTQ_COLUMNS]
    if layout == "paired" and not given[1]:
        raise InputError(
            f"{where}: layout paired but column 'fastq_2' is "
            f"{'empty' if 'fastq_2' in has_columns else 'missing'}. Fix: give the second-mate file in "
            "fastq_2, or set the layout to single if the run really is single-end."
        )
    if layout == "single" and given[1]:
        raise InputError(
            f"{where}: layout single but column 'fastq_2' names a second file ({given[1]}). Fix: set the "
            "layout to paired, or clear fastq_2."
        )
    paths = []
    for column, value in zip(FASTQ_COLUMNS, given, strict=True):
        if not value:
            continue
        path = Path(value) if Path(value).is_absolute() else base / value
        if not path.is_file():
            raise InputError(
                f"{where}, column {column!r}: FASTQ file {path} does not exist. Fix: correct the path "
                "(relative paths are read from the run table's folder), or clear fastq_1 / fastq_2 to "
                "download the run instead."
            )
        paths.append(str(path))
    return tuple(paths)


def read_run_table(
    path: str | Path,
    *,
    download: str = DOWNLOAD_DEFAULT,
    run_column: str | None = None,
    sample_column: str | None = None,
    layout_column: str | None = None,
    key: str = "counts.reads",
) -> list[Run]:
    """All runs of an SraRunTable or sample sheet, validated; ``key`` names the config block in errors.

    A row with ``fastq_1`` filled is a local run; every other row is fetched with ``download``
    (``ena`` or ``sra``). With ``download: local`` every row must name its files.
    """
    if download not in SOURCES:
        raise InputError(f"{key}.download: {download!r} is not one of {', '.join(SOURCES)}")
    path = Path(path)
    header, rows = _rows(_read_text(path, f"{key}.runs"), path)
    run_col = _find_column(header, run_column, RUN_COLUMNS, "run ID", path, f"{key}.run_column")
    sample_col = _find_column(header, sample_column, SAMPLE_COLUMNS, "sample", path, f"{key}.sample_column")
    layout_col = _find_column(header, layout_column, LAYOUT_COLUMNS, "layout", path, f"{key}.layout_column")
    fastq_cols = [c for c in FASTQ_COLUMNS if c in header]

    runs: list[Run] = []
    first_line: dict[str, int] = {}
    file_owner: dict[str, str] = {}
    for line, row in rows:
        run_id = row[run_col]
        where = f"{path}, line {line}" + (f" (run {run_id})" if run_id else "")
        if not run_id:
            raise InputError(
                f"{where}: column {run_col!r} is empty. Fix: give the run ID, or delete the row."
            )
        if not RUN_ID_RE.match(run_id):
            raise InputError(
                f"{where}, column {run_col!r}: run ID {run_id!r} may hold only letters, digits, '_' and '-' "
                "(it becomes a file name). Fix: rename the run."
            )
        if run_id in first_line:
            raise InputError(
                f"{where}: run {run_id} is listed twice (lines {first_line[run_id]} and {line}). Fix: keep "
                "one row per run; several runs of one sample need distinct run IDs."
            )
        first_line[run_id] = line
        sample = row[sample_col]
        if not sample:
            raise InputError(
                f"{where}: column {sample_col!r} is empty, so the run belongs to no sample. Fix: name its "
                f"sample (for GEO series, the GSM accession), or leave the run out with only_runs."
            )
        if not SAMPLE_ID_RE.match(sample):
            raise InputError(
                f"{where}, column {sample_col!r}: sample {sample!r} may hold only letters, digits, '_', '.' "
                "and '-' (it becomes a file name). Fix: rename the sample in the run table and metadata."
            )
        layout = _layout(row[layout_col], where, layout_col)
        if row.get("fastq_1"):
            fastq = _local_fastq(row, layout, where, path.parent, fastq_cols)
            source = "local"
        elif row.get("fastq_2"):
            raise InputError(f"{where}: fastq_2 is given but fastq_1 is empty. Fix: give both files.")
        elif download == "local":
            raise InputError(
                f"{where}: {key}.download is local but the run has no fastq_1"
                f"{'' if 'fastq_1' in header else ' column'}. Fix: list its files in fastq_1 (and fastq_2 "
                "for paired runs), or set download to ena or sra."
            )
        else:
            if not ACCESSION_RE.match(run_id):
                raise InputError(
                    f"{where}: {run_id!r} is not an SRA/ENA/DDBJ run accession (SRR…, ERR…, DRR…), so it "
                    f"cannot be downloaded with {key}.download = {download}. Fix: use the run accession, "
                    "or give local files in fastq_1 / fastq_2."
                )
            fastq = ()
            source = download
        for file in fastq:
            if file in file_owner:
                raise InputError(
                    f"{where}: FASTQ {file} is also listed for run {file_owner[file]}. Fix: each file "
                    "belongs to one run; correct the path."
                )
            file_owner[file] = run_id
        runs.append(Run(run=run_id, sample=sample, layout=layout, source=source, fastq=fastq))
    _check_layouts_per_sample(runs, path)
    return runs


def _check_layouts_per_sample(runs: Iterable[Run], path: Path) -> None:
    """A sample's runs are quantified together, which needs one layout; mixed layouts are an error."""
    for sample, sample_runs in runs_by_sample(runs).items():
        layouts = {r.layout for r in sample_runs}
        if len(layouts) > 1:
            listed = ", ".join(f"{r.run} ({r.layout})" for r in sample_runs)
            raise InputError(
                f"{path}: sample {sample} mixes single- and paired-end runs: {listed}. Fix: keep the runs of "
                "one layout with only_runs, or give the runs of each layout their own sample name."
            )


# --------------------------------------------------------------------------------------------
# Config entry points
# --------------------------------------------------------------------------------------------


def select_runs(
    runs: Sequence[Run], only_runs: Sequence[str] | None, key: str, path: str | Path
) -> list[Run]:
    """Keep the runs listed in ``only_runs`` (None = all); the others are logged as set aside."""
    if only_runs is None:
        return list(runs)
    known = {r.run for r in runs}
    unknown = [r for r in only_runs if r not in known]
    if unknown:
        raise InputError(
            f"{key}.only_runs: {', '.join(unknown)} not in the run table {path}. Fix: correct the run IDs "
            "or remove them from only_runs."
        )
    wanted = set(only_runs)
    kept = [r for r in runs if r.run in wanted]
    set_aside = [r.run for r in runs if r.run not in wanted]
    if set_aside:
        log.info("%s.only_runs: %d run(s) set aside: %s", key, len(set_aside), ", ".join(set_aside))
    return kept


def runs_from_config(cohort: str, reads_spec: Mapping[str, Any]) -> list[Run]:
    """The runs of a cohort from its ``cohorts.<cohort>.counts.reads`` block, in table order.

    Called when the workflow is parsed; any problem in the table raises :class:`InputError`.
    """
    key = f"cohorts.{cohort}.counts.reads"
    if not reads_spec or not reads_spec.get("runs"):
        raise InputError(f"{key}.runs is not set. Fix: give the path of the cohort's run table.")
    runs = read_run_table(
        reads_spec["runs"],
        download=reads_spec.get("download") or DOWNLOAD_DEFAULT,
        run_column=reads_spec.get("run_column"),
        sample_column=reads_spec.get("sample_column"),
        layout_column=reads_spec.get("layout_column"),
        key=key,
    )
    return select_runs(runs, reads_spec.get("only_runs"), key, reads_spec["runs"])


def runs_by_sample(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """Runs grouped by sample (technical replicates together), samples and runs in table order."""
    grouped: dict[str, list[Run]] = {}
    for run in runs:
        grouped.setdefault(run.sample, []).append(run)
    return grouped


__all__ = [
    "LAYOUTS",
    "SOURCES",
    "Run",
    "read_run_table",
    "runs_by_sample",
    "runs_from_config",
    "select_runs",
]
