"""A local fake GEO / NCBI HTTP server for tests (no internet needed).

``FakeGeo`` serves files from a data root laid out like the project's shared data directory
(``<root>/<GSE accession>/<file>``, ``<root>/NCBI_gene_info/Homo_sapiens.gene_info.gz``) under the
same URL layout as the real hosts:

- ``/geo/series/<GSEnnn>/<acc>/matrix/<file>``  -> ``<root>/<acc>/<file>``
- ``/geo/series/<GSEnnn>/<acc>/suppl/<file>``   -> ``<root>/<acc>/<file>``
- ``/geo/download/?type=rnaseq_counts&acc=<acc>&format=file&file=<file>`` -> ``<root>/<acc>/<file>``
- ``/gene/DATA/GENE_INFO/Mammalia/Homo_sapiens.gene_info.gz`` -> ``<root>/NCBI_gene_info/...``

plus files registered at runtime with :meth:`FakeGeo.add_file`. Unknown paths get a 404 with a
small HTML body, as real GEO does. The data root is only ever read.

Folder URLs ``/geo/series/<GSEnnn>/<acc>/suppl/`` and ``.../matrix/`` answer with an HTML directory
index, as ftp.ncbi.nlm.nih.gov does (without the trailing ``/``: a 301 to it). ``matrix/`` lists the
accession's ``*_series_matrix*`` files; ``suppl/`` lists the others except NCBI-generated tables
(``*NCBI*``, served under ``/geo/download/``), family SOFT files (``soft/``), ``*.md`` and hidden files;
both add the files registered with :meth:`FakeGeo.add_file` under that folder. ``listing_style``
chooses the page layout: ``"ncbi"`` (Apache ``<pre>`` index with an absolute parent link, as NCBI
serves), ``"apache"`` (fancy-index table with ``?C=N;O=D`` sort links) or ``"nginx"`` (autoindex with
``../`` and percent-escaped hrefs). A folder with no files at all is a 404.

Faults can be injected per request target (path + query string, exactly as requested; a full URL
starting with ``base_url`` is accepted too). Faults for a target are consumed in the order they
were added; each applies ``times`` times (None = forever), after which the file is served normally:

- ``fail_with(target, status, times=None)``: reply with an HTTP error status;
- ``serve_html_instead(target, times=None)``: 200 with an HTML error page;
- ``truncate(target, n_bytes, lie_about_length=False, times=None)``: send only the first
  ``n_bytes`` and close; with ``lie_about_length`` the Content-Length still announces the full size;
- ``drop_connection(target, times=None)``: close the socket without any response;
- ``stall(target, seconds, times=None)``: wait before answering (for client timeouts).

Use it as a context manager (``with FakeGeo(root) as geo: ...``) or via the pytest fixture made by
:func:`make_fake_geo_fixture`.
"""

from __future__ import annotations

import html
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

GENE_INFO_PATH = "/gene/DATA/GENE_INFO/Mammalia/Homo_sapiens.gene_info.gz"
_SERIES_RE = re.compile(
    r"^/geo/series/(?P<stub>GSE\d*nnn)/(?P<acc>GSE\d+)/(?P<sub>matrix|suppl)/(?P<file>[^/]+)$"
)
_ACC_RE = re.compile(r"^GSE\d+$")
_FOLDER_RE = re.compile(
    r"^/geo/series/(?P<stub>GSE\d*nnn)/(?P<acc>GSE\d+)/(?P<sub>matrix|suppl)(?P<slash>/?)$"
)
LISTING_STYLES = ("ncbi", "apache", "nginx")

_HTML_404 = (
    "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
    "<body><h1>Not Found</h1><p>The requested resource {what} was not found on this server.</p>"
    "</body></html>\n"
)
_HTML_ERROR_PAGE = (
    '<!DOCTYPE html>\n<html lang="en"><head><title>GEO Accession viewer</title></head>\n'
    "<body><h1>NCBI</h1><p>An error has occurred. The server is temporarily unable to service your "
    "request due to maintenance downtime. Please try again later.</p></body></html>\n"
)


def _not_found_page(target: str) -> str:
    return _HTML_404.format(what=html.escape(target))


def _content_type(name: str) -> str:
    if name.endswith(".gz"):
        return "application/x-gzip"
    if name.endswith(".tsv"):
        return "text/tab-separated-values"
    if name.endswith((".txt", ".md")):
        return "text/plain"
    return "application/octet-stream"


def _safe_name(name: str) -> bool:
    """Plain, non-hidden file name, so nothing outside ``<root>/<acc>/`` can be reached."""
    return bool(name) and not any(bad in name for bad in ("/", "\\", "..")) and not name.startswith(".")


def _series_stub(acc: str) -> str:
    return f"GSE{acc[3:-3]}nnn"


@dataclass
class _Fault:
    kind: str  # "status" | "html" | "truncate" | "drop" | "stall"
    times: int | None
    status: int = 500
    n_bytes: int = 0
    lie_about_length: bool = False
    seconds: float = 0.0


class FakeGeo:
    """Threaded HTTP server on 127.0.0.1 (random port) mimicking GEO/NCBI download URLs."""

    def __init__(self, data_root: str | Path | None = None, listing_style: str = "ncbi") -> None:
        if listing_style not in LISTING_STYLES:
            raise ValueError(f"listing_style must be one of {LISTING_STYLES}, got {listing_style!r}")
        self.data_root = Path(data_root) if data_root is not None else None
        self.listing_style = listing_style
        self.requests: list[str] = []  # request targets (path + query), in arrival order
        self.methods: list[str] = []  # HTTP method of each entry in ``requests``
        self._extra: dict[str, Path] = {}
        self._faults: dict[str, list[_Fault]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle
    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeGeo is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeGeo:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="FakeGeo", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeGeo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- configuration
    def target(self, url_or_target: str) -> str:
        """Normalise a full URL (or a target) to the request target ``path[?query]`` used as key."""
        if url_or_target.startswith(("http://", "https://")):
            parts = urllib.parse.urlsplit(url_or_target)
            return parts.path + (f"?{parts.query}" if parts.query else "")
        return url_or_target

    def url(self, target: str) -> str:
        """Full URL of a request target on this server."""
        return self.base_url + target

    def add_file(self, url_path: str, local_path: str | Path) -> None:
        """Serve ``local_path`` at ``url_path`` (path with optional query, or a full URL)."""
        local = Path(local_path)
        if not local.is_file():
            raise FileNotFoundError(local)
        with self._lock:
            self._extra[self.target(url_path)] = local

    def _add_fault(self, target: str, fault: _Fault) -> None:
        with self._lock:
            self._faults.setdefault(self.target(target), []).append(fault)

    def fail_with(self, target: str, status: int, times: int | None = None) -> None:
        """Answer ``target`` with HTTP ``status`` (``times`` times, None = always)."""
        self._add_fault(target, _Fault("status", times, status=status))

    def serve_html_instead(self, target: str, times: int | None = None) -> None:
        """Answer ``target`` with 200 and an HTML error page instead of the file."""
        self._add_fault(target, _Fault("html", times))

    def truncate(
        self, target: str, n_bytes: int, lie_about_length: bool = False, times: int | None = None
    ) -> None:
        """Send only the first ``n_bytes`` of the file, then close the connection.

        ``lie_about_length=False``: Content-Length = ``n_bytes`` (a consistent but short response,
        only detectable by checking the content, e.g. gzip integrity). ``True``: Content-Length
        announces the full file size (the client sees an incomplete body).
        """
        self._add_fault(target, _Fault("truncate", times, n_bytes=n_bytes, lie_about_length=lie_about_length))

    def drop_connection(self, target: str, times: int | None = None) -> None:
        """Close the connection without sending any response."""
        self._add_fault(target, _Fault("drop", times))

    def stall(self, target: str, seconds: float, times: int | None = None) -> None:
        """Sleep ``seconds`` before answering normally (to trigger client timeouts)."""
        self._add_fault(target, _Fault("stall", times, seconds=seconds))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def hits(self, url_or_target: str) -> int:
        """How many requests were made for a target."""
        key = self.target(url_or_target)
        with self._lock:
            return sum(1 for t in self.requests if t == key)

    # ---------------------------------------------------------------- request handling helpers
    def _record_and_take_fault(self, method: str, target: str) -> _Fault | None:
        with self._lock:
            self.requests.append(target)
            self.methods.append(method)
            for fault in self._faults.get(target, []):
                if fault.times is None:
                    return fault
                if fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def resolve(self, target: str) -> Path | None:
        """Local file for a request target, or None (-> 404)."""
        with self._lock:
            extra = self._extra.get(target)
        if extra is not None:
            return extra
        if self.data_root is None:
            return None
        parts = urllib.parse.urlsplit(target)
        path = urllib.parse.unquote(parts.path)
        candidate: Path | None = None
        match = _SERIES_RE.match(path)
        if match and match["stub"] == _series_stub(match["acc"]) and _safe_name(match["file"]):
            candidate = self.data_root / match["acc"] / match["file"]
        elif path in ("/geo/download/", "/geo/download"):
            query = urllib.parse.parse_qs(parts.query)
            acc = query.get("acc", [""])[0]
            name = query.get("file", [""])[0]
            if (
                query.get("type", [""])[0] == "rnaseq_counts"
                and query.get("format", [""])[0] == "file"
                and _ACC_RE.match(acc)
                and _safe_name(name)
            ):
                candidate = self.data_root / acc / name
        elif path == GENE_INFO_PATH:
            candidate = self.data_root / "NCBI_gene_info" / "Homo_sapiens.gene_info.gz"
        if candidate is not None and candidate.is_file():
            return candidate
        return None

    def listing(self, accession: str, subdir: str) -> list[str] | None:
        """Names listed in a series folder (``suppl`` or ``matrix``), or None if it holds nothing (404)."""
        names: set[str] = set()
        if self.data_root is not None and (self.data_root / accession).is_dir():
            names.update(
                p.name
                for p in (self.data_root / accession).iterdir()
                if p.is_file() and _listed_in(subdir, p.name)
            )
        prefix = f"/geo/series/{_series_stub(accession)}/{accession}/{subdir}/"
        with self._lock:
            extra = [t for t in self._extra if t.startswith(prefix) and "?" not in t]
        names.update(urllib.parse.unquote(t[len(prefix) :]) for t in extra)
        names = {n for n in names if n and "/" not in n}
        return sorted(names) or None


def _listed_in(subdir: str, name: str) -> bool:
    """Whether a data-root file appears in the ``matrix/`` or ``suppl/`` listing (see module docstring)."""
    if not _safe_name(name) or name.endswith(".md"):
        return False
    if subdir == "matrix":
        return "_series_matrix" in name
    return "_series_matrix" not in name and "NCBI" not in name and "_family.soft" not in name


def listing_page(path: str, names: list[str], style: str) -> str:
    """An HTML directory index of ``names`` at URL path ``path`` (ending in ``/``) in the given style."""
    folder = path.rstrip("/")
    parent = folder.rsplit("/", 1)[0] + "/"
    title = f"Index of {html.escape(folder)}"
    stamp, size = "2021-04-21 10:48", "5.3M"
    if style == "nginx":
        rows = [
            f'<a href="{urllib.parse.quote(n)}">{html.escape(n)}</a>{" " * max(1, 51 - len(n))}'
            f"21-Apr-2021 10:48    5533184"
            for n in names
        ]
        return (
            f"<html>\r\n<head><title>{title}/</title></head>\r\n<body>\r\n<h1>{title}/</h1><hr><pre>"
            '<a href="../">../</a>\r\n' + "\r\n".join(rows) + "\r\n</pre><hr></body>\r\n</html>\r\n"
        )
    if style == "apache":
        sort = "".join(
            f'<th><a href="?C={c};O=D">{label}</a></th>'
            for c, label in (("N", "Name"), ("M", "Last modified"), ("S", "Size"), ("D", "Description"))
        )
        rows = [
            f'<tr><td valign="top"><img src="/icons/unknown.gif" alt="[   ]"></td>'
            f'<td><a href="{urllib.parse.quote(n)}">{html.escape(n)}</a></td>'
            f'<td align="right">{stamp}  </td><td align="right">{size}</td><td>&nbsp;</td></tr>'
            for n in names
        ]
        return (
            '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">\n<html>\n <head>\n'
            f"  <title>{title}</title>\n </head>\n <body>\n<h1>{title}</h1>\n<table>\n"
            f'<tr><th valign="top"><img src="/icons/blank.gif" alt="[ICO]"></th>{sort}</tr>\n'
            f'<tr><td valign="top"><img src="/icons/back.gif" alt="[PARENTDIR]"></td>'
            f'<td><a href="{parent}">Parent Directory</a></td><td>&nbsp;</td><td align="right">  - </td>'
            "<td>&nbsp;</td></tr>\n" + "\n".join(rows) + "\n</table>\n</body></html>\n"
        )
    rows = [
        f'<a href="{urllib.parse.quote(n)}">{html.escape(n)}</a>{" " * max(1, 56 - len(n))}{stamp}  {size}  '
        for n in names
    ]
    return (
        '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">\n<html>\n <head>\n'
        f"  <title>{title}</title>\n </head>\n <body>\n<h1>{title}</h1>\n"
        f'<pre>Name{" " * 52}Last modified      Size  <hr><a href="{parent}">Parent Directory</a>'
        f"{' ' * 40}-   \n" + "\n".join(rows) + "\n<hr></pre>\n</body></html>\n"
    )


def _make_handler(geo: FakeGeo) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "FakeGEO/1.0"
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the default per-request stderr logging."""

        def _send_html(self, status: int, body: str, head_only: bool) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head_only:
                self.wfile.write(data)

        def _serve(self, head_only: bool) -> None:
            target = self.path
            fault = geo._record_and_take_fault(self.command, target)
            if fault is not None:
                if fault.kind == "stall":
                    time.sleep(fault.seconds)
                elif fault.kind == "drop":
                    self.close_connection = True
                    return
                elif fault.kind == "status":
                    body = _not_found_page(target) if fault.status == 404 else _HTML_ERROR_PAGE
                    self._send_html(fault.status, body, head_only)
                    return
                elif fault.kind == "html":
                    self._send_html(200, _HTML_ERROR_PAGE, head_only)
                    return

            folder = _FOLDER_RE.match(urllib.parse.urlsplit(target).path)
            if folder and folder["stub"] == _series_stub(folder["acc"]):
                self._serve_listing(folder, target, head_only)
                return
            local = geo.resolve(target)
            if local is None:
                self._send_html(404, _not_found_page(target), head_only)
                return
            size = local.stat().st_size
            n_send = size
            announced = size
            if fault is not None and fault.kind == "truncate":
                n_send = min(fault.n_bytes, size)
                announced = size if fault.lie_about_length else n_send
            self.send_response(200)
            self.send_header("Content-Type", _content_type(local.name))
            self.send_header("Content-Length", str(announced))
            self.send_header("Content-Disposition", f'attachment; filename="{local.name}"')
            self.end_headers()
            if head_only:
                return
            try:
                with local.open("rb") as fh:
                    remaining = n_send
                    while remaining > 0:
                        chunk = fh.read(min(64 * 1024, remaining))
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        remaining -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True

        def _serve_listing(self, folder: re.Match[str], target: str, head_only: bool) -> None:
            names = geo.listing(folder["acc"], folder["sub"])
            if names is None:
                self._send_html(404, _not_found_page(target), head_only)
            elif not folder["slash"]:  # like Apache: a folder URL without its slash is redirected
                self.send_response(301)
                self.send_header("Location", urllib.parse.urlsplit(target).path + "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                path = urllib.parse.urlsplit(target).path
                self._send_html(200, listing_page(path, names, geo.listing_style), head_only)

        def do_GET(self) -> None:
            self._serve(head_only=False)

        def do_HEAD(self) -> None:
            self._serve(head_only=True)

    return Handler


def make_fake_geo_fixture(
    name: str = "fake_geo", data_fixture: str = "shared_data", scope: str = "function"
) -> Callable[..., Any]:
    """Build a pytest fixture ``name`` yielding a started :class:`FakeGeo` over the data root given
    by fixture ``data_fixture`` (default: ``shared_data`` from tests/conftest.py, which skips when
    the data are absent locally and fails in CI). Usage in a test module::

        fake_geo = make_fake_geo_fixture()
    """

    @pytest.fixture(name=name, scope=scope)  # type: ignore[call-overload]
    def _fixture(request: pytest.FixtureRequest) -> Iterator[FakeGeo]:
        root = request.getfixturevalue(data_fixture)
        with FakeGeo(root) as geo:
            yield geo

    return _fixture
