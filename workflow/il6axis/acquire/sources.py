"""Choose where one GEO / NCBI file comes from (public host, mirror URL or local directory) and get it.

The download rules call :func:`retrieve` with the file's kind, accession and name plus the
:class:`~il6axis.acquire.download.DownloadSettings` of the ``download`` config block; it builds the URL
(or the path inside ``download.local_dir``), applies the header check for that kind of file and enforces
an expected checksum when the config gives one; the rule then writes a one-line record (file, url,
sha256, bytes, attempts; :mod:`il6axis.acquire.download_records`) that the manifest rule collects. When
a supplementary file or series matrix is missing, the error lists what the series folder does hold
("did you mean", :mod:`il6axis.acquire.series_listing`).

A cohort may list several count sources in order of preference (``counts.sources``):
:func:`fetch_first_available` takes the first one whose file exists and records the choice, and
:func:`with_chosen_counts` hands that source's settings to the cohort build. Only a missing file (HTTP
404 / 410, or absent from ``download.local_dir``) moves on to the next source. Any other failure stops
the run: falling back after a flaky transfer, an error page or a checksum mismatch would silently swap
the data the cohort is analysed on (e.g. raw counts for log2 values) because of a network hiccup.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from il6axis.acquire import download as dl
from il6axis.acquire import geo
from il6axis.acquire.download import DownloadSettings
from il6axis.acquire.payload_checks import expect_first_line_prefix
from il6axis.acquire.series_listing import LISTED_FOLDER, available_files_hint
from il6axis.errors import InputError
from il6axis.jsonio import read_json

log = logging.getLogger(__name__)

# Count sources (config `counts.source`) fetched from GEO, and the kind of download each one is.
COUNT_SOURCE_KINDS = {"geo_ncbi": geo.KIND_NCBI_COUNTS, "geo_supplementary": geo.KIND_SUPPLEMENTARY}

# Whether GEO's download endpoint answers a request for NCBI-generated counts it never made with a 404 or
# an HTML page is not documented (unverified): when a count source may be skipped, an HTML page on every
# attempt reads as "not re-processed" (a maintenance page goes away between attempts). For other kinds an
# HTML page stays an error: a supplementary file that GEO lists does exist.
NCBI_COUNTS_HTML = ("NCBI-generated counts", "GEO has not re-processed this series")


def source_url(kind: str, accession: str | None, filename: str | None, settings: DownloadSettings) -> str:
    """The URL of a file on the configured hosts (public NCBI by default, or a mirror)."""
    if kind == geo.KIND_SERIES_MATRIX:
        return geo.series_matrix_url(accession, settings.geo_base)
    if kind == geo.KIND_NCBI_COUNTS:
        return geo.ncbi_counts_url(accession, settings.geo_download_base)
    if kind == geo.KIND_SUPPLEMENTARY:
        return geo.supplementary_url(accession, filename, settings.geo_base)
    if kind == geo.KIND_GENE_INFO:
        return geo.gene_info_url(settings.ncbi_gene_base)
    raise ValueError(f"unknown kind of file {kind!r}; expected one of {geo.KINDS}")


def source_location(
    kind: str, accession: str | None, filename: str | None, settings: DownloadSettings
) -> str:
    """Where :func:`retrieve` reads a file: its path inside ``download.local_dir``, else its URL."""
    if settings.local_dir:
        return str(Path(settings.local_dir) / geo.local_relpath(kind, accession, filename))
    return source_url(kind, accession, filename, settings)


def retrieve(
    kind: str,
    dest: str | Path,
    settings: DownloadSettings,
    *,
    accession: str | None = None,
    filename: str | None = None,
    expected_sha256: str | None = None,
    expect_gzip: bool | None = None,
    config_key: str | None = None,
    missing_if_html: tuple[str, str] | None = None,
) -> dl.FetchResult:
    """Download (or copy from ``settings.local_dir``) one file, verified and written atomically.

    ``expect_gzip`` defaults to whether ``dest`` ends with ``.gz``. ``config_key`` names the config
    entry that chose the file; a missing supplementary file or series matrix raises
    :class:`~il6axis.acquire.download.MissingFileError` listing the files the series folder does hold and
    that key.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    prefix = geo.FIRST_LINE_PREFIX.get(kind)
    header_check = expect_first_line_prefix(prefix) if prefix else None
    where = source_location(kind, accession, filename, settings)
    try:
        if settings.local_dir:
            log.info("copying %s from local directory %s", Path(where).name, settings.local_dir)
            return dl.copy_local(
                where,
                dest,
                expected_sha256=expected_sha256,
                expect_gzip=expect_gzip,
                header_check=header_check,
            )
        return dl.fetch(
            where,
            dest,
            expected_sha256=expected_sha256,
            expect_gzip=expect_gzip,
            header_check=header_check,
            retries=settings.retries,
            backoff_s=settings.backoff_s,
            timeout_s=settings.timeout_s,
            missing_if_html=missing_if_html,
        )
    except dl.MissingFileError as exc:
        if kind == geo.KIND_NCBI_COUNTS:
            raise dl.MissingFileError(
                f"{str(exc).rstrip('.')}. GEO has no NCBI-generated counts for {accession} (it re-processes "
                "only some series): use an author file (`source: geo_supplementary`), or list both in "
                "order of preference under `counts.sources` (config/README.md).",
                status=exc.status,
            ) from exc
        if kind not in LISTED_FOLDER:
            raise
        wanted = filename or geo.local_relpath(kind, accession).rsplit("/", 1)[-1]
        hint = available_files_hint(kind, accession, wanted, settings, config_key)
        raise dl.MissingFileError(f"{str(exc).rstrip('.')}. {hint}", status=exc.status) from exc


# --------------------------------------------------------------------------------------------
# Count sources in order of preference
# --------------------------------------------------------------------------------------------


def _source_accession(cohort: str, accession: str | None) -> str:
    if accession is None or not isinstance(accession, str) or not accession.startswith(geo.ACCESSION_PREFIX):
        raise InputError(
            f"cohorts.{cohort}: a geo_* count source needs a GEO series: set cohorts.{cohort}.accession "
            f"(e.g. GSE152418) or name the cohort after its accession"
        )
    try:
        return geo.validate_accession(accession)
    except ValueError as exc:
        raise InputError(f"cohorts.{cohort}.accession: {exc}") from exc


def _count_source_target(
    source: Mapping[str, Any], settings: DownloadSettings, cohort: str, accession: str | None
) -> tuple[str, str | None, str | None, str]:
    """(kind, accession, file name, where it is read) of one count source; kind ``local`` for a path."""
    if source["source"] == "local":
        return "local", None, None, str(Path(source["path"]).absolute())
    kind = COUNT_SOURCE_KINDS[source["source"]]
    accession = _source_accession(cohort, accession)
    filename = source.get("file") if kind == geo.KIND_SUPPLEMENTARY else None
    return kind, accession, filename, source_location(kind, accession, filename, settings)


def _retrieve_count_source(
    source: Mapping[str, Any],
    dest: Path,
    settings: DownloadSettings,
    target: tuple[str, str | None, str | None, str],
    config_key: str,
) -> dl.FetchResult:
    """Get one count source into ``dest`` (verified, atomic); MissingFileError when it is not there."""
    kind, accession, filename, where = target
    # The chosen file's name does not say whether it is gzipped: the source's name does.
    if kind == "local":
        return dl.copy_local(
            where, dest, expected_sha256=source.get("sha256"), expect_gzip=where.endswith(".gz")
        )
    return retrieve(
        kind,
        dest,
        settings,
        accession=accession,
        filename=filename,
        expected_sha256=source.get("sha256"),
        expect_gzip=(filename or geo.ncbi_counts_name(accession)).endswith(".gz"),
        config_key=f"{config_key}.file",
        missing_if_html=NCBI_COUNTS_HTML if kind == geo.KIND_NCBI_COUNTS else None,
    )


def fetch_first_available(
    cohort: str,
    sources: Sequence[Mapping[str, Any]],
    dest: str | Path,
    settings: DownloadSettings,
    *,
    accession: str | None = None,
) -> tuple[dl.FetchResult, dict[str, Any]]:
    """Get the first of a cohort's count ``sources`` whose file exists; return it and the choice record.

    The record says which source was taken (its index in ``counts.sources``, settings, URL, sha256)
    and why each earlier one was skipped. A source whose file is missing is logged and skipped; any
    other failure raises at once (see the module docstring). If every file is missing, raises
    :class:`~il6axis.acquire.download.MissingFileError` listing each source and the reason.
    """
    if not sources:
        raise InputError(f"cohorts.{cohort}.counts.sources is empty: list at least one count source")
    dest = Path(dest)
    skipped: list[dict[str, Any]] = []
    for index, source in enumerate(sources):
        key = f"cohorts.{cohort}.counts.sources[{index}]"
        label = f"{key} ({source['source']})"
        target = _count_source_target(source, settings, cohort, accession)
        try:
            result = _retrieve_count_source(source, dest, settings, target, key)
        except dl.MissingFileError as exc:
            log.warning("%s: file missing, trying the next source. %s", label, exc)
            skipped.append(
                {
                    "index": index,
                    "config_key": key,
                    "settings": dict(source),
                    "url": target[3],
                    "reason": str(exc),
                }
            )
            continue
        except dl.DownloadError as exc:
            raise dl.DownloadError(
                f"{label} failed: {exc}. The run stops rather than fall back to a later source: only a "
                "missing file (HTTP 404/410, or absent from download.local_dir) moves on, because a later "
                "source may hold a different kind of values.",
                status=exc.status,
            ) from exc
        log.info(
            "%s chosen: %s (sha256 %s); %d earlier source(s) missing", label, result.url, result.sha256, index
        )
        choice = {
            "cohort": cohort,
            "chosen": {
                "index": index,
                "config_key": key,
                "settings": dict(source),
                "url": result.url,
                "sha256": result.sha256,
                "bytes": result.n_bytes,
            },
            "skipped": skipped,
        }
        return result, choice
    reasons = "\n".join(f"- {s['config_key']} ({s['settings']['source']}): {s['reason']}" for s in skipped)
    message = (
        f"cohorts.{cohort}.counts: none of the {len(sources)} count source(s) exists:\n{reasons}\n"
        "Fix: correct the file names above, or add a source that exists (e.g. `source: local` with a path)."
    )
    log.error(message)
    raise dl.MissingFileError(message)


def write_choice(choice: Mapping[str, Any], path: str | Path) -> None:
    """Write the choice record of :func:`fetch_first_available` as JSON, atomically."""
    dl.write_text_atomic(path, json.dumps(choice, indent=2, sort_keys=True) + "\n")


def with_chosen_counts(spec: Mapping[str, Any], choice_path: str | Path) -> dict[str, Any]:
    """The cohort spec with ``counts`` replaced by the settings of the source recorded as chosen.

    The build then sees a single-source ``counts`` block (gene_id, value_type, ... of the file that was
    actually downloaded). A record that no longer matches the config is an error, not a guess.
    """
    choice = read_json(
        choice_path, what="count source choice", rule="fetch_count_sources", required=("chosen",)
    )
    chosen = choice["chosen"]
    sources = spec["counts"].get("sources", [])
    index = chosen["index"]
    if index >= len(sources) or dict(sources[index]) != chosen["settings"]:
        raise InputError(
            f"{choice_path}: records {chosen['config_key']} = {chosen['settings']}, which is no longer in "
            f"the config; delete {choice_path} (or run with `--rerun-triggers params`) to choose again"
        )
    counts = {k: v for k, v in spec["counts"].items() if k != "sources"}
    counts.update(chosen["settings"])
    return {**spec, "counts": counts}
