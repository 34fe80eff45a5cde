"""Read QC and trimming of one sequencing run with fastp, with an input check fastp does not make.

Why the check: fastp 0.23 stops quietly at the end of a truncated FASTQ.gz and, for paired-end runs,
at the end of the shorter mate file, reporting success either way. A truncated download or a mismatched
pair of local files would then reach salmon as a smaller library. While fastp runs, the run's input files
are decompressed once more on another thread and their records counted: a gzip stream that ends early,
a file that is not FASTQ, or mates with different read counts stop the job with an
:class:`~il6axis.errors.InputError`, and fastp's outputs are removed (no partial output).
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import subprocess
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from il6axis.errors import InputError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 22  # 4 MiB of decompressed data per read


def count_fastq_records(path: str | Path) -> int:
    """Number of FASTQ records in a (gzipped) file; the gzip stream and the line count are checked."""
    path = Path(path)
    with path.open("rb") as probe:
        head = probe.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    lines = 0
    first = b""
    last = b"\n"
    try:
        with opener(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                if not first:
                    first = chunk[:1]
                lines += chunk.count(b"\n")
                last = chunk[-1:]
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise InputError(
            f"{path}: the gzip stream is truncated or corrupt ({exc}). Fix: download or copy the file "
            "again (for ENA runs, delete it and rerun: its md5 is checked on download)."
        ) from exc
    if first and first != b"@":
        raise InputError(
            f"{path}: does not start with '@', so it is not FASTQ. Fix: give the run's FASTQ files."
        )
    if last != b"\n":
        lines += 1  # a last line without newline still counts
    if lines % 4:
        raise InputError(
            f"{path}: {lines} lines, not a multiple of 4, so the last FASTQ record is incomplete (truncated "
            "file). Fix: download or copy the file again."
        )
    return lines // 4


def check_pairs(run: str, paths: Sequence[str | Path], counts: Sequence[int]) -> int:
    """The run's read (pair) count; mates must hold the same number of reads."""
    if len(counts) == 2 and counts[0] != counts[1]:
        raise InputError(
            f"run {run}: mate files hold different numbers of reads ({paths[0]}: {counts[0]}, {paths[1]}: "
            f"{counts[1]}). Reads of a pair must be in the same order in both files. Fix: use the two "
            "files of one run, complete (download them again), not one trimmed or filtered separately."
        )
    if counts and counts[0] == 0:
        raise InputError(f"run {run}: {paths[0]} holds no reads. Fix: check the file or leave the run out.")
    return counts[0]


def fastp_command(
    inputs: Sequence[str],
    outputs: Sequence[str],
    json_path: str,
    html_path: str,
    threads: int,
    extra_args: Sequence[str] = (),
    report_title: str = "fastp",
) -> list[str]:
    """fastp's argument list for a single- (one input) or paired-end (two inputs) run.

    Paired runs get ``--detect_adapter_for_pe`` (adapter detection by overlap is fastp's default only
    for single-end data).
    """
    if len(inputs) not in (1, 2) or len(outputs) != len(inputs):
        raise ValueError(f"fastp takes one or two input files and as many outputs, got {inputs} -> {outputs}")
    cmd = ["fastp", "--in1", inputs[0], "--out1", outputs[0]]
    if len(inputs) == 2:
        cmd += ["--in2", inputs[1], "--out2", outputs[1], "--detect_adapter_for_pe"]
    cmd += [
        "--json",
        json_path,
        "--html",
        html_path,
        "--thread",
        str(threads),
        "--report_title",
        report_title,
    ]
    return cmd + list(extra_args)


def read_fastp_summary(json_path: str | Path) -> dict:
    """Reads before and after filtering (single reads, both mates counted), Q30 rate, duplication."""
    report = json.loads(Path(json_path).read_text())
    summary = report["summary"]
    return {
        "reads_before_filtering": int(summary["before_filtering"]["total_reads"]),
        "reads_after_filtering": int(summary["after_filtering"]["total_reads"]),
        "q30_rate_after": float(summary["after_filtering"]["q30_rate"]),
        "duplication_rate": float(report.get("duplication", {}).get("rate", float("nan"))),
    }


def run_fastp(
    run: str,
    inputs: Sequence[str],
    out_dir: str | Path,
    json_path: str | Path,
    html_path: str | Path,
    threads: int,
    extra_args: Sequence[str] = (),
    log_path: str | Path | None = None,
) -> dict:
    """Trim one run into ``out_dir`` (``{run}_1.fastq.gz`` [+ ``_2``]) while checking its input files.

    Returns the read counts. On any failure ``out_dir`` and the reports are removed.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = [str(out_dir / f"{run}_{mate}.fastq.gz") for mate in range(1, len(inputs) + 1)]
    cmd = fastp_command(inputs, outputs, str(json_path), str(html_path), threads, extra_args, run)
    logger.info("run %s: %s", run, " ".join(cmd))
    try:
        with ThreadPoolExecutor(max_workers=len(inputs)) as pool:
            counting = [pool.submit(count_fastq_records, p) for p in inputs]
            with open(log_path or "/dev/null", "a") as log:
                proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
            counts = [c.result() for c in counting]
        n_reads = check_pairs(run, inputs, counts)
        if proc.returncode != 0:
            raise RuntimeError(f"fastp failed on run {run} (exit {proc.returncode}); see the log")
        summary = read_fastp_summary(json_path)
        if summary["reads_before_filtering"] != n_reads * len(inputs):
            raise InputError(
                f"run {run}: fastp read {summary['reads_before_filtering']} reads but the input holds "
                f"{n_reads * len(inputs)}. Fix: check the input files {list(inputs)}."
            )
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        for path in (json_path, html_path):
            Path(path).unlink(missing_ok=True)
        raise
    logger.info(
        "run %s: %d read(s) per mate in, %d reads kept of %d",
        run,
        n_reads,
        summary["reads_after_filtering"],
        summary["reads_before_filtering"],
    )
    return {"run": run, "reads_per_mate": n_reads, **summary}
