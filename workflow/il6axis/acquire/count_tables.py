"""Read gene x sample count tables and match their sample columns to sample metadata.

Count tables on GEO come in many shapes: tab- or comma-separated, gzipped or not, with the gene ID in
the first or another column, with extra annotation columns (``Symbol``, ``Description``, ``Length``),
with junk rows at the top, and with sample columns named by GSM accession, by sample title or by an R
``make.names``-mangled title. This module turns all of them into one validated ``DataFrame``
(index = gene IDs, columns = sample IDs, non-negative numbers) and fails early, with an actionable
message, when a table cannot be a count matrix.
"""

from __future__ import annotations

import csv
import gzip
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from il6axis.errors import InputError

__all__ = [
    "INDEX",
    "MatchKey",
    "SampleMatch",
    "UnmatchedLimit",
    "is_gzipped",
    "make_names",
    "match_samples",
    "open_text",
    "peek_lines",
    "read_count_table",
    "reconcile_sample_ids",
    "require_file",
    "show_list",
    "sniff_separator",
    "split_line",
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

# Special token for ``reconcile_sample_ids(candidates=...)`` meaning "the metadata index".
INDEX = "index"

_FIX_SEP_ID = (
    "check the file's separator (`counts.sep`) and that the id column is set correctly via `counts.id_column`"
)
_R_RESERVED = frozenset(
    """if else repeat while function for next break TRUE FALSE NULL Inf NaN NA NA_integer_ NA_real_
    NA_character_ NA_complex_ in""".split()
)


# --------------------------------------------------------------------------------------------- file helpers
def is_gzipped(path: str | Path) -> bool:
    """True when the file starts with the gzip magic bytes (the extension is not trusted)."""
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def require_file(path: str | Path, what: str, config_key: str) -> Path:
    """Return ``path`` as a Path or raise InputError naming the config key to fix."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: {what} file not found; check the path given by `{config_key}` in config")
    return p


def open_text(path: str | Path) -> TextIO:
    """Open a plain or gzipped text file for reading (UTF-8, BOM stripped, undecodable bytes replaced)."""
    if is_gzipped(path):
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="replace")
    return open(path, encoding="utf-8-sig", errors="replace")  # the caller closes it


def peek_lines(path: str | Path, n: int) -> list[str]:
    """First ``n`` lines of a (possibly gzipped) text file, without line endings."""
    label = Path(path).name
    lines: list[str] = []
    try:
        with open_text(path) as handle:
            for line in handle:
                lines.append(line.rstrip("\r\n"))
                if len(lines) >= n:
                    break
    except (OSError, EOFError) as exc:
        raise InputError(
            f"{label}: cannot read the file ({exc}); re-download it or check it is not truncated"
        ) from exc
    return lines


def sniff_separator(header: str, label: str, config_key: str) -> str:
    """Pick tab, comma or semicolon from a header line; tab wins ties because GEO tables are mostly TSV."""
    counts = {"\t": header.count("\t"), ",": header.count(","), ";": header.count(";")}
    best = max(counts, key=lambda s: (counts[s], s == "\t", s == ","))
    if counts[best] == 0:
        shown = header[:120]
        raise InputError(
            f"{label}: cannot detect the column separator from the header line {shown!r} (no tab, comma or "
            f"semicolon); set `{config_key}` in config, or check that the file is a table, not an HTML page"
        )
    return best


def split_line(line: str, sep: str) -> list[str]:
    """Split one delimited line, honouring double quotes the way pandas does."""
    return next(csv.reader([line], delimiter=sep, quotechar='"'), [])


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
            f"{label}: no numeric sample columns found (columns: {_show(names)}); {_FIX_SEP_ID}, "
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


def show_list(items: Iterable[object], limit: int | None = None) -> str:
    """Printable list for messages: every item, or the first ``limit`` and how many were left out.

    A list in an error message is never cut silently: the reader must know that more exist.
    """
    items = list(items)
    if not items:
        return "(none)"
    shown = items if limit is None else items[:limit]
    text = ", ".join(repr(str(x)) for x in shown)
    left_out = len(items) - len(shown)
    return text + (f", ... and {left_out} more ({len(items)} in total)" if left_out else "")


_show = show_list


def _id_position(names: list[str], id_column: str | None, label: str) -> int:
    """Position of the gene-ID column (first column when not configured)."""
    if id_column is None:
        return 0
    hits = [i for i, name in enumerate(names) if name == id_column]
    if not hits:
        raise InputError(
            f"{label}: id column {id_column!r} (`counts.id_column`) is not in the header; available columns: "
            f"{_show(names)}; fix `counts.id_column` (or `counts.sep` if the header was not split)"
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
            f"{label}: sample column(s) {_show(missing, 5)} from `counts.sample_columns` not in the header; "
            f"available columns: {_show([names[i] for i in candidates])}"
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
            f"{label}: duplicated sample column name(s) {_show(dups, 5)}; every sample column must be unique "
            f"(rename the columns, or select the ones to use with `counts.sample_columns`)"
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
        log.info("%s: dropped %d annotation column(s) (not samples): %s", label, len(dropped), _show(dropped))
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


# ------------------------------------------------------------------------------------------ sample IDs
def make_names(name: str) -> str:
    """R's ``make.names`` for one string: invalid characters -> '.', 'X' prefix, '.' after reserved words.

    R applies it to column names by default (``read.csv(check.names=TRUE)``, ``data.frame``), so a GEO
    title ``S145_nCOV001-C`` appears in R-written count tables as ``S145_nCOV001.C``.
    """
    out = "".join(ch if (ch.isalnum() or ch in "._") else "." for ch in str(name))
    if not out or not (out[0].isalpha() or (out[0] == "." and not (len(out) > 1 and out[1].isdigit()))):
        out = "X" + out
    if out in _R_RESERVED:
        out += "."
    return out


@dataclass(frozen=True)
class MatchKey:
    """One way to name samples: a metadata field (or the index), optionally cut by a regex.

    ``regex`` keeps the first capture group of the field's value, e.g. ``^([^-]+)-`` turns the GEO title
    ``C10-R`` into ``C10`` for a matrix whose columns are title prefixes. Rows where the regex does not
    match cannot be matched by this key.
    """

    field: str
    regex: str | None = None

    def describe(self, metadata: pd.DataFrame) -> str:
        if self.field == INDEX:
            name = metadata.index.name
            text = f"metadata index ({name})" if name else "metadata index"
        else:
            text = repr(self.field)
        return text + (f" with regex {self.regex!r}" if self.regex else "")


# Default of `metadata.max_unmatched_columns` (the schema repeats it; a test checks that they agree).
DEFAULT_MAX_UNMATCHED: dict[str, Any] = {"fraction": 0.1, "count": None}


@dataclass(frozen=True)
class UnmatchedLimit:
    """How many count columns may lack a metadata row before the run stops (``None`` = no such limit).

    Only count columns count: metadata rows without a count column are common and harmless (a series
    matrix lists samples whose counts were never released or failed QC) and are only listed.
    """

    fraction: float | None = DEFAULT_MAX_UNMATCHED["fraction"]
    count: int | None = DEFAULT_MAX_UNMATCHED["count"]

    @classmethod
    def from_config(cls, spec: Mapping[str, Any] | None) -> UnmatchedLimit:
        spec = spec or {}
        return cls(
            fraction=spec.get("fraction", DEFAULT_MAX_UNMATCHED["fraction"]),
            count=spec.get("count", DEFAULT_MAX_UNMATCHED["count"]),
        )

    def exceeded(self, n_unmatched: int, n_columns: int) -> bool:
        too_many = self.count is not None and n_unmatched > self.count
        too_large = self.fraction is not None and n_unmatched > self.fraction * n_columns
        return too_many or too_large

    def describe(self) -> str:
        return f"fraction {self.fraction}, count {self.count}".replace("None", "null")


STRICT = UnmatchedLimit(fraction=None, count=0)

COLUMN_WITHOUT_METADATA = "count column without metadata"
ROW_WITHOUT_COLUMN = "metadata row without count column"


@dataclass
class SampleMatch:
    """Count columns matched to metadata rows, and what was set aside on either side."""

    mapping: dict[str, str]  # count column -> metadata row (index value), in count-column order
    unmatched_columns: list[str]  # count columns without a metadata row
    unmatched_rows: list[str]  # metadata rows without a count column
    strategy: str  # how the columns were matched, for logs and the unmatched table

    def table(self) -> pd.DataFrame:
        """One row per sample set aside: ``sample``, ``side`` and ``reason``."""
        rows = [
            {
                "sample": c,
                "side": COLUMN_WITHOUT_METADATA,
                "reason": f"no metadata row matches this count column by {self.strategy}",
            }
            for c in self.unmatched_columns
        ]
        rows += [
            {
                "sample": r,
                "side": ROW_WITHOUT_COLUMN,
                "reason": f"no count column matches this metadata row by {self.strategy}",
            }
            for r in self.unmatched_rows
        ]
        return pd.DataFrame(rows, columns=["sample", "side", "reason"])


@dataclass
class _Attempt:
    """Outcome of matching the count columns through one key (exact or R-mangled)."""

    desc: str
    mapping: dict[str, str]  # uniquely matched columns
    unmatched: list[str]
    ambiguous: dict[str, list[str]]  # column -> the several rows whose key equals it
    collisions: dict[str, list[str]]  # row -> the several columns that match it

    @property
    def complete(self) -> bool:
        return not (self.unmatched or self.ambiguous or self.collisions)


def match_keys_from_config(keys: Sequence[Any] | None, metadata: pd.DataFrame, label: str) -> list[MatchKey]:
    """Turn `metadata.match_keys` into MatchKeys; ``None`` = index, title, description, every other column.

    A key is a field name, ``index`` (the sample IDs: GSM accessions of a series matrix, the
    `metadata.sample_column` of a sample sheet; the index's own name works too), or
    ``{field: ..., regex: ...}``. Unknown fields and regexes without a capture group are errors.
    """
    if keys is None:
        preferred = [c for c in ("title", "description") if c in metadata.columns]
        rest = [c for c in metadata.columns if c not in preferred]
        return [MatchKey(INDEX), *(MatchKey(str(c)) for c in [*preferred, *rest])]
    out: list[MatchKey] = []
    for key in keys:
        field, regex = (key.get("field"), key.get("regex")) if isinstance(key, Mapping) else (key, None)
        field = str(field)
        if field == metadata.index.name and field not in metadata.columns:
            field = INDEX
        if field != INDEX and field not in metadata.columns:
            raise InputError(
                f"{label}: `metadata.match_keys` names {field!r}, which is not a column of the sample "
                f"metadata; available: {show_list(['index', *metadata.columns])}. Fix the field name in "
                f"config."
            )
        if regex is not None:
            try:
                groups = re.compile(regex).groups
            except re.error as exc:
                raise InputError(
                    f"{label}: `metadata.match_keys` regex {regex!r} for {field!r} is invalid ({exc})"
                ) from exc
            if groups < 1:
                raise InputError(
                    f"{label}: `metadata.match_keys` regex {regex!r} for {field!r} needs a capture group "
                    f"(...) around the part that names the count column, e.g. '^([^-]+)-'"
                )
        out.append(MatchKey(field, regex))
    if not out:
        raise InputError(f"{label}: `metadata.match_keys` is empty; list at least one key or use null")
    return out


def _key_values(metadata: pd.DataFrame, key: MatchKey) -> pd.Series:
    """Values of one key as stripped strings indexed by sample ID (rows without a value dropped)."""
    if key.field == INDEX:
        values = pd.Series(metadata.index, index=metadata.index)
    else:
        values = metadata[key.field]
    values = values.dropna().astype(str).str.strip()
    if key.regex is not None:
        values = values.str.extract(re.compile(key.regex), expand=True)[0].dropna().str.strip()
    return values[values != ""]


def _attempt(columns: list[str], keys: pd.Series, mangle: bool, desc: str) -> _Attempt:
    """Match the count columns through one key's values."""
    norm = keys.map(make_names) if mangle else keys
    rows_by_key: dict[str, list[str]] = {}
    for sample, k in norm.items():
        rows_by_key.setdefault(k, []).append(str(sample))
    hits: dict[str, str] = {}
    unmatched: list[str] = []
    ambiguous: dict[str, list[str]] = {}
    for col in columns:
        rows = rows_by_key.get(make_names(col.strip()) if mangle else col.strip(), [])
        if len(rows) == 1:
            hits[col] = rows[0]
        elif rows:
            ambiguous[col] = rows
        else:
            unmatched.append(col)
    by_row: dict[str, list[str]] = {}
    for col, row in hits.items():
        by_row.setdefault(row, []).append(col)
    collisions = {row: cols for row, cols in by_row.items() if len(cols) > 1}
    mapping = {c: r for c, r in hits.items() if r not in collisions}
    return _Attempt(desc, mapping, unmatched, ambiguous, collisions)


def match_samples(
    count_columns: Sequence[str],
    metadata: pd.DataFrame,
    *,
    keys: Sequence[Any] | None = None,
    limit: UnmatchedLimit = STRICT,
    file_label: str,
) -> SampleMatch:
    """Match count columns to metadata rows and set aside what has no partner, within ``limit``.

    Each key (``keys`` as in `metadata.match_keys`; default: index, title, description, every other
    column) is tried exactly, then every key again after R ``make.names`` on both sides. The first
    attempt that matches every column one-to-one wins; otherwise the attempt matching most columns
    (first in that order on a tie). Under the chosen attempt, a column equal to the key of several
    rows (two titles with one prefix) or several columns on one row are errors naming them; columns
    without a row are set aside, and past ``limit`` the run stops with all of them listed. Rows
    without a column are always allowed and listed.
    """
    columns = [str(c) for c in count_columns]
    if not columns:
        raise InputError(f"{file_label}: the count table has no sample columns to match to metadata")
    match_keys = match_keys_from_config(keys, metadata, file_label)
    attempts: list[_Attempt] = []
    for mangle in (False, True):
        for key in match_keys:
            desc = ("R make.names of " if mangle else "") + key.describe(metadata)
            attempt = _attempt(columns, _key_values(metadata, key), mangle, desc)
            attempts.append(attempt)
            if attempt.complete:
                break
        if attempts[-1].complete:
            break
    best = attempts[-1] if attempts[-1].complete else max(attempts, key=lambda a: len(a.mapping))
    _raise_on_ambiguity(best, metadata, file_label)
    if not best.mapping or limit.exceeded(len(best.unmatched), len(columns)):
        raise InputError(_unmatched_message(columns, best, metadata, limit, file_label))
    used = set(best.mapping.values())
    match = SampleMatch(
        mapping=best.mapping,
        unmatched_columns=best.unmatched,
        unmatched_rows=[str(s) for s in metadata.index if str(s) not in used],
        strategy=best.desc,
    )
    _log_match(match, len(columns), file_label)
    return match


def reconcile_sample_ids(
    count_columns: Sequence[str],
    metadata: pd.DataFrame,
    *,
    candidates: Sequence[Any] | None = None,
    file_label: str,
) -> dict[str, str]:
    """Map every count column to a metadata index value; any column without a row is an error.

    The strict form of :func:`match_samples` (``candidates`` are its ``keys``), for callers that need
    all columns. Metadata rows without a count column are allowed and logged.
    """
    return match_samples(
        count_columns, metadata, keys=candidates, limit=STRICT, file_label=file_label
    ).mapping


def _titles(metadata: pd.DataFrame, rows: Sequence[str]) -> str:
    """' (title ...)' for each row when the metadata has titles, to help read an ambiguity."""
    if "title" not in metadata.columns:
        return show_list(rows)
    return ", ".join(f"{r!r} (title {str(metadata.loc[r, 'title'])!r})" for r in rows)


def _raise_on_ambiguity(best: _Attempt, metadata: pd.DataFrame, label: str) -> None:
    """Columns equal to several rows' keys, or rows claimed by several columns, stop the run."""
    if best.ambiguous:
        lines = [f"{col!r} matches {_titles(metadata, rows)}" for col, rows in best.ambiguous.items()]
        raise InputError(
            f"{label}: ambiguous sample match by {best.desc}: " + "; ".join(lines) + ". Each count column "
            "must match exactly one metadata row: make the key unique (e.g. a longer regex in "
            "`metadata.match_keys`) or match on another field."
        )
    if best.collisions:
        lines = [f"{show_list(cols)} all match {row!r}" for row, cols in best.collisions.items()]
        raise InputError(
            f"{label}: several count columns match one metadata row by {best.desc}: "
            + "; ".join(lines)
            + ". Each metadata row can describe one column: remove the duplicated columns (e.g. with "
            "`counts.sample_columns`) or match on another field (`metadata.match_keys`)."
        )


def _unmatched_message(
    columns: list[str], best: _Attempt, metadata: pd.DataFrame, limit: UnmatchedLimit, label: str
) -> str:
    n_bad = len(best.unmatched)
    titles = list(metadata["title"].astype(str)) if "title" in metadata.columns else []
    bound = (
        "no column matched at all"
        if not best.mapping
        else f"more than `metadata.max_unmatched_columns` allows ({limit.describe()})"
    )
    return (
        f"{label}: cannot match the count columns to sample metadata: {n_bad} of {len(columns)} count "
        f"column(s) have no metadata row even with the best match ({best.desc}), {bound}. Unmatched "
        f"columns: {show_list(best.unmatched)}. Example metadata IDs: {show_list(metadata.index, 5)}"
        + (f"; titles: {show_list(titles, 5)}" if titles else "")
        + ". Fix: name the matching field in `metadata.match_keys` (a field, `index`, or {field, regex} "
        "for a title prefix) or `metadata.sample_column`, or supply a sample sheet with a column matching "
        "the count columns; if these columns really have no metadata, raise "
        "`metadata.max_unmatched_columns`"
    )


def _log_match(match: SampleMatch, n_columns: int, label: str) -> None:
    """Report the winning match and, in full, every sample set aside on either side."""
    log.info(
        "%s: matched %d of %d count columns to metadata via %s",
        label,
        len(match.mapping),
        n_columns,
        match.strategy,
    )
    if match.unmatched_columns:
        log.warning(
            "%s: %d count column(s) have no metadata row and are set aside: %s",
            label,
            len(match.unmatched_columns),
            show_list(match.unmatched_columns),
        )
    if match.unmatched_rows:
        log.info(
            "%s: %d metadata sample(s) have no count column and are set aside: %s",
            label,
            len(match.unmatched_rows),
            show_list(match.unmatched_rows),
        )
