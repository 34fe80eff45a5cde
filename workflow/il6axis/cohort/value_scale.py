"""What scale a count table's values are on, and whether that matches the declared ``counts.value_type``.

A cohort declares its values (``counts.value_type``): raw integer ``counts`` and RSEM/Salmon
``expected_counts`` go to the negative-binomial model; ``normalised`` values on the linear scale (TMM, CPM,
DESeq2-normalised) and ``log2_normalised`` values that are already log2 (GSE172114's "log2 normalized TMM
counts") go to the moderated linear model, the latter without a second log. A wrong declaration is silent
and costly: log2 values logged again, normalised values rounded into fake counts. So the numbers are checked
against the declaration when the cohort is built, before any model sees them (:func:`check_value_type`).

Each table is sorted into one of four kinds by explicit rules, applied in this order (thresholds are
module constants, documented in config/README.md):

1. **negative values** present: ``log`` when the largest value is at most :data:`LOG2_MAX`, otherwise
   ``invalid`` (neither counts, normalised values nor log2 values can be negative *and* reach that high);
   an all-whole-number table with negatives is ``invalid`` too (corrupted counts or a sentinel such as -1).
2. **every value a whole number**: ``integer`` (counts), however large or sparse.
3. **largest value at most** :data:`LOG2_MAX` **and** fewer than :data:`LOG_WHOLE_FRACTION` of the non-zero
   values whole numbers: ``log`` (a log2(x + 1) matrix has no negatives but tops out near 20; a linear
   genome-wide matrix always has a gene above 32, and log values are almost never whole numbers, whereas
   most expected counts are).
4. otherwise ``linear``: non-negative values with fractions (expected counts or normalised values).

Which value types each kind allows: ``integer`` -> counts, expected_counts (nothing to round) or normalised
(a rounded normalised table is possible; :func:`il6axis.cohort.build.normalised_values` warns); ``linear`` ->
expected_counts or normalised; ``log`` -> log2_normalised. Anything else stops the run naming the value
type to use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from il6axis.errors import InputError

log = logging.getLogger(__name__)

COUNTS = "counts"
EXPECTED_COUNTS = "expected_counts"
NORMALISED = "normalised"
LOG2_NORMALISED = "log2_normalised"
VALUE_TYPES = (COUNTS, EXPECTED_COUNTS, NORMALISED, LOG2_NORMALISED)
# Value types that go to the moderated linear model (never the NB model), with float values in the AnnData.
LINEAR_MODEL_TYPES = (NORMALISED, LOG2_NORMALISED)

# Largest value a log2-scaled expression matrix can plausibly hold: log2 of 4.3e9 reads. Any linear
# genome-wide count or normalised matrix has some gene above it (log2(x + 1) tables top out near 20).
LOG2_MAX = 32.0
# Below this fraction of whole numbers among the non-zero values, a non-negative table with a small maximum
# is log-scaled. log2 values are whole only where x + 1 is a power of two; most expected counts are whole.
LOG_WHOLE_FRACTION = 0.5
# Median column total in this range: the values look like CPM/TPM (columns sum to about a million).
CPM_TOTAL_RANGE = (0.5e6, 2e6)

INTEGER, LINEAR, LOG, INVALID = "integer", "linear", "log", "invalid"
ALLOWED: dict[str, tuple[str, ...]] = {
    COUNTS: (INTEGER,),
    EXPECTED_COUNTS: (INTEGER, LINEAR),
    NORMALISED: (INTEGER, LINEAR),
    LOG2_NORMALISED: (LOG,),
}


@dataclass(frozen=True)
class ScaleEvidence:
    """Summary numbers of a table's values and the kind they point to."""

    kind: str  # integer / linear / log / invalid
    minimum: float
    maximum: float
    fraction_negative: float
    whole_fraction_nonzero: float  # among non-zero finite values; 1.0 when there are none
    median_column_total: float
    first_negative: str = ""  # "column 'S1' row 'IL6' (-4.3)" when there is a negative value

    def describe(self) -> str:
        """'min -4.3, max 11.7, 12% negative' (with the whole-number share when it decided the kind)."""
        text = f"min {self.minimum:.3g}, max {self.maximum:.3g}, {_percent(self.fraction_negative)} negative"
        if self.fraction_negative == 0 and self.kind in (LOG, LINEAR):
            text += f", {_percent(self.whole_fraction_nonzero)} of non-zero values whole numbers"
        return text

    @property
    def cpm_like(self) -> bool:
        return CPM_TOTAL_RANGE[0] <= self.median_column_total <= CPM_TOTAL_RANGE[1]


def _percent(fraction: float) -> str:
    if 0 < fraction < 0.01:
        return "<1%"
    return f"{100 * fraction:.0f}%"


def classify(table: pd.DataFrame) -> ScaleEvidence:
    """Sort a genes x samples table of numbers into integer / linear / log / invalid (module docstring).

    Only finite values count (NaN and infinite cells are reported with their position by the readers).
    """
    if all(dt.kind in "iu" for dt in table.dtypes):
        arr = table.to_numpy(dtype=np.int64)
        whole = np.ones(arr.shape, dtype=bool)
    else:
        try:
            arr = table.to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"value table has non-numeric values ({exc}); read it with read_count_table"
            ) from exc
        whole = np.equal(arr, np.rint(arr))
    finite = np.isfinite(arr) if arr.dtype.kind == "f" else np.ones(arr.shape, dtype=bool)
    values = arr[finite]
    if values.size == 0:
        raise InputError("value table has no finite values; check the file")
    negative = (arr < 0) & finite
    nonzero = finite & (arr != 0)
    n_nonzero = int(nonzero.sum())
    whole_nonzero = float((whole & nonzero).sum() / n_nonzero) if n_nonzero else 1.0
    all_whole = bool(whole[finite].all())
    minimum, maximum = float(values.min()), float(values.max())
    totals = np.where(finite, arr, 0).sum(axis=0)
    first = ""
    if negative.any():
        col = int(np.flatnonzero(negative.any(axis=0))[0])
        row = int(np.flatnonzero(negative[:, col])[0])
        first = f"column {str(table.columns[col])!r} row {str(table.index[row])!r} ({arr[row, col]:.4g})"
        kind = INVALID if (all_whole or maximum > LOG2_MAX) else LOG
    elif all_whole:
        kind = INTEGER
    elif maximum <= LOG2_MAX and whole_nonzero < LOG_WHOLE_FRACTION:
        kind = LOG
    else:
        kind = LINEAR
    return ScaleEvidence(
        kind=kind,
        minimum=minimum,
        maximum=maximum,
        fraction_negative=float(negative.sum() / values.size),
        whole_fraction_nonzero=whole_nonzero,
        median_column_total=float(np.median(totals)) if totals.size else 0.0,
        first_negative=first,
    )


def _fix(evidence: ScaleEvidence) -> str:
    """What to set, for a table of this kind."""
    if evidence.kind == INTEGER:
        return "set `counts.value_type: counts` (raw counts go to the negative-binomial model)"
    if evidence.kind == LOG:
        return (
            "set `counts.value_type: log2_normalised` (the linear model uses them as they are: no second log)"
        )
    if evidence.cpm_like:
        return (
            "columns total about a million (CPM-like): set `counts.value_type: normalised` (TPM is not a "
            "model input: point the cohort at counts or CPM instead)"
        )
    return (
        "set `counts.value_type: expected_counts` if these are RSEM/Salmon expected counts (rounded for the "
        "negative-binomial model), or `counts.value_type: normalised` if they are TMM/CPM/DESeq2-normalised "
        "values (moderated linear model on log2(value + 1))"
    )


_LOOKS = {
    INTEGER: "values are all whole numbers (raw counts)",
    LINEAR: "values are non-negative with fractions on a linear scale (expected counts or normalised values)",
    LOG: "values look log2-scaled",
}


def check_value_type(table: pd.DataFrame, declared: str, source: str) -> ScaleEvidence:
    """Check that ``table`` (genes x samples, as read) holds what ``declared`` says; raise if not.

    ``source`` names the cohort and file in the message, e.g. ``GSE172114: matrix.csv.gz: values look
    log2-scaled (min -4.3, max 11.7, 12% negative): set `counts.value_type: log2_normalised` ...``.
    Returns the evidence (the caller logs it); CPM-like totals on a table declared as (expected) counts are
    logged as a warning, since shallow libraries can total about a million reads too.
    """
    if declared not in VALUE_TYPES:
        raise InputError(f"{source}: `counts.value_type` {declared!r} is not one of {list(VALUE_TYPES)}")
    evidence = classify(table)
    if evidence.kind == INVALID:
        why = "are all whole numbers" if evidence.maximum <= LOG2_MAX else f"reach above {LOG2_MAX:g}"
        raise InputError(
            f"{source}: values have negatives ({evidence.describe()}; first at {evidence.first_negative}) "
            f"but {why}: "
            f"neither counts, normalised values nor log2 values (log2 values never exceed {LOG2_MAX:g}); "
            f"is the matrix centred or corrupted? Point the cohort at raw counts, normalised or log2 values"
        )
    if evidence.kind not in ALLOWED[declared]:
        where = f"; first negative value at {evidence.first_negative}" if evidence.first_negative else ""
        raise InputError(
            f"{source}: declared `counts.value_type: {declared}` but {_LOOKS[evidence.kind]} "
            f"({evidence.describe()}{where}): {_fix(evidence)}"
        )
    if declared in (COUNTS, EXPECTED_COUNTS) and evidence.cpm_like:
        log.warning(
            "%s: columns total %.3g on median, like CPM/TPM; if these are normalised values set "
            "`counts.value_type: normalised` (rounding does not make them counts)",
            source,
            evidence.median_column_total,
        )
    log.info(
        "%s: values checked against value_type %s: %s (%s)",
        source,
        declared,
        evidence.kind,
        evidence.describe(),
    )
    return evidence


# ------------------------------------------------------------------------------- working on log2 values
def to_linear(table: pd.DataFrame, value_type: str) -> pd.DataFrame:
    """Values on the linear scale, where rows can be summed: ``2**x`` for log2 values, else unchanged.

    Duplicate gene rows are merged by summing (reads are additive); for log2 values that sum must happen on
    the linear scale and be logged again (:func:`from_linear`), never on the logs.
    """
    return np.exp2(table.astype(np.float64)) if value_type == LOG2_NORMALISED else table


def from_linear(table: pd.DataFrame, value_type: str) -> pd.DataFrame:
    """Inverse of :func:`to_linear`: ``log2`` for log2 values, else unchanged."""
    return np.log2(table) if value_type == LOG2_NORMALISED else table


def log2_values(table: pd.DataFrame, label: str) -> np.ndarray:
    """Float64 values of a table of log2 expression, checked finite (negatives are allowed).

    NaN or infinite cells raise :class:`InputError` naming the first one: ``-inf`` is log2(0) of a matrix
    logged without a prior count, and the linear model cannot use it.
    """
    try:
        arr = table.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{label}: log2 table has non-numeric values ({exc}).") from exc
    bad = ~np.isfinite(arr)
    if bad.any():
        col = int(np.flatnonzero(bad.any(axis=0))[0])
        row = int(np.flatnonzero(bad[:, col])[0])
        raise InputError(
            f"{label}: column {str(table.columns[col])!r} row {str(table.index[row])!r} value "
            f"{float(arr[row, col])!r} is not finite ({int(bad.sum())} such cell(s)); log2 values must be "
            f"complete and finite (-inf is log2(0): use values logged with a prior count, or the linear "
            f"values with `counts.value_type: normalised`)"
        )
    return arr


def detected_log2(
    values: pd.DataFrame, genes: list[str] | None = None, tolerance: float = 1e-6
) -> pd.DataFrame:
    """Samples x ``genes`` (default all): True where a log2 value is above its sample's minimum over all
    genes of ``values`` (its zero-count floor).

    A log2 matrix made with a prior count maps every zero count of a sample to the same lowest value
    (edgeR's ``cpm(log = TRUE)`` scales the prior so that floor is even the same in every sample), so "above
    the sample's minimum" stands in for "count > 0". In a pre-filtered matrix without zeros the sample's
    lowest gene is counted as not detected.
    """
    floor = values.min(axis=1)
    return (values if genes is None else values[genes]).gt(floor + tolerance, axis=0)
