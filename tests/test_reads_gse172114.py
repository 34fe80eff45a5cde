"""Switching a real cohort to reprocessed reads is a config change: the GSE172114 block of config/README.md.

The test takes the documented YAML block verbatim from config/README.md ("Worked example: reprocessing
GSE172114 from reads"), puts it over the default config as the README says (the cohort's other keys from
config/config.yaml, its `counts` replaced), and asks Snakemake for the plan (dry run). The run table is
built in SRA Run Selector's layout from the real series matrix: one run per GSM, SRR14240730-SRR14240798 in
GSM order (that order is an assumption of the test; the real table pairs them as SRA does), PAIRED. The
transcript FASTA is an empty placeholder: a dry run plans jobs without reading it.

The plan must hold, for the 69 samples: one FASTQ download per run (on the submitting node), one fastp job
per run, one salmon quant job per sample, one salmon index, one tximport and one MultiQC for the cohort, and
the usual cohort, DE and report steps on top. Nothing is downloaded and no tool runs.
"""

from __future__ import annotations

import copy
import gzip
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from workflow_runner import PROJECT_ROOT, run_snakemake

README = PROJECT_ROOT / "config" / "README.md"
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "config.yaml"
HEADING = "#### Worked example: reprocessing GSE172114 from reads"
FIRST_RUN = 14240730
N_RUNS = 69


def documented_block() -> dict:
    """The first ```yaml block under the worked-example heading of config/README.md."""
    text = README.read_text(encoding="utf-8")
    assert HEADING in text, f"config/README.md lost the heading {HEADING!r}"
    section = text.split(HEADING, 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, flags=re.S)
    assert match, "no yaml block under the GSE172114 worked example"
    return yaml.safe_load(match.group(1))


def series_gsms(shared_data: Path) -> list[str]:
    matrix = shared_data / "GSE172114" / "GSE172114_series_matrix.txt.gz"
    with gzip.open(matrix, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("!Sample_geo_accession"):
                return [cell.strip('"') for cell in line.rstrip("\n").split("\t")[1:]]
    raise AssertionError("series matrix without !Sample_geo_accession")


def write_run_table(path: Path, gsms: list[str]) -> list[str]:
    """An SRA Run Selector CSV (the columns the workflow reads, plus a few it must ignore)."""
    runs = [f"SRR{FIRST_RUN + i}" for i in range(len(gsms))]
    lines = ["Run,Assay Type,AvgSpotLen,Bases,BioProject,Instrument,LibraryLayout,Sample Name,SRA Study"]
    for run, gsm in zip(runs, gsms, strict=True):
        lines.append(f"{run},RNA-Seq,302,9060000000,PRJNA722046,Illumina NovaSeq 6000,PAIRED,{gsm},SRP314892")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return runs


def planned_jobs(stdout: str) -> Counter:
    """Rule -> job count from the table Snakemake prints for a dry run."""
    counts: Counter = Counter()
    in_table = False
    for line in stdout.splitlines():
        if line.startswith("job") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if parts and parts[0] == "total":
                break
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
    return counts


@pytest.mark.e2e
def test_documented_gse172114_reads_block_plans_the_reprocessing(tmp_path, shared_data):
    block = documented_block()
    gsms = series_gsms(shared_data)
    assert len(gsms) == N_RUNS
    assert block["cohorts"]["GSE172114"]["counts"]["source"] == "reads"

    # As the worked example says: the default GSE172114 block with its counts replaced by the documented one.
    config = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    cohort = copy.deepcopy(config["cohorts"]["GSE172114"])
    cohort.update(block["cohorts"]["GSE172114"])
    cohort["enabled"] = True
    config["cohorts"] = {"GSE172114": cohort}
    config["reads"] = block["reads"]

    runs_path = tmp_path / block["cohorts"]["GSE172114"]["counts"]["reads"]["runs"]
    runs_path.parent.mkdir(parents=True, exist_ok=True)
    runs = write_run_table(runs_path, gsms)
    fasta = tmp_path / block["reads"]["transcriptome"]
    fasta.parent.mkdir(parents=True, exist_ok=True)
    fasta.write_bytes(b"")
    configfile = tmp_path / "my_config.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    proc = run_snakemake(tmp_path, configfile, "--dry-run", "--quiet", "rules", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = planned_jobs(proc.stdout)
    assert jobs["download_fastq_paired"] == N_RUNS, jobs
    assert jobs["fastp"] == N_RUNS and jobs["salmon_quant"] == N_RUNS, jobs
    assert jobs["salmon_index"] == 1 and jobs["tximport"] == 1 and jobs["reads_multiqc"] == 1, jobs
    assert jobs["build_cohort"] == 1 and jobs["deseq2"] == 1 and jobs["report_summary"] == 1, jobs
    # The series matrix still comes from GEO (metadata), the count table does not.
    assert jobs["download_series_matrix"] == 1 and "download_supplementary" not in jobs, jobs
    assert "download_ncbi_counts" not in jobs and "fetch_count_sources" not in jobs, jobs
    assert len(set(runs)) == N_RUNS
