"""GEO and NCBI names in one place: series accessions, file names, folder layout, hosts and URLs.

Everything the workflow assumes about how GEO names and lays out its files lives here, so that a change
upstream (a new genome build in the NCBI counts name, another host) is one edit. The rules import it too:
``workflow/rules/common.smk`` builds the download paths and the ``accession`` wildcard constraint from
these constants. Pure string functions, no I/O.

URL builders take the base URL as an argument so the workflow config (``download.*_base``) and the
tests' fake GEO server can point them elsewhere; :func:`local_relpath` gives the layout of a local
mirror directory (config ``download.local_dir``).
"""

from __future__ import annotations

import re
import urllib.parse

# A GEO series accession: "GSE" and digits. The pattern is also the Snakemake wildcard constraint.
ACCESSION_PREFIX = "GSE"
ACCESSION_PATTERN = f"{ACCESSION_PREFIX}[0-9]+"
_ACCESSION_RE = re.compile(ACCESSION_PATTERN)

# Public hosts (config defaults of download.geo_base / geo_download_base / ncbi_gene_base).
DEFAULT_GEO_BASE = "https://ftp.ncbi.nlm.nih.gov"
DEFAULT_GEO_DOWNLOAD_BASE = "https://www.ncbi.nlm.nih.gov"
DEFAULT_NCBI_GENE_BASE = "https://ftp.ncbi.nlm.nih.gov"

# File names; ``{accession}`` is filled by the functions below (or by Snakemake, as a wildcard).
SERIES_MATRIX_NAME = "{accession}_series_matrix.txt.gz"
NCBI_COUNTS_NAME = "{accession}_raw_counts_GRCh38.p13_NCBI.tsv.gz"
GENE_INFO_NAME = "Homo_sapiens.gene_info.gz"
GENE_INFO_FOLDER = "gene/DATA/GENE_INFO/Mammalia"

# Sub-folders of a series folder: supplementary files and series matrices.
SUPPLEMENTARY_FOLDER = "suppl"
MATRIX_FOLDER = "matrix"
LISTED_SUBDIRS = (SUPPLEMENTARY_FOLDER, MATRIX_FOLDER)

# Kinds of file the workflow fetches (the download rules' ``kind`` param).
KIND_SERIES_MATRIX = "series_matrix"
KIND_NCBI_COUNTS = "ncbi_counts"
KIND_SUPPLEMENTARY = "supplementary"
KIND_GENE_INFO = "gene_info"
KINDS = (KIND_SERIES_MATRIX, KIND_NCBI_COUNTS, KIND_SUPPLEMENTARY, KIND_GENE_INFO)

# First line each kind of file starts with; anything else is a wrong file or an error page.
FIRST_LINE_PREFIX = {
    KIND_SERIES_MATRIX: "!Series_title",
    KIND_NCBI_COUNTS: "GeneID",
    KIND_GENE_INFO: "#tax_id",
}


def validate_accession(accession: str) -> str:
    """Return ``accession`` if it looks like a GEO series (``GSE`` + digits), else raise ValueError."""
    if not isinstance(accession, str) or not _ACCESSION_RE.fullmatch(accession):
        raise ValueError(f"invalid GEO series accession {accession!r}: expected 'GSE' followed by digits")
    return accession


def is_accession(value: object) -> bool:
    """True when ``value`` is a GEO series accession (``GSE`` + digits)."""
    return isinstance(value, str) and _ACCESSION_RE.fullmatch(value) is not None


def validate_filename(filename: str) -> str:
    """Return ``filename`` if it is a plain file name (no directories, no '..'), else raise ValueError.

    File names end up both in URLs and in local paths, so anything that could escape the intended
    directory is refused.
    """
    if (
        not isinstance(filename, str)
        or not filename.strip()
        or "/" in filename
        or "\\" in filename
        or ".." in filename
        or filename in {".", ".."}
        or any(ord(ch) < 32 for ch in filename)
    ):
        raise ValueError(f"invalid file name {filename!r}: must be a plain file name (no '/', no '..')")
    return filename


def _base(base: str) -> str:
    return base.rstrip("/")


def series_dir(accession: str) -> str:
    """GEO directory of a series, e.g. ``GSE152418`` -> ``geo/series/GSE152nnn/GSE152418``.

    GEO groups series by all but the last three digits (``GSE1234`` -> ``GSE1nnn``,
    ``GSE12`` -> ``GSEnnn``).
    """
    validate_accession(accession)
    digits = accession[len(ACCESSION_PREFIX) :]
    stub = f"{ACCESSION_PREFIX}{digits[:-3]}nnn"
    return f"geo/series/{stub}/{accession}"


def series_matrix_name(accession: str) -> str:
    """File name of the (single-platform) series matrix of ``accession``."""
    return SERIES_MATRIX_NAME.format(accession=validate_accession(accession))


def ncbi_counts_name(accession: str) -> str:
    """File name of GEO's NCBI-generated raw RNA-seq counts of ``accession``."""
    return NCBI_COUNTS_NAME.format(accession=validate_accession(accession))


def series_matrix_url(accession: str, base: str = DEFAULT_GEO_BASE) -> str:
    """Series matrix URL: ``{base}/geo/series/GSE152nnn/GSE152418/matrix/<acc>_series_matrix.txt.gz``.

    Only single-platform series have exactly this name (multi-platform ones add ``-GPLxxxx``).
    """
    return f"{_base(base)}/{series_dir(accession)}/{MATRIX_FOLDER}/{series_matrix_name(accession)}"


def ncbi_counts_url(
    accession: str, base: str = DEFAULT_GEO_DOWNLOAD_BASE, filename: str | None = None
) -> str:
    """URL of GEO's NCBI-generated counts (``/geo/download/?type=rnaseq_counts&acc=...&file=...``).

    ``filename`` defaults to the raw-counts file; pass another name (e.g. a TPM table) if needed.
    Query values are percent-encoded.
    """
    name = validate_filename(filename) if filename is not None else ncbi_counts_name(accession)
    query = urllib.parse.urlencode(
        {"type": "rnaseq_counts", "acc": validate_accession(accession), "format": "file", "file": name}
    )
    return f"{_base(base)}/geo/download/?{query}"


def supplementary_url(accession: str, filename: str, base: str = DEFAULT_GEO_BASE) -> str:
    """URL of a series supplementary file: ``{base}/geo/series/GSEnnn/GSE.../suppl/{filename}``."""
    validate_filename(filename)
    return f"{_base(base)}/{series_dir(accession)}/{SUPPLEMENTARY_FOLDER}/{urllib.parse.quote(filename)}"


def gene_info_url(base: str = DEFAULT_NCBI_GENE_BASE) -> str:
    """URL of NCBI Gene's human ``gene_info`` table (Entrez GeneID -> symbol, Ensembl xrefs)."""
    return f"{_base(base)}/{GENE_INFO_FOLDER}/{GENE_INFO_NAME}"


def series_listing_url(accession: str, subdir: str, base: str = DEFAULT_GEO_BASE) -> str:
    """URL of the HTML index of a series folder: ``{base}/geo/series/GSEnnn/GSE.../{subdir}/``."""
    if subdir not in LISTED_SUBDIRS:
        raise ValueError(f"unknown series folder {subdir!r}: expected one of {', '.join(LISTED_SUBDIRS)}")
    return f"{_base(base)}/{series_dir(accession)}/{subdir}/"


def local_relpath(kind: str, accession: str | None = None, filename: str | None = None) -> str:
    """Relative path of a file inside a local mirror directory (config ``download.local_dir``).

    Layout (the same as the project's shared data directory)::

        <local_dir>/<accession>/<filename>          GEO files (series matrix, NCBI counts, suppl.)
        <local_dir>/Homo_sapiens.gene_info.gz       NCBI gene_info

    ``filename`` defaults to the standard GEO name for ``series_matrix`` and ``ncbi_counts`` and is
    required for ``supplementary``; it is ignored (may be None) for ``gene_info``.
    """
    if kind == KIND_GENE_INFO:
        return GENE_INFO_NAME
    if kind not in KINDS:
        raise ValueError(f"unknown file kind {kind!r}: expected one of {', '.join(KINDS)}")
    if accession is None:
        raise ValueError(f"kind {kind!r} needs an accession")
    validate_accession(accession)
    if filename is None:
        if kind == KIND_SERIES_MATRIX:
            filename = series_matrix_name(accession)
        elif kind == KIND_NCBI_COUNTS:
            filename = ncbi_counts_name(accession)
        else:
            raise ValueError("kind 'supplementary' needs a filename")
    return f"{accession}/{validate_filename(filename)}"
