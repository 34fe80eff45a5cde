"""Bad input gives a clear error naming the file, the field and the fix, and no partial output."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import yaml
from workflow_runner import PROJECT_ROOT, run_snakemake

from il6axis.cohort.build import build_cohort
from il6axis.errors import InputError

SPEC = {
    "counts": {
        "source": "local",
        "gene_id": "symbol",
        "map_symbols": False,
        "value_type": "counts",
        "id_column": None,
    },
    "metadata": {"source": "sample_sheet", "sample_column": "sample_id"},
    "severity": {"field": "group", "severe": ["severe"], "mild": ["mild"], "exclude": []},
    "covariates": {},
}


def _write(tmp_path, counts: pd.DataFrame, samples: pd.DataFrame):
    counts_path, samples_path = tmp_path / "counts.tsv", tmp_path / "samples.tsv"
    counts.to_csv(counts_path, sep="\t", index_label="gene")
    samples.to_csv(samples_path, sep="\t", index=False)
    return counts_path, samples_path


def _demo_run_on(tmp_path, counts: pd.DataFrame, samples: pd.DataFrame):
    """A work dir and the demo config pointed at these counts and samples (no covariates)."""
    counts_path, samples_path = _write(tmp_path, counts, samples)
    config = yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())
    cohort = config["cohorts"]["demo"]
    cohort["counts"]["path"] = str(counts_path)
    cohort["metadata"]["path"] = str(samples_path)
    cohort["covariates"] = {}
    configfile = tmp_path / "bad.yaml"
    configfile.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "run"
    workdir.mkdir()
    return workdir, configfile


def _good():
    samples = pd.DataFrame(
        {"sample_id": ["s1", "s2", "s3", "s4"], "group": ["severe", "severe", "mild", "mild"]}
    )
    counts = pd.DataFrame({"s1": [5, 9], "s2": [7, 1], "s3": [0, 3], "s4": [2, 2]}, index=["IL6", "STAT3"])
    return counts, samples


def _build(tmp_path, counts, samples, spec=SPEC):
    counts_path, samples_path = _write(tmp_path, counts, samples)
    return build_cohort("bad", spec, counts_path, samples_path)


def test_good_input_builds(tmp_path):
    built = _build(tmp_path, *_good())
    assert built.adata.shape == (4, 2)


def test_unknown_severity_value(tmp_path):
    counts, samples = _good()
    samples.loc[0, "group"] = "critical"
    with pytest.raises(
        InputError, match=r"bad: severity field 'group' has value\(s\) \['critical'\].*Add each"
    ):
        _build(tmp_path, counts, samples)


def test_fewer_than_two_samples_in_a_group(tmp_path):
    counts, samples = _good()
    samples.loc[1, "group"] = "mild"
    with pytest.raises(InputError, match=r"'severe': 1.*at least 2"):
        _build(tmp_path, counts, samples)


def test_negative_counts_name_file_column_and_row(tmp_path):
    counts, samples = _good()
    counts.loc["STAT3", "s3"] = -4
    with pytest.raises(InputError, match=r"counts\.tsv.*s3.*STAT3"):
        _build(tmp_path, counts, samples)


def test_non_numeric_counts_name_file_column_and_row(tmp_path):
    counts, samples = _good()
    counts = counts.astype(object)
    counts.loc["IL6", "s2"] = "n/a?"
    with pytest.raises(InputError, match=r"counts\.tsv.*s2.*IL6"):
        _build(tmp_path, counts, samples)


def test_fractional_values_declared_as_counts(tmp_path):
    counts, samples = _good()
    counts = counts.astype(float)
    counts.loc["IL6", "s1"] = 5.4
    with pytest.raises(InputError, match="expected_counts"):
        _build(tmp_path, counts, samples)
    spec = {**SPEC, "counts": {**SPEC["counts"], "value_type": "expected_counts"}}
    built = _build(tmp_path, counts, samples, spec)
    assert built.adata[built.adata.obs_names == "s1", "IL6"].X[0, 0] == 5


def test_sample_ids_that_do_not_match(tmp_path):
    counts, samples = _good()
    samples["sample_id"] = ["GSM1", "GSM2", "GSM3", "GSM4"]
    with pytest.raises(InputError, match=r"s1.*GSM1"):
        _build(tmp_path, counts, samples)


def test_count_columns_without_metadata_within_the_bound_are_set_aside(tmp_path):
    counts, samples = _good()
    counts["s9"] = [4321, 1234]  # a column the sample sheet does not describe
    spec = {**SPEC, "metadata": {**SPEC["metadata"], "max_unmatched_columns": {"fraction": 0.2}}}
    built = _build(tmp_path, counts, samples, spec)
    assert list(built.adata.obs_names) == ["s1", "s2", "s3", "s4"]
    assert 4321 not in built.adata.X
    assert built.unmatched.to_dict("records") == [
        {
            "sample": "s9",
            "side": "count column without metadata",
            "reason": "no metadata row matches this count column by metadata index (sample_id)",
        }
    ]


def test_count_columns_without_metadata_beyond_the_bound(tmp_path):
    counts, samples = _good()
    counts["s9"] = [4321, 1234]  # 1 of 5 columns = 20%, over the default 10%
    with pytest.raises(InputError) as err:
        _build(tmp_path, counts, samples)
    msg = str(err.value)
    assert msg.startswith("bad: samples.tsv vs counts.tsv: cannot match the count columns")
    assert "1 of 5 count column(s) have no metadata row" in msg and "Unmatched columns: 's9'" in msg
    assert "`metadata.max_unmatched_columns` allows (fraction 0.1, count null)" in msg


@pytest.mark.e2e
def test_unmatched_bound_stops_the_rule_without_partial_output(tmp_path):
    """Past `metadata.max_unmatched_columns` build_cohort fails; none of its outputs are left."""
    counts, samples = _good()
    counts["s9"] = [4321, 1234]
    workdir, configfile = _demo_run_on(tmp_path, counts, samples)
    proc = run_snakemake(workdir, configfile, "results/cohorts/demo.h5ad")
    assert proc.returncode != 0
    log = (workdir / "results/logs/build_cohort/demo.log").read_text()
    assert "1 of 5 count column(s) have no metadata row" in log and "'s9'" in log
    for suffix in ("h5ad", "samples.tsv", "gene_mapping.tsv", "unmatched.tsv", "subjects.tsv"):
        assert not (workdir / f"results/cohorts/demo.{suffix}").exists(), suffix
    shutil.rmtree(workdir / ".snakemake", ignore_errors=True)


@pytest.mark.e2e
def test_workflow_fails_cleanly_and_leaves_no_partial_output(tmp_path):
    """A bad severity value stops build_cohort with the message in the log; no h5ad is left behind."""
    counts, samples = _good()
    samples.loc[0, "group"] = "critical"
    workdir, configfile = _demo_run_on(tmp_path, counts, samples)
    proc = run_snakemake(workdir, configfile)
    assert proc.returncode != 0
    assert "'critical'" in proc.stderr
    assert not (workdir / "results/cohorts/demo.h5ad").exists()
    log = (workdir / "results/logs/build_cohort/demo.log").read_text()
    assert "severity field 'group' has value(s) ['critical']" in log
    shutil.rmtree(workdir / ".snakemake", ignore_errors=True)
