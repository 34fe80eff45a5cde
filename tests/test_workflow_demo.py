"""End to end: the workflow on the demo config recovers the planted truth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from workflow_runner import PROJECT_ROOT, run_snakemake

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo_run")
    proc = run_snakemake(workdir, PROJECT_ROOT / "config" / "demo.yaml")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir


@pytest.fixture(scope="module")
def results(demo_run):
    table = pd.read_csv(demo_run / "results/de/demo/severe_vs_mild.tsv", sep="\t")
    truth = pd.read_csv(demo_run / "results/demo/truth.tsv", sep="\t")
    return table.merge(truth, on="gene", validate="one_to_one")


def test_all_outputs_and_logs_exist(demo_run):
    for rel in [
        "results/cohorts/demo.h5ad",
        "results/cohorts/demo.samples.tsv",
        "results/cohorts/demo.gene_mapping.tsv",
        "results/de/demo/severe_vs_mild.tsv",
        "results/de/demo/il6_panel.tsv",
        "results/de/demo/summary.json",
        "results/plots/demo/volcano.png",
        "results/plots/demo/volcano.svg",
        "results/logs/simulate_demo_cohort.log",
        "results/logs/build_cohort/demo.log",
        "results/logs/deseq2/demo.log",
        "results/logs/volcano/demo.log",
    ]:
        path = demo_run / rel
        assert path.is_file() and path.stat().st_size > 0, rel


def test_contrast_summary(demo_run):
    summary = json.loads((demo_run / "results/de/demo/summary.json").read_text())
    assert summary["design"] == "~ age + sex + severity"
    assert summary["reference_level"] == "mild"
    assert summary["n_per_group"] == {"mild": 16, "severe": 16}


def test_planted_genes_recovered_with_right_sign(results):
    detectable = results[
        results["is_de"] & (results["true_log2FoldChange"].abs() >= 1.0) & (results["base_mean"] >= 50)
    ]
    assert len(detectable) > 100
    recall = (detectable["padj"] < 0.05).mean()
    assert recall >= 0.9, recall
    called = results[(results["padj"] < 0.05) & results["is_de"]]
    assert (np.sign(called["log2FoldChange"]) == np.sign(called["true_log2FoldChange"])).all()


def test_observed_fdr_near_nominal(results):
    called = results[results["padj"] < 0.05]
    false_discovery_rate = float((~called["is_de"]).mean())
    # Nominal 5%; DESeq2's Wald test is mildly anti-conservative at 16 vs 16 (null p < 0.05 in ~6% of
    # genes in our simulations), so allow up to twice the nominal level for one realisation.
    assert len(called) > 150
    assert false_discovery_rate <= 0.10, false_discovery_rate


def test_effect_sizes_close_to_planted(results):
    de = results[results["is_de"] & results["log2FoldChange"].notna() & (results["base_mean"] >= 20)]
    error = (de["log2FoldChange"] - de["true_log2FoldChange"]).abs()
    assert float(error.median()) < 0.2
    assert float(np.corrcoef(de["log2FoldChange"], de["true_log2FoldChange"])[0, 1]) > 0.95
    covered = (de["ci_low"] <= de["true_log2FoldChange"]) & (de["true_log2FoldChange"] <= de["ci_high"])
    assert covered.mean() > 0.85  # nominal 95% Wald intervals


def test_panel_table_covers_every_panel_gene(demo_run):
    panel = pd.read_csv(demo_run / "results/de/demo/il6_panel.tsv", sep="\t").set_index("symbol")
    core = pd.read_csv(PROJECT_ROOT / "resources/genesets/il6_core.tsv", sep="\t")
    assert set(panel.index) == set(core["symbol"])
    assert panel.loc["SOCS3", "log2FoldChange"] > 0.8 and panel.loc["SOCS3", "padj_panel"] < 0.05
    assert not panel.loc["IL6", "tested"] and panel.loc["IL6", "not_tested_reason"] != ""
    assert panel["padj_panel"].notna().sum() == panel["pvalue"].notna().sum()


def test_volcano_is_a_real_image(demo_run):
    from PIL import Image

    with Image.open(demo_run / "results/plots/demo/volcano.png") as img:
        assert img.width > 600 and img.height > 500
        pixels = np.asarray(img.convert("L"))
    assert pixels.std() > 10  # not blank
    assert "<svg" in (demo_run / "results/plots/demo/volcano.svg").read_text()[:2000]


def test_rerun_is_a_no_op(demo_run):
    proc = run_snakemake(demo_run, PROJECT_ROOT / "config" / "demo.yaml", "-n")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr
