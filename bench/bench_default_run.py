"""Benchmark: config/config.yaml end to end, offline, against a local GEO serving GEO-layout files.

Builds the same replicas as tests/test_default_config.py (real metadata, count files in GEO's real layouts),
starts the fake GEO on 127.0.0.1, points only the download hosts at it and runs the default workflow.
Prints wall time, the peak RSS of the largest process, and the slowest / largest rules from Snakemake's
benchmark files. Run by hand:

.venv/bin/python bench/bench_default_run.py --cores 2
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _paths  # noqa: F401  (tests/ and workflow/ on sys.path; bench/ is sys.path[0])
import pandas as pd
import yaml
from geo_replicas import build_default_geo_tree
from geo_server import FakeGeo
from workflow_cmd import ROOT, snakemake_cmd

SHARED = ROOT.parent / "shared" / "data"


def rule_table(workdir: Path) -> pd.DataFrame:
    """One row per job: rule/wildcards, wall seconds and max RSS from results/benchmarks/."""
    rows = []
    for path in sorted((workdir / "results" / "benchmarks").rglob("*.tsv")):
        frame = pd.read_csv(path, sep="\t")
        rows.append({"job": str(path.relative_to(workdir / "results" / "benchmarks")), **frame.iloc[0]})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, workdir = Path(tmp, "geo"), Path(tmp, "run")
        workdir.mkdir()
        build_default_geo_tree(root, SHARED)
        config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
        with FakeGeo(root) as geo:
            for key in ("geo_base", "geo_download_base", "ncbi_gene_base"):
                config["download"][key] = geo.base_url
            configfile = workdir / "config.yaml"
            configfile.write_text(yaml.safe_dump(config, sort_keys=False))
            start = time.perf_counter()
            proc = subprocess.run(
                snakemake_cmd(workdir, configfile, args.cores, "--quiet"), text=True, capture_output=True
            )
            wall = time.perf_counter() - start
        if proc.returncode:
            sys.exit(proc.stderr[-4000:])
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        jobs = rule_table(workdir)
    print(f"default config, 4 cohorts, {args.cores} cores: wall {wall:.1f} s, peak RSS {peak_mib:.0f} MiB")
    if not jobs.empty:
        cols = ["job", "s", "max_rss"]
        print(
            "\nslowest jobs:\n" + jobs.sort_values("s", ascending=False)[cols].head(10).to_string(index=False)
        )
        print(
            "\nlargest jobs:\n"
            + jobs.sort_values("max_rss", ascending=False)[cols].head(10).to_string(index=False)
        )
        print(f"\nsum of job wall times {jobs['s'].sum():.0f} s over {len(jobs)} benchmarked jobs")


if __name__ == "__main__":
    main()
