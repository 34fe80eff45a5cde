"""Benchmark: the DE step (``il6axis.de.run_deseq2``) on synthetic cohorts of growing size. Run by hand:

    /tmp/probe/bin/python bench/bench_de.py --genes 20000 --samples 100 500 2000 --n-cpus 2

For every cohort size and inference (stock pydeseq2 ``DefaultInference`` and/or
``il6axis.fast_inference.FastInference``) a fresh interpreter reads the cohort h5ad and runs
``run_deseq2`` (lfc_shrink off, ``n_cpus`` workers); we report the wall time of the call (timed inside
the child, imports and h5ad reading excluded), the peak RSS of the child (``ru_maxrss`` from ``wait4``,
so it includes loading the cohort) and the size of the int64 count matrix, so that the peak/matrix
ratio is visible. A run longer than ``--timeout`` is stopped and reported as such, with a linear
extrapolation in the number of samples from the smaller cohorts, marked as an extrapolation.
The load average at the start of each run is printed: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from compare_with_r import synthetic_cohort  # noqa: E402


def run_child(
    h5ad: Path, covariates: list[str], inference: str, n_cpus: int, outdir: Path, timeout: float
) -> dict[str, Any]:
    """One timed ``run_deseq2`` in a fresh process (its own session, so a timeout kills its workers too)."""
    out_tsv, out_json = outdir / f"{inference}.tsv", outdir / f"{inference}.json"
    cmd = [
        sys.executable,
        str(BENCH / "compare_with_r.py"),
        "--child-run",
        str(h5ad),
        json.dumps(covariates),
        inference,
        str(n_cpus),
        str(out_tsv),
        str(out_json),
    ]
    load = [round(x, 2) for x in os.getloadavg()]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - start > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            return {"status": "timeout", "timeout_s": timeout, "load_before": load}
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        return {"status": "failed", "stderr": proc.stderr.read().decode()[-2000:], "load_before": load}
    info = json.loads(out_json.read_text())
    return {
        "status": "ok",
        "elapsed_s": info["elapsed_s"],
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "load_before": load,
        "load_after": info["load_after"],
    }


def extrapolate(rows: list[dict[str, Any]], inference: str, n_samples: int) -> float | None:
    """Least-squares line of time against samples through the measured sizes of one inference."""
    done = [
        (r["samples"], r["elapsed_s"]) for r in rows if r["inference"] == inference and r["status"] == "ok"
    ]
    if len(done) < 2:
        return None
    x, y = np.array(done, dtype=float).T
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope * n_samples + intercept)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--genes", type=int, default=20000)
    parser.add_argument("--samples", type=int, nargs="+", default=[100, 500, 2000])
    parser.add_argument("--n-cpus", type=int, default=2)
    parser.add_argument("--inference", nargs="+", default=["stock", "fast"], choices=["stock", "fast"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run before it is stopped")
    parser.add_argument("--workdir", type=Path, help="keep (and reuse) the synthetic cohorts here")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    base = args.workdir or Path(tmp.name)
    rows: list[dict[str, Any]] = []
    print(f"machine: {os.cpu_count()} cpus; n_cpus={args.n_cpus}; {args.genes} genes")
    print(f"{'samples':>8}{'inference':>10}{'matrix MiB':>12}{'wall s':>10}{'peak MiB':>10}", end="")
    print(f"{'peak/matrix':>12}  load")
    for n_samples in args.samples:
        workdir = base / f"synthetic_{args.genes}x{n_samples}"
        workdir.mkdir(parents=True, exist_ok=True)
        h5ad = workdir / "cohort.h5ad"
        if not h5ad.exists():
            synthetic_cohort(workdir, args.genes, n_samples).write_h5ad(h5ad)
        matrix_mib = args.genes * n_samples * 8 / 2**20
        for rep in range(args.repeats):
            for inference in args.inference:
                res = run_child(h5ad, ["age", "sex"], inference, args.n_cpus, workdir, args.timeout)
                row = {"samples": n_samples, "genes": args.genes, "inference": inference, "repeat": rep,
                       "matrix_mib": matrix_mib, **res}  # fmt: skip
                if res["status"] == "ok":
                    row["peak_over_matrix"] = res["peak_rss_mib"] / matrix_mib
                    line = (f"{res['elapsed_s']:>10.1f}{res['peak_rss_mib']:>10.0f}"
                            f"{row['peak_over_matrix']:>12.1f}")  # fmt: skip
                else:
                    guess = extrapolate(rows, inference, n_samples)
                    row["extrapolated_s"] = guess
                    extra = f" (linear extrapolation ~{guess:.0f} s)" if guess else ""
                    status = f">{int(args.timeout)}" if res["status"] == "timeout" else "failed"
                    line = f"{status:>10}{'':>22}{extra}"
                rows.append(row)
                print(
                    f"{n_samples:>8}{inference:>10}{matrix_mib:>12.1f}{line}  {res['load_before'][0]:.1f}",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
