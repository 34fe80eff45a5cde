"""The donor table of a single-cell cohort: one row per donor, and what a contrast of that many donors
can support.

Donors are the replicates of a pseudobulk contrast, so severity, covariates and filters must be
donor-level: the table takes every obs column that is constant within each donor, adds the columns of an
optional donor sheet (which must agree with obs), and refuses a required field that varies within a
donor. :func:`il6axis.cohort.samples.define_contrast` then applies the bulk severity rules to it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from il6axis.cohort.contrast import Contrast
from il6axis.errors import InputError
from il6axis.singlecell.h5 import obs_labels
from il6axis.vocabulary import EXCLUDED, MILD, SEVERE, SEVERITY_ORDER

log = logging.getLogger(__name__)

# Below this many donors in either group a pseudobulk contrast only exercises the code: with 2 vs 2 donors
# the per-gene dispersion rests on 2 residual degrees of freedom and no p-value is worth reading.
UNDERPOWERED_BELOW = 3
# A donor's severity slot, in plotting order: the contrast's groups (reference first), then excluded donors.
DONOR_SEVERITY_ORDER = [*SEVERITY_ORDER, EXCLUDED]


def donor_level_fields(spec: Mapping[str, Any]) -> list[str]:
    """The metadata fields a cohort config reads: they must be constant within a donor."""
    fields = [spec["severity"]["field"]]
    fields += [c["field"] for c in spec.get("covariates", {}).values()]
    fields += list(spec.get("filters", {}))
    fields += [d["from"] for d in spec.get("derived_fields", {}).values()]
    opp = spec.get("one_per_patient") or {}
    fields += [f for f in (opp.get("patient_field"), opp.get("order_field")) if f]
    return list(dict.fromkeys(fields))


def donor_table(
    obs: pd.DataFrame,
    donor_key: str,
    required: Sequence[str] = (),
    sheet: pd.DataFrame | None = None,
    source: str = "",
) -> pd.DataFrame:
    """One row per donor from the cell table: the first value of every column constant within donors.

    Columns that vary within a donor (per-cell counts, barcodes) are dropped. A ``required`` field (severity,
    covariates, filters) that varies within a donor is an error: a donor must have one severity. ``sheet``
    (index = donor) adds donor-level columns from a separate table; a column present in both must agree.
    """
    donor = obs_labels(obs, donor_key, source, "donor_key")
    cells = obs.loc[donor.notna()].drop(columns=[donor_key])
    donor = donor[donor.notna()].to_numpy(str)
    grouped = cells.groupby(donor, observed=True, sort=True)
    n_values = grouped.nunique(dropna=False)
    constant = n_values.le(1).all(axis=0)
    conflicting = [f for f in required if f in n_values.columns and not constant[f]]
    if conflicting:
        f = conflicting[0]
        bad = n_values.index[n_values[f] > 1]
        examples = {d: sorted(map(str, cells.loc[donor == d, f].dropna().unique()))[:4] for d in bad[:3]}
        raise InputError(
            f"{source}: field {f!r} takes several values within a donor ({donor_key!r}), e.g. {examples}; "
            f"severity and covariates must be donor-level. Fix the obs table or the donor_key."
        )
    dropped = list(constant.index[~constant])
    if dropped:
        log.info("%s: cell-level columns not carried to the donor table: %s", source, dropped[:20])
    table = grouped[list(constant.index[constant])].first()
    # Categorical obs columns become plain values: the bulk metadata code works on strings and numbers.
    for col in table.columns:
        if isinstance(table[col].dtype, pd.CategoricalDtype):
            table[col] = table[col].astype(table[col].cat.categories.dtype)
    table.insert(0, "n_cells_in_file", grouped.size())
    table.index = table.index.astype(str)
    table.index.name = "donor"
    if sheet is not None:
        table = _join_sheet(table, sheet, source)
    return table


def read_donor_sheet(path: str | Path, donor_column: str) -> pd.DataFrame:
    """A donor-level CSV/TSV (optionally gzipped), indexed by ``donor_column``, values as text."""
    sep = "\t" if ".tsv" in Path(path).suffixes or ".txt" in Path(path).suffixes else ","
    sheet = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    if donor_column not in sheet.columns:
        raise InputError(
            f"{path}: donor sheet has no column {donor_column!r} (columns: {list(sheet.columns)}); fix "
            f"single_cell.donor_sheet_column"
        )
    ids = sheet[donor_column].str.strip()
    if ids.duplicated().any():
        raise InputError(
            f"{path}: donor {ids[ids.duplicated()].iloc[0]!r} has several rows; keep one per donor"
        )
    return sheet.drop(columns=[donor_column]).set_index(pd.Index(ids, name="donor"))


def _join_sheet(table: pd.DataFrame, sheet: pd.DataFrame, source: str) -> pd.DataFrame:
    """The donor table with the sheet's columns added; every donor must be in the sheet, and a column in
    both must agree."""
    sheet = sheet.copy()
    sheet.index = sheet.index.astype(str).str.strip()
    missing = sorted(set(table.index) - set(sheet.index))
    if missing:
        raise InputError(f"{source}: donors {missing[:10]} are not rows of the donor sheet; add them")
    sheet = sheet.loc[table.index]
    for col in sheet.columns.intersection(table.columns):
        a, b = table[col].astype("string").str.strip(), sheet[col].astype("string").str.strip()
        differs = ~(a.eq(b) | (a.isna() & b.isna()))
        if differs.any():
            d = differs[differs].index[0]
            raise InputError(
                f"{source}: column {col!r} differs between obs ({a[d]!r}) and the donor sheet ({b[d]!r}) for "
                f"donor {d!r}; fix one of them"
            )
    return pd.concat([table, sheet.drop(columns=sheet.columns.intersection(table.columns))], axis=1)


def power_note(n_per_group: Mapping[str, int], contrast: Contrast | None = None) -> str:
    """One sentence on what a pseudobulk contrast of this size can support (groups named as declared)."""
    n_min = min(n_per_group.get(SEVERE, 0), n_per_group.get(MILD, 0))
    contrast = contrast or Contrast()
    n_case, n_reference = n_per_group.get(SEVERE, 0), n_per_group.get(MILD, 0)
    sizes = f"{n_case} {contrast.case} vs {n_reference} {contrast.reference} donors"
    if n_min < UNDERPOWERED_BELOW:
        return f"{sizes}: underpowered; results exercise the code and support no inference"
    return f"{sizes}: donors are the replicates"
