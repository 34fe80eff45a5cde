"""Donor x cell-type pseudobulk: summed raw counts, the sample filter, and one bulk-layout AnnData per
cell type.

Cells are never the unit of inference: counts are summed per donor and cell type, and each cell type
becomes a samples x genes AnnData in exactly the layout of a bulk cohort, so the bulk DE
(:func:`il6axis.de.nb.run_deseq2`), the panel table and the plots run unchanged on it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from il6axis.cohort.contrast import contrast_from_uns
from il6axis.cohort.samples import to_anndata
from il6axis.errors import InputError
from il6axis.singlecell.donors import power_note
from il6axis.singlecell.h5 import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_NNZ,
    blocks,
    cell_mask,
    obs_labels,
    open_matrix,
    read_gene_symbols,
    read_obs,
)
from il6axis.vocabulary import MILD, SEVERE

log = logging.getLogger(__name__)

ALL_CELLS = "all_cells"  # the pseudo cell type used when the file has no cell-type column
PSEUDOBULK_TISSUE = "single_cell_pseudobulk"  # uns["tissue"] of a cell type's pseudobulk AnnData
GROUP_SEP = "|"  # joins donor and cell type in a pseudobulk sample's ID


def cell_type_labels(obs: pd.DataFrame, celltype_key: str | None, path: str | Path) -> pd.Series:
    """Cell type per cell from the obs column ``celltype_key``; :data:`ALL_CELLS` for every cell when
    the cohort has no cell-type column."""
    if celltype_key is None:
        return pd.Series(ALL_CELLS, index=obs.index, dtype="string")
    return obs_labels(obs, celltype_key, path, "celltype_key")


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
    donor = obs_labels(obs, donor_key, path, "donor_key")
    if celltype_key is None:
        log.info(
            "%s: no cell-type column configured: one pseudo cell type %r (donor pseudobulk)", path, ALL_CELLS
        )
    cell_type = cell_type_labels(obs, celltype_key, path)
    keep = cell_mask(keep_mask, obs.index, path)
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

    with open_matrix(path, layer) as m:
        if m.shape != (len(obs), len(symbols)):
            raise InputError(f"{m.label}: matrix shape {m.shape} does not match obs x var")
        sums = np.zeros((n_groups, m.shape[1]), dtype=np.int64)
        full_indicator = _indicator(kept_codes, n_groups) if m.fmt == "csc" else None
        for block in blocks(m, chunk_size, max_nnz):
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
        "tissue": PSEUDOBULK_TISSUE,
        "cell_type": cell_type,
        "covariates": list(covariates),
        "power_note": power_note(n_per_group, contrast_from_uns(dict(uns or {}))),
        **dict(uns or {}),
    }
    return to_anndata(counts.T, obs, info)
