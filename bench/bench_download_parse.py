"""Benchmark: verified downloads through the fake GEO server, and parsing a large count table. Run by hand:

.venv/bin/python bench/bench_download_parse.py --genes 60000 --samples 200

Prints three small tables:

1. Download throughput over loopback through ``tests/geo_server.FakeGeo`` (in-process server thread) with
   ``il6axis.acquire.download.fetch``: the real GSE152418 NCBI counts (1.4 MB), the real NCBI gene_info
   (2.9 MB)
   and a synthetic ~100 MB gzip file (seeded random digit/tab text, ~2.0x compressible; real count
   tables are ~2.9x). MB/s (10^6 B) include the whole verification (whole gzip stream decoded, sha256
   compared with a pinned checksum, header line, fsync, atomic rename). For comparison, ``copy_local``
   runs the same checks on a plain file copy, without HTTP. Small files are fetched repeatedly until the
   runs add up to 2 s (``runs`` column); the median is shown.
2. Parse time and peak memory for a synthetic NCBI-format table (``GeneID`` + integer NB counts, tab
   separated, gzip level 6; the first 65.6 % of rows, 39,376 of 60,000, carry real GeneIDs from gene_info,
   the rest unmapped IDs): ``read_count_table`` alone, ``to_integer_counts`` and
   ``map_to_symbols(..., "entrez", gene_info)``. Each step runs in a fresh spawned process;
   ``peak`` is ``getrusage(RUSAGE_SELF).ru_maxrss`` at its end, ``before`` the same value just before the
   timed call (imports, plus the input matrix loaded from ``.npy`` for the later steps), ``matrix`` is
   ``df.memory_usage().sum()`` of the step's input table (for the read step it includes the ~2 MiB hash
   table of the gene-ID index, built by the duplicate check).
   Peaks are of the whole process, so ``(peak-before)/matrix`` is what the step itself adds, in matrices.
3. The workflow's parse path on the real GSE152418 file (read, load gene_info, map, integer), in one
   fresh process.

``--out-dir`` keeps the generated inputs and downloaded copies in that directory; by default everything
goes to a temporary directory that is deleted at the end. Nothing touches the network beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.metadata
import multiprocessing
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "workflow", ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

DEFAULT_DATA_ROOT = ROOT.parent / "shared" / "data"
ACCESSION = "GSE152418"
SYNTHETIC_ACCESSION = "GSE999999"  # only ever served by the local fake server
REAL_ROWS_FRACTION = 39_376 / 60_000  # GSE152418 has 39,376 genes: mapped rows in the synthetic table
UNMAPPED_ID_START = 900_000_000  # far above any human GeneID (max ~1.2e8)
SEED = 20_240_601
MB = 1e6
MIB = float(2**20)
_CHUNK = 4 * 2**20
MIN_TOTAL_S = 2.0  # small downloads are repeated until their runs add up to this
MAX_RUNS = 50

T = TypeVar("T")


# ------------------------------------------------------------------------------------------ helpers
def _maxrss_mib() -> float:
    """Peak RSS of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _vm_hwm_mib() -> float:
    """VmHWM from /proc (the current address space's peak only), to cross-check ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _in_fresh_process(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a new spawned interpreter (so its ru_maxrss is its own) and return the result."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return cell == "-"
    return True


def _print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """Markdown table with right-aligned numbers, ready to paste into the issue notes."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        cells = [c.rjust(w) if _is_number(c) else c.ljust(w) for c, w in zip(row, widths, strict=True)]
        print("| " + " | ".join(cells) + " |")


def _machine() -> str:
    cpu = "unknown CPU"
    mem_gib = float("nan")
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        mem_kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
        mem_gib = mem_kib / 2**20
    except (OSError, StopIteration):
        pass
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("pandas", "numpy"))
    return (
        f"{len(os.sched_getaffinity(0))} cores ({cpu}), {mem_gib:.1f} GiB RAM; "
        f"Python {platform.python_version()}, {versions}"
    )


# ------------------------------------------------------------------------------------------ downloads
@dataclass(frozen=True)
class DownloadRow:
    name: str
    n_bytes: int
    fetch_s: list[float]
    copy_s: list[float]


def _write_synthetic_gzip(path: Path, target_bytes: float, seed: int) -> float:
    """Seeded random digit/tab/newline text, gzip level 6, until the compressed file reaches the target."""
    table = bytearray(256)
    for b in range(256):
        table[b] = ord("\n") if b == 0 else ord("\t") if b <= 24 else ord("0") + b % 10
    rng = random.Random(seed)
    start = time.perf_counter()
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
        gz.write(b"GeneID\t" + b"\t".join(b"S%d" % i for i in range(200)) + b"\n")
        while raw.tell() < target_bytes:
            gz.write(rng.randbytes(_CHUNK).translate(table))
    return time.perf_counter() - start


def _more(times: list[float], repeats: int) -> bool:
    """At least ``repeats`` runs, and for small files more (up to 50) until they add up to 2 s."""
    return len(times) < repeats or (sum(times) < MIN_TOTAL_S and len(times) < MAX_RUNS)


def bench_downloads(data_root: Path, work: Path, download_mb: float, repeats: int) -> list[DownloadRow]:
    """Fetch each file through FakeGeo and copy it with copy_local, each at least ``repeats`` times."""
    from geo_server import FakeGeo

    from il6axis.acquire.download import copy_local, fetch
    from il6axis.acquire.geo import (
        GENE_INFO_NAME,
        gene_info_url,
        ncbi_counts_name,
        ncbi_counts_url,
        supplementary_url,
    )
    from il6axis.acquire.payload_checks import expect_first_line_prefix

    synthetic = work / "synthetic_download.tsv.gz"
    gen_s = _write_synthetic_gzip(synthetic, download_mb * MB, SEED)
    print(f"generated {synthetic.name}: {synthetic.stat().st_size / MB:.1f} MB in {gen_s:.1f} s")
    dest_dir = work / "downloads"
    rows: list[DownloadRow] = []
    with FakeGeo(data_root) as geo:
        geo.add_file(supplementary_url(SYNTHETIC_ACCESSION, synthetic.name, geo.base_url), synthetic)
        items = [
            (
                f"{ACCESSION} NCBI counts",
                ncbi_counts_url(ACCESSION, geo.base_url),
                data_root / ACCESSION / ncbi_counts_name(ACCESSION),
                "GeneID",
            ),
            (
                "NCBI gene_info",
                gene_info_url(geo.base_url),
                data_root / "NCBI_gene_info" / GENE_INFO_NAME,
                "#tax_id",
            ),
            (
                f"synthetic {download_mb:g} MB gzip",
                supplementary_url(SYNTHETIC_ACCESSION, synthetic.name, geo.base_url),
                synthetic,
                "GeneID",
            ),
        ]
        for name, url, source, prefix in items:
            size = source.stat().st_size
            checksum = _sha256(source)  # pinned checksum: fetch must compute and compare it
            dest = dest_dir / source.name
            fetch_s: list[float] = []
            copy_s: list[float] = []
            while _more(fetch_s, repeats):
                dest.unlink(missing_ok=True)
                start = time.perf_counter()
                result = fetch(
                    url,
                    dest,
                    expected_sha256=checksum,
                    expect_gzip=True,
                    header_check=expect_first_line_prefix(prefix),
                    retries=1,
                    timeout_s=120,
                )
                fetch_s.append(time.perf_counter() - start)
                if result.n_bytes != size or result.sha256 != checksum:
                    raise RuntimeError(f"{name}: fetched {result.n_bytes} bytes, expected {size}")
            while _more(copy_s, repeats):
                dest.unlink(missing_ok=True)
                start = time.perf_counter()
                copy_local(
                    source,
                    dest,
                    expected_sha256=checksum,
                    expect_gzip=True,
                    header_check=expect_first_line_prefix(prefix),
                )
                copy_s.append(time.perf_counter() - start)
            dest.unlink(missing_ok=True)
            rows.append(DownloadRow(name, size, fetch_s, copy_s))
    return rows


# ------------------------------------------------------------------------------------------ parse steps
# Each _work_* function runs in its own spawned process; heavy imports happen inside them only, so the
# parent stays small (its RSS does not leak into the children's ru_maxrss).


def _work_generate_table(
    path: str, genes: int, samples: int, gene_info_path: str, seed: int
) -> dict[str, Any]:
    """Write the synthetic NCBI-format table; return facts about it."""
    import numpy as np
    import pandas as pd

    start = time.perf_counter()
    info = pd.read_csv(
        gene_info_path, sep="\t", usecols=["#tax_id", "GeneID"], dtype=str, keep_default_na=False, quoting=3
    )
    real_ids = info.loc[info["#tax_id"] == "9606", "GeneID"].to_numpy(dtype=object)
    rng = np.random.default_rng(seed)
    n_real = min(round(genes * REAL_ROWS_FRACTION), len(real_ids))
    fake_ids = [str(UNMAPPED_ID_START + i) for i in range(genes - n_real)]
    if set(fake_ids) & set(real_ids.tolist()):
        raise RuntimeError("synthetic unmapped GeneIDs collide with gene_info")
    ids = [*rng.choice(real_ids, size=n_real, replace=False).tolist(), *fake_ids]

    # NB counts: gene means log-normal, per-sample size factors, dispersion 0.2.
    mu = np.exp(np.clip(rng.normal(2.0, 2.5, size=(genes, 1)), -3.0, 12.0))
    mu = mu * np.exp(rng.normal(0.0, 0.25, size=(1, samples)))
    phi = 0.2
    counts = rng.negative_binomial(1.0 / phi, 1.0 / (1.0 + mu * phi)).astype(np.int64)
    del mu

    header = "GeneID\t" + "\t".join(f"GSM{9_000_000 + j}" for j in range(samples)) + "\n"
    with gzip.open(path, "wt", compresslevel=6, encoding="ascii", newline="") as fh:
        fh.write(header)
        step = 1000
        for lo in range(0, genes, step):
            block = counts[lo : lo + step].tolist()
            fh.write(
                "".join(
                    gid + "\t" + "\t".join(map(str, row)) + "\n"
                    for gid, row in zip(ids[lo : lo + step], block, strict=True)
                )
            )
    return {
        "seconds": time.perf_counter() - start,
        "bytes": Path(path).stat().st_size,
        "n_real": n_real,
        "n_unmapped": genes - n_real,
        "zero_fraction": float((counts == 0).mean()),
        "median": float(np.median(counts)),
        "max": int(counts.max()),
    }


def _step_result(step: str, seconds: float, matrix_bytes: int, before: float, note: str) -> dict[str, Any]:
    return {
        "step": step,
        "seconds": seconds,
        "matrix_bytes": matrix_bytes,
        "before_mib": before,
        "peak_mib": _maxrss_mib(),
        "hwm_mib": _vm_hwm_mib(),
        "note": note,
    }


def _load_cached(cache: Path) -> Any:
    """The table read in the first step, rebuilt from .npy + id lists without an extra copy."""
    import numpy as np
    import pandas as pd

    arr = np.load(cache / "matrix.npy")
    ids = (cache / "gene_ids.txt").read_text().split("\n")
    samples = (cache / "samples.txt").read_text().split("\n")
    return pd.DataFrame(
        arr, index=pd.Index(ids, dtype=object, name="gene_id"), columns=pd.Index(samples), copy=False
    )


def _work_read(table: str, cache_dir: str) -> dict[str, Any]:
    import numpy as np

    from il6axis.acquire.count_tables import read_count_table

    before = _maxrss_mib()
    start = time.perf_counter()
    df = read_count_table(table)
    seconds = time.perf_counter() - start
    result = _step_result(
        "read_count_table", seconds, int(df.memory_usage().sum()), before, f"{df.shape[0]} x {df.shape[1]}"
    )
    cache = Path(cache_dir)
    np.save(cache / "matrix.npy", df.to_numpy(), allow_pickle=False)
    (cache / "gene_ids.txt").write_text("\n".join(map(str, df.index)))
    (cache / "samples.txt").write_text("\n".join(map(str, df.columns)))
    return result


def _work_integer(cache_dir: str) -> dict[str, Any]:
    from il6axis.acquire.count_tables import to_integer_counts

    df = _load_cached(Path(cache_dir))
    before = _maxrss_mib()
    start = time.perf_counter()
    out, info = to_integer_counts(df, source_name="synthetic")
    seconds = time.perf_counter() - start
    return _step_result(
        "to_integer_counts",
        seconds,
        int(df.memory_usage().sum()),
        before,
        f"{out.dtypes.iloc[0]}, rounded={info['rounded']}",
    )


def _work_map(cache_dir: str, gene_info_path: str) -> list[dict[str, Any]]:
    from il6axis.cohort.gene_ids import load_gene_info, map_to_symbols

    before = _maxrss_mib()
    start = time.perf_counter()
    gene_info = load_gene_info(gene_info_path)
    rows = [
        _step_result("(load_gene_info)", time.perf_counter() - start, 0, before, f"{gene_info.n_genes} genes")
    ]
    df = _load_cached(Path(cache_dir))
    before = _maxrss_mib()
    start = time.perf_counter()
    summed, report = map_to_symbols(df, "entrez", gene_info)
    seconds = time.perf_counter() - start
    note = f"{report.n_mapped} mapped, {report.n_unmapped} unmapped -> {summed.shape[0]} symbols"
    rows.append(_step_result('map_to_symbols("entrez")', seconds, int(df.memory_usage().sum()), before, note))
    return rows


def _work_real_path(counts_path: str, gene_info_path: str) -> dict[str, Any]:
    """The workflow's order (il6axis.cohort.build.build_cohort): read, load gene_info, map, integer."""
    from il6axis.acquire.count_tables import read_count_table, to_integer_counts
    from il6axis.cohort.gene_ids import load_gene_info, map_to_symbols

    before = _maxrss_mib()
    t0 = time.perf_counter()
    raw = read_count_table(counts_path)
    t1 = time.perf_counter()
    gene_info = load_gene_info(gene_info_path)
    t2 = time.perf_counter()
    by_symbol, report = map_to_symbols(raw, "entrez", gene_info)
    t3 = time.perf_counter()
    counts, _ = to_integer_counts(by_symbol, source_name=Path(counts_path).name)
    t4 = time.perf_counter()
    times = {
        "read_count_table": t1 - t0,
        "load_gene_info": t2 - t1,
        'map_to_symbols("entrez")': t3 - t2,
        "to_integer_counts": t4 - t3,
        "total": t4 - t0,
    }
    return {
        "times": times,
        "raw_shape": raw.shape,
        "out_shape": counts.shape,
        "n_unmapped": report.n_unmapped,
        **_step_result("whole path", t4 - t0, int(raw.memory_usage().sum()), before, ""),
    }


# ------------------------------------------------------------------------------------------ main
def _fmt_download(rows: list[DownloadRow], repeats: int) -> None:
    table = []
    for r in rows:
        mb = r.n_bytes / MB
        fetch_med = statistics.median(r.fetch_s)
        table.append(
            [
                r.name,
                f"{mb:.1f}",
                f"{len(r.fetch_s)}",
                f"{fetch_med:.3f}",
                f"{mb / fetch_med:.0f}",
                f"{mb / min(r.fetch_s):.0f}",
                f"{mb / statistics.median(r.copy_s):.0f}",
            ]
        )
    _print_table(
        f"1. Verified download through FakeGeo on 127.0.0.1 (median over runs, >= {repeats} and >= "
        f"{MIN_TOTAL_S:g} s per file; MB = 10^6 B)",
        ["file", "MB", "runs", "fetch s", "fetch MB/s", "best MB/s", "copy_local MB/s"],
        table,
    )


def _fmt_steps(title: str, steps: list[dict[str, Any]]) -> None:
    table = []
    for s in steps:
        matrix = s["matrix_bytes"] / MIB
        ratio = f"{s['peak_mib'] / matrix:.2f}" if matrix else "-"
        delta = f"{(s['peak_mib'] - s['before_mib']) / matrix:.2f}" if matrix else "-"
        table.append(
            [
                s["step"],
                f"{s['seconds']:.2f}",
                f"{matrix:.1f}" if matrix else "-",
                f"{s['before_mib']:.0f}",
                f"{s['peak_mib']:.0f}",
                ratio,
                delta,
                s["note"],
            ]
        )
    _print_table(
        title,
        ["step", "s", "matrix MiB", "before MiB", "peak MiB", "peak/matrix", "(peak-before)/matrix", "note"],
        table,
    )


def run(args: argparse.Namespace, work: Path) -> None:
    data_root: Path = args.data_root
    counts_real = data_root / ACCESSION / f"{ACCESSION}_raw_counts_GRCh38.p13_NCBI.tsv.gz"
    gene_info = data_root / "NCBI_gene_info" / "Homo_sapiens.gene_info.gz"
    for needed in (counts_real, gene_info):
        if not needed.is_file():
            sys.exit(f"{needed} not found: point --data-root at the shared data directory")
    print(f"machine: {_machine()}")
    print(f"work dir: {work}")

    downloads = bench_downloads(data_root, work, args.download_mb, args.repeats)
    _fmt_download(downloads, args.repeats)

    table = work / f"synthetic_{args.genes}x{args.samples}_NCBI.tsv.gz"
    facts = _in_fresh_process(
        _work_generate_table, str(table), args.genes, args.samples, str(gene_info), SEED
    )
    print(
        f"\ngenerated {table.name}: {facts['bytes'] / MB:.1f} MB gzip in {facts['seconds']:.1f} s; "
        f"{facts['n_real']} real GeneIDs + {facts['n_unmapped']} unmapped; "
        f"zeros {facts['zero_fraction']:.1%}, median count {facts['median']:.0f}, max {facts['max']}"
    )
    cache = work / "parsed_cache"
    cache.mkdir(exist_ok=True)
    steps = [_in_fresh_process(_work_read, str(table), str(cache))]
    steps.append(_in_fresh_process(_work_integer, str(cache)))
    steps.extend(_in_fresh_process(_work_map, str(cache), str(gene_info)))
    _fmt_steps(
        f"2. Synthetic {args.genes} genes x {args.samples} samples, one fresh process per step "
        "(peak = ru_maxrss at the end of the step)",
        steps,
    )

    real = _in_fresh_process(_work_real_path, str(counts_real), str(gene_info))
    rows = [[name, f"{secs:.3f}"] for name, secs in real["times"].items()]
    _print_table(
        f"3. Real {ACCESSION} parse path ({real['raw_shape'][0]} x {real['raw_shape'][1]} -> "
        f"{real['out_shape'][0]} symbols, {real['n_unmapped']} unmapped), one fresh process: "
        f"peak {real['peak_mib']:.0f} MiB, before {real['before_mib']:.0f} MiB, "
        f"matrix {real['matrix_bytes'] / MIB:.1f} MiB",
        ["step", "s"],
        rows,
    )
    worst = max(abs(s["peak_mib"] - s["hwm_mib"]) for s in [*steps, real])
    print(f"\nru_maxrss vs /proc VmHWM: largest difference {worst:.1f} MiB over all measured processes")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--genes", type=int, default=60_000, help="rows of the synthetic count table")
    parser.add_argument("--samples", type=int, default=200, help="sample columns of the synthetic table")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="keep generated inputs and downloads here (default: a temporary directory, deleted)",
    )
    parser.add_argument(
        "--download-mb", type=float, default=100.0, help="size of the synthetic gzip download"
    )
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of each download (median shown)")
    parser.add_argument(
        "--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="shared real data directory"
    )
    args = parser.parse_args()
    if args.genes < 1 or args.samples < 1 or args.repeats < 1 or args.download_mb <= 0:
        parser.error("--genes, --samples, --repeats and --download-mb must be positive")
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        run(args, args.out_dir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="bench_download_parse-") as tmp:
            run(args, Path(tmp))


if __name__ == "__main__":
    main()
