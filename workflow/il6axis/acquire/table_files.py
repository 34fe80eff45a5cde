"""Open the delimited text tables that GEO serves: gzip or plain, BOM, separator, first lines.

Shared by the count-table reader (:mod:`il6axis.acquire.count_tables`), the sample-sheet and
series-matrix parsers (:mod:`il6axis.acquire.geo_metadata`) and the gene_info reader. Gzip is told
from the magic bytes, not from the file name. :func:`show_list` prints the lists (columns, samples)
that error messages about these tables name.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from il6axis.errors import InputError

__all__ = [
    "is_gzipped",
    "open_text",
    "peek_lines",
    "require_file",
    "show_list",
    "sniff_separator",
    "split_line",
]


def is_gzipped(path: str | Path) -> bool:
    """True when the file starts with the gzip magic bytes (the extension is not trusted)."""
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def require_file(path: str | Path, what: str, config_key: str) -> Path:
    """Return ``path`` as a Path or raise InputError naming the config key to fix."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: {what} file not found; check the path given by `{config_key}` in config")
    return p


def open_text(path: str | Path) -> TextIO:
    """Open a plain or gzipped text file for reading (UTF-8, BOM stripped, undecodable bytes replaced)."""
    if is_gzipped(path):
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="replace")
    return open(path, encoding="utf-8-sig", errors="replace")  # the caller closes it


def peek_lines(path: str | Path, n: int) -> list[str]:
    """First ``n`` lines of a (possibly gzipped) text file, without line endings."""
    label = Path(path).name
    lines: list[str] = []
    try:
        with open_text(path) as handle:
            for line in handle:
                lines.append(line.rstrip("\r\n"))
                if len(lines) >= n:
                    break
    except (OSError, EOFError) as exc:
        raise InputError(
            f"{label}: cannot read the file ({exc}); re-download it or check it is not truncated"
        ) from exc
    return lines


def sniff_separator(header: str, label: str, config_key: str) -> str:
    """Pick tab, comma or semicolon from a header line; tab wins ties because GEO tables are mostly TSV."""
    counts = {"\t": header.count("\t"), ",": header.count(","), ";": header.count(";")}
    best = max(counts, key=lambda s: (counts[s], s == "\t", s == ","))
    if counts[best] == 0:
        shown = header[:120]
        raise InputError(
            f"{label}: cannot detect the column separator from the header line {shown!r} (no tab, comma or "
            f"semicolon); set `{config_key}` in config, or check that the file is a table, not an HTML page"
        )
    return best


def split_line(line: str, sep: str) -> list[str]:
    """Split one delimited line, honouring double quotes the way pandas does."""
    return next(csv.reader([line], delimiter=sep, quotechar='"'), [])


def show_list(items: Iterable[object], limit: int | None = None) -> str:
    """Printable list for messages: every item, or the first ``limit`` and how many were left out.

    A list in an error message is never cut silently: the reader must know that more exist.
    """
    items = list(items)
    if not items:
        return "(none)"
    shown = items if limit is None else items[:limit]
    text = ", ".join(repr(str(x)) for x in shown)
    left_out = len(items) - len(shown)
    return text + (f", ... and {left_out} more ({len(items)} in total)" if left_out else "")
