"""Streaming access to an .h5ad's count matrix, and its cell (obs) and gene (var) tables.

Files can be far larger than memory (1,000,000 cells x 30,000 genes). Everything that touches the count
matrix streams it from disk in chunks bounded both in cells and in non-zeros, through anndata's on-disk
sparse dataset (the object backed mode uses for ``X``; backed mode would load a *layer* into memory, so
the matrix is opened directly with h5py). ``obs`` (a few columns per cell) is read in full. Every chunk is
checked to hold raw counts (non-negative integers): normalised values must never be summed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from il6axis.errors import InputError

DEFAULT_CHUNK_SIZE = 50_000  # cells per chunk
DEFAULT_MAX_NNZ = 20_000_000  # non-zeros per chunk; peak ~0.6 GB above imports (bench/bench_pseudobulk.py)


@dataclass
class CountMatrix:
    """The count matrix of one .h5ad, open for chunked reading (:func:`open_matrix`)."""

    path: Path
    layer: str | None
    fmt: str  # "csr", "csc" or "dense"
    shape: tuple[int, int]
    store: Any  # anndata on-disk sparse dataset, or h5py.Dataset for dense
    indptr: np.ndarray | None
    layers: list[str]

    @property
    def label(self) -> str:
        """The file and matrix for messages: 'cells.h5ad (layer 'counts')'."""
        return f"{self.path} ({f'layer {self.layer!r}' if self.layer else 'X'})"


@contextmanager
def open_matrix(path: str | Path, layer: str | None = None) -> Iterator[CountMatrix]:
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
            yield CountMatrix(path, layer, "dense", tuple(elem.shape), elem, None, layers)
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
        yield CountMatrix(path, layer, encoding[:3], shape, store, elem["indptr"][:], layers)
    finally:
        fh.close()


def chunk_spans(indptr: np.ndarray | None, n: int, max_len: int, max_nnz: int) -> list[tuple[int, int]]:
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
class Block:
    """One chunk of the matrix: ``rows`` x ``cols`` of the file, as a scipy sparse matrix."""

    rows: slice
    cols: slice
    x: sp.csr_matrix | sp.csc_matrix


def check_counts(values: np.ndarray, m: CountMatrix, where: str) -> None:
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


def blocks(m: CountMatrix, chunk_size: int, max_nnz: int) -> Iterator[Block]:
    """Stream the matrix: row chunks for CSR/dense, gene chunks for CSC (its cheap direction)."""
    n_rows, n_cols = m.shape
    if m.fmt == "csc":
        for a, b in chunk_spans(m.indptr, n_cols, max(chunk_size, 1), max_nnz):
            x = sp.csc_matrix(m.store[:, a:b])
            check_counts(x.data, m, f"genes {a}-{b - 1}")
            yield Block(slice(0, n_rows), slice(a, b), x)
        return
    max_rows = chunk_size if m.fmt == "csr" else max(1, min(chunk_size, max_nnz // max(n_cols, 1)))
    for a, b in chunk_spans(m.indptr, n_rows, max_rows, max_nnz):
        raw = m.store[a:b]
        x = sp.csr_matrix(np.asarray(raw)) if m.fmt == "dense" else sp.csr_matrix(raw)
        check_counts(x.data, m, f"cells {a}-{b - 1}")
        yield Block(slice(a, b), slice(0, n_cols), x)


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


def obs_labels(obs: pd.DataFrame, key: str, path: str | Path, what: str) -> pd.Series:
    """A label column as stripped strings with <NA> for missing values (never the text 'nan')."""
    if key not in obs.columns:
        raise InputError(
            f"{path}: obs has no column {key!r} ({what}); obs columns: {list(obs.columns)[:30]}. "
            f"Fix single_cell.{what} in the cohort's config."
        )
    text = obs[key].astype("string").str.strip()
    return text.mask(text.eq(""))


def cell_mask(keep_mask: pd.Series | np.ndarray | None, index: pd.Index, path: str | Path) -> np.ndarray:
    """``keep_mask`` as a boolean array in obs order (None keeps every cell); a Series is aligned on the
    cell names and must cover every cell."""
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
