"""Cell QC of a single-cell cohort, streamed from disk: per-cell metrics, the keep mask and its summaries.

Metrics are scanpy's (``calculate_qc_metrics``: total counts, detected genes, mitochondrial counts and
percentage); a cell is kept when it passes all three thresholds of the cohort's ``single_cell.qc`` block.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from il6axis.errors import InputError
from il6axis.singlecell.h5 import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_NNZ,
    blocks,
    open_matrix,
    read_gene_symbols,
    read_obs,
)

log = logging.getLogger(__name__)

QC_COLUMNS = ["total_counts", "n_genes_by_counts", "total_counts_mt", "pct_counts_mt"]


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
    with open_matrix(path, layer) as m:
        if m.shape != (len(obs_names), len(symbols)):
            raise InputError(f"{m.label}: matrix shape {m.shape} does not match obs x var")
        if m.fmt == "csc":
            total = np.zeros(m.shape[0])
            n_genes = np.zeros(m.shape[0], dtype=np.int64)
            total_mt = np.zeros(m.shape[0])
            for block in blocks(m, chunk_size, max_nnz):
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
            parts = [_qc_rows_scanpy(block.x, mito) for block in blocks(m, chunk_size, max_nnz)]
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


def qc_by_donor(metrics: pd.DataFrame, keep: pd.Series, donor: pd.Series) -> pd.DataFrame:
    """Per donor: cells in the file and kept, and the median QC metrics (``donor``: label per cell)."""
    return (
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
