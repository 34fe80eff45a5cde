"""Checks that a downloaded GEO / NCBI file is the data file asked for, not an error page or a stub.

GEO and the NCBI hosts answer with status 200 in ways an HTTP client cannot see through: an HTML error
or maintenance page in place of the file, a gzip stream cut short behind an honest ``Content-Length``,
or a different file than the one named in config. :func:`check_payload` looks at the bytes that arrived
(already written to a temp file by :mod:`il6axis.acquire.download`) and raises :class:`PayloadError`
describing the first problem and its fix; the transport turns that into a download error and decides
whether another attempt can help (``retryable``).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from pathlib import Path

HeaderCheck = Callable[[str], str | None]

_CHUNK = 256 * 1024
_HEAD_BYTES = 4096
# The first line is looked for in at most this much decompressed data (then the search stops growing).
_FIRST_LINE_MAX = 1 << 20


class PayloadError(Exception):
    """The file that arrived is not the expected data file; the message says why and what to fix.

    ``html`` marks an HTML page (an error/maintenance page or a wrong URL); ``retryable`` marks damage a
    new transfer can repair (a truncated or corrupt gzip stream).
    """

    def __init__(self, message: str, *, html: bool = False, retryable: bool = False) -> None:
        super().__init__(message)
        self.html = html
        self.retryable = retryable


def expect_first_line_prefix(prefix: str) -> HeaderCheck:
    """Header check: the first (decompressed) line must start with ``prefix``.

    Typical prefixes (:data:`il6axis.acquire.geo.FIRST_LINE_PREFIX`): ``"!Series_title"`` (series
    matrix), ``"GeneID"`` (NCBI counts), ``"#tax_id"`` (gene_info).
    """

    def check(first_line: str) -> str | None:
        if first_line.startswith(prefix):
            return None
        shown = first_line[:80] + ("..." if len(first_line) > 80 else "")
        return f"first line should start with {prefix!r} but is {shown!r}"

    return check


def looks_like_html(head: bytes) -> bool:
    """True when the bytes start (after whitespace) like an HTML document."""
    start = head.lstrip().lower()
    return start.startswith(b"<!doctype html") or start.startswith(b"<html")


def first_line(data: bytes) -> str:
    """The first line of ``data`` as text (BOM and CR removed, undecodable bytes replaced)."""
    line = data.split(b"\n", 1)[0]
    return line.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r")


def check_gzip(path: Path, label: str) -> str:
    """Decompress the whole gzip file (to catch truncation/corruption); return its first line."""
    with path.open("rb") as fh:
        magic = fh.read(2)
    if magic != b"\x1f\x8b":
        raise PayloadError(
            f"{label}: not a gzip file (starts with {magic!r}). Fix: the URL/file name in config probably "
            "points to an uncompressed or different file; check it, or pass expect_gzip=False."
        )
    head = b""
    try:
        with gzip.open(path, "rb") as gz:
            while True:
                chunk = gz.read(_CHUNK)
                if not chunk:
                    break
                if b"\n" not in head and len(head) < _FIRST_LINE_MAX:
                    head += chunk
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise PayloadError(
            f"{label}: gzip stream is truncated or corrupt ({exc}). Fix: the transfer was probably cut "
            "short; download it again (for a local mirror, re-copy the file from a good source).",
            retryable=True,
        ) from exc
    return first_line(head)


def check_payload(
    path: Path,
    *,
    label: str,
    expect_gzip: bool,
    header_check: HeaderCheck | None,
    content_type: str | None,
) -> None:
    """Check a freshly written file: not an HTML page, whole gzip stream decodes, expected first line.

    ``content_type`` is the server's ``Content-Type`` (None for a local copy); ``text/html`` counts as
    an HTML page even when the body does not look like one. A file whose own name ends in ``.html`` is
    allowed to be HTML. Raises :class:`PayloadError` for the first problem found.
    """
    with path.open("rb") as fh:
        head = fh.read(_HEAD_BYTES)
    html_expected = path.name.lower().endswith((".html", ".htm"))
    is_html_type = bool(content_type) and content_type.split(";")[0].strip().lower() == "text/html"
    if not html_expected and (looks_like_html(head) or is_html_type):
        raise PayloadError(
            f"{label}: received an HTML page instead of the data file (an error/maintenance page or a "
            "wrong URL). Fix: check the accession / file name and base URL in config; if GEO is under "
            "maintenance, retry later.",
            html=True,
        )
    line = check_gzip(path, label) if expect_gzip else first_line(head)
    if header_check is not None:
        problem = header_check(line)
        if problem:
            raise PayloadError(
                f"{label}: unexpected content: {problem}. Fix: the URL/file name in config probably "
                "points to a different file, or the upstream format changed."
            )
