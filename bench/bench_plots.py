"""Benchmark: the plotting stage vs the rest of the run, for 4 cohorts. Run by hand:

    .venv/bin/python bench/bench_plots.py --cohorts 4 --cores 2

Runs the workflow on N copies of the demo cohort (same simulated files, N cohort entries, so every per-cohort
rule runs N times and the meta-analysis pools N cohorts), then sums Snakemake's per-job benchmark files:
wall seconds and the largest max_rss of the plotting rules (plot_cohort, one job per cohort, and plot_meta)
against all other rules, then per rule. The sample-QC numbers the QC figures draw (sex check, PCA, library
sizes) are computed by rule cohort_qc and count as analysis: plot_cohort reads its tables and the expression
AnnData only. The machine's load average is printed with the numbers: the
benchmark shares the cores with whatever else runs, and job-seconds stretch with the load.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml
from workflow_cmd import ROOT, snakemake_cmd  # sibling module: bench/ is sys.path[0]


def config_with_copies(n: int) -> dict:
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cohort = demo["cohorts"].pop("demo")
    demo["cohorts"] = {f"demo{i + 1}": copy.deepcopy(cohort) for i in range(n)}
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohorts", type=int, default=4)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        configfile = Path(workdir) / "config.yaml"
        configfile.write_text(yaml.safe_dump(config_with_copies(args.cohorts)))
        cmd = snakemake_cmd(workdir, configfile, args.cores, "--quiet", "all")
        load_before = os.getloadavg()
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        load_after = os.getloadavg()
        if proc.returncode:
            sys.exit(proc.stderr[-3000:])
        rows = []
        for path in Path(workdir, "results", "benchmarks").glob("*/*.tsv"):
            bench = pd.read_csv(path, sep="\t")
            rows.append(
                {
                    "rule": path.parent.name,
                    "s": float(bench["s"].iloc[0]),
                    "max_rss": float(pd.to_numeric(bench["max_rss"], errors="coerce").iloc[0]),
                    "cpu_s": float(pd.to_numeric(bench["cpu_time"], errors="coerce").iloc[0]),
                }
            )
    jobs = pd.DataFrame(rows)
    jobs["stage"] = jobs["rule"].map(lambda r: "plotting" if r.startswith("plot_") else "analysis")
    # Wall job-seconds stretch when jobs wait for a core; CPU seconds much less so.
    summary = jobs.groupby("stage").agg(
        jobs=("s", "size"),
        job_seconds=("s", "sum"),
        cpu_seconds=("cpu_s", "sum"),
        max_rss_mb=("max_rss", "max"),
    )
    print(f"{args.cohorts} cohorts, {args.cores} cores: workflow wall {wall:.0f} s; benchmarked jobs:")
    print(summary.round(1).to_string())
    per_rule = jobs.groupby("rule").agg(
        jobs=("s", "size"),
        job_seconds=("s", "sum"),
        cpu_seconds=("cpu_s", "sum"),
        peak_rss_mb=("max_rss", "max"),
    )
    print(per_rule.round(1).sort_values("job_seconds", ascending=False).to_string())
    print(
        "load average (1/5/15 min) before: {:.2f} {:.2f} {:.2f}; after: {:.2f} {:.2f} {:.2f}".format(
            *load_before, *load_after
        )
    )


if __name__ == "__main__":
    main()
