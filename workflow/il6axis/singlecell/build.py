"""Rule ``singlecell_pseudobulk``: from one .h5ad to QC tables, the donor table and one pseudobulk AnnData
per cell type.

Steps, each in its own module: cell QC (:mod:`~il6axis.singlecell.qc`), the donor table and its severity
(:mod:`~il6axis.singlecell.donors`, :func:`il6axis.cohort.samples.define_contrast`), the donor x cell-type
sums and their filter (:mod:`~il6axis.singlecell.pseudobulk`) and the cell subsample for the plots
(:mod:`~il6axis.singlecell.subsample`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import pandas as pd

from il6axis.cohort.contrast import contrast_from_config
from il6axis.cohort.samples import define_contrast
from il6axis.singlecell.donors import donor_level_fields, donor_table, read_donor_sheet
from il6axis.singlecell.h5 import obs_labels, read_obs
from il6axis.singlecell.pseudobulk import celltype_adata, pseudobulk, pseudobulk_filter
from il6axis.singlecell.qc import qc_by_donor, qc_mask, qc_metrics_backed
from il6axis.singlecell.settings import SingleCellSettings
from il6axis.singlecell.subsample import panel_subsample


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
    donors_qc = qc_by_donor(metrics, keep, obs_labels(obs, settings.donor_key, path, "donor_key"))
    cells = None
    if plot_genes:
        cells = panel_subsample(
            path, plot_genes, keys, keep, donor_obs["severity"], metrics["total_counts"],
            settings.plot_max_cells, settings.seed, settings.layer, settings.chunk_size,
            settings.max_nnz_per_chunk, settings.var_symbol_key,
        )  # fmt: skip
    return PseudobulkCohort(name, qc_summary, donors_qc, donor_obs, samples, skipped, adatas, cells)


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


def run_pseudobulk(
    name: str,
    spec: Mapping[str, Any],
    h5ad_path: str | Path,
    panel_path: str | Path,
    outdir: str | Path,
    donor_sheet_path: str | Path | None = None,
) -> dict[str, str]:
    """Rule ``singlecell_pseudobulk``: QC, donors and pseudobulk of one cohort, written under ``outdir``.

    ``spec`` is the cohort's config block; its ``single_cell`` block gives the settings and says whether
    ``donor_sheet_path`` is read. The panel genes (``panel_path``) are the ones kept for the cell-level
    plots. Returns cell type -> file slug.
    """
    block = spec["single_cell"]
    sheet = (
        read_donor_sheet(donor_sheet_path, block["donor_sheet_column"]) if block.get("donor_sheet") else None
    )
    result = build_pseudobulk(
        name=name,
        spec=spec,
        h5ad_path=h5ad_path,
        settings=SingleCellSettings.from_config(block),
        plot_genes=pd.read_csv(panel_path, sep="\t")["symbol"].tolist(),
        donor_sheet=sheet,
    )
    return write_pseudobulk(result, outdir)
