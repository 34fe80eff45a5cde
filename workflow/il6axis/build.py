"""Assemble one cohort: read counts and metadata, harmonise gene IDs, define the contrast, write AnnData."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from il6axis.cohort import define_contrast, to_anndata
from il6axis.counts_io import normalised_array, read_count_table, reconcile_sample_ids, to_integer_counts
from il6axis.errors import InputError
from il6axis.gene_ids import load_gene_info, map_to_symbols
from il6axis.geo_metadata import clean_geoquery_columns, read_sample_sheet, read_series_matrix
from il6axis.severity_model import NORMALISED

log = logging.getLogger("il6axis.build")


@dataclass
class BuiltCohort:
    adata: ad.AnnData
    gene_mapping: pd.DataFrame  # one row: mapped / unmapped / merged / ambiguous counts


def read_metadata(path: str | Path, spec: Mapping[str, Any]) -> pd.DataFrame:
    """Sample table from a GEO series matrix or a CSV/TSV sample sheet (local or a GEO suppl. file)."""
    if spec["source"] == "geo_series_matrix":
        return read_series_matrix(path)
    sheet = read_sample_sheet(path, spec["sample_column"])
    return clean_geoquery_columns(sheet)


def integer_counts(counts: pd.DataFrame, value_type: str, source: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Integer counts for the NB model. Expected counts are rounded (and the change logged); a table
    declared as counts that holds fractions is an error, because it is probably normalised data."""
    as_int, info = to_integer_counts(counts, source_name=source)
    if info["rounded"] and value_type != "expected_counts":
        raise InputError(
            f"{source}: {info['n_changed']} values are not whole numbers (max distance to an integer "
            f"{info['max_abs_change']:.3g}); the NB model needs raw counts. If these are RSEM/Salmon "
            f"expected counts set `counts.value_type: expected_counts` to round them; normalised values "
            f"(TPM, TMM, CPM) cannot be used."
        )
    if info["rounded"]:
        log.info(
            "%s: rounded expected counts to integers: %d cells changed, max change %.3g",
            source,
            info["n_changed"],
            info["max_abs_change"],
        )
    return as_int, info


def normalised_values(values: pd.DataFrame, source: str) -> pd.DataFrame:
    """Float copy of a normalised table (TMM, DESeq2-normalised, CPM), checked finite and non-negative.

    These values go to the log2 linear model, never to the NB model. A table that turns out to hold
    only whole numbers is probably raw counts, for which the NB model is the better choice: say so.
    """
    arr = normalised_array(values, source)
    if np.array_equal(arr, np.round(arr)):
        log.warning(
            "%s: declared normalised but every value is a whole number; if these are raw counts set "
            "`counts.value_type: counts` so the cohort gets the NB model",
            source,
        )
    log.info("%s: normalised values (log2 linear-model route; never the NB model)", source)
    return pd.DataFrame(arr, index=values.index, columns=values.columns)


def build_cohort(
    name: str,
    spec: Mapping[str, Any],
    counts_path: str | Path,
    metadata_path: str | Path,
    gene_info_path: str | Path | None = None,
) -> BuiltCohort:
    """Read, harmonise and label one cohort; every decision is logged and stored in ``uns``."""
    counts_spec, meta_spec = spec["counts"], spec["metadata"]
    counts_label = f"{name}: {Path(counts_path).name}"
    raw = read_count_table(counts_path, id_column=counts_spec.get("id_column"))
    log.info("%s: %d genes x %d samples", counts_label, *raw.shape)

    gene_id = counts_spec["gene_id"]
    needs_mapping = gene_id != "symbol" or counts_spec.get("map_symbols", True)
    if needs_mapping and gene_info_path is None:
        raise InputError(
            f"{counts_label}: gene IDs of type {gene_id!r} need NCBI gene_info (config gene_info)"
        )
    gene_info = load_gene_info(gene_info_path) if needs_mapping else None
    by_symbol, report = map_to_symbols(raw, gene_id if needs_mapping else "symbol", gene_info)
    mapping = pd.DataFrame([{"cohort": name, "gene_id_type": gene_id, **report.to_dict()}])
    log.info("%s: gene mapping %s", counts_label, report.to_dict())

    value_type = counts_spec["value_type"]
    if value_type == NORMALISED:
        counts, rounding = normalised_values(by_symbol, counts_label), {"rounded": False}
    else:
        counts, rounding = integer_counts(by_symbol, value_type, counts_label)

    metadata = read_metadata(metadata_path, meta_spec)
    column_to_sample = reconcile_sample_ids(
        list(counts.columns), metadata, file_label=f"{name}: {Path(metadata_path).name}"
    )
    counts = counts.rename(columns=column_to_sample)
    unused = metadata.index.difference(counts.columns)
    if len(unused):
        log.info(
            "%s: %d metadata rows have no count column and are ignored: %s",
            name,
            len(unused),
            list(unused[:10]),
        )
    metadata = metadata.loc[list(counts.columns)]
    obs = define_contrast(metadata, spec, source=name)

    uns = {
        "cohort": name,
        "tissue": spec.get("tissue", ""),
        "title": spec.get("title", ""),
        "counts_file": Path(counts_path).name,
        "metadata_file": Path(metadata_path).name,
        "value_type": value_type,
        "rounding": json.dumps(rounding),
        "gene_mapping": json.dumps(report.to_dict(), default=str),
        "covariates": list(spec.get("covariates", {})),
    }
    return BuiltCohort(adata=to_anndata(counts, obs, uns), gene_mapping=mapping)


def write_cohort(
    built: BuiltCohort, h5ad_path: str | Path, samples_path: str | Path, mapping_path: str | Path
) -> None:
    """Write the AnnData (gzip-compressed), the per-sample table and the gene-mapping report."""
    built.adata.write_h5ad(h5ad_path, compression="gzip")
    built.adata.obs.to_csv(samples_path, sep="\t", index=False)
    built.gene_mapping.to_csv(mapping_path, sep="\t", index=False)
