"""End to end from reads: the reads demo (real fastp and salmon) recovers its planted truth, and bad
reads inputs stop the workflow with a clear message and no partial output."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_runner import PROJECT_ROOT, run_snakemake

from il6axis.reads.aggregate import raw_summed_counts

pytestmark = pytest.mark.e2e

TOOLS = ("fastp", "salmon")
# Tolerances of the planted-effect test. With 6 vs 6 samples, the simulated between-sample dispersion
# (0.02) and ~500 fragments per gene, the standard error of a log2 fold change is about 0.15: 0.5 is
# about three standard errors.
LFC_TOLERANCE = 0.5
SWITCH_MAX_ABS_LFC = 0.4


def _require_tools():
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{missing} not on PATH: install them (README, 'From reads': apt-get install salmon fastp)"
        )


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    _require_tools()
    workdir = tmp_path_factory.mktemp("reads_demo")
    proc = run_snakemake(workdir, PROJECT_ROOT / "config" / "reads_demo.yaml", timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir


@pytest.fixture(scope="module")
def de_vs_truth(demo):
    de = pd.read_csv(demo / "results/de/reads_demo/severe_vs_mild.tsv", sep="\t")
    truth = pd.read_csv(demo / "results/reads_demo/truth.tsv", sep="\t")
    return de.merge(truth, on="gene", validate="one_to_one").set_index("gene")


def test_outputs_qc_and_temp_fastq(demo):
    qc = pd.read_csv(demo / "results/reads/reads_demo/sample_qc.tsv", sep="\t").set_index("sample")
    assert len(qc) == 12
    assert (qc["libtype_detected"] == "ISR").all() and (qc["strandedness_detected"] == "reverse").all()
    assert (qc["mapping_rate"] > 0.95).all() and not qc["low_mapping_rate"].any()
    # Technical replicates: both runs of S01 went into one salmon call.
    runs = pd.read_csv(demo / "results/reads_demo/runs.tsv", sep="\t")
    assert qc.loc["S01", "runs"] == "S01_L1,S01_L2"
    fastp_reads = sum(
        json.loads((demo / f"results/reads/fastp/{r}.fastp.json").read_text())["summary"]["after_filtering"][
            "total_reads"
        ]
        for r in runs.loc[runs["sample"] == "S01", "run"]
    )
    assert qc.loc["S01", "fragments_processed"] == fastp_reads // 2
    # Trimmed reads are temp(): gone after quantification; the user's (local) FASTQs are never deleted.
    trimmed = demo / "results/reads/trimmed"
    assert not trimmed.exists() or not any(trimmed.iterdir())
    assert all((demo / "results/reads_demo" / f).is_file() for f in runs["fastq_1"])
    html = (demo / "results/reads/reads_demo/reads_demo.multiqc.html").read_text()
    assert "fastp" in html and "Salmon" in html
    for log in ["fastp/S02.log", "salmon_quant/reads_demo/S02.log", "tximport/reads_demo.log"]:
        assert (demo / "results/logs" / log).stat().st_size > 0, log


def test_gene_counts_correlate_with_simulated_truth(demo):
    counts = pd.read_csv(demo / "results/reads/reads_demo/gene_counts.tsv", sep="\t", index_col=0)
    truth = pd.read_csv(demo / "results/reads_demo/truth_counts.tsv", sep="\t", index_col=0)
    assert set(counts.index) == set(truth.index) and list(counts.columns) == list(truth.columns)
    counts = counts.loc[truth.index]
    for sample in truth.columns:
        r = np.corrcoef(np.log1p(counts[sample]), np.log1p(truth[sample]))[0, 1]
        assert r > 0.98, (sample, r)
    # Library sizes are kept (lengthScaledTPM rescales to each sample's mapped fragments).
    ratio = counts.sum() / truth.sum()
    assert ratio.between(0.97, 1.01).all(), ratio


def test_planted_fold_changes_recovered(de_vs_truth):
    planted = de_vs_truth[de_vs_truth["is_de"]]
    assert len(planted) >= 15
    assert (planted["padj"] < 0.05).all(), planted.loc[planted["padj"] >= 0.05, ["log2FoldChange", "padj"]]
    assert (np.sign(planted["log2FoldChange"]) == np.sign(planted["true_log2FoldChange"])).all()
    error = (planted["log2FoldChange"] - planted["true_log2FoldChange"]).abs()
    assert (error < LFC_TOLERANCE).all(), planted.loc[
        error >= LFC_TOLERANCE, ["log2FoldChange", "true_log2FoldChange"]
    ]
    assert float(error.median()) < 0.2


def test_isoform_switch_without_gene_change_is_not_called(demo, de_vs_truth):
    switch = de_vs_truth[de_vs_truth["isoform_switch"]]
    assert len(switch) == 1
    row = switch.iloc[0]
    assert row["true_log2FoldChange"] == 0
    assert not row["padj"] < 0.05 and abs(row["log2FoldChange"]) < SWITCH_MAX_ABS_LFC, row
    # The switch is strong enough to matter: summed counts without tximport's length correction fall in
    # severe samples (fewer fragments from the short isoform), so a wrong mode would show a change.
    tx2gene = pd.read_csv(demo / "results/reads/reference/tx2gene.tsv", sep="\t")
    samples = pd.read_csv(demo / "results/reads_demo/samples.tsv", sep="\t").set_index("sample_id")["group"]
    quant = {s: demo / f"results/reads/quant/reads_demo/{s}/quant.sf" for s in samples.index}
    raw = raw_summed_counts(quant, tx2gene)
    cpm = raw / raw.sum() * 1e6
    gene_id = tx2gene.loc[tx2gene["gene_name"] == switch.index[0], "gene_id"].iloc[0]
    severe = cpm.loc[gene_id, samples[samples == "severe"].index].mean()
    mild = cpm.loc[gene_id, samples[samples == "mild"].index].mean()
    assert np.log2(severe / mild) < -0.5


def test_reads_qc_reaches_the_qc_figure_and_the_report_with_multiqc(demo):
    """library_sizes.tsv carries salmon's mapping rate and the flags, the QC figure gets its third panel,
    and the HTML report holds the MultiQC report and a "Reads QC" section that points to it."""
    qc = pd.read_csv(demo / "results/reads/reads_demo/sample_qc.tsv", sep="\t").set_index("sample")
    library = pd.read_csv(demo / "results/qc/reads_demo/library_sizes.tsv", sep="\t").set_index("sample_id")
    assert list(library.index) == list(qc.index)  # every sample, none dropped
    assert library["mapping_rate"].to_numpy() == pytest.approx(qc["mapping_rate"].to_numpy())
    assert (library["reads_before_filtering"] == qc["reads_before_filtering"]).all()
    assert not library["low_mapping_rate"].any() and not library["low_read_pairs"].any()
    assert (library["min_mapping_rate"] == 0.8).all()  # config/reads_demo.yaml reads.qc
    headlines = (demo / "results/report/headlines.rst").read_text()
    section = headlines.split("Reads QC\n--------\n", 1)[1]
    median = f"{100 * qc['mapping_rate'].median():.1f}%"
    assert f"- {median} (" in section and "``ISR`` (12); stated: reverse" in section
    assert "No sample flagged in ``reads_demo``" in section and "`reads_demo.multiqc.html`_" in section
    proc = run_snakemake(demo, PROJECT_ROOT / "config" / "reads_demo.yaml", "--report", "report.html")
    assert proc.returncode == 0, proc.stderr[-4000:]
    html = (demo / "report.html").read_text(encoding="utf-8")
    assert "results/reads/reads_demo/reads_demo.multiqc.html" in html and "MultiQC: reads QC" in html
    # The section is rendered into the front page, its link opens the MultiQC result, which is embedded.
    assert 'id=\\"reads-qc\\"' in html and median in html
    assert "showResultInfo('results/reads/reads_demo/reads_demo.multiqc.html')" in html
    assert "data:text/html;charset=utf8;filename=reads_demo.multiqc.html;base64," in html


# --- bad input ----------------------------------------------------------------------------------------


def _write_fastq(path: Path, n: int, rng: np.random.Generator) -> None:
    seqs = ["".join(rng.choice(list("ACGT"), 50)) for _ in range(n)]
    with gzip.open(path, "wt") as handle:
        handle.write("".join(f"@r{i}\n{s}\n+\n{'F' * 50}\n" for i, s in enumerate(seqs)))


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    _require_tools()
    workdir = tmp_path_factory.mktemp("reads_bad")
    rng = np.random.default_rng(5)
    data = workdir / "data"
    data.mkdir()
    for name, n in [("trunc_1", 2000), ("trunc_2", 2000), ("mism_1", 500), ("mism_2", 499)]:
        _write_fastq(data / f"{name}.fastq.gz", n, rng)
    whole = (data / "trunc_1.fastq.gz").read_bytes()
    (data / "trunc_1.fastq.gz").write_bytes(whole[: len(whole) * 2 // 3])
    (data / "runs.tsv").write_text(
        "sample\trun\tlayout\tfastq_1\tfastq_2\n"
        "A\tTRUNC\tPAIRED\ttrunc_1.fastq.gz\ttrunc_2.fastq.gz\n"
        "B\tMISM\tPAIRED\tmism_1.fastq.gz\tmism_2.fastq.gz\n"
    )
    (data / "samples.tsv").write_text("sample_id\tgroup\nA\tsevere\nB\tmild\n")
    with gzip.open(data / "tx.fa.gz", "wt") as handle:
        handle.write(">T1.1|G1.1|-|-|X-201|X|60|protein_coding|\n" + "ACGT" * 15 + "\n")
    (data / "tx2gene.tsv").write_text("transcript_id\tgene_id\nENST00000001.1\tENSG1\n")
    config = {
        "cohorts": {
            "bad": {
                "counts": {
                    "source": "reads",
                    "value_type": "expected_counts",
                    "reads": {"runs": str(data / "runs.tsv"), "download": "local"},
                },
                "metadata": {"source": "sample_sheet", "path": str(data / "samples.tsv")},
                "severity": {"field": "group", "severe": ["severe"], "mild": ["mild"]},
            }
        },
        "reads": {"transcriptome": str(data / "tx.fa.gz"), "tx2gene": str(data / "tx2gene.tsv")},
    }
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    targets = ["results/reads/fastp/TRUNC.fastp.json", "results/reads/fastp/MISM.fastp.json"]
    targets.append("results/reads/reference/tx2gene.tsv")
    proc = run_snakemake(workdir, configfile, "--keep-going", *targets)
    assert proc.returncode != 0
    return workdir, proc.stderr


def test_truncated_fastq_gz_fails_clearly_without_output(bad_inputs):
    workdir, stderr = bad_inputs
    assert "trunc_1.fastq.gz: the gzip stream is truncated or corrupt" in stderr
    assert not (workdir / "results/reads/fastp/TRUNC.fastp.json").exists()
    assert not (workdir / "results/reads/trimmed/TRUNC").exists()


def test_mismatched_read_pairs_fail_clearly_without_output(bad_inputs):
    workdir, stderr = bad_inputs
    assert "run MISM: mate files hold different numbers of reads" in stderr
    assert "mism_1.fastq.gz: 500" in stderr and "mism_2.fastq.gz: 499" in stderr
    assert not (workdir / "results/reads/fastp/MISM.fastp.json").exists()
    assert not (workdir / "results/reads/trimmed/MISM").exists()


def test_transcript_ids_not_in_tx2gene_map_fail_clearly_without_output(bad_inputs):
    workdir, stderr = bad_inputs
    assert "1 of 1 transcripts of the FASTA" in stderr and "not in the transcript->gene map" in stderr
    assert not (workdir / "results/reads/reference/tx2gene.tsv").exists()


# --- per-sample jobs in parallel ----------------------------------------------------------------------

# A job's start in Snakemake's log ("[local]rule X:" block up to "jobid: N") or its end, in order.
_PER_SAMPLE_EVENT = re.compile(
    r"^(?:local)?rule (?:fastp|salmon_quant):\n(?: {4}.*\n)*? {4}jobid: (?P<start>\d+)$"
    r"|^Finished jobid: (?P<end>\d+) \(Rule: (?:fastp|salmon_quant)\)$",
    flags=re.MULTILINE,
)


def test_per_sample_jobs_run_two_at_a_time_with_two_cores(demo):
    """The demo fixture runs with --cores 2 and one thread per fastp / salmon_quant job, so a second
    per-sample job must start before the first ends, and never more than two run at once. Read from the
    run's own log (.snakemake/log/), which records job starts and ends in order."""
    runs = pd.read_csv(demo / "results/reads_demo/runs.tsv", sep="\t")
    running, started, most_at_once = set(), 0, 0
    for log in sorted((demo / ".snakemake" / "log").glob("*.snakemake.log")):
        for event in _PER_SAMPLE_EVENT.finditer(log.read_text()):
            if event["start"]:
                running.add(event["start"])
                started += 1
                most_at_once = max(most_at_once, len(running))
            else:
                running.discard(event["end"])
    assert started == len(runs) + runs["sample"].nunique()  # one fastp per run, one salmon_quant per sample
    assert most_at_once == 2
