"""Benchmark of the reads path (count source `reads`), run by hand:

.venv/bin/python bench/bench_reads.py [--pairs 200000] [--samples 3] [--scaling 2,4,6]

1. Per sample: wall time and peak RSS of fastp and of salmon quant, run directly on simulated reads of the
   reads demo's transcriptome (``--pairs`` read pairs per sample, 2 threads each), and of the workflow's
   fastp wrapper (fastp plus the concurrent FASTQ check).
2. Workflow overhead: the same work (fastp, salmon index, salmon quant, pytximport) run as plain
   subprocess calls in a loop vs by Snakemake to the cohort's gene counts, --cores 2.
3. Scaling: the whole reads demo (config/reads_demo.yaml, every target) with 2x n samples, n in --scaling.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _paths  # noqa: F401  (puts workflow/ on sys.path)
import pandas as pd
import yaml
from workflow_cmd import ROOT, snakemake_cmd

from il6axis.reads import simulate
from il6axis.reads.aggregate import gene_counts
from il6axis.reads.annotation import build_tx2gene
from il6axis.reads.fastp import fastp_command, run_fastp
from il6axis.reads.salmon import index_command, quant_command


def timed(cmd: list[str], log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one process, measured with wait4."""
    start = time.perf_counter()
    with log.open("a") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd[0]} failed, see {log}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def simulate_inputs(work: Path, n_per_group: int, pairs: int) -> tuple[simulate.DemoDesign, dict, Path]:
    names = [
        *pd.read_csv(ROOT / "resources/genesets/il6_core.tsv", sep="\t")["symbol"],
        *pd.read_csv(ROOT / "resources/genesets/severity_sanity_markers.tsv", sep="\t")["symbol"],
    ]
    design = simulate.demo_design(n_per_group, 0)
    outputs = {
        key: str(work / name)
        for key, name in [
            ("runs", "runs.tsv"),
            ("samples", "samples.tsv"),
            ("truth", "truth.tsv"),
            ("truth_counts", "truth_counts.tsv"),
            ("transcripts", "transcripts.tsv"),
            ("transcriptome", "transcriptome.fa.gz"),
            ("fastq", "fastq"),
        ]
    }
    settings = {"seed": 15, "read_pairs": pairs, "n_simulated_genes": 100}
    simulate.simulate_and_write(names, design, settings, outputs)
    return design, outputs, work / "fastq"


def tool_benchmarks(pairs: int, n_samples: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        design, outputs, fastq = simulate_inputs(work, (n_samples + 1) // 2, pairs)
        samples = list(design.groups)[:n_samples]
        log = work / "tools.log"
        rows = []
        direct_start = time.perf_counter()
        index_s, index_rss = timed(
            index_command(outputs["transcriptome"], str(work / "idx"), 2, 31, True), log
        )
        for s in samples:
            r1, r2 = fastq / f"{s}_1.fastq.gz", fastq / f"{s}_2.fastq.gz"
            t1, t2 = work / f"{s}.t1.fq.gz", work / f"{s}.t2.fq.gz"
            fastp_s, fastp_rss = timed(
                fastp_command([str(r1), str(r2)], [str(t1), str(t2)], str(work / "j"), str(work / "h"), 2),
                log,
            )
            quant_s, quant_rss = timed(
                quant_command(str(work / "idx"), [[str(t1)], [str(t2)]], str(work / f"q_{s}"), 2), log
            )
            rows.append(
                {
                    "sample": s,
                    "input_MB": (r1.stat().st_size + r2.stat().st_size) / 1e6,
                    "fastp_s": fastp_s,
                    "fastp_peak_MiB": fastp_rss,
                    "salmon_quant_s": quant_s,
                    "salmon_peak_MiB": quant_rss,
                }
            )
        tx2gene = build_tx2gene(outputs["transcriptome"], None)
        gene_counts({s: work / f"q_{s}" / "quant.sf" for s in samples}, tx2gene)
        direct_total = time.perf_counter() - direct_start
        # The workflow's fastp job body: fastp plus the FASTQ check on another thread.
        start = time.perf_counter()
        s = samples[0]
        run_fastp(
            s,
            [str(fastq / f"{s}_1.fastq.gz"), str(fastq / f"{s}_2.fastq.gz")],
            work / "wrapped",
            work / "w.json",
            work / "w.html",
            2,
            log_path=log,
        )
        wrapped = time.perf_counter() - start
        table = pd.DataFrame(rows)
        print(
            f"\n## Tools per sample ({pairs} read pairs, 2 threads; "
            f"index: {index_s:.1f} s, {index_rss:.0f} MiB)"
        )
        print(table.round(2).to_string(index=False))
        print(
            f"fastp with the workflow's FASTQ check (sample {s}): {wrapped:.2f} s "
            f"vs {rows[0]['fastp_s']:.2f} s"
        )

        # Workflow: the same samples to gene counts with Snakemake.
        runs = pd.read_csv(outputs["runs"], sep="\t")
        runs = runs[runs["sample"].isin(samples)]
        runs.to_csv(outputs["runs"], sep="\t", index=False)
        config = yaml.safe_load((ROOT / "config/reads_demo.yaml").read_text())
        spec = config["cohorts"]["reads_demo"]
        spec["counts"]["reads"]["runs"] = outputs["runs"]
        spec["metadata"]["path"] = outputs["samples"]
        config["reads"]["transcriptome"] = outputs["transcriptome"]
        config["reads"]["fastp"]["threads"] = 2
        config["reads"]["salmon"]["threads"] = 2
        configfile = work / "bench.yaml"
        configfile.write_text(yaml.safe_dump(config))
        wf = work / "wf"
        cmd = snakemake_cmd(wf, configfile, 2, "results/reads/reads_demo/gene_counts.tsv", "--quiet", "all")
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        workflow_s = time.perf_counter() - start
        if proc.returncode:
            sys.exit(proc.stderr[-3000:])
        n_jobs = len(runs) + len(samples) + 3  # fastp, quant, tx2gene, index, tximport
        print(
            f"\n## Workflow overhead ({len(samples)} samples to gene counts, 2 cores)\n"
            f"direct tool calls in a loop: {direct_total:.1f} s; Snakemake: {workflow_s:.1f} s "
            f"(ratio {workflow_s / direct_total:.2f}; {n_jobs} jobs, "
            f"{(workflow_s - direct_total) / n_jobs:.1f} s per job more)"
        )


def scaling(n_per_group_values: list[int]) -> None:
    print("\n## Reads demo end to end (every target) vs number of samples, --cores 2")
    for n in n_per_group_values:
        config = yaml.safe_load((ROOT / "config/reads_demo.yaml").read_text())
        config["reads_demo"]["n_per_group"] = n
        with tempfile.TemporaryDirectory() as tmp:
            configfile = Path(tmp) / "config.yaml"
            configfile.write_text(yaml.safe_dump(config))
            cmd = snakemake_cmd(Path(tmp) / "wf", configfile, 2, "--quiet", "all")
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode:
                sys.exit(proc.stderr[-3000:])
        print(f"{2 * n} samples: {wall:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=200_000)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--scaling", default="2,4,6", help="severe (= mild) samples per demo run")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    tool_benchmarks(args.pairs, args.samples)
    scaling([int(n) for n in args.scaling.split(",") if n])


if __name__ == "__main__":
    main()
