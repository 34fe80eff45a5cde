"""Read and validate gene x sample count tables, and turn them into the numbers the models need.

Count tables on GEO come in many shapes: tab- or comma-separated, gzipped or not, with the gene ID in
the first or another column, with extra annotation columns (``Symbol``, ``Description``, ``Length``),
and with junk rows at the top. :func:`read_count_table` turns all of them into one validated
``DataFrame`` (index = gene IDs, columns = sample IDs, non-negative numbers) and fails early, with an
actionable message, when a table cannot be a count matrix. :func:`to_integer_counts` and
:func:`normalised_array` check and convert the values for the negative-binomial and linear routes.
Matching the sample columns to metadata is :mod:`il6axis.acquire.sample_matching`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from il6axis.acquire.table_files import (
    is_gzipped,
    peek_lines,
    require_file,
    show_list,
    sniff_separator,
    split_line,
)
from il6axis.errors import InputError

__all__ = [
    "normalised_array",
    "read_count_table",
    "to_integer_counts",
]

log = logging.getLogger(__name__)

# Cell strings read as missing in sample (value) columns. The gene-ID column never gets NA conversion.
NA_TOKENS = ["", "NA", "N/A", "NaN", "nan", "NULL", "null", "#N/A", "-nan", "-NaN", "<NA>", "None"]

# Column names that are annotation, not samples, even when numeric (featureCounts, RSEM, GTF dumps).
KNOWN_ANNOTATION_COLUMNS = frozenset(
    """length effective_length chr chrom chromosome start end strand symbol gene_symbol gene_name genename
    description biotype gene_type gene_biotype entrez entrezid geneid gene_id ensembl ensemblid
    ensembl_gene_id transcript_id(s)""".split()
)

_FIX_SEP_ID = (
    "check the file's separator (`counts.sep`) and that the id column is set correctly via `counts.id_column`"
)


# ------------------------------------------------------------------------------------------ count tables
def read_count_table(
    path: str | Path,
    *,
    id_column: str | None = None,
    sep: str | None = None,
    sample_columns: list[str] | None = None,
    drop_rows: int = 0,
    allow_negative: bool = False,
) -> pd.DataFrame:
    """Read and validate a gene x sample count table (csv/tsv/txt, optionally gzipped).

    Returns a DataFrame with index = gene IDs (str, name ``gene_id``; duplicates allowed, they are merged
    later by gene-ID harmonisation), columns = sample IDs (str) and int64 values (float64 if any value is
    fractional, e.g. RSEM expected counts). ``drop_rows`` skips that many data rows after the header
    (summary rows some tools put on top). A header with one field fewer than the data rows (R
    ``write.table`` without a row-name header) is understood as an unnamed first ID column.

    Without ``sample_columns``, text columns that are mostly non-numeric and a few well-known annotation
    columns (``Length``, ``Symbol``, ...) are dropped and logged. Raises InputError for an empty table,
    duplicated sample columns, non-numeric, missing, infinite or negative count cells; with
    ``allow_negative`` negative cells are kept (log2 values; ``il6axis.cohort.value_scale`` then checks the
    scale).
    """
    path = require_file(path, "count table", "counts.path")
    label = path.name
    if drop_rows < 0:
        raise InputError(f"{label}: `counts.drop_rows` must be >= 0, got {drop_rows}")
    lines = peek_lines(path, 2 + drop_rows)
    if not lines or not lines[0].strip():
        raise InputError(f"{label}: the file is empty (no header line); re-download it")
    header = lines[0]
    if sep is None:
        sep = sniff_separator(header, label, "counts.sep")
    names = split_line(header, sep)
    first_data = lines[1 + drop_rows] if len(lines) > 1 + drop_rows else None
    if first_data is not None and len(split_line(first_data, sep)) == len(names) + 1:
        log.info("%s: header has one field fewer than the data rows; first column taken as gene IDs", label)
        names = ["", *names]

    id_pos = _id_position(names, id_column, label)
    candidates = [i for i in range(len(names)) if i != id_pos]
    if sample_columns is not None:
        candidates = _select_sample_positions(names, candidates, sample_columns, label)
    _check_duplicate_names([names[i] for i in candidates], label)

    raw = _read_with_pandas(path, sep, names, id_pos, candidates, drop_rows, label)
    if raw.shape[0] == 0:
        raise InputError(f"{label}: the table has a header but no data rows; {_FIX_SEP_ID}")
    gene_ids = _clean_gene_ids(raw.pop(f"c{id_pos}"), label, drop_rows)

    if sample_columns is None:
        candidates = _drop_annotation_columns(raw, names, candidates, label)
    if not candidates:
        raise InputError(
            f"{label}: no numeric sample columns found (columns: {show_list(names)}); {_FIX_SEP_ID}, "
            f"or list the sample columns in `counts.sample_columns`"
        )
    values = _validate_values(
        raw[[f"c{i}" for i in candidates]],
        gene_ids,
        [names[i] for i in candidates],
        label,
        allow_negative=allow_negative,
    )
    values.index = pd.Index(gene_ids, name="gene_id")
    values.columns = pd.Index([str(names[i]) for i in candidates])
    n_dup = int(values.index.duplicated().sum())
    log.info(
        "%s: read %d genes x %d samples (%s)%s",
        label,
        values.shape[0],
        values.shape[1],
        values.dtypes.iloc[0],
        f"; {n_dup} duplicated gene ID row(s)" if n_dup else "",
    )
    return values


def _id_position(names: list[str], id_column: str | None, label: str) -> int:
    """Position of the gene-ID column (first column when not configured)."""
    if id_column is None:
        return 0
    hits = [i for i, name in enumerate(names) if name == id_column]
    if not hits:
        raise InputError(
            f"{label}: id column {id_column!r} (`counts.id_column`) is not in the header; available columns: "
            f"{show_list(names)}; fix `counts.id_column` (or `counts.sep` if the header was not split)"
        )
    if len(hits) > 1:
        raise InputError(
            f"{label}: id column {id_column!r} appears {len(hits)} times in the header; fix the file"
        )
    return hits[0]


def _select_sample_positions(
    names: list[str], candidates: list[int], sample_columns: Sequence[str], label: str
) -> list[int]:
    """Positions of the configured sample columns, in the configured order."""
    by_name: dict[str, list[int]] = {}
    for i in candidates:
        by_name.setdefault(names[i], []).append(i)
    missing = [s for s in sample_columns if s not in by_name]
    if missing:
        raise InputError(
            f"{label}: sample column(s) {show_list(missing, 5)} from `counts.sample_columns` not in the "
            f"header; available columns: {show_list([names[i] for i in candidates])}"
        )
    dup_config = sorted({s for s in sample_columns if list(sample_columns).count(s) > 1})
    if dup_config:
        raise InputError(
            f"`counts.sample_columns` for {label} lists {dup_config} more than once; list each once"
        )
    positions: list[int] = []
    for s in sample_columns:
        positions.extend(by_name[s])
    return positions


def _check_duplicate_names(columns: list[str], label: str) -> None:
    """Two sample columns with the same name cannot both be matched to metadata: refuse them."""
    seen = pd.Index(columns)
    dups = sorted(set(seen[seen.duplicated()]))
    if dups:
        raise InputError(
            f"{label}: duplicated sample column name(s) {show_list(dups, 5)}; every sample column must be "
            f"unique (rename the columns, or select the ones to use with `counts.sample_columns`)"
        )


def _read_with_pandas(
    path: Path, sep: str, names: list[str], id_pos: int, positions: list[int], drop_rows: int, label: str
) -> pd.DataFrame:
    """One C-engine ``read_csv`` call; internal column names ``c<i>`` sidestep pandas' header mangling."""
    internal = [f"c{i}" for i in range(len(names))]
    value_cols = [f"c{i}" for i in positions]
    try:
        return pd.read_csv(
            path,
            sep=sep,
            header=0,
            names=internal,
            usecols=[f"c{id_pos}", *value_cols],
            dtype={f"c{id_pos}": str},
            keep_default_na=False,
            na_values={c: NA_TOKENS for c in value_cols},
            skiprows=range(1, 1 + drop_rows) if drop_rows else None,
            compression="gzip" if is_gzipped(path) else None,
            engine="c",
            low_memory=False,
            encoding="utf-8",
            encoding_errors="replace",
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputError(
            f"{label}: cannot parse the table with separator {sep!r} ({exc}); {_FIX_SEP_ID}; all rows need "
            f"{len(names)} fields like the header"
        ) from exc
    except (OSError, EOFError) as exc:
        raise InputError(
            f"{label}: cannot read the file ({exc}); re-download it or check it is not truncated"
        ) from exc


def _clean_gene_ids(ids: pd.Series, label: str, drop_rows: int) -> pd.Index:
    """Gene IDs as stripped strings; an empty ID is an error (it cannot be mapped or merged)."""
    ids = ids.fillna("").astype(str).str.strip()
    empty = np.flatnonzero(ids.to_numpy() == "")
    if len(empty):
        line = int(empty[0]) + 2 + drop_rows
        raise InputError(
            f"{label}: {len(empty)} row(s) have an empty gene ID (first at line {line}); remove them or "
            f"point `counts.id_column` at the gene-ID column"
        )
    return pd.Index(ids.to_numpy(), dtype=object)


def _drop_annotation_columns(
    raw: pd.DataFrame, names: list[str], positions: list[int], label: str
) -> list[int]:
    """Drop annotation columns: known names, mostly-text columns, and unnamed all-empty columns.

    A text column that is *mostly* numeric is kept: it is a sample column with a few bad cells, and the
    validation step must report those cells instead of silently discarding the sample.
    """
    kept: list[int] = []
    dropped: list[str] = []
    for i in positions:
        col = raw[f"c{i}"]
        name = str(names[i])
        if name.strip().lower() in KNOWN_ANNOTATION_COLUMNS:
            dropped.append(name)
        elif name.strip() == "" and col.isna().all():
            dropped.append(f"<unnamed column {i + 1}>")  # trailing separator on every line
        elif col.dtype.kind in "iuf":
            kept.append(i)
        else:
            present = col.notna()
            numeric = pd.to_numeric(col[present], errors="coerce").notna()
            if present.sum() and numeric.mean() < 0.5:
                dropped.append(name)
            else:
                kept.append(i)
    if dropped:
        log.info(
            "%s: dropped %d annotation column(s) (not samples): %s", label, len(dropped), show_list(dropped)
        )
    return kept


def _first_cell(mask: np.ndarray) -> tuple[int, int]:
    """(row, column) of the first True cell, scanning columns left to right."""
    col = int(np.flatnonzero(mask.any(axis=0))[0])
    row = int(np.flatnonzero(mask[:, col])[0])
    return row, col


def _validate_values(
    frame: pd.DataFrame, gene_ids: pd.Index, columns: list[str], label: str, allow_negative: bool = False
) -> pd.DataFrame:
    """Coerce to numbers and check: all numeric, no NaN/inf, no negatives (unless ``allow_negative``).
    Vectorised per column."""
    converted: dict[str, pd.Series] = {}
    for key, name in zip(frame.columns, columns, strict=True):
        col = frame[key]
        if col.dtype.kind not in "iuf":
            numeric = pd.to_numeric(col, errors="coerce")
            bad = np.flatnonzero((numeric.isna() & col.notna()).to_numpy())
            if len(bad):
                r = int(bad[0])
                raise InputError(
                    f"{label}: column {name!r} row {gene_ids[r]!r} has non-numeric value {col.iloc[r]!r} "
                    f"({len(bad)} such cell(s) in this column); counts must be non-negative integers "
                    f"({_FIX_SEP_ID})"
                )
            col = numeric
        converted[key] = col
    values = pd.DataFrame(converted, index=frame.index)
    kinds = {dt.kind for dt in values.dtypes}
    arr = values.to_numpy(dtype=np.int64 if kinds <= {"i", "u"} else np.float64)
    if arr.dtype.kind == "f":
        _raise_on_mask(
            np.isnan(arr),
            arr,
            gene_ids,
            columns,
            label,
            "is empty/NA ({n} missing cell(s) in the table); counts must be complete: fix the file "
            "(a missing count is not zero) or remove the sample via `counts.sample_columns`",
        )
        _raise_on_mask(
            np.isinf(arr),
            arr,
            gene_ids,
            columns,
            label,
            "is infinite ({n} such cell(s)); counts must be finite non-negative numbers",
        )
    if not allow_negative:
        _raise_on_mask(
            arr < 0,
            arr,
            gene_ids,
            columns,
            label,
            "is negative ({n} negative cell(s) in the table); counts must be non-negative: is this a "
            "log-transformed or centred matrix? Use raw counts",
        )
    return pd.DataFrame(arr, columns=values.columns)


def _raise_on_mask(
    mask: np.ndarray, arr: np.ndarray, gene_ids: pd.Index, columns: list[str], label: str, what: str
) -> None:
    """Raise InputError naming the first flagged cell (column, row id, value) and how many there are."""
    if not mask.any():
        return
    r, c = _first_cell(mask)
    raise InputError(
        f"{label}: column {columns[c]!r} row {gene_ids[r]!r} value {arr[r, c].item()!r} "
        + what.format(n=int(mask.sum()))
    )


# ------------------------------------------------------------------------------------ normalised values
def normalised_array(table: pd.DataFrame, label: str) -> np.ndarray:
    """Float64 values of a table of normalised expression (TMM, CPM, normalised counts), checked.

    NaN, infinite or negative cells raise InputError naming the first one (column, row, value): the
    linear-model route logs these values itself, so they must be complete and on the linear scale.
    """
    try:
        arr = table.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{label}: normalised table has non-numeric values ({exc}).") from exc
    _check_finite_non_negative(
        arr,
        table,
        label,
        "normalised values must be complete: fill or drop those genes/samples in the input table",
        "normalised values must be on the linear scale (TMM, CPM, normalised counts), not log-transformed "
        "or centred: for log2 values set `counts.value_type: log2_normalised`, else point the cohort at "
        "the normalised-count file",
    )
    return arr


def _check_finite_non_negative(
    arr: np.ndarray, table: pd.DataFrame, label: str, if_not_finite: str, if_negative: str
) -> None:
    """Raise InputError at the first NaN/infinite, then the first negative cell, with the given fix."""
    columns = list(map(str, table.columns))
    _raise_on_mask(
        ~np.isfinite(arr),
        arr,
        table.index,
        columns,
        label,
        f"is NaN or infinite ({{n}} such cell(s)); {if_not_finite}",
    )
    _raise_on_mask(
        arr < 0, arr, table.index, columns, label, f"is negative ({{n}} such cell(s)); {if_negative}"
    )


# ------------------------------------------------------------------------------------------ integer counts
def to_integer_counts(df: pd.DataFrame, *, source_name: str) -> tuple[pd.DataFrame, dict]:
    """Return an int64 copy of ``df`` and how much rounding that took.

    Whole-number tables (also float-typed ones) are converted exactly. Fractional tables (RSEM expected
    counts) are rounded half-to-even with ``np.rint``, because the negative-binomial model needs integer
    counts; the info dict (``rounded``, ``max_abs_change``, ``n_changed``, ``fraction_changed``) lets the
    caller log how large that change was. NaN, infinite or negative values raise InputError: rounding
    cannot turn those into counts.
    """
    info: dict = {"rounded": False, "max_abs_change": 0.0, "n_changed": 0, "fraction_changed": 0.0}
    if df.size == 0:
        raise InputError(f"{source_name}: the count table is empty; nothing to convert to integer counts")
    if all(dt.kind in "iu" for dt in df.dtypes):
        arr_i = df.to_numpy(dtype=np.int64, copy=True)
        _raise_on_mask(
            arr_i < 0,
            arr_i,
            df.index,
            list(map(str, df.columns)),
            source_name,
            "is negative ({n} such cell(s)); counts must be non-negative",
        )
        return pd.DataFrame(arr_i, index=df.index, columns=df.columns), info
    try:
        arr = df.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"{source_name}: count table has non-numeric values ({exc}); read it with read_count_table first"
        ) from exc
    _check_finite_non_negative(
        arr,
        df,
        source_name,
        "counts must be complete and finite",
        "counts must be non-negative (is this a log/normalised matrix?)",
    )
    rounded = np.rint(arr)
    change = np.abs(rounded - arr)
    n_changed = int(np.count_nonzero(change))
    out = pd.DataFrame(rounded.astype(np.int64), index=df.index, columns=df.columns)
    if n_changed:
        info = {
            "rounded": True,
            "max_abs_change": float(change.max()),
            "n_changed": n_changed,
            "fraction_changed": n_changed / arr.size,
        }
        log.info(
            "%s: rounded %d of %d cells (%.1f%%) to integers; largest change %.4g",
            source_name,
            n_changed,
            arr.size,
            100 * info["fraction_changed"],
            info["max_abs_change"],
        )
    return out, info
