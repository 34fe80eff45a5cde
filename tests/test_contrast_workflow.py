"""End to end: a config-only cohort whose reference group is healthy donors, beside a severe-vs-mild cohort.

GSE152418 (PBMC, NCBI counts through the fake GEO) is declared as acute COVID-19 (ICU + Severe) vs healthy
donors, i.e. the `severity.mild` slot holds the 17 healthy donors; GSE155454 (whole blood) is a true severe
vs mild contrast. One workflow run with --report; the checks read its tables, the SVG text of its figures
and the report HTML: every output says what each cohort compares, healthy donors are never called mild,
the report warns that GSE152418 is not a severity contrast, and the meta-analysis does not pool the two
cohorts in its primary fit (only in the labelled cross-contrast sensitivity run).
"""

from __future__ import annotations

import html
import json
import re

import pandas as pd
import pytest
import yaml
from geo_server import FakeGeo
from real_cohorts import gse155454_from_geo
from workflow_runner import PROJECT_ROOT, run_snakemake

pytestmark = pytest.mark.e2e

DEFAULT_CONFIG = yaml.safe_load((PROJECT_ROOT / "config" / "config.yaml").read_text())
CASE, REFERENCE = "acute COVID-19", "healthy donors"
REPORT = "results/report.html"


def _config(base_url: str, shared_data) -> dict:
    gse152418 = dict(DEFAULT_CONFIG["cohorts"]["GSE152418"])
    gse152418["title"] = "Arunachalam 2020, PBMC; acute COVID-19 (ICU + Severe) vs healthy donors"
    gse152418["metadata"] = {
        "source": "sample_sheet",
        "path": str(shared_data / "GSE152418" / "GSE152418_sample_metadata_GEOquery_pData.csv.gz"),
        "sample_column": "geo_accession",
    }
    gse152418["severity"] = {
        "field": "severity",
        "severe": ["ICU", "Severe"],
        "mild": ["Healthy"],  # the reference slot holds healthy donors: not a severity contrast
        "exclude": ["Moderate", "Convalescent"],
    }
    gse152418["contrast"] = {"kind": "disease_vs_healthy", "case": CASE, "reference": REFERENCE}
    gse155454 = gse155454_from_geo()
    settings = {"geo_base": base_url, "geo_download_base": base_url, "ncbi_gene_base": base_url}
    return {
        "cohorts": {"GSE152418": gse152418, "GSE155454": gse155454},
        "download": {**settings, "retries": 3, "backoff_s": 0.01, "timeout_s": 10},
        "de": {"lfc_shrink": False},
    }


@pytest.fixture(scope="module")
def contrast_run(shared_data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("contrast_run")
    configfile = workdir / "config.yaml"
    with FakeGeo(shared_data) as server:
        configfile.write_text(yaml.safe_dump(_config(server.base_url, shared_data)))
        proc = run_snakemake(workdir, configfile)
        assert proc.returncode == 0, proc.stderr[-5000:]
        proc = run_snakemake(workdir, configfile, "--report", REPORT)
        assert proc.returncode == 0, proc.stderr[-5000:]
    return workdir


def _svg_text(path) -> str:
    """The text matplotlib writes beside each path-rendered string of an SVG (one comment per text)."""
    return "\n".join(html.unescape(t) for t in re.findall(r"<!-- (.*?) -->", path.read_text(), re.S))


def test_tables_carry_the_declared_contrast(contrast_run):
    summary = json.loads((contrast_run / "results/de/GSE152418/summary.json").read_text())
    block = summary["contrast"]
    assert block["kind"] == "disease_vs_healthy" and not block["is_severity_contrast"]
    n_case, n_ref = summary["n_per_group"]["severe"], summary["n_per_group"]["mild"]
    assert (n_case, n_ref) == (10, 17)  # ICU + Severe, earliest draw per patient; all healthy donors
    assert block["description"] == f"{CASE} (n=10) vs {REFERENCE} (n=17); reference {REFERENCE}"
    panel = pd.read_csv(contrast_run / "results/de/GSE152418/il6_panel.tsv", sep="\t")
    assert (panel["contrast"] == f"{CASE} vs {REFERENCE}").all()
    samples = pd.read_csv(contrast_run / "results/cohorts/GSE152418.samples.tsv", sep="\t")
    healthy = samples[samples["source_label"] == "Healthy"]
    assert len(healthy) == 17 and (healthy["contrast_group"] == REFERENCE).all()
    other = json.loads((contrast_run / "results/de/GSE155454/summary.json").read_text())["contrast"]
    assert other["kind"] == "severe_vs_mild" and other["case"] == "severe" and other["reference"] == "mild"


def test_meta_does_not_pool_the_two_contrasts_in_the_primary_fit(contrast_run):
    meta = pd.read_csv(contrast_run / "results/meta/panel_genes.tsv", sep="\t")
    cohorts = meta["cohorts"].fillna("")
    assert not (cohorts.str.contains("GSE152418") & cohorts.str.contains("GSE155454")).any()
    assert (meta["k"].fillna(0) <= 1).all()  # one cohort per kind: nothing is pooled
    socs3 = meta[(meta["feature"] == "SOCS3") & (meta["stratum"] == "all")].set_index("contrast")
    assert socs3.loc["disease_vs_healthy", "cohorts"] == "GSE152418"
    assert socs3.loc["severe_vs_mild", "cohorts"] == "GSE155454"
    sens = pd.read_csv(contrast_run / "results/meta/panel_genes_sensitivity.tsv", sep="\t")
    crossed = sens[(sens["analysis"] == "all contrasts pooled") & (sens["stratum"] == "all")]
    row = crossed.set_index("feature").loc["SOCS3"]
    assert row["k"] == 2 and row["contrast"] == "all" and "mixed contrasts" in row["note"]


def test_figures_say_what_each_cohort_compares(contrast_run):
    plots = contrast_run / "results/plots"
    volcano = _svg_text(plots / "GSE152418/volcano.svg")
    assert (
        f"GSE152418: {CASE} (n=10) vs {REFERENCE} (n=17) (disease vs healthy, not a severity contrast)"
        in (volcano)
    )
    assert f"log2 fold change, {CASE} vs {REFERENCE} (MLE)" in volcano and f"up in {CASE}" in volcano
    for name in ("qc_library_sizes", "panel_genes", "pathway_scores", "ma"):
        text = " ".join(_svg_text(plots / f"GSE152418/{name}.svg").split())
        assert "not a severity contrast" in text, name
        assert re.search(r"\bmild \(n=", text) is None, name
    assert "severe (n=7) vs mild (n=9)" in _svg_text(plots / "GSE155454/volcano.svg")
    forest = _svg_text(plots / "meta/forest_panel_genes.svg")
    assert "disease vs healthy (not a severity contrast)" in forest and "severe vs mild" in forest
    assert f"GSE152418 (PBMC): {CASE} vs {REFERENCE}" in forest
    assert "pooled:" not in forest  # no two cohorts share a kind: no diamond anywhere
    heatmap = _svg_text(plots / "meta/lfc_heatmap.svg")
    assert f"GSE152418 (PBMC): {CASE} vs {REFERENCE}" in heatmap


def test_report_warns_and_never_counts_healthy_donors_as_mild(contrast_run):
    headlines = (contrast_run / "results/report/headlines.rst").read_text()
    row = headlines[headlines.index("   * - ``GSE152418``") :].split("   * -")[1].split("\n\n")[0]
    assert f"{CASE} (n=10) vs {REFERENCE} (n=17); reference {REFERENCE}" in row and "mild" not in row
    warning = headlines[headlines.index(".. warning::") :].split("\n\n")[1]
    assert "``GSE152418``" in warning and "not a severity contrast" in warning
    assert "No two cohorts share a contrast kind" in headlines
    page = " ".join(re.sub(r"<[^>]+>", "", (contrast_run / REPORT).read_text(encoding="utf-8")).split())
    assert "not a severity contrast" in page
    assert f"contrast: {CASE} vs {REFERENCE} (disease vs healthy; not a severity contrast)" in page
    assert f"{REFERENCE} (reference): Healthy" in page
