"""Single-cell cohorts: streaming QC and donor x cell-type pseudobulk from an .h5ad, then the bulk machinery.

A single-cell cohort is one .h5ad file (cells x genes, raw UMI counts in ``X`` or a layer; ``obs`` with a
donor column, optionally a cell-type column, and the donor-level fields the cohort's config maps to
severity and covariates). Cells are never the unit of inference: counts are summed per donor and cell type
(pseudobulk), and each cell type becomes a samples x genes AnnData in exactly the layout of a bulk cohort,
so :func:`il6axis.de.nb.run_deseq2`, the panel table and the plots run unchanged on it.

Files can be far larger than memory (1,000,000 cells x 30,000 genes). Everything that touches the count
matrix streams it from disk in chunks bounded both in cells and in non-zeros, through anndata's on-disk
sparse dataset (the object backed mode uses for ``X``; backed mode would load a *layer* into memory, so the
matrix is opened directly with h5py). ``obs`` (a few columns per cell) is read in full.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import h5py
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import seaborn as sns  # noqa: E402

from il6axis.analysis.genesets import CORE_SIGNALLING
from il6axis.cohort.contrast import Contrast, contrast_from_config, contrast_from_uns  # noqa: E402
from il6axis.cohort.samples import define_contrast, to_anndata  # noqa: E402
from il6axis.de.nb import DeSettings, contrast_design_frame, run_and_write  # noqa: E402
from il6axis.errors import InputError  # noqa: E402
from il6axis.vocabulary import EXCLUDED, MILD, SEVERE  # noqa: E402

log = logging.getLogger(__name__)

ALL_CELLS = "all_cells"  # the pseudo cell type used when the file has no cell-type column
TISSUE = "single_cell_pseudobulk"
GROUP_SEP = "|"
DEFAULT_CHUNK_SIZE = 50_000  # cells per chunk
DEFAULT_MAX_NNZ = 20_000_000  # non-zeros per chunk; peak ~0.6 GB above imports (bench/bench_pseudobulk.py)
# Below this many donors in either group a pseudobulk contrast only exercises the code: with 2 vs 2 donors
# the per-gene dispersion rests on 2 residual degrees of freedom and no p-value is worth reading.
UNDERPOWERED_BELOW = 3
QC_COLUMNS = ["total_counts", "n_genes_by_counts", "total_counts_mt", "pct_counts_mt"]
SEVERITY_ORDER = [MILD, SEVERE, EXCLUDED]


# ---------------------------------------------------------------------------------------------------------
# On-disk matrix access


@dataclass
class _Matrix:
    """The count matrix of one .h5ad, open for chunked reading."""

    path: Path
    layer: str | None
    fmt: str  # "csr", "csc" or "dense"
    shape: tuple[int, int]
    store: Any  # anndata on-disk sparse dataset, or h5py.Dataset for dense
    indptr: np.ndarray | None
    layers: list[str]

    @property
    def label(self) -> str:
        return f"{self.path} ({f'layer {self.layer!r}' if self.layer else 'X'})"


@contextmanager
def _open_matrix(path: str | Path, layer: str | None = None) -> Iterator[_Matrix]:
    """Open ``X`` or ``layers/<layer>`` of an .h5ad without reading it."""
    path = Path(path)
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(
            f"{path}: cannot be opened as an HDF5 .h5ad file ({exc}); check the cohort's counts.path"
        ) from exc
    try:
        layers = sorted(fh["layers"].keys()) if "layers" in fh else []
        if layer is None:
            if "X" not in fh:
                raise InputError(
                    f"{path}: the file has no X matrix; set single_cell.layer to one of {layers} (raw counts)"
                )
            elem = fh["X"]
        else:
            if layer not in layers:
                raise InputError(
                    f"{path}: layer {layer!r} not found (layers in the file: {layers}); set "
                    f"single_cell.layer to the layer holding raw counts, or null to use X"
                )
            elem = fh["layers"][layer]
        if isinstance(elem, h5py.Dataset):
            yield _Matrix(path, layer, "dense", tuple(elem.shape), elem, None, layers)
            return
        encoding = elem.attrs.get("encoding-type", "")
        if encoding not in ("csr_matrix", "csc_matrix"):
            raise InputError(
                f"{path}: matrix {'X' if layer is None else layer!r} has encoding {encoding!r}; expected an "
                f"AnnData csr_matrix/csc_matrix or a dense array (re-write the file with anndata >= 0.8)"
            )
        store = ad.io.sparse_dataset(elem)
        shape = (int(store.shape[0]), int(store.shape[1]))
        # indptr is small (one int per row or column) and lets chunks be sized by their non-zeros.
        yield _Matrix(path, layer, encoding[:3], shape, store, elem["indptr"][:], layers)
    finally:
        fh.close()


def _spans(indptr: np.ndarray | None, n: int, max_len: int, max_nnz: int) -> list[tuple[int, int]]:
    """Consecutive [start, stop) ranges of at most ``max_len`` rows and (if indptr) ``max_nnz`` non-zeros."""
    spans: list[tuple[int, int]] = []
    start = 0
    while start < n:
        stop = min(start + max_len, n)
        if indptr is not None and indptr[stop] - indptr[start] > max_nnz:
            stop = int(np.searchsorted(indptr, indptr[start] + max_nnz, side="right")) - 1
            stop = max(stop, start + 1)  # a single row larger than the budget still has to be read
        spans.append((start, stop))
        start = stop
    return spans


@dataclass
class _Block:
    """One chunk of the matrix: ``rows`` x ``cols`` of the file, as a scipy sparse matrix."""

    rows: slice
    cols: slice
    x: sp.csr_matrix | sp.csc_matrix


def _check_counts(values: np.ndarray, m: _Matrix, where: str) -> None:
    """Raw counts only: non-negative integers (any dtype). Normalised data must never be summed."""
    if values.size == 0:
        return
    hint = (
        f"pseudobulk and QC need raw counts. Point single_cell.layer at the raw-count layer "
        f"(layers in the file: {m.layers}; null = X)."
    )
    if np.issubdtype(values.dtype, np.integer):
        if values.min() < 0:
            raise InputError(f"{m.label}: negative value {values.min()} in {where}; {hint}")
        return
    if not np.issubdtype(values.dtype, np.floating):
        raise InputError(f"{m.label}: values of dtype {values.dtype} in {where} are not numbers; {hint}")
    bad = ~np.isfinite(values) | (values < 0) | (values != np.rint(values))
    if bad.any():
        raise InputError(
            f"{m.label}: value {values[bad][0]!r} in {where} is not a non-negative integer "
            f"({int(bad.sum())} such values in this chunk); {hint}"
        )


def _blocks(m: _Matrix, chunk_size: int, max_nnz: int) -> Iterator[_Block]:
    """Stream the matrix: row chunks for CSR/dense, gene chunks for CSC (its cheap direction)."""
    n_rows, n_cols = m.shape
    if m.fmt == "csc":
        for a, b in _spans(m.indptr, n_cols, max(chunk_size, 1), max_nnz):
            x = sp.csc_matrix(m.store[:, a:b])
            _check_counts(x.data, m, f"genes {a}-{b - 1}")
            yield _Block(slice(0, n_rows), slice(a, b), x)
        return
    max_rows = chunk_size if m.fmt == "csr" else max(1, min(chunk_size, max_nnz // max(n_cols, 1)))
    for a, b in _spans(m.indptr, n_rows, max_rows, max_nnz):
        raw = m.store[a:b]
        x = sp.csr_matrix(np.asarray(raw)) if m.fmt == "dense" else sp.csr_matrix(raw)
        _check_counts(x.data, m, f"cells {a}-{b - 1}")
        yield _Block(slice(a, b), slice(0, n_cols), x)


def read_obs(path: str | Path) -> pd.DataFrame:
    """The cell table of an .h5ad (no matrix is read)."""
    with h5py.File(path, "r") as fh:
        obs = ad.io.read_elem(fh["obs"])
    obs.index = obs.index.astype(str)
    return obs


def read_gene_symbols(path: str | Path, var_symbol_key: str | None = None) -> pd.Index:
    """Gene symbols in matrix column order: the var index, or a var column (cellxgene: ``feature_name``)."""
    with h5py.File(path, "r") as fh:
        var = ad.io.read_elem(fh["var"])
    if var_symbol_key is None:
        return pd.Index(var.index.astype(str), name="gene")
    if var_symbol_key not in var.columns:
        raise InputError(
            f"{path}: var column {var_symbol_key!r} (single_cell.var_symbol_key) not found; var columns: "
            f"{list(var.columns)[:20]}; use null for the var index"
        )
    symbols = var[var_symbol_key].astype("string")
    if symbols.isna().any() or symbols.str.strip().eq("").any():
        raise InputError(
            f"{path}: var column {var_symbol_key!r} has empty gene symbols (e.g. row "
            f"{var.index[symbols.isna() | symbols.str.strip().eq('')][0]!r}); fill them or use another column"
        )
    return pd.Index(symbols.str.strip().to_numpy(dtype=str), name="gene")


def _labels(obs: pd.DataFrame, key: str, path: str | Path, what: str) -> pd.Series:
    """A label column as stripped strings with <NA> for missing values (never the text 'nan')."""
    if key not in obs.columns:
        raise InputError(
            f"{path}: obs has no column {key!r} ({what}); obs columns: {list(obs.columns)[:30]}. "
            f"Fix single_cell.{what} in the cohort's config."
        )
    text = obs[key].astype("string").str.strip()
    return text.mask(text.eq(""))


# ---------------------------------------------------------------------------------------------------------
# Cell QC


def _mito_mask(symbols: pd.Index, prefix: str) -> np.ndarray:
    """Mitochondrial genes by symbol prefix, case-insensitive (human MT-, mouse mt-)."""
    return np.asarray(symbols.str.upper().str.startswith(prefix.upper()), dtype=bool)


def _qc_rows_scanpy(x: sp.csr_matrix, mito: np.ndarray) -> pd.DataFrame:
    """scanpy's per-cell QC metrics for an in-memory row chunk."""
    import scanpy as sc

    var = pd.DataFrame({"mt": mito}, index=pd.RangeIndex(len(mito)).astype(str))
    chunk = ad.AnnData(X=x, var=var)
    cell_qc, _ = sc.pp.calculate_qc_metrics(
        chunk, qc_vars=["mt"], percent_top=None, log1p=False, inplace=False
    )
    return cell_qc[QC_COLUMNS]


def qc_metrics_backed(
    path: str | Path,
    layer: str | None = None,
    mito_prefix: str = "MT-",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_nnz: int = DEFAULT_MAX_NNZ,
    var_symbol_key: str | None = None,
) -> pd.DataFrame:
    """Per-cell total counts, detected genes and mitochondrial fraction, streamed from disk.

    Row chunks (CSR or dense files) go through ``scanpy.pp.calculate_qc_metrics``; a CSC file is read in
    gene chunks whose per-cell sums are accumulated with the same definitions (count > 0 = detected).
    """
    symbols = read_gene_symbols(path, var_symbol_key)
    mito = _mito_mask(symbols, mito_prefix)
    obs_names = read_obs(path).index
    if not mito.any():
        log.warning("%s: no gene starts with %r: pct_counts_mt is 0 for every cell", path, mito_prefix)
    with _open_matrix(path, layer) as m:
        if m.shape != (len(obs_names), len(symbols)):
            raise InputError(f"{m.label}: matrix shape {m.shape} does not match obs x var")
        if m.fmt == "csc":
            total = np.zeros(m.shape[0])
            n_genes = np.zeros(m.shape[0], dtype=np.int64)
            total_mt = np.zeros(m.shape[0])
            for block in _blocks(m, chunk_size, max_nnz):
                x = block.x
                total += np.asarray(x.sum(axis=1)).ravel()
                n_genes += np.asarray((x > 0).sum(axis=1)).ravel()
                local_mt = np.flatnonzero(mito[block.cols])
                if len(local_mt):
                    total_mt += np.asarray(x[:, local_mt].sum(axis=1)).ravel()
            with np.errstate(divide="ignore", invalid="ignore"):
                pct = 100.0 * total_mt / total
            metrics = pd.DataFrame(
                {
                    "total_counts": total,
                    "n_genes_by_counts": n_genes,
                    "total_counts_mt": total_mt,
                    "pct_counts_mt": pct,
                }
            )
        else:
            parts = [_qc_rows_scanpy(block.x, mito) for block in _blocks(m, chunk_size, max_nnz)]
            metrics = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=QC_COLUMNS)
    metrics.index = obs_names
    metrics["n_genes_by_counts"] = metrics["n_genes_by_counts"].astype(np.int64)
    log.info(
        "%s: QC metrics for %d cells (median counts %.0f, genes %.0f, %% mito %.1f; %d mito genes)",
        path, len(metrics), metrics["total_counts"].median(), metrics["n_genes_by_counts"].median(),
        metrics["pct_counts_mt"].median(), int(mito.sum()),
    )  # fmt: skip
    return metrics


def qc_mask(
    metrics: pd.DataFrame, min_counts: float, min_genes: int, max_pct_mt: float
) -> tuple[pd.Series, pd.DataFrame]:
    """Cells passing all three thresholds, and a table of cells removed per reason.

    A cell can fail several criteria, so the per-reason rows overlap; the ``any reason`` row is the total.
    A cell with no counts at all has an undefined mitochondrial fraction and fails ``min_counts`` anyway.
    """
    failing = {
        f"total_counts < {min_counts:g}": metrics["total_counts"] < min_counts,
        f"n_genes_by_counts < {min_genes:g}": metrics["n_genes_by_counts"] < min_genes,
        f"pct_counts_mt > {max_pct_mt:g}": metrics["pct_counts_mt"].fillna(0.0) > max_pct_mt,
    }
    removed = pd.concat(failing, axis=1).any(axis=1)
    rows = [{"reason": why, "n_cells": int(mask.sum())} for why, mask in failing.items()]
    rows += [
        {"reason": "removed (any reason)", "n_cells": int(removed.sum())},
        {"reason": "kept", "n_cells": int((~removed).sum())},
    ]
    summary = pd.DataFrame(rows)
    summary["fraction"] = summary["n_cells"] / max(len(metrics), 1)
    log.info("QC: kept %d of %d cells; %s", int((~removed).sum()), len(metrics), rows[:3])
    return ~removed, summary


# ---------------------------------------------------------------------------------------------------------
# Pseudobulk


def _group_codes(donor: pd.Series, cell_type: pd.Series) -> tuple[np.ndarray, pd.DataFrame]:
    """Integer group per cell (-1 when the donor or cell type is missing) and the sorted group table."""
    valid = (donor.notna() & cell_type.notna()).to_numpy()
    frame = pd.DataFrame({"donor": donor[valid].to_numpy(str), "cell_type": cell_type[valid].to_numpy(str)})
    local, uniques = pd.factorize(pd.MultiIndex.from_frame(frame), sort=True)
    codes = np.full(len(donor), -1, dtype=np.int64)
    codes[valid] = local
    groups = pd.DataFrame(list(uniques), columns=["donor", "cell_type"])
    return codes, groups


def pseudobulk(
    path: str | Path,
    obs_keys: tuple[str, str | None],
    keep_mask: pd.Series | np.ndarray | None = None,
    layer: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_nnz: int = DEFAULT_MAX_NNZ,
    var_symbol_key: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sum raw counts of the kept cells per donor x cell type, streaming the matrix in bounded chunks.

    Returns ``(counts, meta)``: ``counts`` is groups x genes (int64, index ``donor|cell_type``, columns gene
    symbols; duplicated symbols are summed, as for bulk cohorts); ``meta`` has ``donor``, ``cell_type``,
    ``n_cells`` (kept) and ``n_cells_removed_qc`` per group. A group whose cells all failed QC stays with
    ``n_cells == 0`` so that the filter lists it. Each chunk is summed with a sparse groups x cells
    indicator matrix, so memory is bounded by the chunk and the groups x genes result, never by the file.
    """
    donor_key, celltype_key = obs_keys
    obs = read_obs(path)
    symbols = read_gene_symbols(path, var_symbol_key)
    donor = _labels(obs, donor_key, path, "donor_key")
    if celltype_key is None:
        log.info(
            "%s: no cell-type column configured: one pseudo cell type %r (donor pseudobulk)", path, ALL_CELLS
        )
        cell_type = pd.Series(ALL_CELLS, index=obs.index, dtype="string")
    else:
        cell_type = _labels(obs, celltype_key, path, "celltype_key")
    keep = _as_mask(keep_mask, obs.index, path)
    for what, missing in (("donor", donor.isna()), ("cell type", cell_type.isna())):
        if missing.any():
            log.warning("%s: %d cells without a %s label are left out", path, int(missing.sum()), what)
    codes, groups = _group_codes(donor, cell_type)
    if groups.empty:
        raise InputError(f"{path}: no cell has both a donor ({donor_key!r}) and a cell type label")
    n_groups = len(groups)
    kept_codes = np.where(keep, codes, -1)
    groups["n_cells"] = np.bincount(kept_codes[kept_codes >= 0], minlength=n_groups)
    groups["n_cells_removed_qc"] = np.bincount(codes[(codes >= 0) & ~keep], minlength=n_groups)

    with _open_matrix(path, layer) as m:
        if m.shape != (len(obs), len(symbols)):
            raise InputError(f"{m.label}: matrix shape {m.shape} does not match obs x var")
        sums = np.zeros((n_groups, m.shape[1]), dtype=np.int64)
        full_indicator = _indicator(kept_codes, n_groups) if m.fmt == "csc" else None
        for block in _blocks(m, chunk_size, max_nnz):
            indicator = (
                full_indicator if full_indicator is not None else _indicator(kept_codes[block.rows], n_groups)
            )
            # int64 before multiplying: per-group sums of a million cells overflow int32.
            sums[:, block.cols] += (indicator @ block.x.astype(np.int64)).toarray()
    ids = groups["donor"] + GROUP_SEP + groups["cell_type"]
    if ids.duplicated().any():
        raise InputError(
            f"{path}: donor or cell-type labels contain {GROUP_SEP!r}, making group IDs ambiguous"
        )
    groups.index = pd.Index(ids, name="group")
    counts = pd.DataFrame(sums, index=groups.index, columns=symbols)
    if symbols.duplicated().any():
        n_dup = int(symbols.duplicated().sum())
        log.info("%s: %d duplicated gene symbols summed (counts are additive)", path, n_dup)
        counts = counts.T.groupby(level=0, sort=False).sum().T
    log.info(
        "%s: pseudobulk of %d cells into %d donor x cell-type groups (%d donors, %d cell types)",
        path, int(groups["n_cells"].sum()), n_groups, groups["donor"].nunique(),
        groups["cell_type"].nunique(),
    )  # fmt: skip
    return counts, groups


def _indicator(codes: np.ndarray, n_groups: int) -> sp.csr_matrix:
    """groups x cells 0/1 matrix (int64) of the cells with a group (code >= 0)."""
    cells = np.flatnonzero(codes >= 0)
    ones = np.ones(len(cells), dtype=np.int64)
    return sp.csr_matrix((ones, (codes[cells], cells)), shape=(n_groups, len(codes)))


def _as_mask(keep_mask: pd.Series | np.ndarray | None, index: pd.Index, path: str | Path) -> np.ndarray:
    if keep_mask is None:
        return np.ones(len(index), dtype=bool)
    if isinstance(keep_mask, pd.Series):
        if not keep_mask.index.equals(index):
            keep_mask = keep_mask.reindex(index)
            if keep_mask.isna().any():
                raise InputError(f"{path}: the cell mask does not cover every cell of obs")
        keep_mask = keep_mask.to_numpy()
    mask = np.asarray(keep_mask, dtype=bool)
    if mask.shape != (len(index),):
        raise InputError(f"{path}: the cell mask has {mask.shape} entries for {len(index)} cells")
    return mask


def pseudobulk_filter(
    meta: pd.DataFrame, min_cells: int, min_donors_per_group: int, severity: pd.Series
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop thin samples, then cell types with too few donors per severity group; list every skip.

    1. A donor x cell-type sample with fewer than ``min_cells`` kept cells is dropped (its sum is noise).
    2. A cell type is dropped when, among the remaining samples, the severe or the mild group has fewer than
       ``min_donors_per_group`` donors (pydeseq2 needs replicates in both groups).
    ``severity`` maps donor -> mild/severe/excluded (from :func:`il6axis.cohort.samples.define_contrast`).
    Excluded
    donors' samples are kept (they stay in the AnnData as ``excluded``, like bulk samples) but never count.
    Returns ``(kept meta, skipped)`` with ``skipped`` columns ``cell_type``, ``donor`` ('' = whole cell type),
    ``reason``.
    """
    unknown = sorted(set(meta["donor"]) - set(severity.index.astype(str)))
    if unknown:
        raise InputError(f"donors {unknown[:10]} have no severity assignment (not in the donor table)")
    sev = meta["donor"].map(severity.astype(str).to_dict())
    thin = meta["n_cells"] < min_cells
    skipped = [
        {
            "cell_type": r.cell_type,
            "donor": r.donor,
            "reason": f"{r.n_cells} cells < min_cells={min_cells}",
        }
        for r in meta[thin].itertuples()
    ]
    kept = meta[~thin]
    drop_types = []
    for cell_type, rows in kept.groupby("cell_type", sort=True):
        n = {g: int(sev[rows.index].eq(g).sum()) for g in (SEVERE, MILD)}
        if min(n.values()) < min_donors_per_group:
            drop_types.append(cell_type)
            skipped.append(
                {
                    "cell_type": cell_type,
                    "donor": "",
                    "reason": (
                        f"donors with >= {min_cells} cells: severe {n[SEVERE]}, mild {n[MILD]}; "
                        f"need >= {min_donors_per_group} per group"
                    ),
                }
            )
    for cell_type in sorted(set(meta["cell_type"]) - set(kept["cell_type"])):
        skipped.append(
            {"cell_type": cell_type, "donor": "", "reason": f"no sample with >= {min_cells} cells"}
        )
    kept = kept[~kept["cell_type"].isin(drop_types)]
    skipped_df = pd.DataFrame(skipped, columns=["cell_type", "donor", "reason"])
    for r in skipped_df.itertuples():
        log.info("skipped %s%s: %s", r.cell_type, f" / {r.donor}" if r.donor else "", r.reason)
    return kept, skipped_df


# ---------------------------------------------------------------------------------------------------------
# Donor table and per-cell-type cohort AnnData


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
    donor = _labels(obs, donor_key, source, "donor_key")
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


def celltype_adata(
    pb_counts: pd.DataFrame,
    pb_meta: pd.DataFrame,
    donor_obs: pd.DataFrame,
    cell_type: str,
    cohort: str = "",
    covariates: Sequence[str] = (),
    uns: Mapping[str, Any] | None = None,
) -> ad.AnnData:
    """Pseudobulk samples of one cell type as a bulk-layout cohort AnnData (samples = donors).

    ``donor_obs`` is :func:`il6axis.cohort.samples.define_contrast` applied to the donor table, so severity
    labels,
    exclusions and typed covariates follow exactly the bulk rules. ``X`` is int64, ``obs`` adds ``cell_type``
    and ``n_cells``; ``uns`` carries ``cohort``, ``tissue`` (``single_cell_pseudobulk``), ``cell_type``,
    ``covariates`` and the power note.
    """
    rows = pb_meta.index[pb_meta["cell_type"] == cell_type]
    if len(rows) == 0:
        raise InputError(f"{cohort}: cell type {cell_type!r} has no pseudobulk sample")
    donors = pb_meta.loc[rows, "donor"].astype(str).to_numpy()
    missing = sorted(set(donors) - set(donor_obs.index.astype(str)))
    if missing:
        raise InputError(
            f"{cohort}: donors {missing[:10]} of cell type {cell_type!r} are not in the donor table"
        )
    obs = donor_obs.copy()
    obs.index = obs.index.astype(str)
    obs = obs.loc[donors]
    if "sample_id" in obs.columns:  # to_anndata adds its own sample_id
        obs = obs.rename(columns={"sample_id": "sample_id_in_file"})
    obs["cell_type"] = cell_type
    obs["n_cells"] = pb_meta.loc[rows, "n_cells"].to_numpy(dtype=np.int64)
    counts = pb_counts.loc[rows]
    counts.index = pd.Index(donors)
    n_per_group = {g: int((obs["severity"] == g).sum()) for g in (SEVERE, MILD)}
    info = {
        "cohort": cohort,
        "tissue": TISSUE,
        "cell_type": cell_type,
        "covariates": list(covariates),
        "power_note": power_note(n_per_group, contrast_from_uns(dict(uns or {}))),
        **dict(uns or {}),
    }
    return to_anndata(counts.T, obs, info)


# ---------------------------------------------------------------------------------------------------------
# Gene-set scores on pseudobulk samples


def log_cpm(adata: ad.AnnData, prior: float = 1.0) -> pd.DataFrame:
    """log2(CPM + prior) per sample (samples x genes)."""
    counts = np.asarray(adata.X, dtype=float)
    lib = counts.sum(axis=1, keepdims=True)
    lib[lib == 0] = 1.0
    return pd.DataFrame(np.log2(counts / lib * 1e6 + prior), index=adata.obs_names, columns=adata.var_names)


def pathway_scores(
    adata: ad.AnnData, gene_sets: Mapping[str, Sequence[str]], min_genes: int = 2
) -> pd.DataFrame:
    """Per sample and set: mean z-score (across this AnnData's samples) of log2-CPM over the set's genes.

    Genes absent, or constant across samples (no z), are not used; a set with fewer than ``min_genes``
    usable genes gets no score (NaN) rather than a one-gene "pathway" score. Long format: ``sample_id``,
    ``gene_set``, ``score``, ``n_genes_in_set``, ``n_genes_used``.
    """
    expr = log_cpm(adata)
    sd = expr.std(axis=0, ddof=1)
    z = (expr - expr.mean(axis=0)) / sd.where(sd > 0)
    rows = []
    for name, genes in gene_sets.items():
        used = [
            g for g in dict.fromkeys(genes) if g in z.columns and np.isfinite(sd.get(g, np.nan)) and sd[g] > 0
        ]
        score = z[used].mean(axis=1) if len(used) >= min_genes else pd.Series(np.nan, index=z.index)
        for sample, value in score.items():
            rows.append(
                {"sample_id": sample, "gene_set": name, "score": value,
                 "n_genes_in_set": len(set(genes)), "n_genes_used": len(used)}
            )  # fmt: skip
    return pd.DataFrame(rows)


def pathway_table(adata: ad.AnnData, scores: pd.DataFrame, covariates: Sequence[str]) -> pd.DataFrame:
    """Severity effect on each set score: OLS ``score ~ covariates + severity`` on the mild + severe donors.

    Same contrast frame as the DE (mild reference, numeric covariates standardised). Reports the severe -
    mild coefficient, its SE, 95% CI and p-value; NaN when the model has no residual degrees of freedom.
    """
    import statsmodels.formula.api as smf

    in_contrast = adata.obs["severity"].isin([SEVERE, MILD])
    design = contrast_design_frame(adata.obs[in_contrast], covariates)
    formula = "score ~ " + " + ".join([*covariates, "severity"])
    rows = []
    for name, part in scores.groupby("gene_set", sort=False):
        data = design.join(part.set_index("sample_id")["score"])
        row: dict[str, Any] = {
            "gene_set": name,
            "n_genes_used": int(part["n_genes_used"].iloc[0]),
            "n_mild": int((data["severity"] == MILD).sum()),
            "n_severe": int((data["severity"] == SEVERE).sum()),
            "mean_mild": data.loc[data["severity"] == MILD, "score"].mean(),
            "mean_severe": data.loc[data["severity"] == SEVERE, "score"].mean(),
        }
        fit = smf.ols(formula, data=data).fit() if data["score"].notna().all() else None
        if fit is not None and fit.df_resid >= 1:
            coef = "severity[T.severe]"
            ci = fit.conf_int().loc[coef]
            row.update(
                {"effect": fit.params[coef], "se": fit.bse[coef], "ci_low": ci[0], "ci_high": ci[1],
                 "pvalue": fit.pvalues[coef], "df_resid": fit.df_resid}
            )  # fmt: skip
        else:
            row.update({"effect": np.nan, "se": np.nan, "ci_low": np.nan, "ci_high": np.nan, "pvalue": np.nan,
                        "df_resid": 0 if fit is None else fit.df_resid})  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------
# Cell-level subsample for dot / matrix plots


def panel_subsample(
    path: str | Path,
    genes: Sequence[str],
    obs_keys: tuple[str, str | None],
    keep_mask: pd.Series | np.ndarray | None,
    donor_severity: pd.Series,
    total_counts: pd.Series | np.ndarray,
    n_max: int = 50_000,
    seed: int = 0,
    layer: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_nnz: int = DEFAULT_MAX_NNZ,
    var_symbol_key: str | None = None,
) -> ad.AnnData:
    """A seeded random subsample of kept cells, panel genes only, log1p(counts / total * 1e4).

    The normalisation is scanpy's ``normalize_total(target_sum=1e4)`` + ``log1p`` with the cell total taken
    over all genes (``total_counts`` from QC), so the panel-only matrix is scaled as the full one would be.
    ``obs`` has ``donor``, ``cell_type`` and ``severity`` (mild / severe / excluded).
    """
    donor_key, celltype_key = obs_keys
    obs = read_obs(path)
    symbols = read_gene_symbols(path, var_symbol_key)
    donor = _labels(obs, donor_key, path, "donor_key")
    cell_type = (
        pd.Series(ALL_CELLS, index=obs.index, dtype="string")
        if celltype_key is None
        else _labels(obs, celltype_key, path, "celltype_key")
    )
    severity = donor.map(donor_severity.astype(str).to_dict())
    eligible = (
        _as_mask(keep_mask, obs.index, path) & cell_type.notna().to_numpy() & severity.notna().to_numpy()
    )
    pool = np.flatnonzero(eligible)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(pool, size=min(n_max, len(pool)), replace=False))
    present = [g for g in dict.fromkeys(genes) if g in set(symbols)]
    col_idx = np.array([symbols.get_loc(g) if symbols.is_unique else int(np.flatnonzero(symbols == g)[0])
                        for g in present], dtype=np.int64)  # fmt: skip
    with _open_matrix(path, layer) as m:
        if m.fmt == "csc":
            order = np.argsort(col_idx)
            sub = sp.csc_matrix(m.store[:, np.sort(col_idx)])
            _check_counts(sub.data, m, "panel genes")
            x = sub.tocsr()[chosen][:, np.argsort(order)]
        else:
            parts = []
            for block in _blocks(m, chunk_size, max_nnz):
                local = chosen[(chosen >= block.rows.start) & (chosen < block.rows.stop)] - block.rows.start
                if len(local):
                    parts.append(block.x[local][:, col_idx])
            x = sp.vstack(parts).tocsr() if parts else sp.csr_matrix((0, len(col_idx)))
    totals = np.asarray(total_counts, dtype=float)[chosen]
    totals[totals == 0] = 1.0
    values = np.log1p(np.asarray(x.todense(), dtype=float) / totals[:, None] * 1e4).astype(np.float32)
    cells = pd.DataFrame(
        {
            "donor": donor.to_numpy(str)[chosen],
            "cell_type": cell_type.to_numpy(str)[chosen],
            "severity": pd.Categorical(severity.to_numpy()[chosen], categories=SEVERITY_ORDER),
        },
        index=obs.index[chosen],
    )
    log.info("%s: %d of %d eligible cells subsampled for cell-level plots", path, len(chosen), len(pool))
    return ad.AnnData(X=values, obs=cells, var=pd.DataFrame(index=pd.Index(present, name="gene")))


# ---------------------------------------------------------------------------------------------------------
# Figures


def _donor_counts_text(donor_obs: pd.DataFrame, contrast: Contrast | None = None) -> str:
    n = donor_obs["severity"].astype(str).value_counts()
    contrast = contrast or Contrast()
    text = (
        f"donors: {contrast.case} {n.get(SEVERE, 0)}, {contrast.reference} {n.get(MILD, 0)}, "
        f"excluded {n.get(EXCLUDED, 0)}"
    )
    if min(n.get(SEVERE, 0), n.get(MILD, 0)) < UNDERPOWERED_BELOW:
        text += " (underpowered: code exercise, no inference)"
    return text


def panel_dotplot(
    cells: ad.AnnData,
    genes: Sequence[str] | Mapping[str, Sequence[str]],
    out_path: str | Path,
    title: str,
    kind: str = "dotplot",
) -> None:
    """scanpy dot plot (or matrix plot) of panel genes by cell type x severity on normalised cells.

    ``genes`` may be a mapping (e.g. panel tier -> genes): scanpy then brackets each group on the gene axis.
    Genes absent from ``cells`` are left out; groups left empty are dropped.
    """
    import scanpy as sc

    groups = dict(genes) if isinstance(genes, Mapping) else {"": list(genes)}
    present = {k: [g for g in v if g in cells.var_names] for k, v in groups.items()}
    present = {k: v for k, v in present.items() if v}
    n_genes = sum(map(len, present.values()))
    if not n_genes:
        raise InputError("none of the panel genes is in the single-cell matrix; nothing to plot")
    var_names: list[str] | dict[str, list[str]] = (
        present if len(present) > 1 else next(iter(present.values()))
    )
    cells = cells.copy()
    cells.obs["severity"] = cells.obs["severity"].cat.remove_unused_categories()
    labels = cells.obs["cell_type"].astype(str) + " / " + cells.obs["severity"].astype(str)
    order = [
        f"{ct} / {sev}"
        for ct in sorted(cells.obs["cell_type"].unique())
        for sev in cells.obs["severity"].cat.categories
    ]
    cells.obs["group"] = pd.Categorical(labels, categories=[o for o in order if (labels == o).any()])
    n_rows = len(cells.obs["group"].cat.categories)
    # Sized from the gene and group counts; scanpy's default leaves a wide gap under the title.
    figsize = (max(6.0, 0.3 * n_genes + 3.5), max(2.8, 0.32 * n_rows + 2.0))
    common: dict[str, Any] = {"var_names": var_names, "groupby": "group", "figsize": figsize, "show": False}
    common["return_fig"] = True
    # With gene-group brackets the title goes on the figure, above them (on the axes it collides).
    bracketed = isinstance(var_names, dict)
    if bracketed:
        common["var_group_rotation"] = 0
    else:
        common["title"] = title
    if kind == "dotplot":
        plot = sc.pl.dotplot(
            cells, **common, colorbar_title="mean log1p\n(CP10k)", size_title="fraction of\ncells (%)"
        )
    elif kind == "matrixplot":
        plot = sc.pl.matrixplot(
            cells, **common, standard_scale="var", colorbar_title="mean log1p,\nscaled per gene"
        )
    else:
        raise ValueError(f"kind must be 'dotplot' or 'matrixplot', not {kind!r}")
    plot.make_figure()
    if bracketed:
        plot.fig.suptitle(title, y=1.0, va="bottom", fontsize=11)
    plot.fig.savefig(str(out_path), bbox_inches="tight", dpi=150)
    plt.close("all")


def celltype_volcano(
    table: pd.DataFrame,
    label_genes: Sequence[str],
    alpha: float,
    title: str,
    out_path: str | Path,
    contrast: Contrast | None = None,
) -> None:
    """The bulk volcano (il6axis.figures.de.volcano) for one cell type's DE table (axis and legend name the
    declared ``contrast``)."""
    from il6axis.figures import de as plots
    from il6axis.figures.style import save

    save(plots.volcano(table, label_genes, alpha, title, contrast), [out_path])


def pathway_score_plot(scores: pd.DataFrame, out_path: str | Path, title: str) -> None:
    """Per-donor set scores by cell type and severity, one panel per gene set.

    ``scores`` is long: ``gene_set``, ``cell_type``, ``severity``, ``score`` (one row per donor). Every donor
    is a dot: with a handful of donors, a box alone would hide how few there are.
    """
    data = scores.dropna(subset=["score"]).copy()
    sets = list(dict.fromkeys(data["gene_set"]))
    if not sets:
        raise InputError("no gene-set score could be computed (too few panel genes present); nothing to plot")
    hue_order = [s for s in SEVERITY_ORDER if s in set(data["severity"].astype(str))]
    palette = {MILD: "#2471a3", SEVERE: "#c0392b", EXCLUDED: "#7f8c8d"}
    order = sorted(data["cell_type"].unique())
    ncols = min(3, len(sets))
    nrows = -(-len(sets) // ncols)
    width = max(3.2, 0.9 * len(order) + 1.6)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 3.4 * nrows), dpi=150, squeeze=False)
    for ax, name in zip(axes.ravel(), sets, strict=False):
        part = data[data["gene_set"] == name].assign(severity=lambda d: d["severity"].astype(str))
        sns.boxplot(
            data=part, x="cell_type", y="score", hue="severity", order=order, hue_order=hue_order,
            palette=palette, fill=False, showfliers=False, legend=False, ax=ax, linewidth=0.8,
        )  # fmt: skip
        sns.stripplot(
            data=part, x="cell_type", y="score", hue="severity", order=order, hue_order=hue_order,
            palette=palette, dodge=True, size=5, jitter=0.08, ax=ax, legend=ax is axes.ravel()[0],
        )  # fmt: skip
        used = int(part["n_genes_used"].max()) if "n_genes_used" in part else 0
        ax.set_title(f"{name} ({used} genes)", fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("mean z of log2 CPM")
        ax.tick_params(axis="x", labelrotation=30 if len(order) > 3 else 0, labelsize=8)
        ax.axhline(0, color="grey", lw=0.5, ls=":")
        sns.despine(ax=ax)
    for ax in axes.ravel()[len(sets) :]:
        ax.set_visible(False)
    # One legend for the figure, outside the panels, so it never covers a donor.
    first = axes.ravel()[0]
    handles, labels = first.get_legend_handles_labels()
    if first.get_legend() is not None:
        first.get_legend().remove()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.legend(handles, labels, title="severity", fontsize=8, title_fontsize=8, loc="center left",
               bbox_to_anchor=(1.0, 0.5), frameon=False)  # fmt: skip
    fig.savefig(str(out_path), bbox_inches="tight", dpi=150)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------
# Cohort-level driver


# Keys of a cohort's ``single_cell`` config block that name files rather than analysis settings.
FILE_KEYS = frozenset({"h5ad", "sha256", "donor_sheet", "donor_sheet_column"})


@dataclass(frozen=True)
class SingleCellSettings:
    """The ``single_cell`` block of a cohort's config (defaults = the schema's)."""

    donor_key: str
    celltype_key: str | None = None
    layer: str | None = None
    var_symbol_key: str | None = None
    mito_prefix: str = "MT-"
    min_counts: int = 500
    min_genes: int = 200
    max_pct_mt: float = 20.0
    min_cells: int = 10
    min_donors_per_group: int = 2
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_nnz_per_chunk: int = DEFAULT_MAX_NNZ
    plot_max_cells: int = 50_000
    seed: int = 0

    @classmethod
    def from_config(cls, block: Mapping[str, Any]) -> SingleCellSettings:
        """From a cohort's ``single_cell`` block; its file keys (h5ad, sha256, donor sheet) are skipped."""
        qc = dict(block.get("qc", {}))
        flat = {k: v for k, v in block.items() if k != "qc" and k not in FILE_KEYS} | qc
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(flat) - known)
        if unknown:
            raise InputError(f"single_cell config: unknown key(s) {unknown}; allowed: {sorted(known)}")
        if "donor_key" not in flat:
            raise InputError("single_cell config: donor_key is required (the obs column naming the donor)")
        return cls(**flat)


def slug(name: str) -> str:
    """A file-name-safe form of a cell-type label ('CD14+ monocyte' -> 'CD14_monocyte')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "cell_type"


@dataclass
class PseudobulkCohort:
    """Everything the pseudobulk step produces for one single-cell cohort."""

    name: str
    qc_summary: pd.DataFrame
    qc_by_donor: pd.DataFrame
    donor_obs: pd.DataFrame
    samples: pd.DataFrame  # every donor x cell-type group with severity and kept flag
    skipped: pd.DataFrame
    adatas: dict[str, ad.AnnData] = field(default_factory=dict)  # analysed cell types
    cells: ad.AnnData | None = None  # panel-gene subsample for dot / matrix plots


def build_pseudobulk(
    name: str,
    spec: Mapping[str, Any],
    h5ad_path: str | Path,
    settings: SingleCellSettings,
    plot_genes: Sequence[str] = (),
    donor_sheet: pd.DataFrame | None = None,
) -> PseudobulkCohort:
    """QC, donor table and severity, pseudobulk, filtering and one bulk-layout AnnData per cell type."""
    path = Path(h5ad_path)
    metrics = qc_metrics_backed(
        path, settings.layer, settings.mito_prefix, settings.chunk_size, settings.max_nnz_per_chunk,
        settings.var_symbol_key,
    )  # fmt: skip
    keep, qc_summary = qc_mask(metrics, settings.min_counts, settings.min_genes, settings.max_pct_mt)
    obs = read_obs(path)
    table = donor_table(
        obs, settings.donor_key, donor_level_fields(spec), donor_sheet, source=f"{name}: {path}"
    )
    donor_obs = define_contrast(table, spec, source=name)
    keys = (settings.donor_key, settings.celltype_key)
    counts, meta = pseudobulk(
        path,
        keys,
        keep,
        settings.layer,
        settings.chunk_size,
        settings.max_nnz_per_chunk,
        settings.var_symbol_key,
    )
    kept, skipped = pseudobulk_filter(
        meta, settings.min_cells, settings.min_donors_per_group, donor_obs["severity"]
    )
    samples = meta.assign(
        severity=meta["donor"].map(donor_obs["severity"].astype(str).to_dict()),
        kept=meta.index.isin(kept.index),
    )
    covariates = list(spec.get("covariates", {}))
    declared = contrast_from_config(spec, f"singlecell_cohorts.{name}")
    adatas = {
        ct: celltype_adata(counts, kept, donor_obs, ct, cohort=name, covariates=covariates,
                           uns={"source_tissue": spec.get("tissue", ""), "h5ad": path.name,
                                "contrast": declared.to_uns()})
        for ct in sorted(kept["cell_type"].unique())
    }  # fmt: skip
    donor = _labels(obs, settings.donor_key, path, "donor_key")
    qc_by_donor = (
        metrics.assign(donor=donor.to_numpy(), kept=keep.to_numpy())
        .groupby("donor", sort=True)
        .agg(
            n_cells=("kept", "size"),
            n_kept=("kept", "sum"),
            median_counts=("total_counts", "median"),
            median_genes=("n_genes_by_counts", "median"),
            median_pct_mt=("pct_counts_mt", "median"),
        )  # fmt: skip
    )
    cells = None
    if plot_genes:
        cells = panel_subsample(
            path, plot_genes, keys, keep, donor_obs["severity"], metrics["total_counts"],
            settings.plot_max_cells, settings.seed, settings.layer, settings.chunk_size,
            settings.max_nnz_per_chunk, settings.var_symbol_key,
        )  # fmt: skip
    return PseudobulkCohort(name, qc_summary, qc_by_donor, donor_obs, samples, skipped, adatas, cells)


def write_pseudobulk(result: PseudobulkCohort, outdir: str | Path) -> dict[str, str]:
    """Write the pseudobulk step's tables and AnnData files under ``outdir``; returns cell type -> slug."""
    out = Path(outdir)
    (out / "pseudobulk").mkdir(parents=True, exist_ok=True)
    result.qc_summary.to_csv(out / "qc_summary.tsv", sep="\t", index=False, float_format="%.6g")
    result.qc_by_donor.to_csv(out / "qc_by_donor.tsv", sep="\t", float_format="%.6g")
    result.samples.to_csv(out / "pseudobulk_samples.tsv", sep="\t")
    result.skipped.to_csv(out / "skipped_groups.tsv", sep="\t", index=False)
    result.donor_obs.to_csv(out / "donors.tsv", sep="\t")
    slugs: dict[str, str] = {}
    for ct, adata in result.adatas.items():
        s = slug(ct)
        while s in slugs.values():
            s += "_"
        slugs[ct] = s
        adata.write_h5ad(out / "pseudobulk" / f"{s}.h5ad", compression="gzip")
    pd.DataFrame({"cell_type": list(slugs), "slug": list(slugs.values())}).to_csv(
        out / "cell_types.tsv", sep="\t", index=False
    )
    if result.cells is not None:
        result.cells.write_h5ad(out / "panel_cells.h5ad", compression="gzip")
    return slugs


def analyse_celltypes(
    name: str,
    outdir: str | Path,
    panel: pd.DataFrame,
    gene_sets: Mapping[str, Sequence[str]],
    de_settings: DeSettings,
    label_genes: Sequence[str] = CORE_SIGNALLING,
    plots_dir: str | Path | None = None,
) -> pd.DataFrame:
    """DE, panel and pathway tables and figures for every cell type written by :func:`write_pseudobulk`.

    Per cell type ``de/<slug>/`` gets the bulk outputs (severe_vs_mild.tsv, il6_panel.tsv, summary.json with
    the cell type and power note added) and ``<plots_dir>/volcano_<slug>.png``; the cohort gets
    pathway_scores.tsv, pathway_table.tsv and, in ``plots_dir`` (default ``outdir/plots``),
    pathway_scores.png, panel_dotplot.png and panel_matrixplot.png.
    Returns one row per analysed cell type (n donors, genes tested, power note).
    """
    out = Path(outdir)
    plots = Path(plots_dir) if plots_dir is not None else out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    types = pd.read_csv(out / "cell_types.tsv", sep="\t", dtype=str)
    overview, all_scores, all_tables = [], [], []
    declared = Contrast()  # every cell type of a cohort carries the cohort's declared contrast
    for ct, s in zip(types["cell_type"], types["slug"], strict=True):
        adata = ad.read_h5ad(out / "pseudobulk" / f"{s}.h5ad")
        covariates = list(adata.uns.get("covariates", []))
        de_dir = out / "de" / s
        de_dir.mkdir(parents=True, exist_ok=True)
        result = run_and_write(
            adata, panel, covariates, de_settings, name,
            str(de_dir / "severe_vs_mild.tsv"), str(de_dir / "il6_panel.tsv"), str(de_dir / "summary.json"),
        )  # fmt: skip
        declared = contrast_from_uns(adata.uns, source=f"{name} {ct} pseudobulk")
        note = power_note(result.n_per_group, declared)
        summary_path = de_dir / "summary.json"
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        summary.update({"cell_type": ct, "power_note": note, "n_cells": int(adata.obs["n_cells"].sum())})
        summary_path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        n = result.n_per_group
        title = f"{name}, {ct} (pseudobulk): {declared.with_n(n)} donors"
        if "underpowered" in note:
            title += "\nunderpowered: results exercise the code and support no inference"
        significant = result.table.loc[result.table["padj"] < de_settings.alpha, "gene"]
        labels = [*label_genes, *[g for g in panel["symbol"] if g in set(significant)]]
        title += "\ncircled: IL-6 receptor-JAK-STAT3 core and significant IL-6 panel genes"
        celltype_volcano(result.table, labels, de_settings.alpha, title, plots / f"volcano_{s}.png", declared)
        scores = pathway_scores(adata, gene_sets)
        table = pathway_table(adata, scores, covariates)
        sev = adata.obs["severity"].astype(str)
        all_scores.append(scores.assign(cell_type=ct, severity=scores["sample_id"].map(sev.to_dict())))
        all_tables.append(table.assign(cell_type=ct))
        overview.append({"cell_type": ct, "slug": s, "n_severe": n[SEVERE], "n_mild": n[MILD],
                         "n_tested": result.n_tested, "power_note": note})  # fmt: skip
    if all_scores:
        scores_long = pd.concat(all_scores, ignore_index=True).rename(columns={"sample_id": "donor"})
        scores_long.to_csv(out / "pathway_scores.tsv", sep="\t", index=False, float_format="%.6g")
        tables = pd.concat(all_tables, ignore_index=True)
        tables = tables[["cell_type", *[c for c in tables.columns if c != "cell_type"]]]
        tables.to_csv(out / "pathway_table.tsv", sep="\t", index=False, float_format="%.6g")
        donors = pd.read_csv(out / "donors.tsv", sep="\t", index_col=0)
        pathway_score_plot(
            scores_long, plots / "pathway_scores.png",
            f"{name}: gene-set score per donor (pseudobulk), {_donor_counts_text(donors, declared)}",
        )  # fmt: skip
    cells_path = out / "panel_cells.h5ad"
    if cells_path.exists():
        cells = ad.read_h5ad(cells_path)
        donors = pd.read_csv(out / "donors.tsv", sep="\t", index_col=0)
        genes: list[str] | dict[str, list[str]] = list(panel["symbol"])
        if "tier" in panel.columns:  # bracket the gene axis by panel tier, in the panel's order
            genes = {t: list(panel.loc[panel["tier"] == t, "symbol"]) for t in dict.fromkeys(panel["tier"])}
        for kind in ("dotplot", "matrixplot"):
            panel_dotplot(
                cells, genes, plots / f"panel_{kind}.png",
                f"{name}: IL-6 panel in {cells.n_obs:,} cells; {_donor_counts_text(donors, declared)}",
                kind=kind,
            )  # fmt: skip
    frame = pd.DataFrame(overview)
    frame.to_csv(out / "cell_types_analysed.tsv", sep="\t", index=False)
    return frame
