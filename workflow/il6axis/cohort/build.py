"""Assemble one cohort: read counts and metadata, harmonise gene IDs, define the contrast, write AnnData."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from il6axis.acquire.count_tables import normalised_array, read_count_table, to_integer_counts
from il6axis.acquire.geo import ncbi_counts_name
from il6axis.acquire.geo_metadata import clean_geoquery_columns, read_sample_sheet, read_series_matrix
from il6axis.acquire.sample_matching import UnmatchedLimit, match_samples
from il6axis.cohort.contrast import contrast_from_config, group_labels
from il6axis.cohort.gene_ids import load_gene_info, map_to_symbols
from il6axis.cohort.samples import SUBJECT_COLUMNS, build_contrast, to_anndata
from il6axis.cohort.value_scale import (
    LOG2_NORMALISED,
    NORMALISED,
    check_value_type,
    from_linear,
    log2_values,
    to_linear,
)
from il6axis.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class BuiltCohort:
    adata: ad.AnnData
    gene_mapping: pd.DataFrame  # one row: mapped / unmapped / merged / ambiguous counts
    # Samples set aside by matching (sample, side, reason): count columns without a metadata row and
    # metadata rows without a count column. Neither is in ``adata``.
    unmatched: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["sample", "side", "reason"])
    )
    # Subjects whose one sample the one-per-patient rule decided by tie-break or conflict policy.
    subjects: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SUBJECT_COLUMNS))


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
            f"expected counts set `counts.value_type: expected_counts` to round them; if they are "
            f"normalised values (TMM, CPM, DESeq2-normalised) set `counts.value_type: normalised`, or "
            f"`log2_normalised` when already log2, for the moderated linear model (TPM is not a model input)."
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


def published_log2_values(values: pd.DataFrame, source: str) -> pd.DataFrame:
    """Float copy of a table of log2 normalised values (e.g. log2 TMM), checked finite; negatives allowed.

    These go to the linear model as they are (no second log), never to the NB model.
    """
    arr = log2_values(values, source)
    log.info("%s: log2 normalised values (linear-model route as published; no second log)", source)
    return pd.DataFrame(arr, index=values.index, columns=values.columns)


def _count_file_name(counts_spec: Mapping[str, Any], counts_path: str | Path, accession: str) -> str:
    """The count table's published name, for messages and ``uns`` (a source taken from
    ``counts.sources`` is saved as ``<cohort>.counts``, which says nothing to a reader)."""
    if counts_spec.get("file"):
        return str(counts_spec["file"])
    if counts_spec.get("source") == "geo_ncbi":
        return ncbi_counts_name(accession)
    return Path(counts_spec.get("path") or counts_path).name


def build_cohort(
    name: str,
    spec: Mapping[str, Any],
    counts_path: str | Path,
    metadata_path: str | Path,
    gene_info_path: str | Path | None = None,
) -> BuiltCohort:
    """Read, harmonise and label one cohort; every decision is logged and stored in ``uns``."""
    counts_spec, meta_spec = spec["counts"], spec["metadata"]
    counts_name = _count_file_name(counts_spec, counts_path, spec.get("accession", name))
    counts_label = f"{name}: {counts_name}"
    declared = contrast_from_config(spec, source=f"cohorts.{name}")  # a bad block fails before any reading
    value_type = counts_spec["value_type"]
    # Negatives are read, not refused, so that the scale check can say what they mean (log2 values or not).
    raw = read_count_table(counts_path, id_column=counts_spec.get("id_column"), allow_negative=True)
    log.info("%s: %d genes x %d samples", counts_label, *raw.shape)
    check_value_type(raw, value_type, counts_label)  # before anything is merged, rounded or modelled

    gene_id = counts_spec["gene_id"]
    needs_mapping = gene_id != "symbol" or counts_spec.get("map_symbols", True)
    if needs_mapping and gene_info_path is None:
        raise InputError(
            f"{counts_label}: gene IDs of type {gene_id!r} need NCBI gene_info (config gene_info)"
        )
    gene_info = load_gene_info(gene_info_path) if needs_mapping else None
    # Rows sharing a symbol are summed, on the linear scale (log2 values: 2**x, summed, logged again).
    by_symbol, report = map_to_symbols(
        to_linear(raw, value_type), gene_id if needs_mapping else "symbol", gene_info
    )
    by_symbol = from_linear(by_symbol, value_type)
    mapping = pd.DataFrame([{"cohort": name, "gene_id_type": gene_id, **report.to_dict()}])
    log.info("%s: gene mapping %s", counts_label, report.to_dict())

    if value_type == NORMALISED:
        counts, rounding = normalised_values(by_symbol, counts_label), {"rounded": False}
    elif value_type == LOG2_NORMALISED:
        counts, rounding = published_log2_values(by_symbol, counts_label), {"rounded": False}
    else:
        counts, rounding = integer_counts(by_symbol, value_type, counts_label)

    metadata = read_metadata(metadata_path, meta_spec)
    # Count columns without metadata and metadata rows without counts are set aside and listed; past
    # `metadata.max_unmatched_columns` the run stops (see config/README.md).
    match = match_samples(
        list(counts.columns),
        metadata,
        keys=meta_spec.get("match_keys"),
        limit=UnmatchedLimit.from_config(meta_spec.get("max_unmatched_columns")),
        file_label=f"{name}: {Path(metadata_path).name} vs {Path(counts_path).name}",
    )
    counts = counts[list(match.mapping)].rename(columns=match.mapping)
    metadata = metadata.loc[list(counts.columns)]
    contrast = build_contrast(metadata, spec, source=name)
    # Display label of each sample's group (the declared contrast); `severity` keeps the slot names.
    contrast.obs["contrast_group"] = contrast.obs["severity"].map(group_labels(declared))

    uns = {
        "cohort": name,
        "tissue": spec.get("tissue", ""),
        "title": spec.get("title", ""),
        "contrast": declared.to_uns(),
        "counts_file": counts_name,
        "metadata_file": Path(metadata_path).name,
        "value_type": value_type,
        "rounding": json.dumps(rounding),
        "gene_mapping": json.dumps(report.to_dict(), default=str),
        "covariates": list(spec.get("covariates", {})),
        "sample_match": match.strategy,
        "n_unmatched_columns": len(match.unmatched_columns),
        "n_unmatched_rows": len(match.unmatched_rows),
    }
    return BuiltCohort(
        adata=to_anndata(counts, contrast.obs, uns),
        gene_mapping=mapping,
        unmatched=match.table(),
        subjects=contrast.subjects,
    )


def write_cohort(
    built: BuiltCohort,
    h5ad_path: str | Path,
    samples_path: str | Path,
    mapping_path: str | Path,
    unmatched_path: str | Path | None = None,
    subjects_path: str | Path | None = None,
) -> None:
    """Write the AnnData (gzip-compressed), the per-sample table, the gene-mapping report and, when
    paths are given, the samples set aside by matching and the subjects decided by tie-break/conflict."""
    built.adata.write_h5ad(h5ad_path, compression="gzip")
    built.adata.obs.to_csv(samples_path, sep="\t", index=False)
    built.gene_mapping.to_csv(mapping_path, sep="\t", index=False)
    if unmatched_path is not None:
        built.unmatched.to_csv(unmatched_path, sep="\t", index=False)
    if subjects_path is not None:
        built.subjects.to_csv(subjects_path, sep="\t", index=False)
