"""Config validation: defaults filled, bad values rejected with the key, the value and what is allowed."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import PROJECT_ROOT
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

SCHEMA = str(PROJECT_ROOT / "workflow" / "schemas" / "config.schema.yaml")


def _load(name: str) -> dict:
    return yaml.safe_load((PROJECT_ROOT / "config" / name).read_text())


@pytest.mark.parametrize("name", ["config.yaml", "demo.yaml", "singlecell_combat.yaml"])
def test_shipped_configs_are_valid(name):
    validate(_load(name), SCHEMA)


def test_defaults_are_filled():
    config = {
        "cohorts": {
            "c1": {
                "counts": {"source": "local", "path": "x.tsv"},
                "metadata": {"source": "sample_sheet", "path": "s.tsv"},
                "severity": {"field": "g", "severe": ["s"], "mild": ["m"]},
            }
        }
    }
    validate(config, SCHEMA)
    cohort = config["cohorts"]["c1"]
    assert cohort["enabled"] is True and cohort["tissue"] == "whole_blood"
    assert cohort["counts"]["gene_id"] == "symbol" and cohort["counts"]["value_type"] == "counts"
    assert cohort["severity"]["exclude"] == [] and cohort["covariates"] == {}
    assert config["de"] == {
        "alpha": 0.05,
        "min_count": 10,
        "lfc_shrink": True,
        "cooks_refit": True,
        "engine": "r_compatible",
        "threads": 2,
        "stability": {"enabled": True, "method": "leave_one_out", "near_miss_factor": 2},
    }


def _invalid(mutate) -> str:
    config = _load("demo.yaml")
    mutate(config)
    with pytest.raises(WorkflowError) as err:
        validate(config, SCHEMA)
    return str(err.value)


def test_missing_required_key_is_named():
    msg = _invalid(lambda c: c["cohorts"]["demo"].pop("severity"))
    assert "'severity' is a required property" in msg


def test_missing_cohorts_is_named():
    msg = _invalid(lambda c: c.pop("cohorts"))
    assert "is not valid under any of the given schemas" in msg
    assert "'cohorts'" in msg and "'singlecell_cohorts'" in msg


def test_singlecell_cohort_defaults_and_required_keys():
    config = {
        "singlecell_cohorts": {
            "sc": {
                "single_cell": {"h5ad": "x.h5ad", "donor_key": "donor"},
                "severity": {"field": "condition", "severe": ["critical"], "mild": ["mild"]},
            }
        }
    }
    validate(config, SCHEMA)
    block = config["singlecell_cohorts"]["sc"]["single_cell"]
    assert block["qc"] == {"min_counts": 500, "min_genes": 200, "max_pct_mt": 20}
    assert block["min_donors_per_group"] == 2 and block["celltype_key"] is None
    assert config["singlecell_cohorts"]["sc"]["severity"]["exclude"] == []
    del config["singlecell_cohorts"]["sc"]["single_cell"]["donor_key"]
    with pytest.raises(WorkflowError, match="'donor_key' is a required property"):
        validate(config, SCHEMA)


def test_bad_enum_names_value_and_allowed_values():
    msg = _invalid(lambda c: c["cohorts"]["demo"]["counts"].__setitem__("gene_id", "refseq"))
    assert "'refseq' is not one of ['symbol', 'entrez', 'ensembl']" in msg
    assert "gene_id" in msg


def test_bad_alpha_and_unknown_key():
    msg = _invalid(lambda c: c["de"].__setitem__("alpha", 1.5))
    assert "1.5 is greater than or equal to the maximum of 1" in msg
    assert "On instance['de']['alpha']" in msg
    msg = _invalid(lambda c: c["de"].__setitem__("alfa", 0.1))
    assert "'alfa' was unexpected" in msg


def test_local_source_requires_path():
    def drop_path(c):
        del c["cohorts"]["demo"]["counts"]["path"]

    assert "'path' is a required property" in _invalid(drop_path)


def test_covariate_named_severity_is_rejected():
    def add(c):
        c["cohorts"]["demo"]["covariates"]["severity"] = {"field": "group"}

    assert "'severity'" in _invalid(add)


def test_validation_does_not_mutate_shared_defaults():
    a, b = _load("demo.yaml"), copy.deepcopy(_load("demo.yaml"))
    validate(a, SCHEMA)
    validate(b, SCHEMA)
    assert a == b
