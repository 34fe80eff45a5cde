"""What a GEO series folder holds: HTML directory listings, and the "did you mean" hint for a missing file.

When a supplementary file or series matrix named in config is missing, the error should say which files
the folder does hold and which of them is probably meant (a missing ``.gz``, a typo). The listing comes
from the host's HTML directory index (Apache, nginx or NCBI's FTP-over-HTTPS pages), or from the folder
itself when files are read from ``download.local_dir``.
"""

from __future__ import annotations

import difflib
import http.client
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

from il6axis.acquire import geo
from il6axis.acquire.download import USER_AGENT, DownloadError, DownloadSettings

_LISTING_MAX_BYTES = 4 * 2**20

# Series folder whose listing is shown when a file of this kind is missing.
LISTED_FOLDER = {geo.KIND_SUPPLEMENTARY: geo.SUPPLEMENTARY_FOLDER, geo.KIND_SERIES_MATRIX: geo.MATRIX_FOLDER}

# At most this many names of a folder listing are spelled out in an error (the rest are counted).
MAX_LISTED_NAMES = 40
# difflib similarity above which a listed name is offered as "did you mean": catches a missing or extra
# ".gz" or a typo (~0.95) but not a sibling file of the same series (GSE161731_key vs _counts: 0.79).
CLOSE_NAME_CUTOFF = 0.8


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
    raises :class:`~il6axis.acquire.download.DownloadError` with the reason, for the caller to mention.
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


def folder_listing(kind: str, accession: str, settings: DownloadSettings) -> tuple[str, list[str]]:
    """(where, file names) of the folder a missing file of ``kind`` was looked for in.

    With ``download.local_dir`` that is ``<local_dir>/<accession>/``; otherwise the series' ``suppl/`` or
    ``matrix/`` folder, read from the host's HTML directory listing. Raises DownloadError if it cannot
    be read.
    """
    if settings.local_dir:
        folder = Path(settings.local_dir) / accession
        if not folder.is_dir():
            raise DownloadError(f"the local folder {folder} does not exist")
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        return f"The local folder {folder}", names
    url = geo.series_listing_url(accession, LISTED_FOLDER[kind], settings.geo_base)
    names = list_directory(url, timeout_s=settings.timeout_s)
    return f"The series' {LISTED_FOLDER[kind]}/ folder ({url})", names


def available_files_hint(
    kind: str,
    accession: str,
    wanted: str,
    settings: DownloadSettings,
    config_key: str | None,
) -> str:
    """One or two sentences: what the folder holds, the closest names to ``wanted``, and what to fix.

    Never raises: if the listing cannot be read, the hint says so (the missing file is still reported
    by the caller).
    """
    fix_key = f"`{config_key}`" if config_key else "the file name in config"
    if kind == geo.KIND_SERIES_MATRIX:
        # The series matrix name is not configurable: a multi-platform series has one per platform.
        fix = (
            f"Fix: only a single-platform series matrix ({wanted}) is read; otherwise give the sample "
            f"table another way ({fix_key}: sample_sheet or geo_supplementary)."
        )
    else:
        fix = f"Fix: set {fix_key} to one of these."
    try:
        where, names = folder_listing(kind, accession, settings)
    except (DownloadError, OSError) as exc:
        return f"Could not list the folder to suggest a name ({exc}). Fix: check {fix_key}."
    if not names:
        return f"{where} holds no files. Fix: check the accession and {fix_key}."
    shown = ", ".join(names[:MAX_LISTED_NAMES])
    if len(names) > MAX_LISTED_NAMES:
        shown += f" and {len(names) - MAX_LISTED_NAMES} more"
    hint = f"{where} holds {len(names)} file(s): {shown}."
    close = difflib.get_close_matches(wanted, names, n=3, cutoff=CLOSE_NAME_CUTOFF)
    if close:
        hint += " Did you mean " + " or ".join(f"'{name}'" for name in close) + "?"
    return f"{hint} {fix}"
