"""Declared contrasts: config -> contrast object, summary.json round trip, schema, front-page defaults."""

from __future__ import annotations

import copy
import json
import re

import pandas as pd
import pytest
import yaml
from jinja2 import Environment
from snakemake.utils import validate
from workflow_runner import PROJECT_ROOT

from il6axis.cohort.contrast import (
    DEFAULT_LABELS,
    KIND_LABEL,
    KINDS,
    Contrast,
    contrast_from_config,
    contrast_from_summary,
    contrast_from_uns,
    group_labels,
    pooling_kind,
)
from il6axis.errors import InputError
from il6axis.figures.common import contrast_title
from il6axis.figures.de import direction_names, effect_and_test_names

SCHEMA = PROJECT_ROOT / "workflow" / "schemas" / "config.schema.yaml"


def test_config_without_contrast_means_severe_vs_mild():
    """Backward compatibility: a block with no `contrast` is exactly the old severe vs mild."""
    declared = contrast_from_config({"severity": {"field": "x", "severe": ["a"], "mild": ["b"]}})
    assert declared == Contrast("severe_vs_mild", "severe", "mild")
    assert declared.is_severity and declared.label == "severe vs mild"
    assert contrast_from_summary({"contrast": "severe vs mild"}) == declared  # summaries of older runs
    assert contrast_from_summary({}) == declared and contrast_from_uns({}) == declared


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ({"kind": "critical_vs_severe"}, ("critical", "severe", True)),
        ({"kind": "disease_vs_healthy"}, ("COVID-19", "healthy", False)),
        ({"kind": "disease_vs_healthy", "case": "acute COVID-19", "reference": "healthy donors"},
         ("acute COVID-19", "healthy donors", False)),
        ({"kind": "severe_vs_mild", "case": " ICU ", "reference": None}, ("ICU", "mild", True)),
        ({"kind": "other", "case": "day 7", "reference": "day 0"}, ("day 7", "day 0", False)),
    ],
)  # fmt: skip
def test_labels_default_by_kind(block, expected):
    declared = contrast_from_config({"contrast": block}, "cohorts.X")
    assert (declared.case, declared.reference, declared.is_severity) == expected
    assert declared.group_label("severe") == expected[0] and declared.group_label("mild") == expected[1]
    assert group_labels(declared)["excluded"] == "excluded"


def test_bad_contrast_blocks_name_the_key():
    with pytest.raises(InputError, match=r"cohorts\.X.*contrast\.case.*contrast\.reference"):
        contrast_from_config({"contrast": {"kind": "other"}}, "cohorts.X")
    with pytest.raises(InputError, match="both 'healthy'"):
        contrast_from_config({"contrast": {"kind": "disease_vs_healthy", "case": "healthy"}}, "cohorts.X")
    with pytest.raises(InputError, match="'mild_vs_severe' is not one of"):
        contrast_from_config({"contrast": {"kind": "mild_vs_severe"}}, "cohorts.X")


def test_summary_object_round_trip_and_description():
    declared = Contrast("severe_vs_mild", "ICU", "non-ICU")
    n = {"mild": 49, "severe": 50}
    block = declared.to_dict(n)
    assert block["description"] == "ICU (n=50) vs non-ICU (n=49); reference non-ICU"
    assert (block["n_case"], block["n_reference"]) == (50, 49)
    assert block["case_slot"] == "severe" and block["reference_slot"] == "mild"
    assert contrast_from_summary(json.loads(json.dumps({"contrast": block}))) == declared
    assert contrast_from_uns({"contrast": declared.to_uns()}) == declared


def test_pooling_kind_keeps_other_out():
    assert [pooling_kind(k) for k in KINDS] == [
        "severe_vs_mild",
        "critical_vs_severe",
        "disease_vs_healthy",
        None,
    ]


def test_titles_and_axis_labels_say_the_declared_contrast():
    healthy = Contrast("disease_vs_healthy", "acute COVID-19", "healthy donors")
    title = contrast_title("GSE152418", {"severe": 10, "mild": 17}, "volcano", healthy)
    assert title.splitlines()[0] == (
        "GSE152418: acute COVID-19 (n=10) vs healthy donors (n=17) "
        "(disease vs healthy, not a severity contrast)"
    )
    assert "mild" not in title and "severe" not in title
    icu = Contrast("severe_vs_mild", "ICU", "non-ICU")
    assert contrast_title("C", {"severe": 3, "mild": 2}, "", icu) == "C: ICU (n=3) vs non-ICU (n=2)"
    assert contrast_title("C", {"severe": 3, "mild": 2}, "") == "C: severe (n=3) vs mild (n=2)"

    assert effect_and_test_names(pd.DataFrame({"gene": ["A"]}), healthy)[0] == (
        "log2 fold change, acute COVID-19 vs healthy donors (MLE)"
    )
    assert direction_names(healthy)["up in severe"] == "up in acute COVID-19"


def _validated(cohort_extra: dict) -> dict:
    config = yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())
    config["cohorts"]["demo"].pop("contrast", None)
    config["cohorts"]["demo"].update(copy.deepcopy(cohort_extra))
    validate(config, str(SCHEMA))
    return config["cohorts"]["demo"]


def test_schema_fills_the_default_and_rejects_an_unlabelled_other():
    block = _validated({})["contrast"]
    assert (
        block["kind"] == "severe_vs_mild"
        and contrast_from_config({"contrast": block}).label == "severe vs mild"
    )
    block = _validated({"contrast": {"kind": "disease_vs_healthy", "reference": "healthy donors"}})[
        "contrast"
    ]
    assert contrast_from_config({"contrast": block}) == Contrast(
        "disease_vs_healthy", "COVID-19", "healthy donors"
    )
    for bad in ({"kind": "other"}, {"kind": "healthy_vs_sick"}, {"kind": "severe_vs_mild", "extra": 1}):
        with pytest.raises(Exception, match="contrast"):
            _validated({"contrast": bad})


def test_shipped_configs_declare_every_cohort():
    expected = {
        "GSE157103": "severe_vs_mild",
        "GSE152418": "severe_vs_mild",
        "GSE172114": "critical_vs_severe",
        "GSE161731": "severe_vs_mild",
    }
    config = yaml.safe_load((PROJECT_ROOT / "config" / "config.yaml").read_text())
    assert {c: spec["contrast"]["kind"] for c, spec in config["cohorts"].items()} == expected
    for name in ("demo.yaml", "singlecell_combat.yaml"):
        config = yaml.safe_load((PROJECT_ROOT / "config" / name).read_text())
        blocks = {**config.get("cohorts", {}), **config.get("singlecell_cohorts", {})}
        assert all("contrast" in spec for spec in blocks.values()), name


def test_front_page_defaults_match_the_python_tables():
    """workflow.rst repeats DEFAULT_LABELS / KIND_LABEL in Jinja: render each kind without labels."""

    class Snakemake:
        config: dict = {}

    template = (PROJECT_ROOT / "workflow" / "report" / "workflow.rst").read_text()
    severity = {"field": "group", "severe": ["a"], "mild": ["b"], "exclude": []}
    cohorts = {kind: {"severity": severity, "contrast": {"kind": kind}} for kind in DEFAULT_LABELS}
    cohorts["labelled"] = {
        "severity": severity,
        "contrast": {"kind": "other", "case": "day 7", "reference": "day 0"},
    }
    Snakemake.config = {"cohorts": cohorts, "de": {"alpha": 0.05}, "meta": {"alpha": 0.05}}
    text = Environment(trim_blocks=True, lstrip_blocks=True).from_string(template).render(snakemake=Snakemake)
    text = re.sub(r"\s+", " ", text)
    for name, spec in cohorts.items():
        declared = contrast_from_config(spec)
        line = f"contrast: **{declared.case} vs {declared.reference}** ({KIND_LABEL[declared.kind]}"
        assert line in text, (name, line)
        assert f"{declared.case} (case): ``a``; {declared.reference} (reference): ``b``" in text
    assert text.count("**not a severity contrast**") == 2  # disease_vs_healthy and other
