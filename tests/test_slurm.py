"""The workflow on a real Slurm cluster (issue 6): jobs go through sbatch, and sacct (slurmdbd) reports them.

Needs a running cluster with accounting, e.g. the single-node one of .ci/slurm/start.sh, and IL6AXIS_SLURM=1.
Every check reads Slurm's own accounting records (sacct), not just Snakemake's word: each non-local job of
the demo must be there as COMPLETED under the profile's partition and account, with deseq2's threads as its
CPUs, and a job that exits 1 must be FAILED there while Snakemake stops with an error instead of waiting.
The reads demo (issue 15) must run one job per FASTQ run (fastp) and per sample (salmon_quant), one index
job, each with its rule's threads, memory and run time as Slurm saw them, several at once, and its
simulation (a localrule) not on Slurm at all.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import combinations
from pathlib import Path

import pytest
import yaml
from workflow_runner import PROJECT_ROOT

pytestmark = [
    pytest.mark.slurm,
    # Locally opt-in; in CI (CI=true) .ci/run starts the cluster and these tests must run, never skip.
    pytest.mark.skipif(
        os.environ.get("IL6AXIS_SLURM") != "1" and os.environ.get("CI", "").lower() != "true",
        reason=(
            "needs a Slurm cluster with accounting: `bash .ci/slurm/install.sh && bash .ci/slurm/start.sh`, "
            "then run with IL6AXIS_SLURM=1 (and `bash .ci/slurm/stop.sh` afterwards)"
        ),
    ),
]

TEST_PROFILE = PROJECT_ROOT / "tests" / "slurm" / "profile"
DEMO_CONFIG = PROJECT_ROOT / "config" / "demo.yaml"
READS_DEMO_CONFIG = PROJECT_ROOT / "config" / "reads_demo.yaml"
DEMO_TIMEOUT_S = 900
# The reads demo is 40-odd Slurm jobs; ~7 min on the 2-CPU node of .ci/slurm (status polls included).
READS_DEMO_TIMEOUT_S = 1800
FAILING_TIMEOUT_S = 180

FAILING_SNAKEFILE = """\
rule all:
    input:
        "never.txt",
    localrule: True


rule always_fails:
    output:
        "never.txt",
    shell:
        "echo 'il6axis test: failing on purpose' >&2; exit 1"
"""


@dataclass(frozen=True)
class SacctRecord:
    """One allocation (sacct -X) as the accounting database has it."""

    job_id: str
    name: str
    comment: str
    state: str
    exit_code: str
    partition: str
    account: str
    alloc_cpus: int
    req_mem_mb: int
    time_limit_min: int
    start: datetime | None
    end: datetime | None


@dataclass(frozen=True)
class LoggedJob:
    """What Snakemake asked for a non-local job, as its log shows it."""

    rule: str
    threads: int
    mem_mb: int | None
    runtime: int | None


def run_on_slurm(
    workdir: Path, snakefile: Path, *extra: str, timeout: int
) -> subprocess.CompletedProcess[str]:
    """``snakemake --profile tests/slurm/profile --executor slurm`` in ``workdir``; a hang fails the test."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        "--profile",
        str(TEST_PROFILE),
        "--executor",
        "slurm",
        *extra,
    ]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(f"snakemake on Slurm did not finish within {timeout} s (hung?); log tail:\n{err[-4000:]}")


def run_id(log: str) -> str:
    """The executor's run ID, which it uses as the Slurm job name of every job of one Snakemake run."""
    found = re.findall(r"SLURM run ID: (\S+)", log)
    assert len(found) == 1, f"expected one 'SLURM run ID' line in the Snakemake log, found {found}"
    return found[0]


def remote_jobs(log: str) -> dict[str, LoggedJob]:
    """Each job that Snakemake ran as non-local ("rule X:" or "checkpoint X:", not "localrule X:" or
    "localcheckpoint X:"), keyed by the --comment the executor gives it: ``rule_<name>`` or
    ``rule_<name>_wildcards_<values joined by _>``. Its threads (the log omits 1) and resources are
    what Snakemake passed to sbatch."""
    jobs = {}
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:\n)", log):
        header = re.match(r"(?:rule|checkpoint) (\w+):\n", block)
        if header is None:
            continue
        wildcards = re.search(r"^ +wildcards: (.+)$", block, flags=re.MULTILINE)
        threads = re.search(r"^ +threads: (\d+)$", block, flags=re.MULTILINE)
        resources = re.search(r"^ +resources: (.+)$", block, flags=re.MULTILINE)
        values = dict(pair.split("=", 1) for pair in resources.group(1).split(", ")) if resources else {}
        comment = f"rule_{header.group(1)}"
        if wildcards:
            comment += "_wildcards_" + "_".join(p.split("=", 1)[1] for p in wildcards.group(1).split(", "))
        jobs[comment] = LoggedJob(
            rule=header.group(1),
            threads=int(threads.group(1)) if threads else 1,
            mem_mb=int(values["mem_mb"]) if "mem_mb" in values else None,
            runtime=int(values["runtime"]) if "runtime" in values else None,
        )
    return jobs


def remote_job_comments(log: str) -> set[str]:
    """The --comment of each job that Snakemake ran as non-local (see remote_jobs)."""
    return set(remote_jobs(log))


def local_rule_names(log: str) -> set[str]:
    """Rules that Snakemake ran itself, outside Slurm ("localrule X:" / "localcheckpoint X:")."""
    return set(re.findall(r"^local(?:rule|checkpoint) (\w+):$", log, flags=re.MULTILINE))


def _megabytes(req_mem: str) -> int:
    """sacct's ReqMem ("1700M", "2G"; older Slurm appends n/c for per node/CPU) in MB."""
    number, unit = re.fullmatch(r"([\d.]+)([KMGT]?)[nc]?", req_mem).groups()
    return round(float(number) * {"K": 1 / 1024, "M": 1, "": 1, "G": 1024, "T": 1024**2}[unit])


def _minutes(time_limit: str) -> int:
    """sacct's Timelimit ("[D-]HH:MM:SS" or "MM:SS") in minutes."""
    days, _, clock = time_limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    hours, minutes, seconds = [0] * (3 - len(parts)) + parts
    return int(days or 0) * 1440 + hours * 60 + minutes + (seconds > 0)


def _when(timestamp: str) -> datetime | None:
    return None if timestamp in {"Unknown", "None", ""} else datetime.fromisoformat(timestamp)


def sacct_records(job_name: str) -> list[SacctRecord]:
    """Allocations with this job name in the accounting database (slurmdbd), over the last two days."""
    start = f"{datetime.now() - timedelta(days=2):%Y-%m-%dT%H:%M}"
    fields = "JobIDRaw,JobName,Comment,State,ExitCode,Partition,Account,AllocCPUS,ReqMem,Timelimit,Start,End"
    out = subprocess.run(
        ["sacct", "-X", "-P", "-n", "--starttime", start, "--name", job_name, "--format", fields],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    records = []
    for line in out.splitlines():
        columns = line.split("|")
        cpus, mem, limit, start, end = columns[7:]
        records.append(
            SacctRecord(*columns[:7], int(cpus), _megabytes(mem), _minutes(limit), _when(start), _when(end))
        )
    return records


@pytest.fixture(scope="module")
def cluster() -> dict:
    """The test profile's defaults; fails (not skips) when IL6AXIS_SLURM=1 but no cluster answers."""
    checks = {"sinfo": ["sinfo", "-h", "-o", "%P %a %T"], "sacct": ["sacct", "-n", "-X"]}
    for tool, cmd in checks.items():
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            pytest.fail(f"IL6AXIS_SLURM=1 but `{tool}` is not installed: run bash .ci/slurm/install.sh")
        if proc.returncode != 0:
            pytest.fail(
                f"IL6AXIS_SLURM=1 but `{' '.join(cmd)}` failed ({proc.stderr.strip()}): "
                "start the cluster with bash .ci/slurm/start.sh"
            )
    profile = yaml.safe_load((TEST_PROFILE / "config.yaml").read_text())
    return profile["default-resources"]


@pytest.fixture(scope="module")
def demo_on_slurm(cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo_slurm")
    proc = run_on_slurm(
        workdir, PROJECT_ROOT / "Snakefile", "--configfile", str(DEMO_CONFIG), timeout=DEMO_TIMEOUT_S
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return workdir, proc.stderr


def test_demo_completes_with_every_remote_job_completed_in_sacct(cluster, demo_on_slurm):
    workdir, log = demo_on_slurm
    expected = remote_job_comments(log)
    # The demo's DE steps are not localrules; an empty or partial set would mean nothing went to Slurm.
    assert {"rule_build_cohort_wildcards_demo", "rule_deseq2_wildcards_demo"} <= expected, expected

    records = sacct_records(run_id(log))
    assert sorted(r.comment for r in records) == sorted(expected), records
    for record in records:
        assert (record.state, record.exit_code) == ("COMPLETED", "0:0"), record
        assert record.partition == cluster["slurm_partition"], record
        assert record.account == cluster["slurm_account"], record
    de_threads = yaml.safe_load(DEMO_CONFIG.read_text())["de"]["threads"]
    (deseq2,) = [r for r in records if r.comment == "rule_deseq2_wildcards_demo"]
    assert deseq2.alloc_cpus == de_threads, deseq2


def test_demo_outputs_written_by_slurm_jobs(demo_on_slurm):
    workdir, _ = demo_on_slurm
    for rel in [
        "results/cohorts/demo.h5ad",
        "results/de/demo/severe_vs_mild.tsv",
        "results/de/demo/il6_panel.tsv",
        "results/de/demo/summary.json",
        "results/plots/demo/volcano.png",
        "results/plots/demo/volcano.svg",
    ]:
        path = workdir / rel
        assert path.is_file() and path.stat().st_size > 0, rel
    # Each submitted job kept its Slurm log (slurm-keep-successful-logs) and ran the job step executor.
    slurm_logs = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert {p.parts[-3] for p in slurm_logs} >= {"rule_build_cohort", "rule_deseq2"}, slurm_logs
    for path in slurm_logs:
        assert "--executor slurm-jobstep" in path.read_text(), path


def test_failing_job_is_reported_failed_not_waited_on(cluster, tmp_path):
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(FAILING_SNAKEFILE)
    proc = run_on_slurm(tmp_path, snakefile, timeout=FAILING_TIMEOUT_S)
    assert proc.returncode != 0, proc.stderr[-4000:]
    assert "SLURM status is: 'FAILED'" in proc.stderr, proc.stderr[-4000:]

    records = sacct_records(run_id(proc.stderr))
    assert [(r.comment, r.state, r.exit_code) for r in records] == [("rule_always_fails", "FAILED", "1:0")]
    assert not (tmp_path / "never.txt").exists()


# --- reads demo (issue 15) ----------------------------------------------------------------------------


def rule_records(records: list[SacctRecord], rule: str) -> list[SacctRecord]:
    """The allocations of one rule's jobs (comment ``rule_<rule>`` or ``rule_<rule>_wildcards_...``)."""
    return [
        r for r in records if r.comment == f"rule_{rule}" or r.comment.startswith(f"rule_{rule}_wildcards_")
    ]


@pytest.fixture(scope="module")
def reads_demo_on_slurm(cluster, tmp_path_factory):
    # Jobs run on the cluster's (here: this) machine, so the tools must be installed here.
    missing = [tool for tool in ("fastp", "salmon") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{missing} not on PATH: install them (README, 'From reads': apt-get install salmon fastp)"
        )
    workdir = tmp_path_factory.mktemp("reads_demo_slurm")
    proc = run_on_slurm(
        workdir,
        PROJECT_ROOT / "Snakefile",
        "--configfile",
        str(READS_DEMO_CONFIG),
        timeout=READS_DEMO_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    with open(workdir / "results" / "reads_demo" / "runs.tsv", newline="") as handle:
        runs = list(csv.DictReader(handle, delimiter="\t"))
    return workdir, proc.stderr, runs, sacct_records(run_id(proc.stderr))


def test_reads_demo_one_slurm_job_per_run_and_per_sample(cluster, reads_demo_on_slurm):
    workdir, log, runs, records = reads_demo_on_slurm
    samples = {row["sample"] for row in runs}
    # The demo has technical replicates, so one job per run and one per sample are different counts.
    assert len(runs) > len(samples) >= 2, runs

    assert sorted(r.comment for r in records) == sorted(remote_jobs(log)), records
    for record in records:
        assert (record.state, record.exit_code) == ("COMPLETED", "0:0"), record
        assert record.partition == cluster["slurm_partition"], record
        assert record.account == cluster["slurm_account"], record
    fastp = sorted(r.comment for r in rule_records(records, "fastp"))
    assert fastp == sorted(f"rule_fastp_wildcards_{row['run']}" for row in runs)
    quant = sorted(r.comment for r in rule_records(records, "salmon_quant"))
    assert quant == sorted(f"rule_salmon_quant_wildcards_reads_demo_{s}" for s in samples)
    for rule in ["salmon_index", "reads_tx2gene", "tximport", "reads_multiqc"]:
        assert len(rule_records(records, rule)) == 1, (rule, records)

    # Local rules (the reads simulation; downloads when there are any) ran beside Snakemake, not on Slurm.
    local = local_rule_names(log)
    assert "simulate_reads_demo" in local, local
    for rule in local:
        assert not rule_records(records, rule), (rule, records)
    for rel in ["results/reads/reads_demo/gene_counts.tsv", "results/reads/reads_demo/sample_qc.tsv"]:
        assert (workdir / rel).stat().st_size > 0, rel


def test_reads_demo_jobs_get_their_rules_threads_memory_and_runtime(cluster, reads_demo_on_slurm):
    _, log, _, records = reads_demo_on_slurm
    reads = yaml.safe_load(READS_DEMO_CONFIG.read_text())["reads"]
    declared_threads = {
        "fastp": reads["fastp"]["threads"],
        "salmon_quant": reads["salmon"]["threads"],
        "salmon_index": reads["salmon"]["index_threads"],  # 2 in the demo: a CPU count other than 1
    }
    requested = remote_jobs(log)
    for record in records:
        job = requested[record.comment]
        # What Snakemake asked for is what Slurm allocated (threads -> --cpus-per-task, mem_mb -> --mem,
        # runtime -> --time) ...
        assert record.alloc_cpus == job.threads, (record, job)
        assert (record.req_mem_mb, record.time_limit_min) == (job.mem_mb, job.runtime), (record, job)
        if job.rule in declared_threads:
            # ... and for the reads rules that is the rule's own sizing, not the profile's defaults.
            assert record.alloc_cpus == declared_threads[job.rule], record
            assert record.req_mem_mb != cluster["mem_mb"], record
            assert record.time_limit_min != cluster["runtime"], record
    assert set(declared_threads) <= {requested[r.comment].rule for r in records}


def test_reads_demo_per_sample_jobs_run_at_the_same_time(reads_demo_on_slurm):
    _, _, _, records = reads_demo_on_slurm
    cpus = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%c"], capture_output=True, text=True, timeout=60
    ).stdout
    if sum(int(c) for c in cpus.split()) < 2:
        pytest.fail(f"the cluster has {cpus.split()} CPUs: running per-sample jobs side by side needs 2")
    per_sample = rule_records(records, "fastp") + rule_records(records, "salmon_quant")
    # Slurm's own start and end times (whole seconds): two jobs overlap if each starts before the other ends.
    overlapping = [(a, b) for a, b in combinations(per_sample, 2) if a.start < b.end and b.start < a.end]
    assert overlapping, [(r.comment, r.start, r.end) for r in per_sample]
