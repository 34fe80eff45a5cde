"""Tests of il6axis.acquire: GEO names, the download transport and its payload checks, listings and sources.

Downloads run against a local fake GEO server serving the real shared data files."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import re
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT_ROOT
from geo_server import FakeGeo, make_fake_geo_fixture

from il6axis.acquire import download as dl
from il6axis.acquire import download_records as records
from il6axis.acquire import geo as geo_names
from il6axis.acquire import series_listing as listing
from il6axis.acquire import sources as acquire
from il6axis.acquire.download import DownloadSettings
from il6axis.acquire.payload_checks import expect_first_line_prefix
from il6axis.errors import InputError

fake_geo = make_fake_geo_fixture()

MATRIX_ACC = "GSE157103"
COUNTS_ACC = "GSE152418"
SUPPL_ACC = "GSE155454"
SUPPL_FILE = "GSE155454_counts_kuanrongchan_v1.csv.gz"
FAST = {"backoff_s": 0.001, "timeout_s": 10}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_no_output(dest: Path) -> None:
    """The failed download left neither the destination nor a temp file behind."""
    assert not dest.exists()
    if dest.parent.exists():
        assert not list(dest.parent.glob(".partial-*"))


class SleepRecorder:
    """No-op replacement for time.sleep that records the requested waits."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


# ------------------------------------------------------------------------------ URL builders


@pytest.mark.parametrize(
    ("accession", "expected"),
    [
        ("GSE152418", "geo/series/GSE152nnn/GSE152418"),
        ("GSE1234", "geo/series/GSE1nnn/GSE1234"),
        ("GSE12", "geo/series/GSEnnn/GSE12"),
    ],
)
def test_series_dir(accession: str, expected: str) -> None:
    assert geo_names.series_dir(accession) == expected


def test_url_builders() -> None:
    base = "http://mirror.example/"
    assert geo_names.series_matrix_url("GSE152418", base) == (
        "http://mirror.example/geo/series/GSE152nnn/GSE152418/matrix/GSE152418_series_matrix.txt.gz"
    )
    assert geo_names.ncbi_counts_url("GSE152418", "http://h") == (
        "http://h/geo/download/?type=rnaseq_counts&acc=GSE152418&format=file"
        "&file=GSE152418_raw_counts_GRCh38.p13_NCBI.tsv.gz"
    )
    assert geo_names.supplementary_url("GSE1234", "GSE1234_counts.csv.gz", "http://h") == (
        "http://h/geo/series/GSE1nnn/GSE1234/suppl/GSE1234_counts.csv.gz"
    )
    assert (
        geo_names.gene_info_url("http://h")
        == "http://h/gene/DATA/GENE_INFO/Mammalia/Homo_sapiens.gene_info.gz"
    )
    assert geo_names.series_matrix_url("GSE12").startswith(
        geo_names.DEFAULT_GEO_BASE + "/geo/series/GSEnnn/GSE12/"
    )
    assert geo_names.ncbi_counts_url("GSE12").startswith(
        geo_names.DEFAULT_GEO_DOWNLOAD_BASE + "/geo/download/?"
    )
    assert geo_names.gene_info_url().startswith(geo_names.DEFAULT_NCBI_GENE_BASE + "/gene/")
    # query values are percent-encoded
    assert "file=a+b%26c.tsv.gz" in geo_names.ncbi_counts_url("GSE1", "http://h", filename="a b&c.tsv.gz")


@pytest.mark.parametrize(
    "bad",
    ["GSE", "gse152418", "GSM4614985", "GSE152418 ", "GSE152418\n", "GSE12a", "GSE\u0661", "", "../GSE1"],
)
def test_bad_accession(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid GEO series accession") as info:
        geo_names.series_matrix_url(bad, "http://h")
    assert repr(bad) in str(info.value)
    assert not geo_names.is_accession(bad)
    # The Snakemake wildcard constraint is the same pattern: it must refuse the same strings.
    assert re.fullmatch(geo_names.ACCESSION_PATTERN, bad) is None


def test_file_name_templates_fill_wildcards() -> None:
    """common.smk fills the templates with the "{accession}" wildcard; the workflow paths keep GEO's names."""
    assert geo_names.SERIES_MATRIX_NAME.format(accession="{accession}") == "{accession}_series_matrix.txt.gz"
    assert geo_names.NCBI_COUNTS_NAME.format(accession="GSE152418") == geo_names.ncbi_counts_name("GSE152418")
    assert geo_names.is_accession("GSE152418") and re.fullmatch(geo_names.ACCESSION_PATTERN, "GSE1")


def _config_schema() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())


def test_schema_accession_pattern_is_geo_pattern() -> None:
    """The config schema (which cannot import Python) repeats the accession pattern; they must agree."""
    accession = _config_schema()["$defs"]["cohort"]["properties"]["accession"]
    assert accession["pattern"] == f"^{geo_names.ACCESSION_PATTERN}$"


def test_download_settings_defaults_match_the_schema() -> None:
    """DownloadSettings() repeats the schema defaults of the `download` block; they must agree."""
    block = _config_schema()["properties"]["download"]["properties"]
    defaults = {key: spec["default"] for key, spec in block.items()}
    assert DownloadSettings.from_config({}) == DownloadSettings() == DownloadSettings(**defaults)
    assert set(defaults) == set(DownloadSettings.__dataclass_fields__)


def test_download_settings_from_config_block() -> None:
    settings = DownloadSettings.from_config(
        {"geo_base": "http://m", "retries": 2, "local_dir": "", "timeout_s": 5}
    )
    assert settings.geo_base == "http://m" and settings.retries == 2 and settings.timeout_s == 5.0
    assert settings.local_dir is None  # an empty string means "no mirror", like null
    assert settings.geo_download_base == geo_names.DEFAULT_GEO_DOWNLOAD_BASE


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/b.gz", "..", "x..y", "", "a\\b"])
def test_bad_filename(bad: str) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        geo_names.supplementary_url("GSE155454", bad, "http://h")


def test_local_relpath() -> None:
    assert geo_names.local_relpath("series_matrix", "GSE157103") == "GSE157103/GSE157103_series_matrix.txt.gz"
    assert geo_names.local_relpath("ncbi_counts", "GSE152418") == (
        "GSE152418/GSE152418_raw_counts_GRCh38.p13_NCBI.tsv.gz"
    )
    assert geo_names.local_relpath("supplementary", "GSE155454", SUPPL_FILE) == f"GSE155454/{SUPPL_FILE}"
    assert geo_names.local_relpath("gene_info") == "Homo_sapiens.gene_info.gz"
    with pytest.raises(ValueError, match="needs a filename"):
        geo_names.local_relpath("supplementary", "GSE155454")
    with pytest.raises(ValueError, match="unknown file kind"):
        geo_names.local_relpath("bam", "GSE1", "x")
    with pytest.raises(ValueError, match="plain file name"):
        geo_names.local_relpath("supplementary", "GSE1", "../x")


# ------------------------------------------------------------------------------ successful fetches


def test_fetch_real_files_and_manifest(fake_geo: FakeGeo, shared_data: Path, tmp_path: Path) -> None:
    base = fake_geo.base_url
    cases = [
        (
            geo_names.series_matrix_url(MATRIX_ACC, base),
            shared_data / MATRIX_ACC / f"{MATRIX_ACC}_series_matrix.txt.gz",
            "!Series_title",
        ),
        (
            geo_names.ncbi_counts_url(COUNTS_ACC, base),
            shared_data / COUNTS_ACC / f"{COUNTS_ACC}_raw_counts_GRCh38.p13_NCBI.tsv.gz",
            "GeneID",
        ),
        (
            geo_names.supplementary_url(SUPPL_ACC, SUPPL_FILE, base),
            shared_data / SUPPL_ACC / SUPPL_FILE,
            "gene,",
        ),
        (
            geo_names.gene_info_url(base),
            shared_data / "NCBI_gene_info" / "Homo_sapiens.gene_info.gz",
            "#tax_id",
        ),
    ]
    results = []
    for url, source, prefix in cases:
        dest = tmp_path / "raw" / source.name
        expected = sha256_of(source)
        result = dl.fetch(
            url,
            dest,
            expected_sha256=expected,
            header_check=expect_first_line_prefix(prefix),
            **FAST,
        )
        assert result == dl.FetchResult(url, dest, expected, source.stat().st_size, 1)
        assert dest.read_bytes() == source.read_bytes()
        results.append(result)
    assert not list((tmp_path / "raw").glob(".partial-*"))
    assert fake_geo.requests == [fake_geo.target(url) for url, _, _ in cases]

    manifest = tmp_path / "manifest.tsv"
    records.write_manifest(results, manifest)
    rows = records.read_manifest(manifest)
    assert [r["file"] for r in rows] == [str(r.path) for r in results]
    assert [r["url"] for r in rows] == [r.url for r in results]
    assert [r["sha256"] for r in rows] == [r.sha256 for r in results]
    assert [r["bytes"] for r in rows] == [r.n_bytes for r in results]
    assert [r["attempts"] for r in rows] == [1] * len(results)
    assert manifest.read_text().splitlines()[0] == "file\turl\tsha256\tbytes\tattempts"
    assert not list(tmp_path.glob(".partial-*"))


def test_read_manifest_rejects_other_tsv(tmp_path: Path) -> None:
    other = tmp_path / "x.tsv"
    other.write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="not a download manifest"):
        records.read_manifest(other)


def test_fetch_synthetic_uncompressed_file(fake_geo: FakeGeo, tmp_path: Path) -> None:
    src = tmp_path / "src.tsv"
    src.write_text("GeneID\tS1\n3569\t7\n")
    fake_geo.add_file("/extra/table.tsv?v=1", src)
    dest = tmp_path / "out" / "table.tsv"
    check = expect_first_line_prefix("GeneID")
    result = dl.fetch(fake_geo.url("/extra/table.tsv?v=1"), dest, header_check=check)
    assert dest.read_text() == src.read_text()
    assert result.sha256 == sha256_of(src)


def test_head_request(fake_geo: FakeGeo, shared_data: Path) -> None:
    url = geo_names.gene_info_url(fake_geo.base_url)
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5) as resp:
        assert resp.status == 200
        size = (shared_data / "NCBI_gene_info" / "Homo_sapiens.gene_info.gz").stat().st_size
        assert int(resp.headers["Content-Length"]) == size
        assert resp.read() == b""
    assert fake_geo.methods == ["HEAD"]


# ------------------------------------------------------------------------------ permanent failures


@pytest.mark.parametrize("kind", ["missing_file", "unknown_accession_matrix", "unknown_accession_counts"])
def test_404_fails_at_once(fake_geo: FakeGeo, shared_data: Path, tmp_path: Path, kind: str) -> None:
    base = fake_geo.base_url
    url = {
        "missing_file": geo_names.supplementary_url(SUPPL_ACC, "GSE155454_no_such_file.csv.gz", base),
        "unknown_accession_matrix": geo_names.series_matrix_url("GSE999999999", base),
        "unknown_accession_counts": geo_names.ncbi_counts_url("GSE999999999", base),
    }[kind]
    dest = tmp_path / "x.gz"
    sleep = SleepRecorder()
    with pytest.raises(dl.DownloadError) as info:
        dl.fetch(url, dest, sleep=sleep, **FAST)
    message = str(info.value)
    assert info.value.status == 404
    assert "404" in message and url in message
    assert "check the accession / file name in config, or the base URL" in message
    assert fake_geo.hits(url) == 1
    assert sleep.waits == []
    assert_no_output(dest)


def test_403_not_retried(fake_geo: FakeGeo, shared_data: Path, tmp_path: Path) -> None:
    url = geo_names.gene_info_url(fake_geo.base_url)
    fake_geo.fail_with(url, 403)
    dest = tmp_path / "gene_info.gz"
    with pytest.raises(dl.DownloadError, match="HTTP 403") as info:
        dl.fetch(url, dest, **FAST)
    assert info.value.status == 403
    assert fake_geo.hits(url) == 1
    assert_no_output(dest)


def test_html_page_instead_of_file(fake_geo: FakeGeo, shared_data: Path, tmp_path: Path) -> None:
    url = geo_names.ncbi_counts_url(COUNTS_ACC, fake_geo.base_url)
    fake_geo.serve_html_instead(url)
    dest = tmp_path / "counts.tsv.gz"
    with pytest.raises(dl.DownloadError, match="HTML") as info:
        dl.fetch(url, dest, **FAST)
    assert url in str(info.value)
    assert fake_geo.hits(url) == 1
    assert_no_output(dest)


def test_html_body_detected_without_content_type(fake_geo: FakeGeo, tmp_path: Path) -> None:
    page = tmp_path / "page.bin"
    page.write_bytes(b"  \n<HTML><body>Error</body></HTML>")
    fake_geo.add_file("/x/counts.tsv", page)
    dest = tmp_path / "out" / "counts.tsv"
    with pytest.raises(dl.DownloadError, match="HTML"):
        dl.fetch(fake_geo.url("/x/counts.tsv"), dest, **FAST)
    assert_no_output(dest)


def test_not_gzip_is_permanent(fake_geo: FakeGeo, tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("GeneID\tS1\n")
    fake_geo.add_file("/x/counts.tsv.gz", plain)
    dest = tmp_path / "out" / "counts.tsv.gz"
    with pytest.raises(dl.DownloadError, match="not a gzip file"):
        dl.fetch(fake_geo.url("/x/counts.tsv.gz"), dest, **FAST)
    assert fake_geo.hits("/x/counts.tsv.gz") == 1
    assert_no_output(dest)


def test_checksum_mismatch_keeps_existing_dest(fake_geo: FakeGeo, shared_data: Path, tmp_path: Path) -> None:
    url = geo_names.series_matrix_url(MATRIX_ACC, fake_geo.base_url)
    actual = sha256_of(shared_data / MATRIX_ACC / f"{MATRIX_ACC}_series_matrix.txt.gz")
    wrong = "0" * 64
    dest = tmp_path / "matrix.txt.gz"
    dest.write_bytes(b"previous good version")
    with pytest.raises(dl.DownloadError, match="checksum mismatch") as info:
        dl.fetch(url, dest, expected_sha256=wrong, **FAST)
    message = str(info.value)
    assert wrong in message and actual in message and url in message
    assert "update `checksums` in config" in message
    assert fake_geo.hits(url) == 1
    assert dest.read_bytes() == b"previous good version"
    assert not list(tmp_path.glob(".partial-*"))
    dest.unlink()
    with pytest.raises(dl.DownloadError, match="checksum mismatch"):
        dl.fetch(url, dest, expected_sha256=wrong.upper().replace("0", "A"), **FAST)
    assert_no_output(dest)


def test_bad_expected_checksum_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sha256"):
        dl.fetch("http://127.0.0.1:9/x", tmp_path / "x", expected_sha256="abc")


def test_header_check_failure(fake_geo: FakeGeo, shared_data: Path, tmp_path: Path) -> None:
    url = geo_names.supplementary_url(SUPPL_ACC, SUPPL_FILE, fake_geo.base_url)
    dest = tmp_path / SUPPL_FILE
    with pytest.raises(dl.DownloadError, match="unexpected content") as info:
        dl.fetch(url, dest, header_check=expect_first_line_prefix("GeneID"), **FAST)
    message = str(info.value)
    assert "'GeneID'" in message and "gene,severe_" in message and url in message
    assert fake_geo.hits(url) == 1
    assert_no_output(dest)


# ------------------------------------------------------------------------------ transient failures


def test_500_twice_then_success(fake_geo: FakeGeo, shared_data: Path, tmp_path: Path) -> None:
    url = geo_names.series_matrix_url(MATRIX_ACC, fake_geo.base_url)
    fake_geo.fail_with(url, 500, times=2)
    sleep = SleepRecorder()
    dest = tmp_path / "matrix.txt.gz"
    result = dl.fetch(url, dest, retries=4, backoff_s=0.5, sleep=sleep)
    assert result.attempts == 3
    assert sleep.waits == [0.5, 1.0]
    assert result.sha256 == sha256_of(shared_data / MATRIX_ACC / f"{MATRIX_ACC}_series_matrix.txt.gz")
    assert fake_geo.hits(url) == 3


def test_always_500_gives_up(fake_geo: FakeGeo, shared_data: Path, tmp_path: Path) -> None:
    url = geo_names.series_matrix_url(MATRIX_ACC, fake_geo.base_url)
    fake_geo.fail_with(url, 503)
    sleep = SleepRecorder()
    dest = tmp_path / "matrix.txt.gz"
    with pytest.raises(dl.DownloadError, match="after 3 attempts") as info:
        dl.fetch(url, dest, retries=3, backoff_s=1.0, sleep=sleep)
    assert "HTTP 503" in str(info.value) and url in str(info.value)
    assert info.value.status == 503
    assert fake_geo.hits(url) == 3
    assert sleep.waits == [1.0, 2.0]
    assert_no_output(dest)


def test_429_is_retried(fake_geo: FakeGeo, shared_data: Path, tmp_path: Path) -> None:
    url = geo_names.gene_info_url(fake_geo.base_url)
    fake_geo.fail_with(url, 429, times=1)
    result = dl.fetch(url, tmp_path / "gi.gz", sleep=SleepRecorder(), **FAST)
    assert result.attempts == 2


@pytest.mark.parametrize("lie", [False, True], ids=["short-length", "lying-length"])
def test_truncated_gzip_retried_then_ok(
    fake_geo: FakeGeo, shared_data: Path, tmp_path: Path, lie: bool
) -> None:
    url = geo_names.ncbi_counts_url(COUNTS_ACC, fake_geo.base_url)
    fake_geo.truncate(url, 100_000, lie_about_length=lie, times=1)
    dest = tmp_path / "counts.tsv.gz"
    result = dl.fetch(url, dest, sleep=SleepRecorder(), **FAST)
    assert result.attempts == 2
    source = shared_data / COUNTS_ACC / f"{COUNTS_ACC}_raw_counts_GRCh38.p13_NCBI.tsv.gz"
    assert result.sha256 == sha256_of(source)


@pytest.mark.parametrize("lie", [False, True], ids=["short-length", "lying-length"])
def test_truncated_gzip_persistent_fails(
    fake_geo: FakeGeo, shared_data: Path, tmp_path: Path, lie: bool
) -> None:
    url = geo_names.ncbi_counts_url(COUNTS_ACC, fake_geo.base_url)
    fake_geo.truncate(url, 100_000, lie_about_length=lie)
    dest = tmp_path / "counts.tsv.gz"
    sleep = SleepRecorder()
    with pytest.raises(dl.DownloadError, match="after 3 attempts") as info:
        dl.fetch(url, dest, retries=3, sleep=sleep, **FAST)
    reason = "incomplete body" if lie else "truncated or corrupt"
    assert reason in str(info.value)
    assert fake_geo.hits(url) == 3
    assert len(sleep.waits) == 2
    assert_no_output(dest)


def test_dropped_connection_is_retried(fake_geo: FakeGeo, shared_data: Path, tmp_path: Path) -> None:
    url = geo_names.gene_info_url(fake_geo.base_url)
    fake_geo.drop_connection(url, times=2)
    result = dl.fetch(url, tmp_path / "gi.gz", sleep=SleepRecorder(), **FAST)
    assert result.attempts == 3


def test_timeout_is_retried(fake_geo: FakeGeo, shared_data: Path, tmp_path: Path) -> None:
    url = geo_names.series_matrix_url(MATRIX_ACC, fake_geo.base_url)
    fake_geo.stall(url, 1.0, times=1)
    result = dl.fetch(url, tmp_path / "m.gz", timeout_s=0.3, backoff_s=0.001, sleep=SleepRecorder())
    assert result.attempts == 2


def test_connection_refused_is_retried(tmp_path: Path) -> None:
    geo = FakeGeo().start()
    url = geo.url("/x.gz")
    geo.stop()  # nothing listens on that port any more
    sleep = SleepRecorder()
    with pytest.raises(dl.DownloadError, match="after 2 attempts.*connection failed"):
        dl.fetch(url, tmp_path / "x.gz", retries=2, sleep=sleep, **FAST)
    assert sleep.waits == [0.001]
    assert_no_output(tmp_path / "x.gz")


# ------------------------------------------------------------------------------ local mirror


def test_copy_local_from_mirror(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / geo_names.local_relpath("ncbi_counts", COUNTS_ACC)
    dest = tmp_path / "counts.tsv.gz"
    result = dl.copy_local(
        src, dest, expected_sha256=sha256_of(src), header_check=expect_first_line_prefix("GeneID")
    )
    assert result.url == "file://" + str(src.absolute())
    assert result.attempts == 1 and result.n_bytes == src.stat().st_size
    assert dest.read_bytes() == src.read_bytes()
    assert not list(tmp_path.glob(".partial-*"))


def test_copy_local_missing(tmp_path: Path) -> None:
    src = tmp_path / "mirror" / "GSE1" / "GSE1_series_matrix.txt.gz"
    dest = tmp_path / "out" / "m.txt.gz"
    with pytest.raises(dl.DownloadError, match="download.local_dir") as info:
        dl.copy_local(src, dest)
    assert str(src) in str(info.value)
    assert_no_output(dest)


def test_copy_local_truncated_gzip(tmp_path: Path) -> None:
    full = gzip.compress(b"GeneID\tS1\n" + b"1\t2\n" * 50_000)
    src = tmp_path / "mirror.tsv.gz"
    src.write_bytes(full[: len(full) // 2])
    dest = tmp_path / "out" / "c.tsv.gz"
    with pytest.raises(dl.DownloadError, match="truncated or corrupt"):
        dl.copy_local(src, dest)
    assert_no_output(dest)


# ------------------------------------------------------------------------------ logging


def test_progress_and_retry_logging(
    fake_geo: FakeGeo, shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = geo_names.ncbi_counts_url(COUNTS_ACC, fake_geo.base_url)
    fake_geo.fail_with(url, 502, times=1)
    caplog.set_level(logging.INFO, logger="il6axis.acquire.download")
    dest = tmp_path / "c.tsv.gz"
    result = dl.fetch(url, dest, progress_every_bytes=256 * 1024, sleep=SleepRecorder(), **FAST)
    messages = [r.getMessage() for r in caplog.records if r.name == "il6axis.acquire.download"]
    progress = [m for m in messages if " MiB / 1.3 MiB (" in m]
    # 1,415,316 bytes in 256 KiB steps -> 5 progress lines (18%, 37%, 55%, 74%, 92%)
    assert len(progress) == 5
    assert progress[0].endswith("0.2 MiB / 1.3 MiB (18%)")
    assert progress[-1].endswith("1.2 MiB / 1.3 MiB (92%)")
    assert any(m.startswith("downloading ") for m in messages)
    assert any("attempt 1/4" in m and "HTTP 502" in m and "retrying in" in m for m in messages)
    assert any(result.sha256 in m and str(result.n_bytes) in m for m in messages)


def test_custom_logger(
    fake_geo: FakeGeo, shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    custom = logging.getLogger("il6axis.tests.custom")
    caplog.set_level(logging.INFO, logger="il6axis.tests.custom")
    dl.fetch(geo_names.gene_info_url(fake_geo.base_url), tmp_path / "gi.gz", logger=custom, **FAST)
    assert any(r.name == "il6axis.tests.custom" and "sha256=" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------ directory listings

GEO_SUPPL = "https://ftp.ncbi.nlm.nih.gov/geo/series/GSE172nnn/GSE172114/suppl/"

# NCBI's FTP-over-HTTPS index: Apache <pre> listing, absolute parent link, relative file links.
NCBI_PRE_PAGE = """<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">
<html><head><title>Index of /geo/series/GSE172nnn/GSE172114/suppl</title></head><body>
<h1>Index of /geo/series/GSE172nnn/GSE172114/suppl</h1>
<pre>Name                    Last modified      Size  <hr>
<a href="/geo/series/GSE172nnn/GSE172114/">Parent Directory</a>   -
<a href="GSE172114_rsem_gene_count_matrix_TMM_69samples.csv.gz">GSE172114_rsem_gene_count_matrix_TMM..&gt;</a>
 2021-04-21 10:48  5.3M
<a href="filelist.txt">filelist.txt</a>            2021-04-21 10:48  123
<hr></pre></body></html>
"""

# Apache fancy index: sort links, icons, ../ parent, a sub-folder, absolute-path and full-URL file links,
# a link into another series and an in-page anchor (all but the two files and the absolute ones ignored).
APACHE_TABLE_PAGE = """<html><body><h1>Index of /geo/series/GSE172nnn/GSE172114/suppl</h1><table>
<tr><th><img src="/icons/blank.gif" alt="[ICO]"></th><th><a href="?C=N;O=D">Name</a></th>
<th><a href="?C=M;O=A">Last modified</a></th><th><a href="?C=S;O=A">Size</a></th></tr>
<tr><td><img src="/icons/back.gif"></td><td><a href="../">Parent Directory</a></td></tr>
<tr><td><a href="GSE172114_RAW/">GSE172114_RAW/</a></td></tr>
<tr><td><a href="/geo/series/GSE172nnn/GSE172114/suppl/GSE172114_abs%20path.txt">abs</a></td></tr>
<tr><td><a href="https://ftp.ncbi.nlm.nih.gov/geo/series/GSE172nnn/GSE172114/suppl/GSE172114_full_url.tsv.gz">
full</a></td></tr>
<tr><td><a href="https://example.org/geo/series/GSE172nnn/GSE172114/suppl/elsewhere.gz">elsewhere</a></td></tr>
<tr><td><a href="/geo/series/GSE172nnn/GSE172115/suppl/GSE172115_other.csv.gz">other series</a></td></tr>
<tr><td><a href="#top">top</a></td><td><a href="./GSE172114_dot_slash.csv">dot</a></td></tr>
</table></body></html>
"""

# nginx autoindex: ../ parent, percent-escaped hrefs (names with spaces, '+', '#', '&').
NGINX_PAGE = """<html>\r\n<head><title>Index of /geo/series/GSE172nnn/GSE172114/suppl/</title></head>
<body>
<h1>Index of /geo/series/GSE172nnn/GSE172114/suppl/</h1><hr><pre><a href="../">../</a>
<a href="GSE172114_a%20b%2Bc.csv.gz">GSE172114_a b+c.csv.gz</a>        21-Apr-2021 10:48    5533184
<a href="GSE172114_x%23y%26z.txt">GSE172114_x#y&amp;z.txt</a>        21-Apr-2021 10:48    12
</pre><hr></body>\r\n</html>\r\n"""


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        (NCBI_PRE_PAGE, ["GSE172114_rsem_gene_count_matrix_TMM_69samples.csv.gz", "filelist.txt"]),
        (
            APACHE_TABLE_PAGE,
            [
                "GSE172114_abs path.txt",
                "GSE172114_dot_slash.csv",
                "GSE172114_full_url.tsv.gz",
            ],
        ),
        (NGINX_PAGE, ["GSE172114_a b+c.csv.gz", "GSE172114_x#y&z.txt"]),
    ],
    ids=["ncbi-pre", "apache-table", "nginx"],
)
def test_parse_directory_listing_forms(page: str, expected: list[str]) -> None:
    assert listing.parse_directory_listing(page, GEO_SUPPL) == sorted(expected)
    # The folder URL without its trailing slash resolves the same links.
    assert listing.parse_directory_listing(page, GEO_SUPPL.rstrip("/")) == sorted(expected)


def test_parse_directory_listing_without_files() -> None:
    page = '<html><body><a href="../">../</a><a href="?C=N;O=D">Name</a><a href="sub/">sub/</a></body></html>'
    assert listing.parse_directory_listing(page, GEO_SUPPL) == []


def test_series_listing_url() -> None:
    assert geo_names.series_listing_url("GSE172114", "suppl") == GEO_SUPPL
    assert (
        geo_names.series_listing_url("GSE12", "matrix", "http://h/")
        == "http://h/geo/series/GSEnnn/GSE12/matrix/"
    )
    with pytest.raises(ValueError, match="unknown series folder"):
        geo_names.series_listing_url("GSE12", "soft")


@pytest.mark.parametrize("style", ["ncbi", "apache", "nginx"])
def test_server_listing_round_trip(shared_data: Path, tmp_path: Path, style: str) -> None:
    """The fake GEO's folder pages, in each layout, parse back to exactly the files it serves there."""
    extra = tmp_path / "extra.csv"
    extra.write_text("gene,S1\nIL6,1\n")
    with FakeGeo(shared_data, listing_style=style) as geo:
        geo.add_file("/geo/series/GSE293nnn/GSE293708/suppl/GSE293708_with%20space.csv", extra)
        suppl = listing.list_directory(geo_names.series_listing_url("GSE293708", "suppl", geo.base_url))
        expected = sorted(
            [p.name for p in (shared_data / "GSE293708").glob("GSE293708_*")] + ["GSE293708_with space.csv"]
        )
        assert suppl == expected
        matrix = listing.list_directory(geo_names.series_listing_url("GSE157103", "matrix", geo.base_url))
        assert matrix == ["GSE157103_series_matrix.txt.gz"]
        # NCBI-generated counts are served under /geo/download/, not listed in suppl/.
        assert listing.list_directory(geo_names.series_listing_url("GSE152418", "suppl", geo.base_url)) == [
            "GSE152418_sample_metadata_GEOquery_pData.csv.gz"
        ]
        # Without the trailing slash: redirected like Apache does, then listed.
        no_slash = geo_names.series_listing_url("GSE157103", "matrix", geo.base_url).rstrip("/")
        assert listing.list_directory(no_slash) == matrix
        with pytest.raises(dl.DownloadError, match="HTTP 404") as info:
            listing.list_directory(geo_names.series_listing_url("GSE157103", "suppl", geo.base_url))
        assert info.value.status == 404


def test_list_directory_rejects_a_non_listing(fake_geo: FakeGeo, tmp_path: Path) -> None:
    page = tmp_path / "p.txt"
    page.write_text("no links here")
    fake_geo.add_file("/some/folder/", page)
    with pytest.raises(dl.DownloadError, match="not an HTML directory index"):
        listing.list_directory(fake_geo.url("/some/folder/"))


# ------------------------------------------------------------------------------ missing files: did you mean


def _settings(base_url: str, local_dir: Path | None = None) -> DownloadSettings:
    return DownloadSettings.from_config(
        {
            "geo_base": base_url,
            "geo_download_base": base_url,
            "ncbi_gene_base": base_url,
            "local_dir": str(local_dir) if local_dir else None,
            "retries": 3,
            "backoff_s": 0.001,
            "timeout_s": 10,
        }
    )


@pytest.mark.parametrize("status", [404, 410])
def test_404_and_410_are_missing_files(
    fake_geo: FakeGeo, shared_data: Path, tmp_path: Path, status: int
) -> None:
    url = geo_names.gene_info_url(fake_geo.base_url)
    fake_geo.fail_with(url, status)
    with pytest.raises(dl.MissingFileError) as info:
        dl.fetch(url, tmp_path / "gi.gz", **FAST)
    assert info.value.status == status and fake_geo.hits(url) == 1
    fake_geo.clear_faults()
    fake_geo.fail_with(url, 403)
    with pytest.raises(dl.DownloadError) as refused:
        dl.fetch(url, tmp_path / "gi.gz", **FAST)
    assert not isinstance(refused.value, dl.MissingFileError)
    assert_no_output(tmp_path / "gi.gz")


def test_missing_supplementary_file_lists_the_suppl_folder(fake_geo: FakeGeo, tmp_path: Path) -> None:
    """GSE293708's counts named without '.gz' (the GSE172114 mistake): the error offers the real name."""
    settings = _settings(fake_geo.base_url)
    dest = tmp_path / "out" / "counts.csv"
    with pytest.raises(dl.MissingFileError) as info:
        acquire.retrieve(
            "supplementary",
            dest,
            settings,
            accession="GSE293708",
            filename="GSE293708_DESeq2_normalized_counts.csv",
            config_key="cohorts.GSE293708.counts.file",
        )
    message = str(info.value)
    listing = geo_names.series_listing_url("GSE293708", "suppl", fake_geo.base_url)
    assert info.value.status == 404 and "HTTP 404" in message
    assert f"The series' suppl/ folder ({listing}) holds 4 file(s): " in message
    for name in [
        "GSE293708_DESeq2_normalized_counts.csv.gz",
        "GSE293708_reconstructed_raw_counts.csv.gz",
        "GSE293708_sample_sheet_from_colnames.csv.gz",
        "GSE293708_sample_statistics.csv.gz",
    ]:
        assert name in message
    assert "Did you mean 'GSE293708_DESeq2_normalized_counts.csv.gz'?" in message
    assert "Fix: set `cohorts.GSE293708.counts.file` to one of these." in message
    assert fake_geo.hits(listing) == 1
    assert_no_output(dest)


def test_did_you_mean_when_the_listing_fails(fake_geo: FakeGeo, tmp_path: Path) -> None:
    listing = geo_names.series_listing_url("GSE293708", "suppl", fake_geo.base_url)
    fake_geo.fail_with(listing, 500)
    dest = tmp_path / "x.csv"
    with pytest.raises(dl.MissingFileError) as info:
        acquire.retrieve(
            "supplementary",
            dest,
            _settings(fake_geo.base_url),
            accession="GSE293708",
            filename="GSE293708_counts.csv",
            config_key="cohorts.c.metadata.file",
        )
    message = str(info.value)
    assert "HTTP 404" in message and "GSE293708_counts.csv" in message
    assert (
        f"Could not list the folder to suggest a name (HTTP 500 Internal Server Error for {listing})"
        in message
    )
    assert "Fix: check `cohorts.c.metadata.file`." in message
    assert_no_output(dest)


def test_did_you_mean_lists_the_local_folder(tmp_path: Path) -> None:
    local = tmp_path / "mirror"
    (local / "GSE1000").mkdir(parents=True)
    for name in ["GSE1000_counts.tsv.gz", "GSE1000_key.csv.gz", ".hidden"]:
        (local / "GSE1000" / name).write_bytes(b"x")
    dest = tmp_path / "out" / "c.tsv"
    with pytest.raises(dl.MissingFileError) as info:
        acquire.retrieve(
            "supplementary",
            dest,
            _settings("http://127.0.0.1:9", local),
            accession="GSE1000",
            filename="GSE1000_counts.tsv",
            config_key="cohorts.GSE1000.counts.file",
        )
    message = str(info.value)
    assert "local mirror file not found" in message
    assert (
        f"The local folder {local / 'GSE1000'} holds 2 file(s): GSE1000_counts.tsv.gz, GSE1000_key.csv.gz."
        in message
    )
    assert "Did you mean 'GSE1000_counts.tsv.gz'?" in message and ".hidden" not in message
    assert_no_output(dest)


def test_missing_series_matrix_lists_the_matrix_folder(tmp_path: Path) -> None:
    """A multi-platform series has GSE...-GPL..._series_matrix files only: the error shows them."""
    root = tmp_path / "geo"
    (root / "GSE1000").mkdir(parents=True)
    for gpl in ("GPL570", "GPL96"):
        (root / "GSE1000" / f"GSE1000-{gpl}_series_matrix.txt.gz").write_bytes(
            gzip.compress(b"!Series_title\n")
        )
    with FakeGeo(root) as geo:
        with pytest.raises(dl.MissingFileError) as info:
            acquire.retrieve(
                "series_matrix",
                tmp_path / "m.txt.gz",
                _settings(geo.base_url),
                accession="GSE1000",
                config_key="cohorts.GSE1000.metadata.source",
            )
    message = str(info.value)
    assert (
        "holds 2 file(s): GSE1000-GPL570_series_matrix.txt.gz, GSE1000-GPL96_series_matrix.txt.gz" in message
    )
    assert "only a single-platform series matrix (GSE1000_series_matrix.txt.gz) is read" in message
    assert "`cohorts.GSE1000.metadata.source`" in message


def test_long_listing_says_how_many_are_not_shown(tmp_path: Path) -> None:
    local = tmp_path / "mirror"
    (local / "GSE1000").mkdir(parents=True)
    n_files = listing.MAX_LISTED_NAMES + 7
    for i in range(n_files):
        (local / "GSE1000" / f"GSE1000_file{i:03d}.txt").write_bytes(b"x")
    hint = listing.available_files_hint(
        "supplementary", "GSE1000", "nothing_like_it", _settings("http://h", local), None
    )
    assert f"holds {n_files} file(s)" in hint and "and 7 more." in hint
    assert "Did you mean" not in hint and "Fix: set the file name in config to one of these." in hint


# ------------------------------------------------------------------------------ count sources in order

NCBI_TABLE = b"GeneID\tGSM1\tGSM2\n3569\t7\t9\n3570\t1\t0\n"
AUTHOR_TABLE = b"gene,S1,S2\nENSG00000136244.12,-1.5,2.25\n"


@pytest.fixture()
def geo_root(tmp_path: Path) -> Path:
    """A GEO data root for GSE1000 with both an NCBI raw-count table and an author file (distinct content)."""
    folder = tmp_path / "geo" / "GSE1000"
    folder.mkdir(parents=True)
    (folder / geo_names.ncbi_counts_name("GSE1000")).write_bytes(gzip.compress(NCBI_TABLE))
    (folder / "GSE1000_author_log2.csv.gz").write_bytes(gzip.compress(AUTHOR_TABLE))
    return tmp_path / "geo"


PREFERENCE = [
    {"source": "geo_ncbi", "gene_id": "entrez", "value_type": "counts"},
    {
        "source": "geo_supplementary",
        "file": "GSE1000_author_log2.csv.gz",
        "gene_id": "ensembl",
        "value_type": "log2_normalised",
    },
]


def _fetch_sources(settings: dict, dest: Path, sources: list[dict] = PREFERENCE) -> tuple:
    return acquire.fetch_first_available("c1", sources, dest, settings, accession="GSE1000")


def test_first_source_taken_when_present(geo_root: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "c1.counts"
    with FakeGeo(geo_root) as geo:
        result, choice = _fetch_sources(_settings(geo.base_url), dest)
        suppl_url = geo_names.supplementary_url("GSE1000", "GSE1000_author_log2.csv.gz", geo.base_url)
        assert geo.hits(suppl_url) == 0  # a later source is never touched
    assert gzip.decompress(dest.read_bytes()) == NCBI_TABLE
    assert choice["chosen"]["index"] == 0 and choice["skipped"] == []
    assert choice["chosen"]["settings"] == PREFERENCE[0]
    assert choice["chosen"]["url"] == result.url and "acc=GSE1000" in result.url
    assert choice["chosen"]["sha256"] == result.sha256 == sha256_of(dest)


def test_missing_first_source_falls_back_and_says_why(
    geo_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (geo_root / "GSE1000" / geo_names.ncbi_counts_name("GSE1000")).unlink()  # GEO has not re-processed it
    dest = tmp_path / "out" / "c1.counts"
    caplog.set_level(logging.INFO, logger="il6axis.acquire.sources")
    with FakeGeo(geo_root) as geo:
        result, choice = _fetch_sources(_settings(geo.base_url), dest)
        ncbi_url = geo_names.ncbi_counts_url("GSE1000", geo.base_url)
        assert geo.hits(ncbi_url) == 1  # a 404 is not retried
    assert gzip.decompress(dest.read_bytes()) == AUTHOR_TABLE
    assert choice["chosen"]["index"] == 1 and choice["chosen"]["settings"] == PREFERENCE[1]
    assert choice["chosen"]["config_key"] == "cohorts.c1.counts.sources[1]"
    [skipped] = choice["skipped"]
    assert skipped["index"] == 0 and skipped["settings"] == PREFERENCE[0] and skipped["url"] == ncbi_url
    assert (
        "HTTP 404" in skipped["reason"]
        and "GEO has no NCBI-generated counts for GSE1000" in skipped["reason"]
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "cohorts.c1.counts.sources[0] (geo_ncbi): file missing" in m and "HTTP 404" in m for m in warnings
    )
    # The record round-trips through JSON, and the build sees the chosen source's settings.
    choice_path = tmp_path / "out" / "c1.choice.json"
    acquire.write_choice(choice, choice_path)
    assert json.loads(choice_path.read_text()) == choice
    spec = {"title": "t", "counts": {"sources": PREFERENCE}}
    merged = acquire.with_chosen_counts(spec, choice_path)
    assert merged["counts"] == PREFERENCE[1] and merged["title"] == "t"
    assert not list((tmp_path / "out").glob(".partial-*"))


def test_all_sources_missing_lists_each_reason(geo_root: Path, tmp_path: Path) -> None:
    (geo_root / "GSE1000" / geo_names.ncbi_counts_name("GSE1000")).unlink()
    sources = [PREFERENCE[0], {**PREFERENCE[1], "file": "GSE1000_author_log2.csv"}]
    dest = tmp_path / "out" / "c1.counts"
    with FakeGeo(geo_root) as geo:
        with pytest.raises(dl.MissingFileError) as info:
            _fetch_sources(_settings(geo.base_url), dest, sources)
    message = str(info.value)
    assert "cohorts.c1.counts: none of the 2 count source(s) exists" in message
    assert "- cohorts.c1.counts.sources[0] (geo_ncbi): HTTP 404" in message
    assert "- cohorts.c1.counts.sources[1] (geo_supplementary): HTTP 404" in message
    assert "Did you mean 'GSE1000_author_log2.csv.gz'?" in message
    assert "`cohorts.c1.counts.sources[1].file`" in message
    assert_no_output(dest)


def test_lasting_html_page_for_ncbi_counts_reads_as_not_reprocessed(geo_root: Path, tmp_path: Path) -> None:
    """GEO may answer an NCBI-counts request for a series it never re-processed with a page, not a 404
    (unverified): an HTML page on every attempt moves on, and the reason says so."""
    dest = tmp_path / "out" / "c1.counts"
    with FakeGeo(geo_root) as geo:
        ncbi_url = geo_names.ncbi_counts_url("GSE1000", geo.base_url)
        geo.serve_html_instead(ncbi_url)
        result, choice = _fetch_sources(_settings(geo.base_url), dest)
        assert geo.hits(ncbi_url) == 3  # asked `retries` times before reading it as missing
    assert gzip.decompress(dest.read_bytes()) == AUTHOR_TABLE
    assert choice["chosen"]["index"] == 1
    reason = choice["skipped"][0]["reason"]
    assert "HTML page instead of NCBI-generated counts on all 3 attempt(s)" in reason
    assert "GEO has not re-processed this series" in reason


def test_passing_html_page_for_ncbi_counts_is_retried_not_skipped(geo_root: Path, tmp_path: Path) -> None:
    """A maintenance page that goes away must not swap raw counts for the author's log2 values."""
    dest = tmp_path / "out" / "c1.counts"
    with FakeGeo(geo_root) as geo:
        ncbi_url = geo_names.ncbi_counts_url("GSE1000", geo.base_url)
        geo.serve_html_instead(ncbi_url, times=2)
        _, choice = _fetch_sources(_settings(geo.base_url), dest)
    assert gzip.decompress(dest.read_bytes()) == NCBI_TABLE
    assert choice["chosen"]["index"] == 0 and choice["skipped"] == []


@pytest.mark.parametrize("fault", ["always_500", "html_page", "checksum", "truncated"])
def test_failure_other_than_missing_does_not_fall_back(geo_root: Path, tmp_path: Path, fault: str) -> None:
    """Only 'not there' moves on: a flaky host or a wrong file must not swap raw counts for log2 values."""
    sources = [dict(PREFERENCE[0]), PREFERENCE[1]]
    dest = tmp_path / "out" / "c1.counts"
    with FakeGeo(geo_root) as geo:
        ncbi_url = geo_names.ncbi_counts_url("GSE1000", geo.base_url)
        later_url = geo_names.supplementary_url("GSE1000", "GSE1000_author_log2.csv.gz", geo.base_url)
        if fault == "html_page":
            # An author file that GEO lists exists: an HTML page in its place is an error, not absence.
            sources = [PREFERENCE[1], PREFERENCE[0]]
            ncbi_url, later_url = later_url, ncbi_url
        if fault == "always_500":
            geo.fail_with(ncbi_url, 500)
        elif fault == "html_page":
            geo.serve_html_instead(ncbi_url)
        elif fault == "truncated":
            geo.truncate(ncbi_url, 20)
        else:
            sources[0]["sha256"] = "0" * 64
        with pytest.raises(dl.DownloadError) as info:
            _fetch_sources(_settings(geo.base_url), dest, sources)
        assert geo.hits(later_url) == 0
    assert not isinstance(info.value, dl.MissingFileError)
    message = str(info.value)
    assert message.startswith(f"cohorts.c1.counts.sources[0] ({sources[0]['source']}) failed: ")
    assert "The run stops rather than fall back to a later source" in message
    expected = {
        "always_500": "after 3 attempts",
        "html_page": "HTML page",
        "checksum": "checksum mismatch",
        "truncated": "truncated or corrupt",
    }[fault]
    assert expected in message
    assert_no_output(dest)


def test_count_sources_from_local_dir_and_local_paths(geo_root: Path, tmp_path: Path) -> None:
    (geo_root / "GSE1000" / geo_names.ncbi_counts_name("GSE1000")).unlink()
    settings = _settings("http://127.0.0.1:9", geo_root)  # nothing listens there: all reads are local
    dest = tmp_path / "out" / "c1.counts"
    result, choice = _fetch_sources(settings, dest)
    assert choice["chosen"]["index"] == 1 and result.url.startswith("file://")
    assert "local mirror file not found" in choice["skipped"][0]["reason"]
    assert choice["skipped"][0]["url"] == str(geo_root / geo_names.local_relpath("ncbi_counts", "GSE1000"))
    # `source: local` entries: a path that does not exist moves on, one that does is copied (verified).
    mine = tmp_path / "mine.tsv"
    mine.write_bytes(b"gene\tS1\nIL6\t3\n")
    sources = [
        {"source": "local", "path": str(tmp_path / "absent.tsv.gz")},
        {"source": "local", "path": str(mine)},
    ]
    result, choice = _fetch_sources(settings, dest, sources)
    assert choice["chosen"]["index"] == 1 and dest.read_bytes() == mine.read_bytes()
    assert result.url == "file://" + str(mine)


def test_gzip_of_a_source_is_verified_although_the_chosen_name_has_no_gz(tmp_path: Path) -> None:
    half = gzip.compress(AUTHOR_TABLE * 2000)
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(half[: len(half) // 2])
    dest = tmp_path / "out" / "c1.counts"
    with pytest.raises(dl.DownloadError, match="truncated or corrupt"):
        _fetch_sources(_settings("http://h"), dest, [{"source": "local", "path": str(broken)}])
    assert_no_output(dest)


def test_geo_source_needs_an_accession(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"set cohorts\.mycohort\.accession"):
        acquire.fetch_first_available(
            "mycohort", PREFERENCE, tmp_path / "x", _settings("http://h"), accession="mycohort"
        )
    with pytest.raises(InputError, match="list at least one count source"):
        acquire.fetch_first_available("c1", [], tmp_path / "x", _settings("http://h"), accession="GSE1")


def test_stale_choice_record_is_refused(tmp_path: Path) -> None:
    choice = {
        "cohort": "c1",
        "chosen": {"index": 1, "config_key": "cohorts.c1.counts.sources[1]", "settings": PREFERENCE[1]},
        "skipped": [],
    }
    path = tmp_path / "c1.choice.json"
    acquire.write_choice(choice, path)
    edited = [PREFERENCE[0], {**PREFERENCE[1], "value_type": "normalised"}]
    with pytest.raises(InputError, match="no longer in the config"):
        acquire.with_chosen_counts({"counts": {"sources": edited}}, path)
    with pytest.raises(InputError, match="no longer in the config"):
        acquire.with_chosen_counts({"counts": {"sources": PREFERENCE[:1]}}, path)


def test_schema_accepts_both_forms_and_fills_defaults_per_source() -> None:
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    schema = str(Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml")

    def config(counts: dict) -> dict:
        return {
            "cohorts": {
                "GSE1000": {
                    "counts": counts,
                    "metadata": {"source": "geo_series_matrix"},
                    "severity": {"field": "g", "severe": ["s"], "mild": ["m"]},
                }
            }
        }

    single = config({"source": "geo_ncbi", "gene_id": "entrez"})
    validate(single, schema)
    assert single["cohorts"]["GSE1000"]["counts"]["value_type"] == "counts"
    several = config(
        {"sources": [{"source": "geo_ncbi", "gene_id": "entrez"}, {"source": "local", "path": "x"}]}
    )
    validate(several, schema)
    counts = several["cohorts"]["GSE1000"]["counts"]
    assert set(counts) == {"sources"}  # no single-source defaults leak into the list form
    assert [s["value_type"] for s in counts["sources"]] == ["counts", "counts"]
    assert counts["sources"][1]["gene_id"] == "symbol" and counts["sources"][1]["sha256"] is None
    for bad, expected in [
        ({"sources": []}, "should be non-empty"),
        ({"sources": [{"source": "geo_supplementary"}]}, "'file' is a required property"),
        ({"sources": [{"source": "geo_ncbi"}], "gene_id": "entrez"}, "'gene_id' was unexpected"),
        ({"sources": [{"source": "geo_ncbi", "value_type": "log2"}]}, "'log2' is not one of"),
    ]:
        with pytest.raises(WorkflowError, match=expected):
            validate(config(bad), schema)


# ------------------------------------------------------------------------------ faults per download kind

FAULT_KINDS = ["series_matrix", "ncbi_counts", "supplementary", "gene_info", "count_sources"]
# (accession, file name) each kind is exercised on; count_sources takes GSE155454's author file after
# a 404 for its NCBI counts.
FAULT_FILES = {
    "series_matrix": (MATRIX_ACC, None),
    "ncbi_counts": (COUNTS_ACC, None),
    "supplementary": (SUPPL_ACC, SUPPL_FILE),
    "gene_info": (None, None),
    "count_sources": (SUPPL_ACC, SUPPL_FILE),
}


def _faulted_url_and_source(kind: str, geo: FakeGeo, shared_data: Path) -> tuple[str, Path]:
    """The URL the fault is put on, and the real file that should arrive once it is retried."""
    accession, filename = FAULT_FILES[kind]
    url_kind = "supplementary" if kind == "count_sources" else kind
    url = acquire.source_url(url_kind, accession, filename, _settings(geo.base_url))
    if kind == "gene_info":
        return url, shared_data / "NCBI_gene_info" / geo_names.GENE_INFO_NAME
    return url, shared_data / geo_names.local_relpath(url_kind, accession, filename)


def _fetch_kind(kind: str, geo: FakeGeo, dest: Path) -> None:
    """Fetch one file of ``kind`` the way its download rule does."""
    accession, filename = FAULT_FILES[kind]
    settings = _settings(geo.base_url)
    if kind == "count_sources":
        sources = [
            {"source": "geo_ncbi", "gene_id": "entrez"},
            {"source": "geo_supplementary", "file": SUPPL_FILE, "gene_id": "symbol"},
        ]
        acquire.fetch_first_available("c1", sources, dest, settings, accession=accession)
    else:
        acquire.retrieve(kind, dest, settings, accession=accession, filename=filename)


@pytest.mark.parametrize("fault", ["truncated_once", "500_once", "truncated_always", "html_page"])
@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_faults_per_download_kind(
    fake_geo: FakeGeo, shared_data: Path, tmp_path: Path, kind: str, fault: str
) -> None:
    """Each kind of download: a transient fault is retried to the right file; a persistent one or an
    HTML page fails with a clear message, leaving neither the file nor a .partial-* behind."""
    url, source = _faulted_url_and_source(kind, fake_geo, shared_data)
    if fault == "truncated_once":
        fake_geo.truncate(url, 4000, times=1)
    elif fault == "truncated_always":
        fake_geo.truncate(url, 4000)
    elif fault == "500_once":
        fake_geo.fail_with(url, 500, times=1)
    else:
        fake_geo.serve_html_instead(url)
    dest = tmp_path / "out" / ("c1.counts" if kind == "count_sources" else f"{kind}.gz")
    if fault in ("truncated_once", "500_once"):
        _fetch_kind(kind, fake_geo, dest)
        assert dest.read_bytes() == source.read_bytes()
        assert fake_geo.hits(url) == 2
        assert not list(dest.parent.glob(".partial-*"))
        return
    with pytest.raises(dl.DownloadError) as info:
        _fetch_kind(kind, fake_geo, dest)
    message = str(info.value)
    assert url in message
    if fault == "html_page":
        assert "received an HTML page instead of the data file" in message and fake_geo.hits(url) == 1
    else:
        assert "after 3 attempts" in message and "truncated or corrupt" in message
        assert fake_geo.hits(url) == 3
    assert_no_output(dest)
