"""salmon (selective alignment): building the transcriptome index and quantifying one sample.

Why: salmon is the quantifier the issue names; its selective-alignment mode (the default since 1.0) with
an optional decoy-aware index avoids the false mappings of pure k-mer matching. The library type is
always auto-detected (``-l A``); what salmon detected is read back from ``lib_format_counts.json`` and
``aux_info/meta_info.json``, recorded per sample, and compared with the strandedness stated in config,
because a wrong strandedness assumption (e.g. an unstranded kit declared as reverse-stranded) halves
the usable reads or swaps antisense transcripts in without any error from the tools.

Technical replicates: all runs of a sample are given to one ``salmon quant`` call, which quantifies
their reads together (the counts of the runs are summed).
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from il6axis.errors import InputError
from il6axis.reads.annotation import fasta_headers

logger = logging.getLogger(__name__)

# Salmon library type -> strandedness (paired-end 'I' inward; single-end has no orientation letter).
STRANDEDNESS_OF_LIBTYPE = {
    "IU": "unstranded",
    "ISF": "forward",
    "ISR": "reverse",
    "U": "unstranded",
    "SF": "forward",
    "SR": "reverse",
}
STRANDEDNESS = ("unstranded", "forward", "reverse")


def index_command(
    gentrome: str, out_dir: str, threads: int, kmer: int, gencode: bool, decoys: str | None = None
) -> list[str]:
    """``salmon index`` arguments. With decoys, ``gentrome`` is transcripts followed by the decoy genome."""
    cmd = ["salmon", "index", "--transcripts", gentrome, "--index", out_dir, "--kmerLen", str(kmer)]
    cmd += ["--threads", str(threads)]
    if decoys:
        cmd += ["--decoys", decoys]
    if gencode:
        cmd.append("--gencode")
    return cmd


def decoy_names(genome_fasta_headers: Sequence[str]) -> list[str]:
    """Decoy sequence names as salmon expects them: the first word of each genome FASTA header."""
    return [h.split()[0] for h in genome_fasta_headers if h.strip()]


def quant_command(
    index: str,
    mates: Sequence[Sequence[str]],
    out_dir: str,
    threads: int,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """``salmon quant`` arguments for one sample.

    ``mates`` is ``[read1 files]`` (single-end) or ``[read1 files, read2 files]`` (paired-end), one file
    per run in the same order, so the runs of a sample are quantified together.
    """
    if len(mates) not in (1, 2) or not mates[0]:
        raise ValueError(f"quant needs read-1 files and optionally read-2 files, got {mates}")
    if len(mates) == 2 and len(mates[0]) != len(mates[1]):
        raise ValueError(f"read-1 and read-2 file lists differ in length: {mates}")
    cmd = ["salmon", "quant", "--index", index, "--libType", "A"]
    if len(mates) == 2:
        cmd += ["--mates1", *mates[0], "--mates2", *mates[1]]
    else:
        cmd += ["--unmatedReads", *mates[0]]
    cmd += ["--threads", str(threads), "--output", out_dir]
    return cmd + list(extra_args)


def read_quant_qc(quant_dir: str | Path) -> dict:
    """Per-sample QC of a salmon quant folder: fragments processed / mapped, mapping rate, detected
    library type and strandedness, and the share of fragments compatible with it."""
    quant_dir = Path(quant_dir)
    meta = json.loads((quant_dir / "aux_info" / "meta_info.json").read_text())
    lib = json.loads((quant_dir / "lib_format_counts.json").read_text())
    detected = lib.get("expected_format", "")
    processed = int(meta["num_processed"])
    mapped = int(meta["num_mapped"])
    return {
        "fragments_processed": processed,
        "fragments_mapped": mapped,
        "mapping_rate": mapped / processed if processed else 0.0,
        "libtype_detected": detected,
        "strandedness_detected": STRANDEDNESS_OF_LIBTYPE.get(detected, "unknown"),
        "compatible_fragment_ratio": float(lib.get("compatible_fragment_ratio", float("nan"))),
        "salmon_version": meta.get("salmon_version", ""),
    }


def check_strandedness(sample: str, detected_libtype: str, configured: str | None, config_key: str) -> None:
    """Stop when salmon's detected strandedness differs from the one stated in config (None = not stated)."""
    if configured in (None, "auto"):
        return
    if configured not in STRANDEDNESS:
        raise InputError(f"{config_key}: {configured!r} is not one of auto, {', '.join(STRANDEDNESS)}")
    detected = STRANDEDNESS_OF_LIBTYPE.get(detected_libtype)
    if detected is None:
        raise InputError(
            f"sample {sample}: salmon detected the library type {detected_libtype!r}, which has no "
            f"strandedness the workflow knows (config says {configured}). Fix: check the read files (mates "
            f"swapped or not paired?) or set {config_key}: auto."
        )
    if detected != configured:
        raise InputError(
            f"sample {sample}: salmon detected a {detected} library (type {detected_libtype}) but "
            f"{config_key} is {configured}. Fix: set {config_key} to {detected} if the kit really is "
            f"{detected} (e.g. TruSeq Stranded = reverse), or to auto; a mismatch in one sample only "
            "suggests swapped or mislabelled files."
        )


def _is_gzip(path: str | Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def write_gentrome(transcripts: str | Path, genome: str | Path, work_dir: str | Path) -> tuple[Path, Path]:
    """Transcripts followed by the decoy genome in one FASTA, and the decoy names file salmon needs.

    Two gzipped inputs are concatenated as gzip members (salmon reads multi-member gzip); otherwise both
    are written out uncompressed.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    names = decoy_names(list(fasta_headers(genome)))
    if not names:
        raise InputError(f"reads.decoys {genome}: no FASTA sequences. Fix: give the genome FASTA.")
    decoys_txt = work_dir / "decoys.txt"
    decoys_txt.write_text("".join(f"{n}\n" for n in names))
    both_gz = _is_gzip(transcripts) and _is_gzip(genome)
    gentrome = work_dir / ("gentrome.fa.gz" if both_gz else "gentrome.fa")
    with gentrome.open("wb") as out:
        for part in (transcripts, genome):
            if both_gz:
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 24)
            else:
                opener = gzip.open if _is_gzip(part) else open
                with opener(part, "rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 24)
    return gentrome, decoys_txt


def run_logged(cmd: Sequence[str], log_path: str | Path, what: str) -> None:
    """Run a tool with its output appended to the rule's log; a non-zero exit raises with the log's tail."""
    logger.info("%s", " ".join(cmd))
    with open(log_path, "a") as log:
        proc = subprocess.run(list(cmd), stdout=log, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = Path(log_path).read_text(errors="replace").splitlines()[-5:]
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")
