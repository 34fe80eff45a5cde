"""Benchmark: streaming QC and pseudobulk of a large synthetic single-cell .h5ad (time and peak RSS).

Writes a synthetic cells x genes sparse .h5ad chunk by chunk with h5py in AnnData's on-disk layout (CSR
``X`` + ``obs``/``var`` dataframes), never holding the matrix in memory, then runs
``il6axis.singlecell.qc.qc_metrics_backed`` and ``il6axis.singlecell.pseudobulk.pseudobulk`` on it, each
in a fresh Python process, and reports wall time and peak resident memory (VmHWM). Peak RSS that stays
flat from 100k to 1M cells while the file grows 10x shows that memory is bounded by the chunk, not the
file.

    python bench/bench_pseudobulk.py                       # 100k and 1M cells x 30k genes, ~500 nnz/cell
    python bench/bench_pseudobulk.py --cells 20000 --genes 5000   # quick check

Counts per non-zero are 1 + geometric (mostly 1s, as in UMI data), genes are drawn from a skewed
(log-normal) expression law with 13 MT- genes; 40 donors x 8 cell types, donors split mild/severe/healthy.
Files larger than --max-file-gb or than half the free space of --workdir are skipped; files are deleted
afterwards unless --keep. Timings are with a warm page cache (the file was just written).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
N_MITO = 13


def _gene_names(n_genes: int) -> list[str]:
    return [f"MT-G{i:02d}" for i in range(N_MITO)] + [f"SIMG{i:05d}" for i in range(n_genes - N_MITO)]


def _obs(n_cells: int, n_donors: int, n_types: int, rng: np.random.Generator) -> pd.DataFrame:
    donor = rng.integers(0, n_donors, n_cells)
    condition = np.array(["Severe", "Mild", "Healthy"])[np.arange(n_donors) % 3]
    obs = pd.DataFrame(
        {
            "donor": pd.Categorical.from_codes(donor, [f"D{i:03d}" for i in range(n_donors)]),
            "cell_type": pd.Categorical.from_codes(
                rng.integers(0, n_types, n_cells), [f"type{i}" for i in range(n_types)]
            ),
            "condition": pd.Categorical(condition[donor]),
        },
        index=pd.Index([f"c{i:08d}" for i in range(n_cells)]),
    )
    return obs


def _draws_for_distinct(p: np.ndarray, target: int) -> int:
    """Draws per cell whose expected number of distinct genes is ``target`` (repeats merge into one entry)."""
    lo, hi = target, target * 100
    while lo < hi:
        mid = (lo + hi) // 2
        if np.sum(-np.expm1(mid * np.log1p(-p))) < target:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS: current, VmHWM: peak) in MB.

    Peak RSS is read as VmHWM rather than getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent
    across fork + exec, so a child started by this (file-writing) process would report the parent's peak.
    """
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def write_synthetic_h5ad(
    path: Path,
    n_cells: int,
    n_genes: int,
    nnz_per_cell: int,
    seed: int = 0,
    chunk: int = 50_000,
    dtype: str = "float32",
    n_donors: int = 40,
    n_types: int = 8,
) -> dict[str, float]:
    """Write the file chunk by chunk; returns non-zeros, size and seconds."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 2.0, n_genes)
    weights[:N_MITO] = weights.sum() * 0.04 / N_MITO  # ~4% mitochondrial draws
    cdf = np.cumsum(weights) / weights.sum()
    draws = _draws_for_distinct(weights / weights.sum(), nnz_per_cell)
    start = time.perf_counter()
    with h5py.File(path, "w") as fh:
        fh.attrs["encoding-type"] = "anndata"
        fh.attrs["encoding-version"] = "0.1.0"
        grp = fh.create_group("X")
        grp.attrs["encoding-type"] = "csr_matrix"
        grp.attrs["encoding-version"] = "0.1.0"
        grp.attrs["shape"] = np.array([n_cells, n_genes], dtype=np.int64)
        data = grp.create_dataset("data", shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1 << 20,))
        indices = grp.create_dataset(
            "indices", shape=(0,), maxshape=(None,), dtype="int32", chunks=(1 << 20,)
        )
        indptr = np.zeros(n_cells + 1, dtype=np.int64)
        nnz = 0
        for a in range(0, n_cells, chunk):
            b = min(a + chunk, n_cells)
            genes = np.searchsorted(cdf, rng.random((b - a, draws)))
            genes = np.minimum(genes, n_genes - 1)
            genes.sort(axis=1)
            first = np.ones_like(genes, dtype=bool)
            first[:, 1:] = genes[:, 1:] != genes[:, :-1]
            per_cell = first.sum(axis=1)
            cols = genes[first].astype(np.int32)
            vals = rng.geometric(0.7, len(cols)).astype(dtype)  # 1, 2, ... mostly 1
            indptr[a + 1 : b + 1] = nnz + np.cumsum(per_cell)
            data.resize((nnz + len(cols),))
            indices.resize((nnz + len(cols),))
            data[nnz:] = vals
            indices[nnz:] = cols
            nnz += len(cols)
        grp.create_dataset("indptr", data=indptr)
        ad.io.write_elem(fh, "obs", _obs(n_cells, n_donors, n_types, rng))
        ad.io.write_elem(fh, "var", pd.DataFrame(index=pd.Index(_gene_names(n_genes))))
        for key in ("uns", "layers", "obsm", "varm", "obsp", "varp"):
            ad.io.write_elem(fh, key, {})
    return {"nnz": float(nnz), "file_gb": path.stat().st_size / 1e9, "write_s": time.perf_counter() - start}


def measure(step: str, path: Path, chunk_size: int, max_nnz: int) -> dict[str, float]:
    """Run one step in this (fresh) process; report seconds and peak RSS."""
    sys.path.insert(0, str(ROOT / "workflow"))
    import anndata as ad
    import scanpy  # noqa: F401  (imported lazily by the QC step; keep import time out of the timing)

    from il6axis.singlecell.pseudobulk import pseudobulk
    from il6axis.singlecell.qc import qc_metrics_backed

    baseline = _status_mb("VmRSS")
    start = time.perf_counter()
    if step == "qc":
        out = qc_metrics_backed(path, chunk_size=chunk_size, max_nnz=max_nnz)
        detail = float(len(out))
    elif step == "pseudobulk":
        counts, _ = pseudobulk(path, ("donor", "cell_type"), chunk_size=chunk_size, max_nnz=max_nnz)
        detail = float(counts.shape[0])
    elif step == "read_in_memory":  # the non-streaming comparison: anndata.read_h5ad of the whole file
        detail = float(ad.read_h5ad(path).X.nnz)
    else:
        raise ValueError(step)
    seconds = time.perf_counter() - start
    peak = _status_mb("VmHWM")
    return {"seconds": seconds, "peak_rss_mb": peak, "rss_after_imports_mb": baseline, "detail": detail}


def _in_fresh_process(step: str, path: Path, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--measure", step, "--file", str(path),
           "--chunk-size", str(args.chunk_size), "--max-nnz", str(args.max_nnz)]  # fmt: skip
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--genes", type=int, default=30_000)
    parser.add_argument("--nnz-per-cell", type=int, default=500)
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--max-nnz", type=int, default=20_000_000)
    parser.add_argument("--dtype", choices=["float32", "int32"], default="float32")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--max-file-gb", type=float, default=10.0)
    parser.add_argument("--in-memory-max-cells", type=int, default=100_000,
                        help="also time anndata.read_h5ad of the whole file up to this size")  # fmt: skip
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.file, args.chunk_size, args.max_nnz)))
        return

    # Turn SIGTERM into an exception so the finally clause below deletes the multi-GB file.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows = []
    for n_cells in args.cells:
        estimate_gb = n_cells * args.nnz_per_cell * 8 / 1e9
        free_gb = shutil.disk_usage(args.workdir).free / 1e9
        if estimate_gb > args.max_file_gb or estimate_gb > free_gb / 2:
            print(f"skip {n_cells} cells: ~{estimate_gb:.1f} GB file, {free_gb:.0f} GB free", file=sys.stderr)
            continue
        path = args.workdir / f"bench_pseudobulk_{n_cells}x{args.genes}.h5ad"
        try:
            written = write_synthetic_h5ad(path, n_cells, args.genes, args.nnz_per_cell, dtype=args.dtype)
            print(
                f"{n_cells} cells: wrote {written['file_gb']:.2f} GB in {written['write_s']:.0f} s",
                file=sys.stderr,
            )
            steps = ["qc", "pseudobulk"]
            if n_cells <= args.in_memory_max_cells:
                steps.append("read_in_memory")
            for step in steps:
                result = _in_fresh_process(step, path, args)
                rows.append({"cells": n_cells, "genes": args.genes, "nnz_per_cell": written["nnz"] / n_cells,
                             "file_gb": written["file_gb"], "step": step, **result})  # fmt: skip
                print(rows[-1], file=sys.stderr)
        finally:
            if not args.keep:
                path.unlink(missing_ok=True)
    table = pd.DataFrame(rows)
    if table.empty:
        return
    table["peak_over_imports_mb"] = table["peak_rss_mb"] - table["rss_after_imports_mb"]
    table["rss_over_file"] = table["peak_rss_mb"] / (table["file_gb"] * 1000)
    cpu = os.cpu_count()
    print(f"\nchunk_size={args.chunk_size}, max_nnz={args.max_nnz}, dtype={args.dtype}, {cpu} CPUs")
    print(table.to_markdown(index=False, floatfmt=".3g") if _has_tabulate() else table.to_string(index=False))
    if args.json:
        table.to_json(args.json, orient="records", indent=2)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
