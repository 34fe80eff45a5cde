"""A seeded random subsample of QC-passing cells, panel genes only, normalised like scanpy, for the
cell-level dot and matrix plots (``panel_cells.h5ad``).

Drawing is on the cells, not the donors, so the subsample serves pictures only; every statistic of a
single-cell cohort is computed on the donor pseudobulk (:mod:`il6axis.singlecell.pseudobulk`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from il6axis.singlecell.donors import DONOR_SEVERITY_ORDER
from il6axis.singlecell.h5 import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_NNZ,
    blocks,
    cell_mask,
    check_counts,
    obs_labels,
    open_matrix,
    read_gene_symbols,
    read_obs,
)
from il6axis.singlecell.pseudobulk import cell_type_labels

log = logging.getLogger(__name__)


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
    donor = obs_labels(obs, donor_key, path, "donor_key")
    cell_type = cell_type_labels(obs, celltype_key, path)
    severity = donor.map(donor_severity.astype(str).to_dict())
    eligible = (
        cell_mask(keep_mask, obs.index, path) & cell_type.notna().to_numpy() & severity.notna().to_numpy()
    )
    pool = np.flatnonzero(eligible)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(pool, size=min(n_max, len(pool)), replace=False))
    present = [g for g in dict.fromkeys(genes) if g in set(symbols)]
    col_idx = np.array([symbols.get_loc(g) if symbols.is_unique else int(np.flatnonzero(symbols == g)[0])
                        for g in present], dtype=np.int64)  # fmt: skip
    with open_matrix(path, layer) as m:
        if m.fmt == "csc":
            order = np.argsort(col_idx)
            sub = sp.csc_matrix(m.store[:, np.sort(col_idx)])
            check_counts(sub.data, m, "panel genes")
            x = sub.tocsr()[chosen][:, np.argsort(order)]
        else:
            parts = []
            for block in blocks(m, chunk_size, max_nnz):
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
            "severity": pd.Categorical(severity.to_numpy()[chosen], categories=DONOR_SEVERITY_ORDER),
        },
        index=obs.index[chosen],
    )
    log.info("%s: %d of %d eligible cells subsampled for cell-level plots", path, len(chosen), len(pool))
    return ad.AnnData(X=values, obs=cells, var=pd.DataFrame(index=pd.Index(present, name="gene")))
