"""HTTP transport for GEO / NCBI files: retries with backoff, verified atomic write, local mirror copy.

Every file goes through the same path:

1. stream to a ``.partial-*`` temp file in the destination directory, hashing (sha256) on the fly;
2. fsync, then verify: complete body (``Content-Length``), the GEO payload checks of
   :mod:`il6axis.acquire.payload_checks` (not an HTML page, whole gzip stream decodes, expected first
   line), optional pinned checksum;
3. ``os.replace`` onto the destination, so ``dest`` either is a complete verified file or does not
   exist (a pre-existing ``dest`` is only ever replaced by a verified file).

Transient failures (connection errors, timeouts, HTTP 5xx/429, short bodies, truncated gzip) are
retried with exponential backoff; permanent ones (4xx, HTML page, wrong header, checksum mismatch) fail
at once with a message naming the URL, the problem and the likely fix.

Why stdlib ``urllib`` and one hand-written retry loop, not ``requests`` + urllib3 ``Retry`` or
``pooch`` (re-checked for issue 14 against the fake GEO server):

- urllib3 ``Retry`` acts only until the response headers arrive. It retried 503s and dropped
  connections, but a body cut short behind an honest ``Content-Length``, a lying one (requests raises
  ``ChunkedEncodingError``) and an HTML maintenance page served with 200 all came back on the first
  request, unretried. Those are GEO's common failures, so an attempt loop around the whole transfer and
  its checks is needed anyway; a ``Retry`` underneath would add a second retry budget and hide attempts
  from the manifest's ``attempts`` column.
- What ``requests`` would replace is the ``urlopen`` call and its ``HTTPError`` handling (~30 lines);
  it is installed only as a dependency of Snakemake and is not in ``envs/cohorts.yaml``, where the
  download rules run.
- ``pooch`` is not installed; its ``retry_if_failed`` also retries checksum mismatches (which must fail
  at once), it has no gzip or HTML check, and it keeps its own cache beside Snakemake's outputs.

The GEO-specific checks live in :mod:`il6axis.acquire.payload_checks`; GEO names and URLs in
:mod:`il6axis.acquire.geo`.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from il6axis.acquire import geo
from il6axis.acquire.payload_checks import HeaderCheck, PayloadError, check_payload

log = logging.getLogger(__name__)

USER_AGENT = "il6axis-workflow (python-urllib; +https://www.ncbi.nlm.nih.gov/geo/)"

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 256 * 1024
_MIB = float(2**20)
_RETRY_AFTER_CAP_S = 300.0

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


@dataclass(frozen=True)
class DownloadSettings:
    """The ``download`` config block: hosts, an optional local mirror, and the retry policy.

    Field defaults equal the schema defaults (``workflow/schemas/config.schema.yaml``; a test checks
    that they agree).
    """

    geo_base: str = geo.DEFAULT_GEO_BASE
    geo_download_base: str = geo.DEFAULT_GEO_DOWNLOAD_BASE
    ncbi_gene_base: str = geo.DEFAULT_NCBI_GENE_BASE
    local_dir: str | None = None
    retries: int = 5
    backoff_s: float = 2.0
    timeout_s: float = 120.0

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None) -> DownloadSettings:
        """Settings from the validated ``download`` block (missing keys take the defaults)."""
        block = block or {}
        default = cls()
        return cls(
            geo_base=str(block.get("geo_base", default.geo_base)),
            geo_download_base=str(block.get("geo_download_base", default.geo_download_base)),
            ncbi_gene_base=str(block.get("ncbi_gene_base", default.ncbi_gene_base)),
            local_dir=block.get("local_dir") or None,
            retries=int(block.get("retries", default.retries)),
            backoff_s=float(block.get("backoff_s", default.backoff_s)),
            timeout_s=float(block.get("timeout_s", default.timeout_s)),
        )


# --------------------------------------------------------------------------------------------
# Streaming, verification and atomic write (shared by HTTP and local copies)
# --------------------------------------------------------------------------------------------


def _get_logger(logger: logging.Logger | None) -> logging.Logger:
    return logger if logger is not None else log


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
    """Run the payload checks, then the pinned checksum; raise :class:`DownloadError` on a problem."""
    try:
        check_payload(
            path, label=label, expect_gzip=expect_gzip, header_check=header_check, content_type=content_type
        )
    except PayloadError as exc:
        error = HtmlPageError if exc.html else DownloadError
        raise error(str(exc), retryable=exc.retryable) from exc
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
    """Copy ``src`` from a local mirror (see :func:`il6axis.acquire.geo.local_relpath`) to ``dest``.

    Same checks as :func:`fetch` (HTML page, gzip integrity, header, checksum), verified and atomic; no
    retries. ``url`` of the result is ``file://`` + the absolute source path.
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
            f"gene info at <local_dir>/{geo.GENE_INFO_NAME}), or unset `download.local_dir` to download."
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
