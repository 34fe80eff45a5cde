"""Benchmark: the demo end to end on N cores (wall time, peak RSS of the largest process). Run by hand:

.venv/bin/python bench/bench_demo.py --cores 2
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from workflow_cmd import ROOT, snakemake_cmd  # sibling module: bench/ is sys.path[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--configfile", default=str(ROOT / "config" / "demo.yaml"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        cmd = snakemake_cmd(workdir, args.configfile, args.cores, "--quiet", "all")
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode:
            sys.exit(proc.stderr[-3000:])
        # ru_maxrss of waited-for descendants: the peak of the largest single process (KiB on Linux).
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        bench_files = sorted(Path(workdir, "results").rglob("*.log"))
    print(
        f"demo end to end, {args.cores} cores: wall {wall:.1f} s, peak RSS {peak_mib:.0f} MiB "
        f"({len(bench_files)} job logs)"
    )


if __name__ == "__main__":
    main()
