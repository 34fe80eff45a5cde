"""Benchmark: `snakemake -n` (DAG construction) for a config with many synthetic GEO cohorts. Run by hand:

.venv/bin/python bench/bench_dryrun.py --cohorts 50
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from workflow_cmd import snakemake_cmd  # sibling module: bench/ is sys.path[0]


def synthetic_config(n_cohorts: int) -> dict:
    """n GEO cohorts (NCBI counts + series matrix, one filter, two covariates, one per patient)."""
    cohorts = {}
    for i in range(n_cohorts):
        cohorts[f"GSE{200000 + i}"] = {
            "tissue": "whole_blood",
            "counts": {"source": "geo_ncbi", "gene_id": "entrez"},
            "metadata": {"source": "geo_series_matrix"},
            "filters": {"disease state": ["COVID-19"]},
            "severity": {"field": "severity", "severe": ["severe"], "mild": ["mild"], "exclude": ["healthy"]},
            "one_per_patient": {"patient_field": "patient", "order_field": "day"},
            "covariates": {"age": {"field": "age", "type": "age"}, "sex": {"field": "sex", "type": "sex"}},
        }
    return {"cohorts": cohorts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohorts", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        configfile = Path(workdir) / "config.yaml"
        configfile.write_text(yaml.safe_dump(synthetic_config(args.cohorts)))
        cmd = snakemake_cmd(workdir, configfile, 2, "-n", "--quiet", "rules")
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if proc.returncode:
                sys.exit(proc.stderr[-3000:])
        jobs = [line for line in proc.stdout.splitlines() if line.strip().startswith("total")]
    total = jobs[-1].split()[-1] if jobs else "?"
    median = sorted(times)[len(times) // 2]
    print(f"snakemake -n, {args.cohorts} cohorts, {total} jobs: best {min(times):.2f} s", end="")
    print(f", median {median:.2f} s")


if __name__ == "__main__":
    main()
