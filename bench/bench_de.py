"""Benchmark: the DE step (``il6axis.de.nb.run_deseq2``) on synthetic cohorts of growing size. Run by hand:

    /tmp/probe/bin/python bench/bench_de.py --genes 20000 --samples 100 500 2000 --n-cpus 2 --inference fast
    /tmp/probe/bin/python bench/bench_de.py --samples 100 --inference fast --lfc-shrink --r

For every cohort size and inference (``fast``: ``run_deseq2`` as the workflow runs it, with
``il6axis.de.fast_inference.FastInference`` and the default ``de.engine: r_compatible``; ``stock``: the
same call
with ``de.engine: pydeseq2`` and pydeseq2's ``DefaultInference`` substituted, i.e. pydeseq2 as released)
a fresh interpreter reads the cohort h5ad and runs ``run_deseq2`` (``n_cpus`` workers;
LFC shrinkage only with ``--lfc-shrink``). Reported per run:

* wall time of the call, timed inside the child (imports and h5ad reading excluded);
* RSS after the imports (the fixed interpreter + library baseline), after reading the cohort, and the peak
  (``ru_maxrss`` from ``wait4``, i.e. VmHWM of the child, so it includes loading the cohort);
* the size of the int64 count matrix, the peak/matrix ratio (dominated by the baseline on small cohorts)
  and the matrix-proportional part: (peak - baseline) / matrix cells, in bytes per cell (8 = one int64
  copy). The slope between the two largest cohorts, (peak_b - peak_a) / (cells_b - cells_a), is printed at
  the end: it is the figure that does not depend on the baseline.

``--r`` also times R DESeq2 (``deseq2_reference.R``, single-threaded, no shrinkage: the reference the issue
compares against) on exactly the filtered counts and design, once per cohort size. ``--workflow DIR``
imports ``il6axis`` from another checkout's ``workflow/`` directory (before/after comparisons), and the
results tables are kept in ``--workdir`` as ``{tag}_{inference}.tsv`` for comparing them. A run longer
than ``--timeout`` is stopped and reported with a linear extrapolation in the number of samples from the
smaller cohorts, marked as such. The load average at the start of each run is printed: the machine may be
shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
WORKFLOW = BENCH.parent / "workflow"


def _rss_mib() -> float:
    """Current resident set size of this process (VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args: list[str]) -> None:
    """In a fresh process: import, read the cohort, run ``run_deseq2`` timed; write table and figures."""
    h5ad, covs, inference, n_cpus, shrink, workflow, out_tsv, out_json = args
    sys.path.insert(0, workflow)
    from unittest import mock

    import anndata as ad
    from pydeseq2.default_inference import DefaultInference

    from il6axis.de import contract, nb

    rss_imports = _rss_mib()
    adata = ad.read_h5ad(h5ad)
    rss_loaded = _rss_mib()
    # "stock" is pydeseq2 0.5.4 as released: its engine and its per-gene inference.
    engine = contract.ENGINE_PYDESEQ2 if inference == "stock" else contract.ENGINE_R
    settings = contract.DeSettings(lfc_shrink=shrink == "1", n_cpus=int(n_cpus), engine=engine)
    load_before = [round(x, 2) for x in os.getloadavg()]
    start = time.perf_counter()
    if inference == "stock":
        with mock.patch.object(nb, "FastInference", DefaultInference):
            result = nb.run_deseq2(adata, json.loads(covs), settings)
    else:
        result = nb.run_deseq2(adata, json.loads(covs), settings)
    elapsed = time.perf_counter() - start
    result.table.to_csv(out_tsv, sep="\t", index=False, float_format="%.17g")
    info = {
        "elapsed_s": elapsed,
        "rss_imports_mib": rss_imports,
        "rss_loaded_mib": rss_loaded,
        "peak_self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    Path(out_json).write_text(json.dumps(info))


def run_child(
    h5ad: Path,
    covariates: list[str],
    inference: str,
    n_cpus: int,
    shrink: bool,
    workflow: Path,
    out_tsv: Path,
    timeout: float,
) -> dict[str, Any]:
    """One timed ``run_deseq2`` in a fresh process (its own session, so a timeout kills its workers too)."""
    out_json = out_tsv.with_suffix(".json")
    cmd = [sys.executable, __file__, "--child", str(h5ad), json.dumps(covariates), inference, str(n_cpus),
           "1" if shrink else "0", str(workflow), str(out_tsv), str(out_json)]  # fmt: skip
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
    return {"status": "ok", "peak_rss_mib": usage.ru_maxrss / 1024, **info, "load_before": load}


def run_r_reference(adata_path: Path, covariates: list[str], workdir: Path) -> dict[str, Any]:
    """R DESeq2, single-threaded, on the counts after our filter and our design (no shrinkage)."""
    import anndata as ad
    from compare_with_r import export_for_r, run_r

    export = export_for_r(ad.read_h5ad(adata_path), covariates, 10, workdir)
    _, info = run_r(export, 0.05, 1, workdir, "bench")
    return {"elapsed_s": info["elapsed_s"], "peak_rss_mib": info["maxrss_mib"], "load": info["load_before"]}


def extrapolate(rows: list[dict[str, Any]], inference: str, n_samples: int) -> float | None:
    """Least-squares line of time against samples through the measured sizes of one inference."""
    import numpy as np

    done = [
        (r["samples"], r["elapsed_s"]) for r in rows if r["inference"] == inference and r["status"] == "ok"
    ]
    if len(done) < 2:
        return None
    x, y = np.array(done, dtype=float).T
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope * n_samples + intercept)


def print_slopes(rows: list[dict[str, Any]]) -> None:
    """Marginal memory per matrix cell between consecutive cohort sizes, per inference."""
    for inference in sorted({r["inference"] for r in rows}):
        ok = sorted((r for r in rows if r["inference"] == inference and r["status"] == "ok"),
                    key=lambda r: r["cells"])  # fmt: skip
        for a, b in zip(ok, ok[1:], strict=False):
            if b["cells"] > a["cells"]:
                slope = (b["peak_rss_mib"] - a["peak_rss_mib"]) * 2**20 / (b["cells"] - a["cells"])
                print(f"{inference}: peak RSS slope {a['samples']}->{b['samples']} samples: "
                      f"{slope:.1f} bytes per matrix cell ({slope / 8:.2f} int64 copies)")  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    sys.path.insert(0, str(BENCH))
    from compare_with_r import synthetic_cohort

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--genes", type=int, default=20000)
    parser.add_argument("--samples", type=int, nargs="+", default=[100, 500, 2000])
    parser.add_argument("--n-cpus", type=int, default=2)
    parser.add_argument("--inference", nargs="+", default=["stock", "fast"], choices=["stock", "fast"])
    parser.add_argument("--lfc-shrink", action="store_true", help="include apeGLM LFC shrinkage")
    parser.add_argument("--r", action="store_true", help="also time R DESeq2 (1 thread) per cohort size")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run before it is stopped")
    parser.add_argument("--workdir", type=Path, help="keep (and reuse) the synthetic cohorts and tables here")
    parser.add_argument("--workflow", type=Path, default=WORKFLOW, help="directory holding il6axis/")
    parser.add_argument("--tag", default="run", help="prefix of the kept results tables")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    base = args.workdir or Path(tmp.name)
    rows: list[dict[str, Any]] = []
    print(f"machine: {os.cpu_count()} cpus; n_cpus={args.n_cpus}; {args.genes} genes; "
          f"lfc_shrink={args.lfc_shrink}; il6axis from {args.workflow}")  # fmt: skip
    print(f"{'samples':>8}{'inference':>10}{'matrix MiB':>12}{'wall s':>9}{'base MiB':>10}{'peak MiB':>10}"
          f"{'peak/matrix':>12}{'B/cell':>8}  load")  # fmt: skip
    for n_samples in args.samples:
        workdir = base / f"synthetic_{args.genes}x{n_samples}"
        workdir.mkdir(parents=True, exist_ok=True)
        h5ad = workdir / "cohort.h5ad"
        if not h5ad.exists():
            synthetic_cohort(workdir, args.genes, n_samples).write_h5ad(h5ad)
        cells = args.genes * n_samples
        matrix_mib = cells * 8 / 2**20
        for rep in range(args.repeats):
            for inference in args.inference:
                out_tsv = workdir / f"{args.tag}_{inference}{'_shrink' if args.lfc_shrink else ''}.tsv"
                res = run_child(h5ad, ["age", "sex"], inference, args.n_cpus, args.lfc_shrink,
                                args.workflow, out_tsv, args.timeout)  # fmt: skip
                row = {"samples": n_samples, "genes": args.genes, "cells": cells, "inference": inference,
                       "repeat": rep, "lfc_shrink": args.lfc_shrink, "matrix_mib": matrix_mib,
                       **res}  # fmt: skip
                if res["status"] == "ok":
                    row["peak_over_matrix"] = res["peak_rss_mib"] / matrix_mib
                    row["bytes_per_cell_above_baseline"] = (
                        (res["peak_rss_mib"] - res["rss_imports_mib"]) * 2**20 / cells
                    )
                    line = (f"{res['elapsed_s']:>9.1f}{res['rss_imports_mib']:>10.0f}"
                            f"{res['peak_rss_mib']:>10.0f}{row['peak_over_matrix']:>12.1f}"
                            f"{row['bytes_per_cell_above_baseline']:>8.1f}")  # fmt: skip
                else:
                    guess = extrapolate(rows, inference, n_samples)
                    row["extrapolated_s"] = guess
                    extra = f" (linear extrapolation ~{guess:.0f} s)" if guess else ""
                    status = f">{int(args.timeout)}" if res["status"] == "timeout" else "failed"
                    line = f"{status:>9}{'':>40}{extra}"
                    if res["status"] == "failed":
                        print(res["stderr"], file=sys.stderr)
                rows.append(row)
                print(
                    f"{n_samples:>8}{inference:>10}{matrix_mib:>12.1f}{line}  {res['load_before'][0]:.1f}",
                    flush=True,
                )
        if args.r:
            ref = run_r_reference(h5ad, ["age", "sex"], workdir)
            rows.append({"samples": n_samples, "genes": args.genes, "cells": cells, "inference": "R_1thread",
                         "status": "r", **ref})  # fmt: skip
            print(f"{n_samples:>8}{'R 1 thr':>10}{matrix_mib:>12.1f}{ref['elapsed_s']:>9.1f}{'':>10}"
                  f"{ref['peak_rss_mib']:>10.0f}{'':>20}  {ref['load'][0]:.1f}", flush=True)  # fmt: skip
    print_slopes(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
