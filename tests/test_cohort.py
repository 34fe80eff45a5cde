"""Severity mapping, filters, one-sample-per-patient and covariates: the contrast definition."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from il6axis.cohort.samples import assign_severity, build_covariates, define_contrast, to_anndata
from il6axis.errors import InputError


def _meta() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "severity": [
                "ICU",
                "Severe",
                "Severe",
                "Moderate",
                "Moderate",
                "Healthy",
                "Convalescent",
                "Moderate",
            ],
            "patient": ["p1", "p2", "p2", "p3", "p4", "h1", "p3", "p5"],
            "draw": ["1", "2", "1", "1", "1", "1", "2", "1"],
            "disease state": ["COVID-19"] * 5 + ["Healthy", "Convalescent", "COVID-19"],
            "gender": ["M", "F", "F", "M", "F", "F", "M", "M"],
            "age": ["50", ">89", "61", ":", "40", "33", "47", "70"],
        },
        index=[f"GSM{i}" for i in range(8)],
    )


SPEC = {
    "severity": {
        "field": "severity",
        "severe": ["ICU", "Severe"],
        "mild": ["Moderate"],
        "exclude": ["Healthy", "Convalescent"],
    },
    "covariates": {"sex": {"field": "gender", "type": "sex"}},
}


def test_severity_mapping_keeps_excluded_samples_with_reason():
    groups = assign_severity(_meta(), SPEC["severity"], "t")
    assert groups["severity"].tolist() == ["severe"] * 3 + ["mild"] * 2 + ["excluded"] * 2 + ["mild"]
    assert groups.loc["GSM5", "exclusion_reason"] == "severity label 'Healthy' excluded"
    assert groups.loc["GSM0", "source_label"] == "ICU"


def test_unknown_severity_value_is_an_error_naming_field_and_value():
    spec = {"field": "severity", "severe": ["ICU"], "mild": ["Moderate"], "exclude": ["Healthy"]}
    with pytest.raises(InputError, match=r"'severity'.*\['Convalescent', 'Severe'\].*severity\.exclude"):
        assign_severity(_meta(), spec, "GSE152418")


def test_value_in_two_lists_is_an_error():
    spec = {"field": "severity", "severe": ["ICU", "Moderate"], "mild": ["Moderate"]}
    with pytest.raises(InputError, match="more than one"):
        assign_severity(_meta(), spec, "t")


def test_missing_severity_field_lists_available_columns():
    spec = dict(SPEC, severity=dict(SPEC["severity"], field="severity:ch1"))
    with pytest.raises(InputError, match=r"'severity:ch1'.*available: 'severity', 'patient'"):
        define_contrast(_meta(), spec, "GSE152418")


def test_filters_one_per_patient_and_missing_covariates():
    spec = dict(
        SPEC,
        filters={"disease state": ["COVID-19"]},
        one_per_patient={"patient_field": "patient", "order_field": "draw"},
        covariates={"sex": {"field": "gender", "type": "sex"}, "age": {"field": "age", "type": "age"}},
    )
    obs = define_contrast(_meta(), spec, "t")
    # p2 has two draws: the earliest (draw 1, GSM2) represents the patient.
    assert obs.loc["GSM2", "severity"] == "severe"
    assert obs.loc["GSM1", "severity"] == "excluded"
    assert "first sample of its patient" in obs.loc["GSM1", "exclusion_reason"]
    # GSM3's age is ':' (missing in GEO): dropped with the reason, not imputed.
    assert obs.loc["GSM3", "exclusion_reason"] == "missing covariate age"
    assert obs["severity"].value_counts().to_dict() == {"excluded": 4, "severe": 2, "mild": 2}


def test_too_few_samples_in_a_group_is_an_error():
    spec = dict(SPEC, covariates={"age": {"field": "age", "type": "age"}})
    # Moderate GSM3 has no age and GSM7 is dropped here, leaving a single mild sample.
    with pytest.raises(InputError, match=r"'mild': 1.*at least 2"):
        define_contrast(_meta().drop(index="GSM7"), spec, "GSE152418")


def test_covariate_types():
    cov = build_covariates(
        _meta(),
        {"sex": {"field": "gender", "type": "sex"}, "age": {"field": "age", "type": "age"}},
        "t",
    )
    assert cov["sex"].tolist()[:2] == ["male", "female"]
    assert cov.loc["GSM1", "age"] == 90.0 and bool(cov.loc["GSM1", "age_censored"])
    assert np.isnan(cov.loc["GSM3", "age"])
    with pytest.raises(InputError, match="non-numeric value"):
        build_covariates(_meta(), {"x": {"field": "severity", "type": "numeric"}}, "t")


def test_anndata_layout():
    meta = _meta()
    obs = define_contrast(meta, SPEC, "t")
    counts = pd.DataFrame(np.arange(16).reshape(2, 8), index=["IL6", "STAT3"], columns=meta.index)
    adata = to_anndata(counts, obs, {"cohort": "t"})
    assert adata.shape == (8, 2)
    assert list(adata.obs["severity"].cat.categories) == ["mild", "severe", "excluded"]
    assert adata.obs["sample_id"].tolist() == list(meta.index)
    assert adata.X.dtype == np.int64 and adata.uns["cohort"] == "t"


def test_normalised_values_are_checked_and_kept_as_floats(caplog: pytest.LogCaptureFixture) -> None:
    from il6axis.cohort.build import normalised_values

    table = pd.DataFrame({"S1": [10.5, 0.0], "S2": [3.25, 7.0]}, index=["IL6R", "SOCS3"])
    out = normalised_values(table, "x.csv")
    assert out.dtypes.eq(np.float64).all() and out.loc["IL6R", "S1"] == 10.5
    bad = table.assign(S2=[3.25, -0.5])
    with pytest.raises(
        InputError, match=r"x\.csv: column 'S2' row 'SOCS3' value -0.5 is negative .*not log-transformed"
    ):
        normalised_values(bad, "x.csv")
    with caplog.at_level("WARNING", logger="il6axis.cohort.build"):
        normalised_values(table.round(), "x.csv")
    assert any("value_type: counts" in r.message for r in caplog.records)
