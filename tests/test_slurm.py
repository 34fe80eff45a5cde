"""The workflow on a real Slurm cluster (issue 6): jobs go through sbatch, and sacct (slurmdbd) reports them.

Needs a running cluster with accounting, e.g. the single-node one of .ci/slurm/start.sh, and IL6AXIS_SLURM=1.
Every check reads Slurm's own accounting records (sacct), not just Snakemake's word: each non-local job of
the demo must be there as COMPLETED under the profile's partition and account, with deseq2's threads as its
CPUs, and a job that exits 1 must be FAILED there while Snakemake stops with an error instead of waiting.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
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
DEMO_TIMEOUT_S = 900
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


def remote_job_comments(log: str) -> set[str]:
    """The --comment the executor gives each job that Snakemake ran as non-local ("rule X:", not
    "localrule X:"): ``rule_<name>`` or ``rule_<name>_wildcards_<values joined by _>``."""
    comments = set()
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", log):
        header = re.match(r"rule (\w+):\n", block)
        if header is None:
            continue
        wildcards = re.search(r"^ +wildcards: (.+)$", block, flags=re.MULTILINE)
        comment = f"rule_{header.group(1)}"
        if wildcards:
            values = [pair.split("=", 1)[1] for pair in wildcards.group(1).split(", ")]
            comment += "_wildcards_" + "_".join(values)
        comments.add(comment)
    return comments


def sacct_records(job_name: str) -> list[SacctRecord]:
    """Allocations with this job name in the accounting database (slurmdbd), over the last two days."""
    start = f"{datetime.now() - timedelta(days=2):%Y-%m-%dT%H:%M}"
    fields = "JobIDRaw,JobName,Comment,State,ExitCode,Partition,Account,AllocCPUS"
    out = subprocess.run(
        ["sacct", "-X", "-P", "-n", "--starttime", start, "--name", job_name, "--format", fields],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    records = []
    for line in out.splitlines():
        job_id, name, comment, state, exit_code, partition, account, cpus = line.split("|")
        records.append(SacctRecord(job_id, name, comment, state, exit_code, partition, account, int(cpus)))
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
