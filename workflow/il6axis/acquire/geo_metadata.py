"""Sample metadata from GEO: series-matrix files, sample sheets, and typed age/sex helpers.

The parsers keep every value as the string GEO wrote (``unknown``, ``:``, ``>89`` included) so nothing
is silently lost; interpretation happens in the typed helpers :func:`parse_age` and
:func:`normalise_sex`, which fail loudly on values they do not understand (``normalise_sex`` can instead
set them to ``unknown``, for checks that need not stop the run).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from il6axis.acquire import geo
from il6axis.acquire.table_files import (
    is_gzipped,
    open_text,
    peek_lines,
    require_file,
    show_list,
    sniff_separator,
    split_line,
)
from il6axis.errors import InputError

__all__ = [
    "clean_geoquery_columns",
    "normalise_sex",
    "parse_age",
    "read_sample_sheet",
    "read_series_matrix",
]

log = logging.getLogger(__name__)

# Single-valued !Sample_* rows kept, and the column each becomes. Everything else is dropped.
_FIXED_ROWS = {
    "!Sample_title": "title",
    "!Sample_source_name_ch1": "source_name",
    "!Sample_organism_ch1": "organism",
}
_ACCESSION = "!Sample_geo_accession"
_CHARACTERISTICS = "!Sample_characteristics_ch1"
_DESCRIPTION = "!Sample_description"
_TABLE_BEGIN = "!series_matrix_table_begin"

# Strings meaning "no value" in GEO/R/spreadsheet exports (compared lower-cased and stripped).
_MISSING_WORDS = "unknown na n/a nan none null <na> missing".split()
MISSING_TOKENS = frozenset(["", ":", "-", "not available", "not applicable", *_MISSING_WORDS])
_SEX_SPELLINGS = {
    **dict.fromkeys(["male", "m", "man", "men"], "male"),
    **dict.fromkeys(["female", "f", "woman", "women"], "female"),
}
# GEO characteristics sometimes keep their key in the value ("gender: M", "sex=F").
_SEX_KEY_PREFIX = re.compile(r"^(sex|gender)\s*[:=]\s*")
UNRECOGNISED_SEX = ("raise", "unknown")
_CENSORED_AGE = re.compile(r"^(>=|≥|>)\s*(\d+(?:\.\d+)?)$|^(\d+(?:\.\d+)?)\s*\+$")


# ------------------------------------------------------------------------------------------ series matrix
def read_series_matrix(path: str | Path) -> pd.DataFrame:
    """Parse the ``!Sample_*`` header of a GEO series matrix (.txt or .txt.gz) into one row per sample.

    Index = GSM accession (name ``gsm``). Columns: ``title``, ``source_name``, ``organism``,
    ``description`` (further ``!Sample_description`` rows as ``description_2``, ...; GSE157103 stores the
    count-table column name there), and one column per characteristics key. Each characteristics cell
    is split on its first ``": "`` individually, so a row whose keys differ between samples still lands
    in the right columns; a sample without a key gets NaN. A key repeated for the same sample becomes
    ``key_2``. Values stay strings exactly as written. The expression table is not read.
    """
    path = require_file(path, "series matrix", "metadata.series_matrix")
    label = path.name
    rows = _sample_rows(path, label)
    accession_rows = [cells for key, cells in rows if key == _ACCESSION]
    if not accession_rows:
        raise InputError(_not_a_series_matrix(path, label))
    gsm = [c.strip() for c in accession_rows[0]]
    n = len(gsm)
    _check_unique_gsm(gsm, label)

    columns: dict[str, list[object]] = {}
    descriptions = 0
    char_cells: list[list[str]] = []
    for key, cells in rows:
        cells = _fit_width(cells, n, key, label)
        if key in _FIXED_ROWS and _FIXED_ROWS[key] not in columns:
            columns[_FIXED_ROWS[key]] = list(cells)
        elif key == _DESCRIPTION:
            descriptions += 1
            columns["description" if descriptions == 1 else f"description_{descriptions}"] = list(cells)
        elif key == _CHARACTERISTICS:
            char_cells.append(cells)
    _add_characteristics(columns, char_cells, n)
    frame = pd.DataFrame(columns, index=pd.Index(gsm, name="gsm"))
    log.info("%s: %d samples, %d metadata columns", label, len(frame), frame.shape[1])
    return frame


def _sample_rows(path: Path, label: str) -> list[tuple[str, list[str]]]:
    """All ``!Sample_*`` lines as (key, cells) up to the expression table; csv handles GEO's quoting."""
    rows: list[tuple[str, list[str]]] = []
    try:
        with open_text(path) as handle:
            for line in handle:
                if line.startswith(_TABLE_BEGIN):
                    break
                if not line.startswith("!Sample_"):
                    continue
                fields = next(csv.reader([line.rstrip("\r\n")], delimiter="\t", quotechar='"'))
                rows.append((fields[0].strip(), fields[1:]))
    except (OSError, EOFError, csv.Error) as exc:
        raise InputError(f"{label}: cannot read the series matrix ({exc}); re-download it") from exc
    return rows


def _not_a_series_matrix(path: Path, label: str) -> str:
    """Error text for a file without a ``!Sample_geo_accession`` row, guessing what it is instead."""
    try:
        first = next((ln.strip() for ln in peek_lines(path, 50) if ln.strip()), "")
    except InputError:
        first = ""
    hint = ""
    if first.lower().startswith(("<!doctype", "<html")):
        hint = " It looks like an HTML page (a failed download?)."
    elif first.startswith("^") or "!Sample_geo_accession = " in "".join(peek_lines(path, 5000)):
        hint = " It looks like a SOFT file, not a series matrix."
    return (
        f"{label}: no '{_ACCESSION}' line, so this is not a GEO series matrix "
        f"(first line: {first[:80]!r}).{hint} "
        f"Fix `metadata.series_matrix` to point at {geo.SERIES_MATRIX_NAME.format(accession='<GSE>')} "
        f"from the series' {geo.MATRIX_FOLDER}/ folder"
    )


def _check_unique_gsm(gsm: list[str], label: str) -> None:
    """Every sample accession must be present and unique: it is the join key for everything else."""
    if any(not g for g in gsm):
        raise InputError(f"{label}: '{_ACCESSION}' has empty cells; the file is damaged, re-download it")
    dups = sorted({g for g in gsm if gsm.count(g) > 1})
    if dups:
        raise InputError(f"{label}: '{_ACCESSION}' lists {dups} more than once; re-download the file")


def _fit_width(cells: list[str], n: int, key: str, label: str) -> list[str]:
    """Trim empty trailing cells; a row with a different number of samples is a damaged file."""
    while len(cells) > n and cells[-1].strip() == "":
        cells = cells[:-1]
    if len(cells) != n:
        raise InputError(
            f"{label}: row '{key}' has {len(cells)} values but there are {n} samples in '{_ACCESSION}'; "
            f"the file is damaged or was edited, re-download it"
        )
    return cells


def _split_characteristic(cell: str) -> tuple[str, str] | None:
    """``"age (years): 39"`` -> ("age (years)", "39"); empty cell -> None; no colon -> unkeyed."""
    cell = cell.strip()
    if not cell:
        return None
    if ": " in cell:
        key, value = cell.split(": ", 1)
    elif cell.endswith(":"):
        key, value = cell[:-1], ""
    else:
        return "characteristics", cell
    return key.strip(), value


def _add_characteristics(columns: dict[str, list[object]], char_rows: list[list[str]], n: int) -> None:
    """Spread characteristics cells into per-key columns, cell by cell (keys may differ per sample)."""
    parsed: dict[str, list[object]] = {}
    for j in range(n):
        seen: dict[str, int] = {}
        for cells in char_rows:
            item = _split_characteristic(cells[j])
            if item is None:
                continue
            key, value = item
            seen[key] = seen.get(key, 0) + 1
            name = key if seen[key] == 1 else f"{key}_{seen[key]}"
            if name in columns:  # a key called e.g. "title" must not overwrite the fixed column
                name = f"characteristics: {name}"
            parsed.setdefault(name, [np.nan] * n)[j] = value
    columns.update(parsed)


# ------------------------------------------------------------------------------------------ sample sheets
def read_sample_sheet(path: str | Path, sample_column: str) -> pd.DataFrame:
    """Read a CSV/TSV sample sheet (gz ok) with all values as literal strings, indexed by ``sample_column``.

    The separator is sniffed from the header line. Values are not NA-converted (``NA`` stays ``"NA"``),
    matching :func:`read_series_matrix`; typed helpers interpret them. Raises InputError when the
    sample column is missing (listing the available columns), has empty cells, or has duplicates.
    """
    path = require_file(path, "sample sheet", "metadata.sample_sheet")
    label = path.name
    lines = peek_lines(path, 1)
    if not lines or not lines[0].strip():
        raise InputError(f"{label}: the sample sheet is empty; check `metadata.sample_sheet`")
    sep = sniff_separator(lines[0], label, "metadata.sep")
    try:
        sheet = pd.read_csv(
            path,
            sep=sep,
            dtype=str,
            keep_default_na=False,
            engine="c",
            compression="gzip" if is_gzipped(path) else None,
            encoding="utf-8-sig",
            encoding_errors="replace",
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputError(
            f"{label}: cannot parse the sample sheet with separator {sep!r} ({exc}); "
            f"every row needs as many fields as the header"
        ) from exc
    if sample_column not in sheet.columns:
        header = split_line(lines[0], sep)
        raise InputError(
            f"{label}: sample column {sample_column!r} not found; available columns: {show_list(header)}; "
            f"fix `metadata.sample_column` in config"
        )
    ids = sheet.pop(sample_column).str.strip()
    if (ids == "").any():
        first = int(np.flatnonzero((ids == "").to_numpy())[0]) + 2
        raise InputError(
            f"{label}: column {sample_column!r} is empty at line {first}; every sample needs an ID"
        )
    dups = sorted(set(ids[ids.duplicated()]))
    if dups:
        raise InputError(
            f"{label}: column {sample_column!r} has duplicated sample IDs {dups}; IDs must be "
            f"unique (choose another `metadata.sample_column` or fix the sheet)"
        )
    sheet.index = pd.Index(ids.to_numpy(), name=sample_column)
    return sheet


def clean_geoquery_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Rename GEOquery ``pData`` columns to the names :func:`read_series_matrix` uses.

    ``severity:ch1`` -> ``severity``, ``source_name_ch1`` -> ``source_name``, ``organism_ch1`` ->
    ``organism``; other columns are unchanged. So a config can name the same field for a series matrix
    and a pData dump. A rename that would collide with an existing column is skipped (and logged).
    """
    renames: dict[str, str] = {}
    existing = set(map(str, df.columns))
    for col in map(str, df.columns):
        if col.endswith(":ch1"):
            new = col[: -len(":ch1")].strip()
        elif col in ("source_name_ch1", "organism_ch1"):
            new = col[: -len("_ch1")]
        else:
            continue
        if new in existing or new in renames.values():
            log.warning("clean_geoquery_columns: not renaming %r to %r: that column already exists", col, new)
            continue
        renames[col] = new
    return df.rename(columns=renames)


# ------------------------------------------------------------------------------------------ typed helpers
def _is_missing(value: object) -> bool:
    """True for None/NaN and for the strings GEO and R use for 'no value'."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return True
    return str(value).strip().lower() in MISSING_TOKENS


def _parse_one_age(value: object, sample: object, field: str, source: str) -> tuple[float, bool]:
    """One age cell -> (age, censored). ``>89`` -> 90 (bound + 1), ``90+`` / ``>=90`` -> 90."""
    if _is_missing(value):
        return np.nan, False
    text = str(value).strip()
    try:
        age = float(text)
    except ValueError:
        match = _CENSORED_AGE.match(text)
        if match is None:
            raise InputError(
                f"{source}: field {field!r} sample {sample!r} has unparsable age {value!r}; expected a "
                f"number, a censored value like '>89' or '90+', or a missing marker (NA, unknown, ':'); "
                f"clean the value or drop the age covariate"
            ) from None
        if match.group(1) == ">":
            return float(match.group(2)) + 1.0, True
        bound = match.group(2) if match.group(2) is not None else match.group(3)
        return float(bound), True
    if not np.isfinite(age) or age < 0:
        raise InputError(
            f"{source}: field {field!r} sample {sample!r} has impossible age {value!r}; fix the value"
        )
    return age, False


def parse_age(
    values: pd.Series, *, source: str = "sample metadata", field: str | None = None
) -> pd.DataFrame:
    """Ages as floats plus a censoring flag, same index as ``values``.

    Columns ``age`` (float, NaN when missing) and ``age_censored`` (bool). GEO hides ages above 89
    (HIPAA) as ``>89``: that becomes 90.0 with ``age_censored=True``. Missing markers ('', ':',
    'unknown', 'NA', ...) become NaN. Anything else raises InputError naming the value, so a typo
    cannot silently become a missing covariate. Callers log ``age.isna().sum()`` and
    ``age_censored.sum()``.
    """
    field = field if field is not None else str(values.name)
    parsed = [_parse_one_age(v, s, field, source) for s, v in values.items()]
    ages = np.array([p[0] for p in parsed], dtype=float)
    censored = np.array([p[1] for p in parsed], dtype=bool)
    return pd.DataFrame({"age": ages, "age_censored": censored}, index=values.index)


def normalise_sex(
    values: Iterable[object] | pd.Series,
    *,
    source: str = "sample metadata",
    field: str | None = None,
    unrecognised: str = "raise",
) -> pd.Series:
    """Map sex spellings to ``male`` / ``female`` / ``unknown`` (same index and name as a Series input).

    Case and surrounding spaces are ignored, as is a leading ``sex:`` / ``gender:`` (or ``=``) that GEO
    characteristics sometimes keep in the value. M/Male/man/men -> male, F/Female/woman/women -> female,
    missing markers (NA, unknown, '', None) -> unknown. Any other value raises InputError naming it and
    the accepted spellings (``unrecognised="raise"``, for the sex covariate of a model, where a typo must
    not become a missing value), or becomes ``unknown`` with a warning listing such values
    (``unrecognised="unknown"``, for a QC check that only compares recorded sex with expression).
    """
    if unrecognised not in UNRECOGNISED_SEX:
        raise ValueError(f"unrecognised must be one of {UNRECOGNISED_SEX}, got {unrecognised!r}")
    series = values if isinstance(values, pd.Series) else pd.Series(list(values))
    field = field if field is not None else str(series.name)
    set_to_unknown: list[str] = []

    def convert(value: object, sample: object) -> str:
        if _is_missing(value):
            return "unknown"
        key = _SEX_KEY_PREFIX.sub("", str(value).strip().lower())
        if key in _SEX_SPELLINGS:
            return _SEX_SPELLINGS[key]
        if key in MISSING_TOKENS:
            return "unknown"
        if unrecognised == "unknown":
            set_to_unknown.append(str(value))
            return "unknown"
        raise InputError(
            f"{source}: field {field!r} sample {sample!r} has unrecognised sex {value!r}; accepted "
            f"spellings: M/Male/man/men (-> male), F/Female/woman/women (-> female), each optionally "
            f"after 'sex:' or 'gender:', NA/unknown/empty (-> unknown); fix the value or the sex "
            f"covariate's field in config"
        )

    out = [convert(v, s) for s, v in series.items()]
    if set_to_unknown:
        log.warning(
            "%s: field %r: %d value(s) not read as a sex, set to unknown: %s",
            source,
            field,
            len(set_to_unknown),
            show_list(sorted(set(set_to_unknown))),
        )
    return pd.Series(out, index=series.index, name=series.name, dtype=object)
