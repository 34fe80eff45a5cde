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
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from il6axis.acquire.geo_metadata import normalise_sex, parse_age
from il6axis.acquire.table_files import show_list
from il6axis.cohort.value_scale import LINEAR_MODEL_TYPES
from il6axis.errors import InputError
from il6axis.vocabulary import EXCLUDED, MILD, SEVERE

log = logging.getLogger(__name__)


MIN_SAMPLES_PER_GROUP = 2


def _require_field(meta: pd.DataFrame, field: str, what: str, source: str) -> None:
    """A configured field must be a metadata column; the error lists every column there is."""
    if field not in meta.columns:
        shown = show_list(meta.columns)
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


# Defaults of `one_per_patient.tie_break` and `.conflict` (the schema repeats them; a test checks).
TIE_BREAKS = ("sample_id", "input_order")
CONFLICT_POLICIES = ("exclude", "most_severe", "first")
DEFAULT_TIE_BREAK = "sample_id"
DEFAULT_CONFLICT = "exclude"
SUBJECT_COLUMNS = [
    "subject",
    "samples",
    "order_values",
    "severity_labels",
    "tie",
    "conflict",
    "kept_sample",
    "decision",
]


@dataclass
class PatientChoice:
    """Outcome of the one-sample-per-patient rule."""

    reason: pd.Series  # why each eligible sample left ("" = kept, or not eligible to begin with)
    subjects: pd.DataFrame  # one row per subject with a tie or a label conflict (SUBJECT_COLUMNS)


def _natural_key(sample_id: object) -> tuple[tuple[int, int | str], ...]:
    """Sort key reading digit runs as numbers, so GSM999 sorts before GSM1000."""
    parts = re.findall(r"\d+|\D+", str(sample_id))
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def _tie_rank(index: pd.Index, tie_break: str, source: str) -> pd.Series:
    if tie_break == "sample_id":
        ordered = sorted(index, key=_natural_key)
    elif tie_break == "input_order":
        ordered = list(index)
    else:  # the schema forbids this; kept for direct API use
        raise InputError(f"{source}: one_per_patient.tie_break must be one of {list(TIE_BREAKS)}")
    return pd.Series({s: i for i, s in enumerate(ordered)}).reindex(index)


def choose_one_per_patient(
    meta: pd.DataFrame, eligible: pd.Series, labels: pd.DataFrame, spec: Mapping[str, Any], source: str
) -> PatientChoice:
    """Keep one eligible sample per patient, deterministically, and resolve label conflicts.

    pydeseq2 has no random effects, so repeated draws of one patient must not enter as replicates.
    A patient's eligible samples (those passing filters with a severe or mild label) are ordered by
    ``order_field`` (``keep: first`` or ``last``); samples sharing the best order value are a tie,
    broken by ``tie_break`` (``sample_id``: natural order of the sample IDs, independent of row order;
    ``input_order``: the order the samples arrive in). When the severity group differs between a
    patient's eligible samples (all of them, not only the tied ones: severity belongs to the disease
    course), ``conflict`` decides: ``exclude`` drops the patient, ``most_severe`` keeps the first
    severe sample, ``first`` keeps the first sample with its own label. Every tie and conflict is a
    row of ``subjects``; every sample that leaves gets its reason. ``labels`` is the output of
    :func:`assign_severity` (``severity`` group and ``source_label``).
    """
    patient_field = spec["patient_field"]
    order_field = spec.get("order_field")
    keep = spec.get("keep", "first")
    tie_break = spec.get("tie_break", DEFAULT_TIE_BREAK)
    policy = spec.get("conflict", DEFAULT_CONFLICT)
    if policy not in CONFLICT_POLICIES:  # the schema forbids this; kept for direct API use
        raise InputError(f"{source}: one_per_patient.conflict must be one of {list(CONFLICT_POLICIES)}")
    _require_field(meta, patient_field, "one_per_patient.patient_field", source)
    candidates = meta.loc[eligible]
    if order_field:
        _require_field(meta, order_field, "one_per_patient.order_field", source)
        order = _order_key(candidates[order_field], spec.get("order_values"), source)
        shown_order = candidates[order_field].map(_as_label)
    else:
        order = pd.Series(0, index=candidates.index)
        shown_order = pd.Series("", index=candidates.index)
    patient = candidates[patient_field].map(_as_label)
    no_id = patient.eq("")
    if no_id.any():
        log.info(
            "%s: %d sample(s) without %r count as their own patient", source, int(no_id.sum()), patient_field
        )
        patient = patient.where(~no_id, "sample:" + patient.index.astype(str))
    # Tie-break first, then a stable sort on the order value: samples with equal order keep tie order.
    frame = pd.DataFrame(
        {"patient": patient, "order": order, "tie": _tie_rank(candidates.index, tie_break, source)}
    ).sort_values("tie", kind="stable")
    frame = frame.sort_values("order", ascending=keep == "first", kind="stable")

    reason = pd.Series("", index=meta.index)
    rows: list[dict[str, Any]] = []
    for pid, group in frame.groupby("patient", sort=False):
        if len(group) < 2:
            continue
        row, left = _decide_patient(str(pid), group, labels, shown_order, spec, policy, tie_break)
        for sample, why in left.items():
            reason[sample] = why
        if row is not None:
            rows.append(row)
            level = logging.WARNING if row["conflict"] else logging.INFO
            log.log(level, "%s: %s %s: %s", source, patient_field, pid, row["decision"])
    subjects = pd.DataFrame(rows, columns=SUBJECT_COLUMNS)
    subjects = subjects.sort_values("subject", key=lambda s: s.map(_natural_key), kind="stable")
    return PatientChoice(reason=reason, subjects=subjects.reset_index(drop=True))


def _decide_patient(
    pid: str,
    group: pd.DataFrame,
    labels: pd.DataFrame,
    shown_order: pd.Series,
    spec: Mapping[str, Any],
    policy: str,
    tie_break: str,
) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """One patient's samples (``group``, best first) -> its subjects row (tie/conflict only) and the
    exclusion reason of every sample that leaves."""
    patient_field, order_field = spec["patient_field"], spec.get("order_field")
    keep = spec.get("keep", "first")
    samples = list(group.index)
    groups = labels.loc[samples, "severity"]
    conflict = groups.nunique() > 1
    pool = [s for s in samples if groups[s] == SEVERE] if conflict and policy == "most_severe" else samples
    kept = pool[0]
    tied = [s for s in pool if group.loc[s, "order"] == group.loc[kept, "order"]]
    tie = len(tied) > 1
    tie_words = "sample ID order" if tie_break == "sample_id" else "input order"
    where = f"tie at {order_field} = {shown_order[kept]!r}" if order_field else "no order_field; tie"
    tie_text = (
        f"{where} among {', '.join(tied)}, broken by {tie_words} (one_per_patient.tie_break: {tie_break})"
    )
    shown = {s: f"{s} ({labels.loc[s, 'source_label']})" for s in samples}
    by_group = "; ".join(
        f"{g}: {', '.join(shown[s] for s in samples if groups[s] == g)}"
        for g in (SEVERE, MILD)
        if (groups == g).any()
    )
    left: dict[str, str] = {}
    if conflict and policy == "exclude":
        decision = (
            f"conflicting severity labels ({by_group}): subject excluded (one_per_patient.conflict: exclude)"
        )
        left = {s: f"{patient_field} {pid} has {decision}" for s in samples}
        kept = ""
    else:
        for s in samples:
            if s == kept:
                continue
            if conflict:
                left[s] = (
                    f"{patient_field} {pid} has conflicting severity labels ({by_group}); kept {kept} "
                    f"(one_per_patient.conflict: {policy})"
                )
            elif s in tied:
                left[s] = f"not the {keep} sample of its {patient_field}: {tie_text}"
            else:
                left[s] = f"not the {keep} sample of its {patient_field}"
        parts = [f"conflicting severity labels ({by_group}) resolved by {policy}"] if conflict else []
        decision = "; ".join([*parts, *([tie_text] if tie else [])]) + f": kept {kept}"
    if not (tie or conflict):
        return None, left
    row = {
        "subject": pid,
        "samples": ", ".join(samples),
        "order_values": ", ".join(shown_order[samples]),
        "severity_labels": ", ".join(f"{g} ({labels.loc[s, 'source_label']})" for s, g in groups.items()),
        "tie": tie,
        "conflict": conflict,
        "kept_sample": kept,
        "decision": decision,
    }
    return row, left


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


@dataclass
class Contrast:
    """The per-sample table and the subjects whose sample the one-per-patient rule had to decide."""

    obs: pd.DataFrame
    subjects: pd.DataFrame  # SUBJECT_COLUMNS; empty without ties or conflicts (or one_per_patient)


def build_contrast(meta: pd.DataFrame, cohort_spec: Mapping[str, Any], source: str) -> Contrast:
    """Apply severity mapping, filters, one-per-patient and covariate completeness, in that order.

    ``obs`` is the metadata (with derived fields) plus ``severity``, ``source_label``,
    ``exclusion_reason`` and the typed covariates. The order is fixed: derived fields, filters, severity
    labels, one sample per patient, complete covariates; a sample excluded for its label never decides
    which draw represents a patient. ``subjects`` lists every tie and label conflict that
    :func:`choose_one_per_patient` resolved.
    """
    meta = derive_fields(meta, cohort_spec.get("derived_fields", {}), source)
    passes = filter_mask(meta, cohort_spec.get("filters", {}), source)
    groups = assign_severity(meta, cohort_spec["severity"], source, considered=passes)
    covariates = build_covariates(meta, cohort_spec.get("covariates", {}), source)
    reason = groups["exclusion_reason"].where(passes, "filtered out by cohort filters")

    eligible = reason.eq("")
    opp = cohort_spec.get("one_per_patient")
    subjects = pd.DataFrame(columns=SUBJECT_COLUMNS)
    if opp:
        choice = choose_one_per_patient(meta, eligible, groups, opp, source)
        reason = reason.where(choice.reason.eq(""), choice.reason)
        subjects = choice.subjects
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
    return Contrast(obs=obs, subjects=subjects)


def define_contrast(meta: pd.DataFrame, cohort_spec: Mapping[str, Any], source: str) -> pd.DataFrame:
    """``obs`` of :func:`build_contrast` (for callers that do not report subject decisions)."""
    return build_contrast(meta, cohort_spec, source).obs


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
    dtype = np.float64 if uns.get("value_type") in LINEAR_MODEL_TYPES else np.int64
    adata = ad.AnnData(X=counts_t.to_numpy(dtype=dtype), obs=obs, var=var)
    adata.uns.update(dict(uns))
    return adata
