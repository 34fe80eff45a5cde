"""The transcript -> gene map that turns salmon's transcript estimates into gene counts.

Why a module of its own: the map must come from the same annotation as the transcript FASTA that salmon
indexes, or transcripts silently drop out of their genes. GENCODE transcript FASTA headers carry the gene
(``>ENST…|ENSG…|OTTHUMG…|OTTHUMT…|NAME-201|NAME|length|biotype|``), Ensembl cDNA headers carry it as
``gene:ENSG… gene_symbol:NAME``; a separate TSV/CSV (transcript_id, gene_id[, gene_name]) or a GTF is also
accepted. Every transcript that salmon will quantify must be in the map; a mismatch (another release,
versions stripped on one side only, another species) stops the run with counts, examples and the fix.
"""

from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pandas as pd

from il6axis.errors import InputError

logger = logging.getLogger(__name__)

TX2GENE_COLUMNS = ("transcript_id", "gene_id", "gene_name")
_GTF_ATTR = re.compile(r'(\S+)\s+"([^"]*)"')
_ENSEMBL_FIELD = re.compile(r"(gene|gene_symbol):(\S+)")
_VERSION = re.compile(r"\.\d+$")


def _open_text(path: str | Path) -> TextIO:
    path = Path(path)
    with path.open("rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt") if gzipped else path.open("r")


def fasta_headers(path: str | Path) -> Iterator[str]:
    """The header lines of a (gzipped) FASTA, without '>'."""
    try:
        with _open_text(path) as handle:
            for line in handle:
                if line.startswith(">"):
                    yield line[1:].rstrip("\n")
    except (OSError, EOFError) as exc:
        raise InputError(
            f"{path}: cannot read the transcript FASTA ({exc}). Fix: download it again."
        ) from exc


def is_gencode_fasta(path: str | Path) -> bool:
    """GENCODE headers hold '|'-separated fields; salmon then needs ``--gencode`` to keep the ID only."""
    first = next(fasta_headers(path), None)
    if first is None:
        raise InputError(f"{path}: no FASTA header ('>') found. Fix: give a transcript FASTA file.")
    return "|" in first.split()[0]


def salmon_name(header: str, gencode: bool) -> str:
    """The transcript name salmon reports for a header (first word; before the first '|' with --gencode)."""
    name = header.split()[0] if header.strip() else ""
    return name.split("|", 1)[0] if gencode else name


def tx2gene_from_headers(path: str | Path) -> pd.DataFrame:
    """transcript_id, gene_id, gene_name from GENCODE or Ensembl FASTA headers.

    Raises :class:`InputError` when the headers carry no gene (then give ``reads.tx2gene``).
    """
    gencode = is_gencode_fasta(path)
    rows = []
    for header in fasta_headers(path):
        if gencode:
            fields = header.split()[0].split("|")
            if len(fields) < 6 or not fields[1]:
                raise InputError(
                    f"{path}: header {header[:80]!r} has no gene in its second '|' field (GENCODE layout "
                    "tx|gene|…|name|…). Fix: use GENCODE's transcripts FASTA or set reads.tx2gene."
                )
            rows.append((fields[0], fields[1], fields[5] or fields[1]))
        else:
            found = dict(_ENSEMBL_FIELD.findall(header))
            if "gene" not in found:
                raise InputError(
                    f"{path}: header {header[:80]!r} names no gene (neither GENCODE 'tx|gene|…' fields nor "
                    "Ensembl 'gene:ENSG…'). Fix: set reads.tx2gene to a TSV (transcript_id, gene_id, "
                    "gene_name) or a GTF of the same annotation release."
                )
            rows.append((header.split()[0], found["gene"], found.get("gene_symbol", found["gene"])))
    return pd.DataFrame(rows, columns=list(TX2GENE_COLUMNS))


def read_gtf(path: str | Path) -> pd.DataFrame:
    """transcript_id, gene_id, gene_name of a GTF's ``transcript`` lines (gene_name defaults to gene_id)."""
    rows = []
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if line.startswith("#"):
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 9:
                raise InputError(
                    f"{path}, line {number}: {len(fields)} tab-separated fields, a GTF line has 9. "
                    "Fix: give the annotation's GTF (not GFF3), or a TSV transcript_id/gene_id."
                )
            if fields[2] != "transcript":
                continue
            attrs = dict(_GTF_ATTR.findall(fields[8]))
            if "transcript_id" not in attrs or "gene_id" not in attrs:
                raise InputError(
                    f"{path}, line {number}: transcript line without transcript_id / gene_id attributes. "
                    "Fix: give a GENCODE or Ensembl GTF."
                )
            rows.append((attrs["transcript_id"], attrs["gene_id"], attrs.get("gene_name", attrs["gene_id"])))
    if not rows:
        raise InputError(f"{path}: no 'transcript' lines. Fix: give the full GTF of the annotation.")
    return pd.DataFrame(rows, columns=list(TX2GENE_COLUMNS))


def read_tx2gene_table(path: str | Path) -> pd.DataFrame:
    """A TSV/CSV map with a header holding transcript_id and gene_id (gene_name optional), or a GTF."""
    name = Path(path).name.lower().removesuffix(".gz")
    if name.endswith(".gtf"):
        return read_gtf(path)
    sep = "," if name.endswith(".csv") else "\t"
    table = pd.read_csv(path, sep=sep, dtype=str)
    missing = [c for c in TX2GENE_COLUMNS[:2] if c not in table.columns]
    if missing:
        raise InputError(
            f"{path}: no column(s) {missing} (has {list(table.columns)}). Fix: name the columns "
            "transcript_id and gene_id (gene_name optional), or give a GTF."
        )
    if "gene_name" not in table.columns:
        table["gene_name"] = table["gene_id"]
    table["gene_name"] = table["gene_name"].fillna(table["gene_id"])
    return table[list(TX2GENE_COLUMNS)].dropna(subset=["transcript_id", "gene_id"])


def _strip_version(ids: pd.Series) -> pd.Series:
    return ids.str.replace(_VERSION, "", regex=True)


def check_and_align(tx2gene: pd.DataFrame, fasta: str | Path, map_label: str) -> pd.DataFrame:
    """The map restricted and renamed to salmon's transcript names; every FASTA transcript must be in it.

    IDs are compared exactly, then with version suffixes (``.1``) stripped on both sides when that is the
    only difference (e.g. a GTF with versions vs a FASTA without). Duplicate transcripts mapped to two
    genes are an error.
    """
    gencode = is_gencode_fasta(fasta)
    names = pd.Series([salmon_name(h, gencode) for h in fasta_headers(fasta)], dtype=str)
    dup = tx2gene[tx2gene["transcript_id"].duplicated(keep=False)]
    conflicting = dup.groupby("transcript_id")["gene_id"].nunique()
    conflicting = conflicting[conflicting > 1]
    if len(conflicting):
        raise InputError(
            f"{map_label}: {len(conflicting)} transcript(s) map to more than one gene, e.g. "
            f"{', '.join(conflicting.index[:3])}. Fix: one gene per transcript."
        )
    tx2gene = tx2gene.drop_duplicates("transcript_id")
    key = tx2gene.set_index("transcript_id")
    missing = ~names.isin(key.index)
    if missing.any():
        stripped = key.copy()
        stripped.index = _strip_version(pd.Series(stripped.index)).to_numpy()
        stripped = stripped[~stripped.index.duplicated()]
        if _strip_version(names).isin(stripped.index).all():
            logger.info("%s: transcript IDs matched after stripping version suffixes", map_label)
            aligned = stripped.loc[_strip_version(names)].reset_index(drop=True)
            aligned.insert(0, "transcript_id", names.to_numpy())
            return aligned
        examples_fasta = ", ".join(names[missing].head(3))
        examples_map = ", ".join(key.index[:3])
        raise InputError(
            f"{map_label}: {int(missing.sum())} of {len(names)} transcripts of the FASTA {fasta} are not in "
            f"the transcript->gene map (e.g. {examples_fasta}; the map has e.g. {examples_map}). "
            "Fix: take the FASTA and the map (reads.tx2gene, GTF or TSV) from the same annotation release, "
            "or set reads.tx2gene to null to read genes from GENCODE/Ensembl FASTA headers."
        )
    aligned = key.loc[names].reset_index()
    aligned.columns = list(TX2GENE_COLUMNS)
    return aligned


def build_tx2gene(fasta: str | Path, map_path: str | Path | None) -> pd.DataFrame:
    """The checked transcript -> gene map of a transcript FASTA, from its headers or from ``map_path``."""
    if map_path is None:
        table = tx2gene_from_headers(fasta)
        return check_and_align(table, fasta, f"{fasta} (headers)")
    return check_and_align(read_tx2gene_table(map_path), fasta, f"reads.tx2gene {map_path}")
