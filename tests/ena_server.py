"""A local fake ENA for tests: the Portal API file report and the ``vol1/fastq/`` tree on 127.0.0.1.

:class:`FakeEna` extends :class:`geo_server.FakeGeo`, so every fault GEO tests inject works here too
(``fail_with``, ``serve_html_instead``, ``truncate``, ``drop_connection``, ``stall``; keyed by request
target, e.g. ``ena.fastq_target(run, name)`` or the file report URL). URL layout, as ENA's:

- ``/ena/portal/api/filereport?accession=<run>&result=read_run&fields=...&format=tsv``: a TSV with the
  requested fields, one row per registered run; ``fastq_ftp`` lists ``ftp.sra.ebi.ac.uk/vol1/fastq/...``
  paths (no scheme), ``fastq_md5`` / ``fastq_bytes`` the files' md5s and sizes, ``;``-separated;
- ``/vol1/fastq/<first 6 chars>/<00N | 0NN | NNN>/<run>/<file>``: the files themselves.

A run that was not registered gets what ENA gives for a run it lacks: by default an empty body with
status 200 (``missing_run_style="empty"``), or just the header line (``"header"``), or a 404
(``"404"``). ``add_run(..., md5_override=...)`` makes the report list a wrong md5 for a file.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from pathlib import Path

from geo_server import FakeGeo

# il6axis is importable because tests/conftest.py puts workflow/ on sys.path.
from il6axis.reads.ena import fastq_dir

PORTAL_PATH = "/ena/portal/api"
REAL_FASTQ_HOST = "ftp.sra.ebi.ac.uk"
MISSING_RUN_STYLES = ("empty", "header", "404")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


class FakeEna(FakeGeo):
    """Threaded HTTP server on 127.0.0.1 (random port) mimicking ENA's file report and FASTQ URLs."""

    def __init__(self, workdir: str | Path, missing_run_style: str = "empty") -> None:
        if missing_run_style not in MISSING_RUN_STYLES:
            raise ValueError(f"missing_run_style must be one of {MISSING_RUN_STYLES}")
        super().__init__(data_root=None)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.missing_run_style = missing_run_style
        self._runs: dict[str, dict[str, object]] = {}

    # ---------------------------------------------------------------- configuration
    @property
    def portal_base(self) -> str:
        return self.base_url + PORTAL_PATH

    def settings(self) -> dict[str, str]:
        """The ``reads.ena`` config block pointing at this server."""
        return {"portal_base": self.portal_base, "fastq_base": self.base_url}

    @staticmethod
    def fastq_target(run: str, name: str) -> str:
        return f"/{fastq_dir(run)}/{name}"

    def add_run(
        self,
        run: str,
        files: list[Path],
        layout: str = "PAIRED",
        md5_override: dict[str, str] | None = None,
    ) -> None:
        """Serve ``files`` (named as ENA names them) as the FASTQ files of ``run``."""
        overrides = md5_override or {}
        entries = []
        for path in files:
            target = self.fastq_target(run, path.name)
            self.add_file(target, path)
            entries.append(
                (REAL_FASTQ_HOST + target, overrides.get(path.name, _md5(path)), path.stat().st_size)
            )
        self._runs[run] = {"layout": layout, "files": entries}

    # ---------------------------------------------------------------- request handling
    def _report(self, run: str, fields: list[str]) -> str:
        info = self._runs[run]
        files = info["files"]
        values = {
            "run_accession": run,
            "fastq_ftp": ";".join(f[0] for f in files),
            "fastq_md5": ";".join(f[1] for f in files),
            "fastq_bytes": ";".join(str(f[2]) for f in files),
            "library_layout": info["layout"],
        }
        return "\t".join(fields) + "\n" + "\t".join(str(values.get(f, "")) for f in fields) + "\n"

    def resolve(self, target: str) -> Path | None:
        parts = urllib.parse.urlsplit(target)
        if parts.path != f"{PORTAL_PATH}/filereport":
            return super().resolve(target)
        query = urllib.parse.parse_qs(parts.query)
        run = query.get("accession", [""])[0]
        fields = query.get("fields", ["run_accession,fastq_ftp,fastq_md5,fastq_bytes"])[0].split(",")
        if query.get("result", [""])[0] != "read_run" or query.get("format", ["tsv"])[0] != "tsv":
            return None
        if run in self._runs:
            text = self._report(run, fields)
        elif self.missing_run_style == "404":
            return None
        else:
            text = "\t".join(fields) + "\n" if self.missing_run_style == "header" else ""
        report = self.workdir / f"filereport-{run or 'none'}-{len(self.requests)}.tsv"
        report.write_text(text, encoding="utf-8")
        return report
