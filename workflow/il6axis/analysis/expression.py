"""Per-cohort expression tables: contrast counts, DESeq2 normalisation, VST and panel-gene detection.

Everything here works on the severe and mild samples of one cohort (``excluded`` samples never enter):

- :func:`size_factors` / :func:`normalised_counts`: DESeq2 median-of-ratios normalisation, so that
  per-gene means are comparable between samples of different sequencing depth.
- :func:`vst`: pydeseq2's variance-stabilising transformation (log2-like scale), computed **blind to
  severity** (intercept-only design) by default. Gene-set scores are later tested for a severity effect;
  a transformation whose dispersion trend was fitted with severity in the design would have seen the
  labels it is then tested on, so the default keeps the scores free of that circularity.
- :func:`panel_expression` / :func:`detection_note`: per pre-specified panel gene and group, how much
  and how often it is detected, so that a barely expressed gene (IL6 in blood) is reported as such rather
  than silently filtered or over-interpreted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydeseq2.dds import DeseqDataSet
from pydeseq2.default_inference import DefaultInference

from il6axis.acquire.count_tables import normalised_array
from il6axis.cohort.value_scale import LOG2_NORMALISED, detected_log2, log2_values
from il6axis.errors import InputError
from il6axis.vocabulary import MILD, SEVERE

log = logging.getLogger(__name__)

GROUPS: tuple[str, str] = (MILD, SEVERE)

# Detection thresholds for panel genes (pre-specified, not tuned on the data).
# A gene counts as "barely detected" when, across the contrast samples, its median DESeq2-normalised
# count is below LOW_MEDIAN_NORM or it is seen (count > 0) in fewer than LOW_DETECTION of the samples.
# 10 matches the DE expression filter (>= 10 reads in the smaller group's worth of samples): below it
# a gene cannot reach significance reliably and any effect estimate rests on a handful of reads.
LOW_MEDIAN_NORM = 10.0
LOW_DETECTION = 0.5
# R DESeq2's vst() fits the dispersion trend on genes with mean normalised count above this value when
# subsampling (nsub); the same rule is used here.
NSUB_MIN_MEAN = 5.0
# pydeseq2's DefaultInference runs per-gene fits in joblib process workers when n_cpus > 1: each is a fresh
# interpreter with numpy/scipy/pydeseq2 loaded (~100-200 MB each, counted in the step's memory) and they take
# ~2 s to start. A fit on fewer genes than this runs in-process, where workers cost more than they save
# (GSE152418, the nsub=1000 trend fit: 1.4 s and no extra memory in-process, 3.5 s and +430 MB with 2
# workers). Per-gene results do not depend on the number of workers.
VST_WORKER_MIN_GENES = 5000


def _cohort_label(adata: ad.AnnData) -> str:
    return str(adata.uns.get("cohort", "cohort AnnData"))


def _contrast_matrix(adata: ad.AnnData) -> tuple[np.ndarray, pd.DataFrame, pd.Index, pd.Index]:
    """Dense X, ``obs`` (severity categorical [mild, severe]), sample and gene names of the contrast."""
    label = _cohort_label(adata)
    if "severity" not in adata.obs.columns:
        raise InputError(f"{label}: obs has no 'severity' column; rebuild the cohort with build_cohort.")
    severity = adata.obs["severity"].astype(str)
    keep = severity.isin(GROUPS).to_numpy()
    sub = adata[keep]
    x = sub.X.toarray() if sp.issparse(sub.X) else np.asarray(sub.X)
    obs = sub.obs.copy()
    obs["severity"] = pd.Categorical(severity[keep].to_numpy(), categories=list(GROUPS))
    n = obs["severity"].value_counts()
    log.info("%s: %d mild and %d severe samples in the contrast", label, n[MILD], n[SEVERE])
    return x, obs, pd.Index(sub.obs_names.copy(), name="sample"), pd.Index(sub.var_names.copy(), name="gene")


def contrast_counts(adata: ad.AnnData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Integer counts (samples x genes) and ``obs`` of the mild and severe samples only.

    ``obs['severity']`` comes back as a categorical with categories ``[mild, severe]`` (mild = reference),
    whatever category order the AnnData had.
    """
    label = _cohort_label(adata)
    x, obs, samples, genes = _contrast_matrix(adata)
    if not np.issubdtype(x.dtype, np.integer):
        if not (np.isfinite(x).all() and np.array_equal(x, np.round(x))):
            raise InputError(
                f"{label}: X holds non-integer values; the cohort AnnData must carry raw integer counts "
                f"(round expected counts with counts.value_type: expected_counts)."
            )
        x = x.astype(np.int64)
    if (x < 0).any():
        raise InputError(f"{label}: X holds negative counts; the cohort AnnData must carry raw counts.")
    return pd.DataFrame(x.astype(np.int64), index=samples, columns=genes), obs


def contrast_values(adata: ad.AnnData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Normalised values (samples x genes, float) and ``obs`` of the mild and severe samples, as stored.

    For cohorts that publish normalised values only (``uns["value_type"]`` ``normalised`` or
    ``log2_normalised``): they are already comparable between samples, so they stand in for
    DESeq2-normalised counts, and their log2 scale (:func:`published_scales`) for the VST. Linear values
    are checked finite and non-negative, log2 values finite (negatives are allowed).
    """
    x, obs, samples, genes = _contrast_matrix(adata)
    values = pd.DataFrame(x, index=samples, columns=genes)
    label = f"{_cohort_label(adata)} (X, samples x genes)"
    if str(adata.uns.get("value_type", "")) == LOG2_NORMALISED:
        checked = log2_values(values, label)
    else:
        checked = normalised_array(values, label)
    return pd.DataFrame(checked, index=samples, columns=genes), obs


def log2_normalised(values: pd.DataFrame, prior: float = 1.0) -> pd.DataFrame:
    """log2(value + prior): the log scale of the linear-model route, used where counts get the VST."""
    return np.log2(values + prior)


def published_scales(values: pd.DataFrame, value_type: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(linear, log2) versions of a normalised-only cohort's values, for the layers counts get from
    DESeq2 normalisation and the VST.

    ``normalised``: the values and log2(value + 1), the linear model's scale. ``log2_normalised``: 2**x
    and the values themselves, so the log scale is the one the linear model fits, never a second log.
    """
    if value_type == LOG2_NORMALISED:
        return np.exp2(values), values
    return values, log2_normalised(values)


def size_factors(counts: pd.DataFrame) -> pd.Series:
    """DESeq2 median-of-ratios size factors (one per sample).

    The reference sample is the per-gene geometric mean over genes with no zero count; each sample's
    factor is the median of its ratios to that reference. Like R ``estimateSizeFactors`` and pydeseq2's
    ``ratio`` fit, factors are not rescaled afterwards.
    """
    x = counts.to_numpy(dtype=float)
    usable = (x > 0).all(axis=0)
    if not usable.any():
        raise InputError(
            f"count matrix ({counts.shape[0]} samples x {counts.shape[1]} genes): every gene has a zero in "
            f"at least one sample, so median-of-ratios size factors are undefined. Remove empty or failed "
            f"samples (very low library size) before normalising."
        )
    log_x = np.log(x[:, usable])
    log_ratio = log_x - log_x.mean(axis=0)
    return pd.Series(np.exp(np.median(log_ratio, axis=1)), index=counts.index, name="size_factor")


def normalised_counts(counts: pd.DataFrame, sf: pd.Series) -> pd.DataFrame:
    """Counts divided by each sample's size factor (DESeq2 "normalised counts")."""
    factors = sf.reindex(counts.index)
    if factors.isna().any():
        missing = list(counts.index[factors.isna()][:5])
        raise InputError(f"size factors are missing for samples {missing}; compute them on the same counts.")
    return counts.div(factors, axis=0)


def _intercept_design(index: pd.Index) -> pd.DataFrame:
    return pd.DataFrame(1.0, index=index, columns=["Intercept"])


def _dataset(counts: pd.DataFrame, obs: pd.DataFrame | None, design_free: bool, n_cpus: int) -> DeseqDataSet:
    """A DeseqDataSet for VST: intercept-only design when blind, ``~ severity`` otherwise."""
    if design_free:
        metadata = pd.DataFrame(index=counts.index)
        design: str | pd.DataFrame = _intercept_design(counts.index)
    else:
        if obs is None or "severity" not in obs.columns:
            raise InputError("vst(design_free=False) needs obs with a 'severity' column for the design.")
        metadata = pd.DataFrame(
            {"severity": pd.Categorical(obs.loc[counts.index, "severity"].astype(str), categories=GROUPS)},
            index=counts.index,
        )
        design = "~ severity"
    return DeseqDataSet(
        counts=counts,
        metadata=metadata,
        design=design,
        inference=DefaultInference(n_cpus=n_cpus if counts.shape[1] >= VST_WORKER_MIN_GENES else 1),
        quiet=True,
    )


def _subsample_genes(counts: pd.DataFrame, sf: pd.Series, nsub: int, seed: int) -> pd.Index | None:
    """Genes for fitting the VST trend (R DESeq2 ``vst(nsub=...)``), or None to fit on all genes."""
    if nsub >= counts.shape[1]:
        return None
    mean_norm = normalised_counts(counts, sf).mean(axis=0)
    eligible = np.flatnonzero(mean_norm.to_numpy() > NSUB_MIN_MEAN)
    if len(eligible) < nsub:
        log.info(
            "vst: only %d genes have mean normalised count > %g (< nsub=%d); fitting the trend on all genes",
            len(eligible),
            NSUB_MIN_MEAN,
            nsub,
        )
        return None
    chosen = np.sort(np.random.default_rng(seed).choice(eligible, size=nsub, replace=False))
    return counts.columns[chosen]


def vst(
    counts: pd.DataFrame,
    design_free: bool = True,
    *,
    obs: pd.DataFrame | None = None,
    n_cpus: int = 1,
    nsub: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Variance-stabilised, log2-scale expression (samples x genes) from pydeseq2.

    ``design_free=True`` (default) fits the dispersion trend with an intercept-only design, i.e. blind to
    severity (R ``vst(blind=TRUE)``): scores built on it are then tested for severity without the
    transformation having used the labels. ``design_free=False`` uses ``~ severity`` (needs ``obs``).

    pydeseq2 fits a dispersion per gene before the trend, which is slow (about 65 s of CPU for 10k genes x
    30 samples). ``nsub`` mirrors R DESeq2 ``vst(nsub=1000)``: the parametric trend ``a0 + a1/mu`` is fitted
    on ``nsub`` randomly chosen genes (seeded) with mean normalised count > 5 (that fit uses the subsample's
    own median-of-ratios factors), and pydeseq2's transform is then applied to all genes with size factors
    from all genes (about 8 s of CPU for 10k x 30 with ``nsub=1000``; values within 0.1 of the full fit).
    ``nsub=None`` fits on every gene. ``n_cpus`` is passed to pydeseq2's inference (joblib process workers)
    for fits on at least ``VST_WORKER_MIN_GENES`` genes; smaller fits (the ``nsub`` trend) run in-process.
    """
    if counts.shape[1] == 0 or counts.shape[0] < 2:
        raise InputError(f"vst needs >= 2 samples and >= 1 gene; got {counts.shape[0]} x {counts.shape[1]}")
    sf = size_factors(counts)  # validates that median-of-ratios is defined (no silent iterative fallback)
    subset = None if nsub is None else _subsample_genes(counts, sf, nsub, seed)
    if subset is None:
        dds = _dataset(counts, obs, design_free, n_cpus)
        dds.vst(use_design=not design_free)
        values = dds.layers["vst_counts"]
    else:
        values = _vst_with_subsampled_trend(counts, obs, design_free, n_cpus, subset)
        if values is None:  # the trend on the subsample fell back to a mean fit: fit on all genes
            dds = _dataset(counts, obs, design_free, n_cpus)
            dds.vst(use_design=not design_free)
            values = dds.layers["vst_counts"]
    out = pd.DataFrame(np.asarray(values, dtype=float), index=counts.index, columns=counts.columns)
    out.index.name, out.columns.name = counts.index.name, counts.columns.name
    return out


def _vst_with_subsampled_trend(
    counts: pd.DataFrame, obs: pd.DataFrame | None, design_free: bool, n_cpus: int, subset: pd.Index
) -> np.ndarray | None:
    """Fit the VST trend on ``subset`` and apply pydeseq2's transform to all genes; None if not parametric."""
    sub = _dataset(counts.loc[:, subset], obs, design_free, n_cpus)
    sub.vst(use_design=not design_free)
    if sub.vst_fit_type != "parametric" or "vst_trend_coeffs" not in sub.uns:
        log.info("vst: parametric trend did not converge on the gene subsample")
        return None
    full = _dataset(counts, obs, design_free, n_cpus)
    full.fit_size_factors()
    full.vst_fit_type = "parametric"
    full.uns["vst_trend_coeffs"] = sub.uns["vst_trend_coeffs"]
    return full.vst_transform()


def detected_in(values: pd.DataFrame, value_type: str, genes: Sequence[str]) -> pd.DataFrame | None:
    """Detection of ``genes`` for :func:`panel_expression`: above each sample's floor for published log2
    values (zeros are not visible there, :func:`il6axis.cohort.value_scale.detected_log2`); None (count > 0)
    otherwise. ``values`` holds every gene of the matrix: the floor is the sample's minimum over all."""
    if value_type != LOG2_NORMALISED:
        return None
    return detected_log2(values, [g for g in dict.fromkeys(genes) if g in values.columns])


def _library_cpm(counts: pd.DataFrame) -> pd.DataFrame:
    lib = counts.sum(axis=1).astype(float)
    return counts.div(lib.where(lib > 0), axis=0) * 1e6


def _group_stats(
    counts: pd.DataFrame,
    norm: pd.DataFrame,
    cpm: pd.DataFrame,
    vst_values: pd.DataFrame,
    suffix: str,
    seen: pd.DataFrame,
) -> pd.DataFrame:
    genes = counts.columns
    vst_sub = vst_values.reindex(index=counts.index, columns=genes)
    return pd.DataFrame(
        {
            f"n_{suffix}": len(counts),
            f"mean_norm_{suffix}": norm.mean(axis=0),
            f"median_norm_{suffix}": norm.median(axis=0),
            f"median_cpm_{suffix}": cpm.median(axis=0),
            f"detect_{suffix}": seen.mean(axis=0),
            f"cpm1_{suffix}": (cpm >= 1.0).mean(axis=0),
            f"mean_vst_{suffix}": vst_sub.mean(axis=0),
        },
        index=genes,
    )


def panel_expression(
    counts: pd.DataFrame,
    obs: pd.DataFrame,
    sf: pd.Series,
    vst: pd.DataFrame,
    panel_genes: Sequence[str],
    detected: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Wide table, one row per panel gene: level and detection per group (mild, severe) and pooled (all).

    Columns: ``gene, present``, then per suffix in (mild, severe, all): ``n_``, ``mean_norm_``,
    ``median_norm_`` (DESeq2-normalised counts), ``median_cpm_``, ``detect_`` (fraction of samples with a
    count > 0), ``cpm1_`` (fraction with CPM >= 1, library size = all genes of the matrix), ``mean_vst_``;
    and ``note`` (:func:`detection_note`). Genes absent from the matrix keep a row with ``present=False``
    and NA statistics. CPM and detection use raw counts; means use normalised counts.

    ``detected`` (samples x genes, bool) replaces ``counts > 0`` where a zero count cannot be seen in the
    values: published log2 values, where zeros sit at the sample's floor (:func:`detected_in`).
    """
    genes = list(dict.fromkeys(str(g) for g in panel_genes))
    severity = obs.loc[counts.index, "severity"].astype(str)
    present = [g for g in genes if g in counts.columns]
    norm = normalised_counts(counts, sf)
    cpm = _library_cpm(counts)
    if detected is None:
        seen = counts[present] > 0
    else:
        lacking = [g for g in present if g not in detected.columns]
        if lacking:
            raise ValueError(f"panel_expression: `detected` lacks panel genes {lacking}")
        seen = detected.loc[counts.index, present]
    parts = []
    for suffix, mask in [
        (MILD, severity == MILD),
        (SEVERE, severity == SEVERE),
        ("all", severity.isin(GROUPS)),
    ]:
        rows = mask.to_numpy()
        parts.append(
            _group_stats(
                counts.loc[rows, present],
                norm.loc[rows, present],
                cpm.loc[rows, present],
                vst,
                suffix,
                seen.loc[rows, present],
            )
        )
    stats = pd.concat(parts, axis=1).reindex(genes)
    table = pd.DataFrame({"gene": genes, "present": [g in counts.columns for g in genes]})
    table = pd.concat([table, stats.reset_index(drop=True)], axis=1)
    for suffix, mask in [
        (MILD, severity == MILD),
        (SEVERE, severity == SEVERE),
        ("all", severity.isin(GROUPS)),
    ]:
        table[f"n_{suffix}"] = int(mask.sum())  # n is the group size even for absent genes
    table["note"] = [detection_note(row) for _, row in table.iterrows()]
    return table


def detection_note(row: Mapping[str, object] | pd.Series) -> str:
    """Plain-language detection status of one :func:`panel_expression` row (pooled over both groups).

    - ``absent from the count matrix`` when ``present`` is False;
    - ``not detected (all counts zero)`` when no contrast sample has a read;
    - ``barely detected (...)`` when the median normalised count is < 10 (``LOW_MEDIAN_NORM``) or fewer
      than 50% of samples have a read (``LOW_DETECTION``): effect estimates for such genes rest on a few
      reads and should be read as detection, not as differential expression;
    - ``detected (...)`` otherwise.
    """
    if not bool(row["present"]):
        return "absent from the count matrix"
    detect = float(row["detect_all"])
    median_norm = float(row["median_norm_all"])
    median_cpm = float(row["median_cpm_all"])
    if detect == 0.0:
        return "not detected (all counts zero)"
    detail = (
        f"median {median_norm:.3g} normalised counts, {median_cpm:.3g} CPM; reads in {detect:.0%} of samples"
    )
    if median_norm < LOW_MEDIAN_NORM or detect < LOW_DETECTION:
        return f"barely detected ({detail})"
    return f"detected ({detail})"
