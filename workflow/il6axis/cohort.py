"""Turn a cohort's sample table and count matrix into one analysis-ready AnnData.

Everything cohort-specific comes from the cohort's config block (see config/README.md): which metadata
field holds severity and which of its values are severe, mild or excluded; sample filters; the
one-sample-per-patient rule; and the covariates with their types. Samples that leave the contrast stay
in the AnnData with ``severity == "excluded"`` and an ``exclusion_reason``, so every drop is visible.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from il6axis.errors import InputError
from il6axis.geo_metadata import normalise_sex, parse_age
from il6axis.groups import EXCLUDED, MILD, SEVERE

log = logging.getLogger("il6axis.cohort")


MIN_SAMPLES_PER_GROUP = 2


def _require_field(meta: pd.DataFrame, field: str, what: str, source: str) -> None:
    if field not in meta.columns:
        shown = ", ".join(map(repr, list(meta.columns)[:25]))
        raise InputError(
            f"{source}: {what} field {field!r} is not a column of the sample metadata; available: {shown}. "
            f"Fix the field name in the cohort's config."
        )


def _as_label(value: Any) -> str:
    """Metadata values compare as stripped strings (GEO values are text; sample sheets may be numeric)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def assign_severity(
    meta: pd.DataFrame, spec: Mapping[str, Any], source: str, considered: pd.Series | None = None
) -> pd.DataFrame:
    """Map the configured severity field onto severe / mild / excluded.

    Returns a frame with columns ``severity``, ``source_label`` and ``exclusion_reason``. A value that the
    config does not list under ``severe``, ``mild`` or ``exclude`` is an error: silently dropping an
    unexpected label (a typo, a new GEO value) would change the contrast without anyone noticing. Only
    samples in ``considered`` (those passing the cohort's filters) are checked.
    """
    field = spec["field"]
    _require_field(meta, field, "severity", source)
    severe = {str(v) for v in spec["severe"]}
    mild = {str(v) for v in spec["mild"]}
    exclude = {str(v) for v in spec.get("exclude", [])}
    overlap = (severe & mild) | (severe & exclude) | (mild & exclude)
    if overlap:
        raise InputError(
            f"{source}: severity values {sorted(overlap)} are listed in more than one of "
            f"severe/mild/exclude; each value must be in exactly one list."
        )
    labels = meta[field].map(_as_label)
    checked = labels if considered is None else labels[considered]
    unknown = sorted(set(checked) - severe - mild - exclude)
    if unknown:
        raise InputError(
            f"{source}: severity field {field!r} has value(s) {unknown} that are not listed under "
            f"severity.severe, severity.mild or severity.exclude in config "
            f"(listed: severe={sorted(severe)}, mild={sorted(mild)}, exclude={sorted(exclude)}). "
            f"Add each value to one of these lists."
        )
    severity = np.where(labels.isin(severe), SEVERE, np.where(labels.isin(mild), MILD, EXCLUDED))
    reason = np.where(severity == EXCLUDED, "severity label '" + labels + "' excluded", "")
    return pd.DataFrame(
        {"severity": severity, "source_label": labels, "exclusion_reason": reason}, index=meta.index
    )


def derive_fields(meta: pd.DataFrame, spec: Mapping[str, Mapping[str, Any]], source: str) -> pd.DataFrame:
    """Add columns extracted by regex (first capture group), e.g. a patient ID from GEO sample titles."""
    meta = meta.copy()
    for name, rule in spec.items():
        _require_field(meta, rule["from"], f"derived field {name!r}", source)
        try:
            pattern = re.compile(rule["regex"])
        except re.error as exc:
            raise InputError(
                f"{source}: derived field {name!r}: invalid regex {rule['regex']!r}: {exc}"
            ) from exc
        if pattern.groups < 1:
            raise InputError(
                f"{source}: derived field {name!r}: regex {rule['regex']!r} needs a capture group (...) "
                f"around the part to keep"
            )
        extracted = meta[rule["from"]].map(_as_label).str.extract(pattern, expand=True)[0]
        default = rule.get("default")
        meta[name] = extracted.fillna(default) if default is not None else extracted
        log.info(
            "%s: derived %r from %r: %d/%d samples matched",
            source,
            name,
            rule["from"],
            int(extracted.notna().sum()),
            len(meta),
        )
    return meta


def filter_mask(meta: pd.DataFrame, filters: Mapping[str, Sequence[Any]], source: str) -> pd.Series:
    """Boolean mask of samples whose ``field`` value is one of the allowed values, for every filter."""
    keep = pd.Series(True, index=meta.index)
    for field, allowed in filters.items():
        _require_field(meta, field, "filter", source)
        keep &= meta[field].map(_as_label).isin({str(a) for a in allowed})
    return keep


def one_per_patient_mask(
    meta: pd.DataFrame, eligible: pd.Series, spec: Mapping[str, Any], source: str
) -> pd.Series:
    """Keep one eligible sample per patient: the first by ``order_field`` (numeric if possible).

    pydeseq2 has no random effects, so repeated draws of one patient must not enter as replicates.
    """
    patient_field = spec["patient_field"]
    order_field = spec.get("order_field")
    _require_field(meta, patient_field, "one_per_patient.patient_field", source)
    candidates = meta.loc[eligible]
    if order_field:
        _require_field(meta, order_field, "one_per_patient.order_field", source)
        order = _order_key(candidates[order_field], spec.get("order_values"), source)
        ascending = spec.get("keep", "first") == "first"
        candidates = candidates.assign(_order=order).sort_values(
            ["_order"], ascending=ascending, kind="stable"
        )
    patient = candidates[patient_field].map(_as_label)
    no_id = patient.eq("")
    if no_id.any():
        log.info(
            "%s: %d sample(s) without %r count as their own patient", source, int(no_id.sum()), patient_field
        )
        patient = patient.where(~no_id, "sample:" + patient.index.astype(str))
    first = ~patient.duplicated(keep="first")
    keep = pd.Series(False, index=meta.index)
    keep.loc[first[first].index] = True
    return keep | ~eligible


def _order_key(values: pd.Series, order_values: Sequence[Any] | None, source: str) -> pd.Series:
    """Sort key for choosing a patient's sample: listed label order, else numbers, else text."""
    labels = values.map(_as_label)
    if order_values:
        rank = {str(v): i for i, v in enumerate(order_values)}
        unlisted = sorted(set(labels) - set(rank))
        if unlisted:
            raise InputError(
                f"{source}: one_per_patient.order_values {list(order_values)} does not list {unlisted}; "
                f"add them in the intended order."
            )
        return labels.map(rank)
    numeric = pd.to_numeric(labels, errors="coerce")
    return numeric if numeric.notna().all() else labels


def build_covariates(meta: pd.DataFrame, spec: Mapping[str, Mapping[str, Any]], source: str) -> pd.DataFrame:
    """Typed covariate columns named by their config keys (these names go into the design formula)."""
    out = pd.DataFrame(index=meta.index)
    for name, cov in spec.items():
        field, kind = cov["field"], cov.get("type", "categorical")
        _require_field(meta, field, f"covariate {name!r}", source)
        raw = meta[field]
        if kind == "age":
            parsed = parse_age(raw)
            out[name] = parsed["age"].to_numpy()
            out[f"{name}_censored"] = parsed["age_censored"].to_numpy()
        elif kind == "numeric":
            values = pd.to_numeric(raw.map(_as_label).replace({"": np.nan}), errors="coerce")
            bad = raw[
                values.isna()
                & raw.map(_as_label).ne("")
                & ~raw.map(_as_label).str.lower().isin({"na", "nan", "unknown", "n/a", ":"})
            ]
            if len(bad):
                raise InputError(
                    f"{source}: covariate {name!r} (field {field!r}) has non-numeric value {bad.iloc[0]!r} "
                    f"for sample {bad.index[0]!r}; use type 'categorical' or clean the value."
                )
            out[name] = values.to_numpy(dtype=float)
        elif kind == "sex":
            out[name] = normalise_sex(raw).to_numpy()
        elif kind == "categorical":
            out[name] = raw.map(_as_label).to_numpy()
        else:  # the schema forbids this; kept for direct API use
            raise InputError(f"{source}: covariate {name!r} has unknown type {kind!r}")
    return out


def _missing_covariate(covariates: pd.DataFrame, names: Sequence[str]) -> pd.Series:
    missing = pd.Series("", index=covariates.index)
    for name in names:
        col = covariates[name]
        is_missing = col.isna() if col.dtype.kind == "f" else col.isin(["", "unknown"])
        missing = missing.where(~is_missing | missing.ne(""), f"missing covariate {name}")
    return missing


def check_group_sizes(severity: pd.Series, source: str) -> dict[str, int]:
    """At least two samples per group, or dispersion and fold change cannot be estimated."""
    sizes = {g: int((severity == g).sum()) for g in (SEVERE, MILD)}
    small = {g: n for g, n in sizes.items() if n < MIN_SAMPLES_PER_GROUP}
    if small:
        raise InputError(
            f"{source}: after filters and exclusions the contrast has {sizes} samples; every group needs at "
            f"least {MIN_SAMPLES_PER_GROUP}. Check severity.severe/mild values, filters and covariates "
            f"with missing values (samples with a missing covariate are dropped)."
        )
    return sizes


def define_contrast(meta: pd.DataFrame, cohort_spec: Mapping[str, Any], source: str) -> pd.DataFrame:
    """Apply severity mapping, filters, one-per-patient and covariate completeness, in that order.

    Returns ``obs``: the metadata (with derived fields) plus ``severity``, ``source_label``,
    ``exclusion_reason`` and the typed covariates. The order is fixed: derived fields, filters, severity
    labels, one sample per patient, complete covariates; a sample excluded for its label never decides
    which draw represents a patient.
    """
    meta = derive_fields(meta, cohort_spec.get("derived_fields", {}), source)
    passes = filter_mask(meta, cohort_spec.get("filters", {}), source)
    groups = assign_severity(meta, cohort_spec["severity"], source, considered=passes)
    covariates = build_covariates(meta, cohort_spec.get("covariates", {}), source)
    reason = groups["exclusion_reason"].where(passes, "filtered out by cohort filters")

    eligible = reason.eq("")
    opp = cohort_spec.get("one_per_patient")
    if opp:
        kept = one_per_patient_mask(meta, eligible, opp, source)
        reason = reason.where(kept, f"not the first sample of its {opp['patient_field']}")
        eligible = reason.eq("")

    missing = _missing_covariate(covariates, list(cohort_spec.get("covariates", {})))
    reason = reason.where(~eligible | missing.eq(""), missing)

    groups["exclusion_reason"] = reason
    groups["severity"] = groups["severity"].where(reason.eq(""), EXCLUDED)
    sizes = check_group_sizes(groups["severity"], source)
    log.info(
        "%s: contrast severe=%d mild=%d; excluded=%d",
        source,
        sizes[SEVERE],
        sizes[MILD],
        int((groups["severity"] == EXCLUDED).sum()),
    )
    for why, n in reason[reason.ne("")].value_counts().items():
        log.info("%s: excluded %d sample(s): %s", source, n, why)
    overlap = [c for c in list(groups.columns) + list(covariates.columns) if c in meta.columns]
    obs = pd.concat([meta.drop(columns=overlap), groups, covariates], axis=1)
    return obs


def to_anndata(counts: pd.DataFrame, obs: pd.DataFrame, uns: Mapping[str, Any]) -> ad.AnnData:
    """Samples x genes AnnData: integer counts in ``X``, or float64 values for a normalised cohort."""
    counts_t = counts.T
    if not counts_t.index.equals(obs.index):
        raise InputError("internal: count columns and metadata rows are not aligned")
    # h5py treats "/" in a column name as a group separator (GEOquery has "contact_zip/postal_code").
    obs = obs.rename(columns=lambda c: str(c).replace("/", "_"))
    obs.insert(0, "sample_id", obs.index.astype(str))
    obs.index = obs.index.astype(str)
    obs["severity"] = pd.Categorical(obs["severity"], categories=[MILD, SEVERE, EXCLUDED])
    for col in obs.columns:
        if obs[col].dtype == object:
            obs[col] = obs[col].astype(str)
    var = pd.DataFrame(index=pd.Index(counts.index.astype(str), name="gene"))
    dtype = np.float64 if uns.get("value_type") == "normalised" else np.int64
    adata = ad.AnnData(X=counts_t.to_numpy(dtype=dtype), obs=obs, var=var)
    adata.uns.update(dict(uns))
    return adata
