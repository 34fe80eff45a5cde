"""Settings of a single-cell cohort: its ``single_cell`` config block as a typed, checked object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from il6axis.errors import InputError
from il6axis.singlecell.h5 import DEFAULT_CHUNK_SIZE, DEFAULT_MAX_NNZ

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
