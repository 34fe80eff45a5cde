"""Robust, verified downloads of public GEO / NCBI files (stdlib only).

Why this module exists: GEO and the NCBI FTP-over-HTTPS hosts regularly return HTML error or
maintenance pages with status 200, cut transfers short, or answer 5xx/429 under load. A workflow
that trusts whatever arrived would silently analyse a truncated matrix. Every file therefore goes
through the same path:

1. stream to ``.partial-*`` temp file in the destination directory, hashing (sha256) on the fly;
2. fsync, then verify: not an HTML page, complete body, whole gzip stream decodes, expected first
   line, optional pinned checksum;
3. ``os.replace`` onto the destination, so ``dest`` either is a complete verified file or does not
   exist (a pre-existing ``dest`` is only ever replaced by a verified file).

Transient failures (connection errors, timeouts, HTTP 5xx/429, short bodies, truncated gzip) are
retried with exponential backoff; permanent ones (4xx, HTML page, wrong header, checksum
mismatch) fail at once with a message naming the URL, the problem and the likely fix.

URL builders take the base URL as an argument so the workflow config (and the tests' fake GEO
server) can point them elsewhere. For air-gapped nodes, :func:`local_relpath` gives the layout of
a local mirror directory (config key ``download.local_dir``) read by :func:`copy_local`.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import http.client
import io
import logging
import os
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Any

DEFAULT_GEO_BASE = "https://ftp.ncbi.nlm.nih.gov"
DEFAULT_GEO_DOWNLOAD_BASE = "https://www.ncbi.nlm.nih.gov"
DEFAULT_NCBI_GENE_BASE = "https://ftp.ncbi.nlm.nih.gov"

LOGGER_NAME = "il6axis.acquire.download"
USER_AGENT = "il6axis-workflow (python-urllib; +https://www.ncbi.nlm.nih.gov/geo/)"
GENE_INFO_NAME = "Homo_sapiens.gene_info.gz"
MANIFEST_COLUMNS = ("file", "url", "sha256", "bytes", "attempts")

# Kinds of file understood by :func:`local_relpath`.
KIND_SERIES_MATRIX = "series_matrix"
KIND_NCBI_COUNTS = "ncbi_counts"
KIND_SUPPLEMENTARY = "supplementary"
KIND_GENE_INFO = "gene_info"
KINDS = (KIND_SERIES_MATRIX, KIND_NCBI_COUNTS, KIND_SUPPLEMENTARY, KIND_GENE_INFO)

_ACCESSION_RE = re.compile(r"^GSE\d+$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 256 * 1024
_MIB = float(2**20)
_RETRY_AFTER_CAP_S = 300.0

HeaderCheck = Callable[[str], str | None]
SleepFn = Callable[[float], Any]


class DownloadError(RuntimeError):
    """A download or verification failed; the message names the URL/file, the problem and the fix.

    ``status`` is the HTTP status when one was received; ``retryable`` marks transient failures
    (used internally by :func:`fetch` to decide whether another attempt can help).
    """

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class HtmlPageError(DownloadError):
    """An HTML page arrived where a data file was expected (an error or maintenance page, a wrong URL)."""


class MissingFileError(DownloadError):
    """The file does not exist at its source: HTTP 404 / 410, or absent from the local directory.

    Kept apart from other failures because "not there" is the one outcome after which trying another
    source is safe; a flaky network or a wrong file is not (see :mod:`il6axis.acquire.sources`).
    """


@dataclass(frozen=True)
class FetchResult:
    """Outcome of a verified download/copy: where from, where to, sha256, size, attempts used."""

    url: str
    path: Path
    sha256: str
    n_bytes: int
    attempts: int


# --------------------------------------------------------------------------------------------
# URL builders and local mirror layout
# --------------------------------------------------------------------------------------------


def validate_accession(accession: str) -> str:
    """Return ``accession`` if it looks like a GEO series (``GSE`` + digits), else raise ValueError."""
    if not isinstance(accession, str) or not _ACCESSION_RE.match(accession):
        raise ValueError(f"invalid GEO series accession {accession!r}: expected 'GSE' followed by digits")
    return accession


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
    digits = accession[3:]
    stub = f"GSE{digits[:-3]}nnn"
    return f"geo/series/{stub}/{accession}"


def series_matrix_name(accession: str) -> str:
    """File name of the (single-platform) series matrix of ``accession``."""
    return f"{validate_accession(accession)}_series_matrix.txt.gz"


def ncbi_counts_name(accession: str) -> str:
    """File name of GEO's NCBI-generated raw RNA-seq counts of ``accession``."""
    return f"{validate_accession(accession)}_raw_counts_GRCh38.p13_NCBI.tsv.gz"


def series_matrix_url(accession: str, base: str = DEFAULT_GEO_BASE) -> str:
    """Series matrix URL: ``{base}/geo/series/GSE152nnn/GSE152418/matrix/<acc>_series_matrix.txt.gz``.

    Only single-platform series have exactly this name (multi-platform ones add ``-GPLxxxx``).
    """
    return f"{_base(base)}/{series_dir(accession)}/matrix/{series_matrix_name(accession)}"


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
    return f"{_base(base)}/{series_dir(accession)}/suppl/{urllib.parse.quote(filename)}"


def gene_info_url(base: str = DEFAULT_NCBI_GENE_BASE) -> str:
    """URL of NCBI Gene's human ``gene_info`` table (Entrez GeneID -> symbol, Ensembl xrefs)."""
    return f"{_base(base)}/gene/DATA/GENE_INFO/Mammalia/{GENE_INFO_NAME}"


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


# --------------------------------------------------------------------------------------------
# Header checks
# --------------------------------------------------------------------------------------------


def expect_first_line_prefix(prefix: str) -> HeaderCheck:
    """Header check: the first (decompressed) line must start with ``prefix``.

    Typical prefixes: ``"!Series_title"`` (series matrix), ``"GeneID"`` (NCBI counts),
    ``"#tax_id"`` (gene_info).
    """

    def check(first_line: str) -> str | None:
        if first_line.startswith(prefix):
            return None
        shown = first_line[:80] + ("..." if len(first_line) > 80 else "")
        return f"first line should start with {prefix!r} but is {shown!r}"

    return check


# --------------------------------------------------------------------------------------------
# Shared streaming / verification / atomic write
# --------------------------------------------------------------------------------------------


def _get_logger(logger: logging.Logger | None) -> logging.Logger:
    return logger if logger is not None else logging.getLogger(LOGGER_NAME)


def _normalise_sha256(expected: str | None) -> str | None:
    if expected is None:
        return None
    value = expected.strip().lower()
    if not _SHA256_RE.match(value):
        raise ValueError(f"expected_sha256 {expected!r} is not a 64-character hex sha256")
    return value


def _fmt_progress(done: int, total: int | None) -> str:
    if total:
        return f"{done / _MIB:.1f} MiB / {total / _MIB:.1f} MiB ({100 * done // total}%)"
    return f"{done / _MIB:.1f} MiB"


def _copy_stream(
    read: Callable[[int], bytes],
    out: IO[bytes],
    *,
    total: int | None,
    label: str,
    progress_every_bytes: int,
    log: logging.Logger,
) -> tuple[str, int]:
    """Copy ``read`` chunks to ``out``, hashing and logging progress; return (sha256, n_bytes).

    Errors raised by ``read`` propagate unchanged so the caller can classify them (network vs disk).
    """
    digest = hashlib.sha256()
    n_bytes = 0
    step = max(int(progress_every_bytes), 1)
    next_report = step
    while True:
        chunk = read(_CHUNK)
        if not chunk:
            break
        out.write(chunk)
        digest.update(chunk)
        n_bytes += len(chunk)
        if n_bytes >= next_report:
            log.info("%s: %s", label, _fmt_progress(n_bytes, total))
            next_report = (n_bytes // step + 1) * step
    return digest.hexdigest(), n_bytes


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip().lower()
    return start.startswith(b"<!doctype html") or start.startswith(b"<html")


def _first_line(data: bytes) -> str:
    line = data.split(b"\n", 1)[0]
    return line.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r")


def _check_gzip(path: Path, label: str) -> str:
    """Decompress the whole gzip file (to catch truncation/corruption); return its first line."""
    with path.open("rb") as fh:
        magic = fh.read(2)
    if magic != b"\x1f\x8b":
        raise DownloadError(
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
                if b"\n" not in head and len(head) < 1 << 20:
                    head += chunk
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DownloadError(
            f"{label}: gzip stream is truncated or corrupt ({exc}). Fix: the transfer was probably cut "
            "short; download it again (for a local mirror, re-copy the file from a good source).",
            retryable=True,
        ) from exc
    return _first_line(head)


def _verify(
    path: Path,
    *,
    label: str,
    sha256: str,
    expected_sha256: str | None,
    expect_gzip: bool,
    header_check: HeaderCheck | None,
    content_type: str | None,
) -> None:
    """Verify a freshly written temp file; raise :class:`DownloadError` describing the first problem."""
    with path.open("rb") as fh:
        head = fh.read(4096)
    html_expected = path.name.lower().endswith((".html", ".htm"))
    is_html_type = bool(content_type) and content_type.split(";")[0].strip().lower() == "text/html"
    if not html_expected and (_looks_like_html(head) or is_html_type):
        raise HtmlPageError(
            f"{label}: received an HTML page instead of the data file (an error/maintenance page or a "
            "wrong URL). Fix: check the accession / file name and base URL in config; if GEO is under "
            "maintenance, retry later."
        )
    if expect_gzip:
        first_line = _check_gzip(path, label)
    else:
        first_line = _first_line(head)
    if header_check is not None:
        problem = header_check(first_line)
        if problem:
            raise DownloadError(
                f"{label}: unexpected content: {problem}. Fix: the URL/file name in config probably "
                "points to a different file, or the upstream format changed."
            )
    if expected_sha256 is not None and sha256 != expected_sha256:
        raise DownloadError(
            f"checksum mismatch: expected {expected_sha256}, got {sha256} for {label}; if the file "
            "legitimately changed upstream update `checksums` in config"
        )


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_verified(
    dest: Path,
    produce: Callable[[IO[bytes]], tuple[str, int]],
    *,
    label: str,
    expected_sha256: str | None,
    expect_gzip: bool,
    header_check: HeaderCheck | None,
    content_type: str | None,
) -> tuple[str, int]:
    """Write via ``produce`` into a ``.partial-*`` temp file next to ``dest``, verify, move into place.

    On any exception the temp file is deleted and ``dest`` is left as it was.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".partial-", suffix="-" + dest.name)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            sha256, n_bytes = produce(out)
            out.flush()
            os.fsync(out.fileno())
        _verify(
            tmp,
            label=label,
            sha256=sha256,
            expected_sha256=expected_sha256,
            expect_gzip=expect_gzip,
            header_check=header_check,
            content_type=content_type,
        )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)
    return sha256, n_bytes


# --------------------------------------------------------------------------------------------
# HTTP fetch
# --------------------------------------------------------------------------------------------

# Statuses meaning "this file is not on the server" (as opposed to a refusal or a failure).
MISSING_STATUSES = (404, 410)

_FIX_BY_STATUS = {
    404: "check the accession / file name in config, or the base URL",
    410: "the file was removed upstream; check the accession / file name in config",
    403: "access was refused; check the base URL (proxy or firewall?) or use `download.local_dir`",
    401: "the server wants credentials; check the base URL in config",
}


class _Transient(Exception):
    """Internal: a failure worth another attempt. ``wait_s`` overrides the backoff (Retry-After)."""

    def __init__(self, reason: str, *, status: int | None = None, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.wait_s = wait_s


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), _RETRY_AFTER_CAP_S)
    except ValueError:
        return None


def _http_error(exc: urllib.error.HTTPError, url: str) -> Exception:
    """Classify an HTTP error status: transient (5xx, 429) or a permanent :class:`DownloadError`."""
    status = exc.code
    if status >= 500 or status == 429:
        return _Transient(f"HTTP {status} {exc.reason}", status=status, wait_s=_retry_after(exc.headers))
    fix = _FIX_BY_STATUS.get(status, "check the URL (accession, file name, base URL) in config")
    error = MissingFileError if status in MISSING_STATUSES else DownloadError
    return error(f"HTTP {status} {exc.reason} for {url}: {fix}", status=status)


def _attempt(
    url: str,
    dest: Path,
    *,
    expected_sha256: str | None,
    expect_gzip: bool,
    header_check: HeaderCheck | None,
    timeout_s: float,
    progress_every_bytes: int,
    log: logging.Logger,
) -> tuple[str, int]:
    """One download attempt. Raises _Transient (retry) or DownloadError (give up)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise _http_error(exc, url) from exc
    except ValueError as exc:
        raise DownloadError(f"invalid URL {url!r} ({exc}): check the base URL in config") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _Transient(f"connection failed: {getattr(exc, 'reason', exc)}") from exc

    with response:
        length_header = response.headers.get("Content-Length")
        try:
            expected_len = int(length_header) if length_header is not None else None
        except ValueError:
            expected_len = None
        content_type = response.headers.get("Content-Type")

        def produce(out: IO[bytes]) -> tuple[str, int]:
            def read(n: int) -> bytes:
                try:
                    return response.read(n)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Transient(f"transfer interrupted: {exc!r}") from exc

            sha256, n_bytes = _copy_stream(
                read,
                out,
                total=expected_len,
                label=url,
                progress_every_bytes=progress_every_bytes,
                log=log,
            )
            if expected_len is not None and n_bytes != expected_len:
                raise _Transient(f"incomplete body: got {n_bytes} of {expected_len} bytes (Content-Length)")
            return sha256, n_bytes

        return _write_verified(
            dest,
            produce,
            label=url,
            expected_sha256=expected_sha256,
            expect_gzip=expect_gzip,
            header_check=header_check,
            content_type=content_type,
        )


def fetch(
    url: str,
    dest: str | os.PathLike[str],
    *,
    expected_sha256: str | None = None,
    expect_gzip: bool | None = None,
    header_check: HeaderCheck | None = None,
    retries: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 60,
    progress_every_bytes: int = 50 * 2**20,
    logger: logging.Logger | None = None,
    sleep: SleepFn = time.sleep,
    missing_if_html: tuple[str, str] | None = None,
) -> FetchResult:
    """Download ``url`` to ``dest`` atomically and verified; return a :class:`FetchResult`.

    ``retries`` is the total number of attempts. After failed attempt ``i`` (0-based) the wait is
    ``backoff_s * 2**i`` (or the server's Retry-After for 429/503, capped at 5 min). ``expect_gzip``
    defaults to True when ``dest`` ends with ``.gz``. ``header_check`` receives the first
    (decompressed) line. ``sleep`` is injectable for tests.

    Raises :class:`DownloadError` (never leaving ``dest`` or a ``.partial-*`` file behind) on a
    permanent failure or when all attempts failed.

    ``missing_if_html`` = (what the file is, what a lasting HTML answer means) for an endpoint that may
    answer a file it does not have with an HTML page instead of a 404: such a page is then retried like
    a transient error, and a page on every attempt raises :class:`MissingFileError`.
    """
    if retries < 1:
        raise ValueError(f"retries must be >= 1, got {retries}")
    dest = Path(dest)
    log = _get_logger(logger)
    expected = _normalise_sha256(expected_sha256)
    gz = dest.name.endswith(".gz") if expect_gzip is None else expect_gzip

    log.info("downloading %s -> %s", url, dest)
    last_exc: Exception | None = None
    html_every_time = missing_if_html is not None
    for attempt in range(retries):
        try:
            sha256, n_bytes = _attempt(
                url,
                dest,
                expected_sha256=expected,
                expect_gzip=gz,
                header_check=header_check,
                timeout_s=timeout_s,
                progress_every_bytes=progress_every_bytes,
                log=log,
            )
        except (_Transient, DownloadError) as exc:
            is_html = isinstance(exc, HtmlPageError)
            html_every_time = html_every_time and is_html
            if isinstance(exc, DownloadError) and not exc.retryable and not (is_html and missing_if_html):
                # A missing file may be expected (the caller can try another source): not an error yet.
                log.log(
                    logging.WARNING if isinstance(exc, MissingFileError) else logging.ERROR,
                    "download failed: %s",
                    exc,
                )
                raise
            last_exc = exc
            if attempt + 1 >= retries:
                break
            wait = backoff_s * 2**attempt
            if isinstance(exc, _Transient) and exc.wait_s is not None:
                wait = max(wait, exc.wait_s)
            log.warning(
                "attempt %d/%d for %s failed: %s; retrying in %.3g s", attempt + 1, retries, url, exc, wait
            )
            sleep(wait)
            continue
        result = FetchResult(url=url, path=dest, sha256=sha256, n_bytes=n_bytes, attempts=attempt + 1)
        log.info(
            "downloaded %s -> %s: %s (%d bytes), sha256=%s, attempts=%d",
            url,
            dest,
            _fmt_progress(n_bytes, None),
            n_bytes,
            sha256,
            attempt + 1,
        )
        return result

    if html_every_time:
        what, meaning = missing_if_html
        message = (
            f"an HTML page instead of {what} on all {retries} attempt(s) ({url}); read as: {meaning}. "
            f"Last error: {last_exc}"
        )
        log.warning("download failed: %s", message)
        raise MissingFileError(message) from last_exc
    message = (
        f"giving up on {url} after {retries} attempts; last error: {last_exc}. Fix: the server or "
        "network is failing; retry later, raise `download.retries`, or use a local mirror "
        "(`download.local_dir`)."
    )
    log.error(message)
    raise DownloadError(message, status=getattr(last_exc, "status", None)) from last_exc


# --------------------------------------------------------------------------------------------
# Local mirror copy
# --------------------------------------------------------------------------------------------


def copy_local(
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    expected_sha256: str | None = None,
    expect_gzip: bool | None = None,
    header_check: HeaderCheck | None = None,
    logger: logging.Logger | None = None,
) -> FetchResult:
    """Copy ``src`` from a local mirror (see :func:`local_relpath`) to ``dest``, verified and atomic.

    Same checks as :func:`fetch` (HTML page, gzip integrity, header, checksum); no retries.
    ``url`` of the result is ``file://`` + the absolute source path.
    """
    src = Path(src).absolute()
    dest = Path(dest)
    log = _get_logger(logger)
    expected = _normalise_sha256(expected_sha256)
    gz = dest.name.endswith(".gz") if expect_gzip is None else expect_gzip
    url = "file://" + str(src)
    if not src.is_file():
        message = (
            f"local mirror file not found: {src}. Fix: place the file in the mirror directory set by "
            "config key `download.local_dir` (expected layout <local_dir>/<accession>/<file>, "
            f"gene info at <local_dir>/{GENE_INFO_NAME}), or unset `download.local_dir` to download."
        )
        log.warning(message)
        raise MissingFileError(message)

    log.info("copying %s -> %s", src, dest)
    total = src.stat().st_size

    def produce(out: IO[bytes]) -> tuple[str, int]:
        with src.open("rb") as fh:
            return _copy_stream(
                fh.read, out, total=total, label=str(src), progress_every_bytes=50 * 2**20, log=log
            )

    try:
        sha256, n_bytes = _write_verified(
            dest,
            produce,
            label=str(src),
            expected_sha256=expected,
            expect_gzip=gz,
            header_check=header_check,
            content_type=None,
        )
    except DownloadError as exc:
        log.error("copy failed: %s", exc)
        raise
    log.info("copied %s -> %s: %d bytes, sha256=%s", src, dest, n_bytes, sha256)
    return FetchResult(url=url, path=dest, sha256=sha256, n_bytes=n_bytes, attempts=1)


# --------------------------------------------------------------------------------------------
# Directory listings (for "did you mean" when a file is missing)
# --------------------------------------------------------------------------------------------

LISTED_SUBDIRS = ("suppl", "matrix")
_LISTING_MAX_BYTES = 4 * 2**20


def series_listing_url(accession: str, subdir: str, base: str = DEFAULT_GEO_BASE) -> str:
    """URL of the HTML index of a series folder: ``{base}/geo/series/GSEnnn/GSE.../{subdir}/``."""
    if subdir not in LISTED_SUBDIRS:
        raise ValueError(f"unknown series folder {subdir!r}: expected one of {', '.join(LISTED_SUBDIRS)}")
    return f"{_base(base)}/{series_dir(accession)}/{subdir}/"


class _LinkCollector(HTMLParser):
    """Collects the ``href`` of every ``<a>`` element, in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(value for name, value in attrs if name == "href" and value)


def parse_directory_listing(page: str, listing_url: str) -> list[str]:
    """File names in an HTML directory index (Apache, nginx, or NCBI's FTP-over-HTTPS pages).

    Every ``<a href>`` is resolved against ``listing_url`` (relative, absolute-path and full-URL links
    alike) and kept only when it points at a file directly inside that folder. That drops the
    parent-directory link, column-sort links (``?C=N;O=D``), sub-folders (trailing ``/``) and links
    elsewhere, whatever their text says. Names are URL-unescaped; the result is sorted and unique.
    """
    collector = _LinkCollector()
    collector.feed(page)
    collector.close()
    folder_url = listing_url if listing_url.endswith("/") else listing_url + "/"
    folder = urllib.parse.urlsplit(folder_url)
    folder_path = urllib.parse.unquote(folder.path)
    names: set[str] = set()
    for href in collector.hrefs:
        target = urllib.parse.urlsplit(urllib.parse.urljoin(folder_url, href.strip()))
        if target.query or target.netloc.lower() != folder.netloc.lower():
            continue
        directory, _, name = urllib.parse.unquote(target.path).rpartition("/")
        if directory + "/" == folder_path and name not in ("", ".", ".."):
            names.add(name)
    return sorted(names)


def list_directory(url: str, *, timeout_s: float = 30.0) -> list[str]:
    """Fetch an HTML directory index and return the file names it lists (one attempt, no retries).

    Only used to enrich error messages ("the folder holds ..."), so it does not retry; any failure
    raises :class:`DownloadError` with the reason, for the caller to mention.
    """
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read(_LISTING_MAX_BYTES + 1)
            charset = response.headers.get_content_charset() or "utf-8"
            final_url = response.geturl() or url
    except urllib.error.HTTPError as exc:
        exc.close()
        raise DownloadError(f"HTTP {exc.code} {exc.reason} for {url}", status=exc.code) from exc
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise DownloadError(f"could not read {url}: {getattr(exc, 'reason', exc)}") from exc
    if len(body) > _LISTING_MAX_BYTES:
        raise DownloadError(f"{url}: listing larger than {_LISTING_MAX_BYTES} bytes, not read")
    page = body.decode(charset, errors="replace")
    if "<a" not in page.lower():
        raise DownloadError(f"{url}: not an HTML directory index (no links in the page)")
    return parse_directory_listing(page, final_url)


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------


def write_manifest(results: Iterable[FetchResult], path: str | os.PathLike[str]) -> None:
    """Write a TSV manifest (columns ``file, url, sha256, bytes, attempts``) atomically.

    The manifest records exactly what was analysed, for provenance and for pinning checksums.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for r in results:
        writer.writerow([str(r.path), r.url, r.sha256, r.n_bytes, r.attempts])
    write_text_atomic(path, buffer.getvalue())


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` via a ``.partial-*`` temp file and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".partial-", suffix="-" + path.name)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_manifest(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a manifest written by :func:`write_manifest`; ``bytes`` and ``attempts`` become ints."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
            raise ValueError(
                f"{path}: not a download manifest (columns {reader.fieldnames}, expected {MANIFEST_COLUMNS})"
            )
        rows: list[dict[str, Any]] = []
        for row in reader:
            row["bytes"] = int(row["bytes"])
            row["attempts"] = int(row["attempts"])
            rows.append(row)
    return rows


__all__ = [
    "DEFAULT_GEO_BASE",
    "DEFAULT_GEO_DOWNLOAD_BASE",
    "DEFAULT_NCBI_GENE_BASE",
    "DownloadError",
    "FetchResult",
    "MissingFileError",
    "copy_local",
    "expect_first_line_prefix",
    "fetch",
    "gene_info_url",
    "list_directory",
    "local_relpath",
    "ncbi_counts_name",
    "ncbi_counts_url",
    "parse_directory_listing",
    "read_manifest",
    "series_dir",
    "series_listing_url",
    "series_matrix_name",
    "series_matrix_url",
    "supplementary_url",
    "validate_accession",
    "validate_filename",
    "write_manifest",
    "write_text_atomic",
]
