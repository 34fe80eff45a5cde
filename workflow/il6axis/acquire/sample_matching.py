"""Match the sample columns of a count table to the rows of the sample metadata.

Sample columns on GEO are named by GSM accession, by sample title, by a prefix of the title, or by an R
``make.names``-mangled title. :func:`match_samples` tries each configured key (``metadata.match_keys``)
exactly and then R-mangled, takes the best one-to-one match, and sets aside (and lists) what has no
partner on either side, within the limit of ``metadata.max_unmatched_columns``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from il6axis.acquire.table_files import show_list
from il6axis.errors import InputError

__all__ = [
    "INDEX",
    "MatchKey",
    "SampleMatch",
    "UnmatchedLimit",
    "make_names",
    "match_samples",
    "reconcile_sample_ids",
]

log = logging.getLogger(__name__)

# Special token for ``reconcile_sample_ids(candidates=...)`` meaning "the metadata index".
INDEX = "index"

_R_RESERVED = frozenset(
    """if else repeat while function for next break TRUE FALSE NULL Inf NaN NA NA_integer_ NA_real_
    NA_character_ NA_complex_ in""".split()
)


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
