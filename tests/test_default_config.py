"""config/config.yaml itself, end to end and offline: the four default cohorts through a local GEO.

Only the download hosts change. The fake GEO serves the real metadata files in ../shared/data and count
files rebuilt in the layouts GEO really serves (tests/geo_replicas.py), each with planted severe-vs-mild
effects. GEO here has no NCBI-generated counts for GSE172114, so its first count source 404s and the run
falls back to the author's log2 TMM matrix, as a real run would if GEO never re-processed the series.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from geo_replicas import GSE161731_EXTRA_COLUMNS, PANEL_EFFECTS, build_default_geo_tree
from geo_server import FakeGeo
from workflow_runner import PROJECT_ROOT, run_snakemake

DEFAULT_CONFIG = PROJECT_ROOT / "config" / "config.yaml"
COHORTS = ["GSE157103", "GSE152418", "GSE172114", "GSE161731"]
PLANTED_COHORTS = ["GSE157103", "GSE172114", "GSE161731"]


@pytest.fixture(scope="module")
def default_run(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("geo_tree")
    universe = build_default_geo_tree(root, shared_data, column_form="prefix")
    workdir = tmp_path_factory.mktemp("default_run")
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    with FakeGeo(root) as geo:
        for key in ("geo_base", "geo_download_base", "ncbi_gene_base"):
            config["download"][key] = geo.base_url
        configfile = workdir / "config.yaml"
        configfile.write_text(yaml.safe_dump(config, sort_keys=False))
        proc = run_snakemake(workdir, configfile, timeout=2400)
        assert proc.returncode == 0, proc.stderr[-8000:]
        report = run_snakemake(workdir, configfile, "--report", "report.html", timeout=600)
        assert report.returncode == 0, report.stderr[-4000:]
        ncbi_172114 = geo.hits(
            "/geo/download/?type=rnaseq_counts&acc=GSE172114&format=file"
            "&file=GSE172114_raw_counts_GRCh38.p13_NCBI.tsv.gz"
        )
    return workdir, universe, ncbi_172114


def _only_download_hosts_changed(configfile) -> None:
    used = yaml.safe_load(configfile.read_text())
    default = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for key in ("geo_base", "geo_download_base", "ncbi_gene_base"):
        used["download"].pop(key)
        default["download"].pop(key)
    assert used == default


@pytest.mark.e2e
def test_default_config_completes_for_all_four_cohorts(default_run):
    workdir, _, _ = default_run
    _only_download_hosts_changed(workdir / "config.yaml")
    for cohort in COHORTS:
        table = pd.read_csv(workdir / f"results/de/{cohort}/severe_vs_mild.tsv", sep="\t")
        assert table["pvalue"].notna().sum() > 500, cohort
        assert (workdir / f"results/plots/{cohort}/volcano.png").stat().st_size > 10_000
    # The primary pooled fit holds the three log2-count cohorts; GSE172114 (log2 values) only the
    # sensitivity fit that pools every scale.
    meta = pd.read_csv(workdir / "results/meta/panel_genes.tsv", sep="\t")
    # GSE172114 is declared critical vs severe: its own contrast kind, never pooled with severe vs mild.
    assert set(meta.loc[meta["contrast"] == "critical_vs_severe", "cohorts"].dropna()) == {"GSE172114"}
    meta = meta[meta["contrast"] == "severe_vs_mild"].set_index(["stratum", "feature"])
    assert meta.loc[("all", "IL6R"), "cohorts"].split(",") == ["GSE157103", "GSE152418", "GSE161731"]
    sensitivity = pd.read_csv(workdir / "results/meta/panel_genes_sensitivity.tsv", sep="\t")
    pooled_sets = sensitivity["cohorts"].dropna().str.split(",").map(set)
    assert (pooled_sets == set(COHORTS)).any()
    html = (workdir / "report.html").read_text(errors="replace")
    assert len(html) > 100_000
    for cohort in COHORTS:
        assert cohort in html


def _recovered(table: pd.DataFrame, planted: pd.Series) -> tuple[float, float, float]:
    """Sign agreement and median |error| over planted genes, and the false-call rate among null genes."""
    table = table.set_index("gene")
    tested = table[table["pvalue"].notna()]
    effect = planted.reindex(tested.index)
    hit = effect[effect.abs() >= 0.8].index
    est = tested.loc[hit, "log2FoldChange"]
    sign = float((np.sign(est) == np.sign(effect[hit])).mean())
    error = float((est - effect[hit]).abs().median())
    null = effect[effect.eq(0)].index
    false_calls = float((tested.loc[null, "padj"] < 0.05).mean())
    return sign, error, false_calls


@pytest.mark.e2e
@pytest.mark.parametrize("cohort", PLANTED_COHORTS)
def test_planted_effects_recovered_on_each_cohorts_own_scale(default_run, cohort):
    workdir, universe, _ = default_run
    table = pd.read_csv(workdir / f"results/de/{cohort}/severe_vs_mild.tsv", sep="\t")
    sign, error, false_calls = _recovered(table, universe.planted)
    assert sign >= 0.97, (cohort, sign)
    assert error <= 0.3, (cohort, error)
    assert false_calls <= 0.05, (cohort, false_calls)
    panel = table.set_index("gene")
    for gene, lfc in PANEL_EFFECTS.items():
        assert np.sign(panel.loc[gene, "log2FoldChange"]) == np.sign(lfc), (cohort, gene)
        assert panel.loc[gene, "padj"] < 0.05, (cohort, gene)


@pytest.mark.e2e
def test_gse172114_falls_back_to_log2_matrix_without_a_second_log(default_run):
    workdir, universe, ncbi_hits = default_run
    assert ncbi_hits >= 1  # the preferred source was tried first
    summary = json.loads((workdir / "results/de/GSE172114/summary.json").read_text())
    assert summary["value_type"] == summary["scale"] == "log2_normalised"
    assert "no second log" in summary["model"]
    choice = json.loads((workdir / "results/downloads/count_sources/GSE172114.choice.json").read_text())
    assert choice["chosen"]["index"] == 1 and "HTTP 404" in choice["skipped"][0]["reason"]
    samples = pd.read_csv(workdir / "results/cohorts/GSE172114.samples.tsv", sep="\t")
    assert samples["severity"].value_counts().to_dict() == {"severe": 46, "mild": 23}
    table = pd.read_csv(workdir / "results/de/GSE172114/severe_vs_mild.tsv", sep="\t").set_index("gene")
    # A second log would shrink a planted 1.5 log2FC on SOCS3 to well under 0.5.
    assert abs(table.loc["SOCS3", "log2FoldChange"] - PANEL_EFFECTS["SOCS3"]) < 0.3


@pytest.mark.e2e
def test_gse161731_sets_aside_columns_without_metadata(default_run):
    workdir, _, _ = default_run
    unmatched = pd.read_csv(workdir / "results/cohorts/GSE161731.unmatched.tsv", sep="\t")
    assert set(unmatched.iloc[:, 0].astype(str)) == set(GSE161731_EXTRA_COLUMNS)
    log = (workdir / "results/logs/build_cohort/GSE161731.log").read_text()
    for column in GSE161731_EXTRA_COLUMNS:
        assert column in log
    samples = pd.read_csv(workdir / "results/cohorts/GSE161731.samples.tsv", sep="\t", dtype=str)
    conflict = samples[samples["subject_id"].eq("45FBA5")]
    assert set(conflict["sample_id"]) == {"DU18-02S0011618", "DU18-02S0011669"}
    subjects = pd.read_csv(workdir / "results/cohorts/GSE161731.subjects.tsv", sep="\t", dtype=str)
    decision = subjects.set_index("subject").loc["45FBA5", "decision"]
    assert "conflicting severity labels" in decision and "excluded" in decision
    html = (workdir / "report.html").read_text(errors="replace")
    assert "45FBA5" in html and all(column in html for column in GSE161731_EXTRA_COLUMNS)
    # One sample per subject in the contrast.
    in_contrast = samples[samples["severity"].isin(["severe", "mild"])]
    assert in_contrast["subject_id"].is_unique


@pytest.mark.e2e
def test_gse157103_uses_ncbi_counts_for_its_126_gsms(default_run):
    workdir, _, _ = default_run
    samples = pd.read_csv(workdir / "results/cohorts/GSE157103.samples.tsv", sep="\t")
    assert len(samples) == 126
    counts = samples["severity"].value_counts().to_dict()
    # COVID_06 has no age (":"): set aside for a missing covariate, leaving 50 ICU vs 49 non-ICU.
    assert counts["severe"] + counts["mild"] == 99
