"""Sample quality control of one cohort, as tables: library sizes, recorded sex against expression, PCA.

- **Library sizes** (:func:`library_table`): per sample, the total of its counts and how many genes it
  detects, every sample of the cohort (excluded ones too); a library below a fraction of the cohort
  median (``qc.min_library_fraction``, default ``LOW_LIBRARY_FRACTION``) is flagged, the first suspect
  for an outlier. For a cohort counted from reads, :func:`with_reads_qc` adds what fastp and salmon saw
  (reads in and after trimming, fragments, mapping rate, library type) and the reads flags.
- **Sex check** (:func:`sex_check_table`): the recorded sex (metadata) against an expression call from a
  female marker (XIST) and male markers (chrY genes such as RPS4Y1), both from the severity markers
  resource (roles ``sex_female`` / ``sex_male``). A disagreement points to a sample swap or a label
  error; this module only finds it, the report shows it.
- **PCA** (:func:`pca_table`) of the contrast samples' VST (or the cohort's log scale), with outliers on
  PC1 / PC2 flagged.

:func:`write_cohort_qc` is rule cohort_qc: it writes the tables the QC figures draw (il6axis.figures.qc),
so that the figures and any reviewer read the same numbers.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from il6axis.acquire.geo_metadata import normalise_sex
from il6axis.acquire.sample_matching import UnmatchedLimit, match_samples
from il6axis.cohort.value_scale import detected_log2
from il6axis.de import routing
from il6axis.errors import InputError
from il6axis.vocabulary import SEVERITY_ORDER

log = logging.getLogger(__name__)

# A library below this fraction of the cohort median is flagged (and labelled in the figure).
LOW_LIBRARY_FRACTION = 0.3
# Sex call from expression: the log2(CPM + 1) difference between the male and female markers must exceed
# this margin, and the winning marker must reach 1 CPM (log2(1 + 1) = 1); otherwise the call is ambiguous.
SEX_CALL_MARGIN = 1.0
SEX_CALL_MIN_LOG2CPM = 1.0
SEXES = ("female", "male", "unknown")
PCA_TOP_GENES = 500
PCA_OUTLIER_Z = 3.5
PCA_MIN_SAMPLES = 3
# Components written to pca.tsv; the variance table covers every component.
PCA_COMPONENTS_WRITTEN = 10

# Values of the sex-check columns.
INFERRED_VALUES = ("female", "male", "ambiguous", "not_called")
AGREEMENT_VALUES = ("agree", "discordant", "no_call", "not_recorded")


def _dense(matrix) -> np.ndarray:
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def cohort_name(adata: ad.AnnData, fallback: str = "cohort") -> str:
    return str(adata.uns.get("cohort", fallback))


def severity_of(obs: pd.DataFrame, source: str) -> pd.Series:
    """The samples' severity slot (severe / mild / excluded) as strings."""
    if "severity" not in obs.columns:
        raise InputError(f"{source}: obs has no 'severity' column; rebuild the cohort with build_cohort.")
    return obs["severity"].astype(str)


def covariates_of(adata: ad.AnnData) -> list[str]:
    return [str(c) for c in np.atleast_1d(adata.uns.get("covariates", []))]


def raw_counts(adata: ad.AnnData) -> pd.DataFrame:
    """Samples x genes raw counts of a cohort AnnData as floats (X holds integer counts); for a cohort
    with published log2 values, 2**X (the linear scale that library sizes and CPM need)."""
    values = pd.DataFrame(_dense(adata.X).astype(float), index=adata.obs_names, columns=adata.var_names)
    return np.exp2(values) if routing.is_log2(adata) else values


def detected_genes(adata: ad.AnnData) -> np.ndarray:
    """Per sample, genes with a count > 0, or, for published log2 values, above the sample's floor (where
    its zero counts sit: ``value_scale.detected_log2``)."""
    values = pd.DataFrame(_dense(adata.X).astype(float), index=adata.obs_names, columns=adata.var_names)
    detected = detected_log2(values) if routing.is_log2(adata) else values > 0
    return detected.sum(axis=1).to_numpy()


# ----------------------------------------------------------------------------------------------------
# Library sizes
# ----------------------------------------------------------------------------------------------------


def library_table(adata: ad.AnnData, low_fraction: float = LOW_LIBRARY_FRACTION) -> pd.DataFrame:
    """Per sample (index ``sample_id``): severity, total counts in millions, detected genes, the number
    of genes in the matrix and whether the library is low (below ``low_fraction`` of the median).

    Published log2 values are summed as 2**x; a gene is detected above the sample's floor."""
    totals = raw_counts(adata).sum(axis=1).to_numpy() / 1e6
    table = pd.DataFrame(
        {
            "severity": severity_of(adata.obs, cohort_name(adata)).to_numpy(),
            "total_millions": totals,
            "detected_genes": detected_genes(adata),
            "genes_in_matrix": adata.n_vars,
        },
        index=pd.Index(adata.obs_names, name="sample_id"),
    )
    table["low_library"] = table["total_millions"] < low_fraction * table["total_millions"].median()
    return table


# ----------------------------------------------------------------------------------------------------
# Reads QC (cohorts counted from reads: results/reads/{cohort}/sample_qc.tsv of rule tximport)
# ----------------------------------------------------------------------------------------------------

# Columns of sample_qc.tsv that library_sizes.tsv carries, in this order, after ``reads_sample`` (the
# reads sample the cohort sample was counted from).
READS_QC_CARRIED = (
    "reads_before_filtering",
    "reads_after_filtering",
    "fragments_processed",
    "mapping_rate",
    "libtype_detected",
    "strandedness_detected",
)
# The flags of sample_qc.tsv and the names library_sizes.tsv gives them (``low_library`` already names
# the cohort-relative rule there, so the absolute fragment rule is called ``low_read_pairs``).
READS_FLAGS = {"low_mapping_rate": "low_mapping_rate", "low_library_size": "low_read_pairs"}


@dataclass(frozen=True)
class ReadsQcInput:
    """sample_qc.tsv of a reads cohort, the thresholds its flags were set with (config ``reads.qc``) and
    the cohort's ``metadata.match_keys`` (how its reads samples were matched to metadata rows)."""

    path: str | Path
    min_mapping_rate: float
    min_read_pairs: int
    match_keys: Sequence | None = None


def read_sample_qc(reads: ReadsQcInput) -> pd.DataFrame:
    """sample_qc.tsv, checked for the columns carried and for flags that agree with the thresholds (a
    table flagged with other thresholds than the config's is stale)."""
    table = pd.read_csv(reads.path, sep="\t", dtype={"sample": str, "libtype_detected": str})
    needed = ["sample", *READS_QC_CARRIED, *READS_FLAGS]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise InputError(f"{reads.path}: reads QC table lacks column(s) {missing}; rerun rule tximport.")
    expected = {
        "low_mapping_rate": table["mapping_rate"] < reads.min_mapping_rate,
        "low_library_size": table["fragments_processed"] < reads.min_read_pairs,
    }
    for flag, should in expected.items():
        stale = table["sample"][table[flag].astype(bool) != should]
        if len(stale):
            raise InputError(
                f"{reads.path}: column {flag!r} disagrees with reads.qc (min_mapping_rate "
                f"{reads.min_mapping_rate:g}, min_read_pairs {reads.min_read_pairs}) for sample(s) "
                f"{list(stale)}; the table is stale: rerun rule tximport (snakemake -R tximport)."
            )
    return table


def count_text(n: float) -> str:
    """A read or fragment count for text: '3.1 M' from a million up, else '15,000'."""
    return f"{n / 1e6:.2g} M" if n >= 1e6 else f"{n:,.0f}"


def reads_flag_text(row: Mapping, reads: ReadsQcInput) -> str:
    """Why a sample is flagged by its reads, e.g. 'mapping rate 42% < 50%; 1.2 M fragments < 5 M'."""
    reasons = []
    if row["low_mapping_rate"]:
        reasons.append(f"mapping rate {100 * row['mapping_rate']:.0f}% < {100 * reads.min_mapping_rate:g}%")
    if row["low_read_pairs"]:
        reasons.append(
            f"{count_text(row['fragments_processed'])} fragments < {count_text(reads.min_read_pairs)}"
        )
    return "; ".join(reasons)


def with_reads_qc(
    library: pd.DataFrame,
    obs: pd.DataFrame,
    reads: ReadsQcInput,
    low_library_fraction: float = LOW_LIBRARY_FRACTION,
) -> pd.DataFrame:
    """``library`` (:func:`library_table`) plus, per cohort sample, its reads sample and the columns of
    sample_qc.tsv (:data:`READS_QC_CARRIED`), the thresholds (``min_mapping_rate``, ``min_read_pairs``
    and the ``min_library_fraction`` that set ``low_library``), the flags ``low_mapping_rate`` and
    ``low_read_pairs`` and ``reads_flags`` (why, in words; empty when not flagged).

    Reads samples are matched to the cohort's samples as the cohort builder matched the count columns
    (:func:`il6axis.acquire.sample_matching.match_samples`, ``metadata.match_keys``). Reads samples that
    are not in the cohort were set aside by the builder and are listed in ``{cohort}.unmatched.tsv``; a
    cohort sample without a reads sample means the tables come from different runs (an error).
    """
    sample_qc = read_sample_qc(reads)
    match = match_samples(
        list(sample_qc["sample"]),
        obs,
        keys=reads.match_keys,
        limit=UnmatchedLimit(fraction=None, count=None),
        file_label=f"{reads.path} vs cohort samples",
    )
    by_cohort_sample = sample_qc.set_index("sample").rename(index=match.mapping)
    without = [s for s in library.index if s not in set(match.mapping.values())]
    if without:
        raise InputError(
            f"{reads.path}: cohort sample(s) {without} have no row in the reads QC table; the cohort and "
            "the reads were counted in different runs: rerun rules tximport and build_cohort."
        )
    reads_sample = pd.Series({cohort: sample for sample, cohort in match.mapping.items()})
    out = library.copy()
    out["reads_sample"] = reads_sample.reindex(out.index).to_numpy()
    carried = by_cohort_sample.reindex(out.index)
    for column in READS_QC_CARRIED:
        out[column] = carried[column].to_numpy()
    out["min_mapping_rate"] = reads.min_mapping_rate
    out["min_read_pairs"] = reads.min_read_pairs
    out["min_library_fraction"] = low_library_fraction
    for source, name in READS_FLAGS.items():
        out[name] = carried[source].astype(bool).to_numpy()
    out["reads_flags"] = [reads_flag_text(row, reads) for _, row in out.iterrows()]
    if match.unmatched_columns:
        log.info("reads samples not in the cohort (set aside by build_cohort): %s", match.unmatched_columns)
    return out


# ----------------------------------------------------------------------------------------------------
# Sex check
# ----------------------------------------------------------------------------------------------------

_SEX_NAME = re.compile(r"(^|[^a-z])(sex|gender)([^a-z]|$)", re.IGNORECASE)
_SEX_PREFIX = re.compile(r"^\s*(sex|gender)\s*[:=]", re.IGNORECASE)


def _sex_values(obs: pd.DataFrame, column: object) -> pd.Series:
    """A metadata column as female / male / unknown; a spelling the workflow does not know is unknown here
    (the QC only compares, it never drops a sample)."""
    return normalise_sex(obs[column], unrecognised="unknown", source="cohort obs", field=str(column))


def recorded_sex(obs: pd.DataFrame, covariates: Sequence[str] = ()) -> tuple[pd.Series | None, str | None]:
    """The samples' recorded sex (female/male/unknown) and the obs column it came from.

    Looks first at the cohort's covariates, then at any metadata column whose name says sex or gender
    (GEO characteristics often carry ``gender: M``); None when no column holds a single male/female value.
    """
    named = [c for c in obs.columns if _SEX_NAME.search(str(c))]
    candidates = [c for c in covariates if c in named] + [c for c in named if c not in covariates]
    for column in candidates:
        sex = _sex_values(obs, column)
        if sex.isin(["female", "male"]).any():
            return sex, str(column)
    # GEO characteristics columns are named characteristics_ch1.N: look inside them for 'gender: M'.
    for column in obs.columns:
        values = obs[column].astype("object").dropna().astype(str)
        if len(values) and values.str.match(_SEX_PREFIX).all():
            sex = _sex_values(obs, column)
            if sex.isin(["female", "male"]).any():
                return sex, str(column)
    return None, None


def marker_genes(markers: pd.DataFrame, role: str) -> list[str]:
    """Symbols of the markers table with ``role`` (sex_female / sex_male)."""
    if not {"symbol", "role"} <= set(markers.columns):
        raise InputError("markers table lacks 'symbol'/'role'; expected severity_sanity_markers.tsv.")
    return markers.loc[markers["role"] == role, "symbol"].astype(str).tolist()


def infer_sex(log_female: pd.Series, log_male: pd.Series, margin: float = SEX_CALL_MARGIN) -> pd.Series:
    """Expression sex call from log2(CPM + 1) of the female (XIST) and male (chrY) markers.

    'male' when the male marker exceeds the female one by ``margin`` and reaches 1 CPM, 'female'
    symmetrically, 'ambiguous' otherwise (both silent, or both expressed).
    """
    diff = log_male - log_female
    call = pd.Series("ambiguous", index=log_female.index, dtype=object)
    call[(diff > margin) & (log_male >= SEX_CALL_MIN_LOG2CPM)] = "male"
    call[(diff < -margin) & (log_female >= SEX_CALL_MIN_LOG2CPM)] = "female"
    return call


def agreement(recorded: pd.Series, inferred: pd.Series) -> pd.Series:
    """Per sample: ``not_recorded`` (no recorded sex), ``no_call`` (no expression call), else ``agree`` or
    ``discordant``."""
    out = pd.Series("agree", index=recorded.index, dtype=object)
    out[recorded != inferred] = "discordant"
    out[~inferred.isin(["female", "male"])] = "no_call"
    out[~recorded.isin(["female", "male"])] = "not_recorded"
    return out


def sex_check_table(adata: ad.AnnData, markers: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, object]]:
    """Per sample (index ``sample_id``): severity, recorded sex, log2(CPM + 1) of the female / male
    markers (summed over the markers of each role that are in the matrix), the expression call and the
    agreement of the two; plus a summary (:func:`sex_check_summary`).

    CPM uses the sample's total counts over all genes of the matrix. Missing markers give NaN columns and
    no call (``not_called``).
    """
    counts = raw_counts(adata)
    sex, sex_column = recorded_sex(adata.obs, covariates_of(adata))
    lib = counts.sum(axis=1)
    table = pd.DataFrame(
        {
            "severity": severity_of(adata.obs, cohort_name(adata)).to_numpy(),
            "recorded_sex": sex.to_numpy() if sex is not None else "unknown",
        },
        index=pd.Index(adata.obs_names, name="sample_id"),
    )
    genes: dict[str, list[str]] = {}
    missing: dict[str, list[str]] = {}
    for key in ("female", "male"):
        wanted = marker_genes(markers, f"sex_{key}")
        genes[key] = [g for g in wanted if g in counts.columns]
        missing[key] = [g for g in wanted if g not in counts.columns]
        if genes[key]:
            cpm = counts[genes[key]].sum(axis=1) / lib.where(lib > 0) * 1e6
            table[f"{key}_marker_log2cpm"] = np.log2(cpm + 1.0).to_numpy()
        else:
            table[f"{key}_marker_log2cpm"] = np.nan
    if genes["female"] and genes["male"]:
        table["inferred_sex"] = infer_sex(table["female_marker_log2cpm"], table["male_marker_log2cpm"])
    else:
        table["inferred_sex"] = "not_called"
    table["agreement"] = agreement(table["recorded_sex"], table["inferred_sex"])
    return table, sex_check_summary(table, cohort_name(adata), sex_column, genes, missing)


def sex_check_summary(
    table: pd.DataFrame,
    cohort: str,
    sex_column: str | None,
    genes: dict[str, list[str]],
    missing: dict[str, list[str]],
) -> dict[str, object]:
    """What the sex check could use and what it found: the recorded-sex column, the markers used and
    missing, the call thresholds, counts per recorded / inferred sex and agreement, the discordant
    samples and a one-word status (``checked``, ``no_recorded_sex``, ``markers_missing``)."""
    if not (genes["female"] and genes["male"]):
        status = "markers_missing"
    elif sex_column is None:
        status = "no_recorded_sex"
    else:
        status = "checked"

    def counts(column: str, values: Sequence[str]) -> dict[str, int]:
        found = table[column].value_counts()
        return {v: int(found.get(v, 0)) for v in values}

    return {
        "cohort": cohort,
        "status": status,
        "recorded_sex_column": sex_column,
        "female_markers": genes["female"],
        "male_markers": genes["male"],
        "female_markers_missing": missing["female"],
        "male_markers_missing": missing["male"],
        "call_margin_log2": SEX_CALL_MARGIN,
        "call_min_log2cpm": SEX_CALL_MIN_LOG2CPM,
        "n_samples": len(table),
        "recorded": counts("recorded_sex", SEXES),
        "inferred": counts("inferred_sex", INFERRED_VALUES),
        "agreement": counts("agreement", AGREEMENT_VALUES),
        "discordant_samples": [str(s) for s in table.index[table["agreement"] == "discordant"]],
    }


# ----------------------------------------------------------------------------------------------------
# PCA
# ----------------------------------------------------------------------------------------------------


def pca_vst(vst: pd.DataFrame, n_top: int = PCA_TOP_GENES) -> tuple[pd.DataFrame, np.ndarray]:
    """PCA (centred, unscaled SVD) of the ``n_top`` most variable genes of a samples x genes VST matrix.

    Returns sample coordinates (columns PC1..PCk) and each component's share of the total variance of
    those genes (sums to 1 over all components). Unscaled, as DESeq2's ``plotPCA``: VST already puts
    genes on a comparable log scale, and scaling would inflate noisy low-count genes.
    """
    variable = vst.var(axis=0).sort_values(ascending=False, kind="stable")
    genes = variable.index[: min(n_top, len(variable))]
    x = vst[genes].to_numpy(dtype=float)
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    var = s**2
    ratio = var / var.sum() if var.sum() > 0 else np.zeros_like(var)
    coords = pd.DataFrame(u * s, index=vst.index, columns=[f"PC{i + 1}" for i in range(len(s))])
    return coords, ratio


def robust_z(values: pd.Series) -> pd.Series:
    """(value - median) / (1.4826 MAD); all zero when the MAD is zero."""
    mad = float(np.median(np.abs(values - values.median()))) * 1.4826
    return (values - values.median()) / mad if mad > 0 else values * 0.0


def layer_frame(
    adata: ad.AnnData, name: str, source: str, genes: Sequence[str] | None = None
) -> pd.DataFrame:
    """Samples x genes DataFrame of an expression layer, all genes or only ``genes`` (a panel: no dense
    copy of the whole genome)."""
    if name not in adata.layers:
        raise InputError(
            f"{source}: expression AnnData lacks layer '{name}' (has {list(adata.layers)}); "
            f"rerun the expression_scores rule."
        )
    if genes is None:
        return pd.DataFrame(
            _dense(adata.layers[name]).astype(float), index=adata.obs_names, columns=adata.var_names
        )
    columns = adata.var_names.get_indexer(pd.Index(genes))
    if (columns < 0).any():
        missing = [g for g, c in zip(genes, columns, strict=True) if c < 0]
        raise KeyError(f"{source}: genes {missing} not in the expression AnnData")
    values = _dense(adata.layers[name][:, columns]).astype(float)
    return pd.DataFrame(values, index=adata.obs_names, columns=pd.Index(genes))


def pca_table(adata: ad.AnnData, n_top: int = PCA_TOP_GENES) -> tuple[pd.DataFrame, pd.DataFrame]:
    """PCA of the contrast samples' ``vst`` layer (the expression AnnData).

    Returns per sample (index ``sample_id``): severity, recorded sex, PC1..PC``PCA_COMPONENTS_WRITTEN``
    (fewer when there are fewer samples) and ``outlier`` (more than ``PCA_OUTLIER_Z`` robust SDs from the
    median on PC1 or PC2); and per component (``component``, ``variance_fraction``, ``genes_used``: the
    number of most variable genes the PCA ran on). With fewer than ``PCA_MIN_SAMPLES`` samples the PC
    columns are empty and the variance table has no rows.
    """
    cohort = cohort_name(adata)
    vst = layer_frame(adata, "vst", cohort)
    severity = severity_of(adata.obs, cohort)
    keep = severity.isin(SEVERITY_ORDER).to_numpy()
    vst, severity = vst.loc[keep], severity[keep]
    sex, _ = recorded_sex(adata.obs.loc[keep], covariates_of(adata))
    sex = sex if sex is not None else pd.Series("unknown", index=vst.index)
    table = pd.DataFrame(
        {"severity": severity.to_numpy(), "recorded_sex": sex.reindex(vst.index).to_numpy()},
        index=pd.Index(vst.index, name="sample_id"),
    )
    if len(vst) < PCA_MIN_SAMPLES:
        table = table.assign(PC1=np.nan, PC2=np.nan, outlier=False)
        variance = pd.DataFrame(
            {"component": pd.Series(dtype=str), "variance_fraction": pd.Series(dtype=float),
             "genes_used": pd.Series(dtype=int)}
        )  # fmt: skip
        return table, variance
    coords, ratio = pca_vst(vst, n_top)
    shown = coords.iloc[:, :PCA_COMPONENTS_WRITTEN]
    table = table.join(shown)
    table["outlier"] = (robust_z(table["PC1"]).abs() > PCA_OUTLIER_Z) | (
        robust_z(table["PC2"]).abs() > PCA_OUTLIER_Z
    )
    variance = pd.DataFrame(
        {
            "component": list(coords.columns),
            "variance_fraction": ratio,
            "genes_used": min(n_top, vst.shape[1]),
        }
    )
    return table, variance


# ----------------------------------------------------------------------------------------------------
# Rule cohort_qc
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CohortQcOutputs:
    """Where rule cohort_qc writes its tables (columns in config/README.md, "Sample QC tables")."""

    library_sizes: str | Path
    sex_check: str | Path
    sex_check_summary: str | Path
    pca: str | Path
    pca_variance: str | Path


def _write_tsv(table: pd.DataFrame, path: str | Path, index: bool = True) -> None:
    table.to_csv(path, sep="\t", index=index, na_rep="NA")


def write_cohort_qc(
    cohort_path: str | Path,
    expression_path: str | Path,
    markers_path: str | Path,
    outputs: CohortQcOutputs,
    low_library_fraction: float = LOW_LIBRARY_FRACTION,
    reads: ReadsQcInput | None = None,
) -> dict[str, object]:
    """Read the cohort and expression AnnData and the markers table, write every QC table; returns the
    sex-check summary (its discordant samples are also logged, where a reviewer looks for swaps).

    ``reads`` (cohorts counted from reads only) adds the reads QC columns to library_sizes.tsv."""
    cohort = ad.read_h5ad(cohort_path)
    markers = pd.read_csv(markers_path, sep="\t")
    library = library_table(cohort, low_library_fraction)
    if reads is not None:
        library = with_reads_qc(library, cohort.obs, reads, low_library_fraction)
    sex_table, sex_summary = sex_check_table(cohort, markers)
    pca, variance = pca_table(ad.read_h5ad(expression_path))
    _write_tsv(library, outputs.library_sizes)
    _write_tsv(sex_table, outputs.sex_check)
    Path(outputs.sex_check_summary).write_text(json.dumps(sex_summary, indent=2) + "\n", encoding="utf-8")
    _write_tsv(pca, outputs.pca)
    _write_tsv(variance, outputs.pca_variance, index=False)
    log.info(
        "library sizes: %d sample(s), %d below %g of the median %s",
        len(library),
        int(library["low_library"].sum()),
        low_library_fraction,
        list(library.index[library["low_library"]]),
    )
    if reads is not None:
        flagged = library[library["reads_flags"] != ""]
        log.info(
            "reads QC: %d sample(s) flagged (kept in the analysis): %s",
            len(flagged),
            dict(zip(flagged.index, flagged["reads_flags"], strict=True)),
        )
    log.info(
        "sex check (%s; recorded sex from %s): %d discordant sample(s) %s",
        sex_summary["status"],
        sex_summary["recorded_sex_column"],
        len(sex_summary["discordant_samples"]),
        sex_summary["discordant_samples"],
    )
    log.info("PCA: %d sample(s), %d flagged as outliers", len(pca), int(pca["outlier"].sum()))
    return sex_summary
