"""Tests of il6axis.download against a local fake GEO server serving the real shared data files."""

from __future__ import annotations

import gzip
import hashlib
import logging
import sys
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for geo_server under any pytest import mode

from geo_server import FakeGeo, make_fake_geo_fixture  # noqa: E402

from il6axis import download as dl  # noqa: E402

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
    assert dl.series_dir(accession) == expected


def test_url_builders() -> None:
    base = "http://mirror.example/"
    assert dl.series_matrix_url("GSE152418", base) == (
        "http://mirror.example/geo/series/GSE152nnn/GSE152418/matrix/GSE152418_series_matrix.txt.gz"
    )
    assert dl.ncbi_counts_url("GSE152418", "http://h") == (
        "http://h/geo/download/?type=rnaseq_counts&acc=GSE152418&format=file"
        "&file=GSE152418_raw_counts_GRCh38.p13_NCBI.tsv.gz"
    )
    assert dl.supplementary_url("GSE1234", "GSE1234_counts.csv.gz", "http://h") == (
        "http://h/geo/series/GSE1nnn/GSE1234/suppl/GSE1234_counts.csv.gz"
    )
    assert dl.gene_info_url("http://h") == "http://h/gene/DATA/GENE_INFO/Mammalia/Homo_sapiens.gene_info.gz"
    assert dl.series_matrix_url("GSE12").startswith(dl.DEFAULT_GEO_BASE + "/geo/series/GSEnnn/GSE12/")
    assert dl.ncbi_counts_url("GSE12").startswith(dl.DEFAULT_GEO_DOWNLOAD_BASE + "/geo/download/?")
    assert dl.gene_info_url().startswith(dl.DEFAULT_NCBI_GENE_BASE + "/gene/")
    # query values are percent-encoded
    assert "file=a+b%26c.tsv.gz" in dl.ncbi_counts_url("GSE1", "http://h", filename="a b&c.tsv.gz")


@pytest.mark.parametrize("bad", ["GSE", "gse152418", "GSM4614985", "GSE152418 ", "GSE12a", "", "../GSE1"])
def test_bad_accession(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid GEO series accession") as info:
        dl.series_matrix_url(bad, "http://h")
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/b.gz", "..", "x..y", "", "a\\b"])
def test_bad_filename(bad: str) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        dl.supplementary_url("GSE155454", bad, "http://h")


def test_local_relpath() -> None:
    assert dl.local_relpath("series_matrix", "GSE157103") == "GSE157103/GSE157103_series_matrix.txt.gz"
    assert dl.local_relpath("ncbi_counts", "GSE152418") == (
        "GSE152418/GSE152418_raw_counts_GRCh38.p13_NCBI.tsv.gz"
    )
    assert dl.local_relpath("supplementary", "GSE155454", SUPPL_FILE) == f"GSE155454/{SUPPL_FILE}"
    assert dl.local_relpath("gene_info") == "Homo_sapiens.gene_info.gz"
    with pytest.raises(ValueError, match="needs a filename"):
        dl.local_relpath("supplementary", "GSE155454")
    with pytest.raises(ValueError, match="unknown file kind"):
        dl.local_relpath("bam", "GSE1", "x")
    with pytest.raises(ValueError, match="plain file name"):
        dl.local_relpath("supplementary", "GSE1", "../x")


# ------------------------------------------------------------------------------ successful fetches


def test_fetch_real_files_and_manifest(fake_geo: FakeGeo, shared_data: Path, tmp_path: Path) -> None:
    base = fake_geo.base_url
    cases = [
        (
            dl.series_matrix_url(MATRIX_ACC, base),
            shared_data / MATRIX_ACC / f"{MATRIX_ACC}_series_matrix.txt.gz",
            "!Series_title",
        ),
        (
            dl.ncbi_counts_url(COUNTS_ACC, base),
            shared_data / COUNTS_ACC / f"{COUNTS_ACC}_raw_counts_GRCh38.p13_NCBI.tsv.gz",
            "GeneID",
        ),
        (dl.supplementary_url(SUPPL_ACC, SUPPL_FILE, base), shared_data / SUPPL_ACC / SUPPL_FILE, "gene,"),
        (dl.gene_info_url(base), shared_data / "NCBI_gene_info" / "Homo_sapiens.gene_info.gz", "#tax_id"),
    ]
    results = []
    for url, source, prefix in cases:
        dest = tmp_path / "raw" / source.name
        expected = sha256_of(source)
        result = dl.fetch(
            url,
            dest,
            expected_sha256=expected,
            header_check=dl.expect_first_line_prefix(prefix),
            **FAST,
        )
        assert result == dl.FetchResult(url, dest, expected, source.stat().st_size, 1)
        assert dest.read_bytes() == source.read_bytes()
        results.append(result)
    assert not list((tmp_path / "raw").glob(".partial-*"))
    assert fake_geo.requests == [fake_geo.target(url) for url, _, _ in cases]

    manifest = tmp_path / "manifest.tsv"
    dl.write_manifest(results, manifest)
    rows = dl.read_manifest(manifest)
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
        dl.read_manifest(other)


def test_fetch_synthetic_uncompressed_file(fake_geo: FakeGeo, tmp_path: Path) -> None:
    src = tmp_path / "src.tsv"
    src.write_text("GeneID\tS1\n3569\t7\n")
    fake_geo.add_file("/extra/table.tsv?v=1", src)
    dest = tmp_path / "out" / "table.tsv"
    check = dl.expect_first_line_prefix("GeneID")
    result = dl.fetch(fake_geo.url("/extra/table.tsv?v=1"), dest, header_check=check)
    assert dest.read_text() == src.read_text()
    assert result.sha256 == sha256_of(src)


def test_head_request(fake_geo: FakeGeo, shared_data: Path) -> None:
    url = dl.gene_info_url(fake_geo.base_url)
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
        "missing_file": dl.supplementary_url(SUPPL_ACC, "GSE155454_no_such_file.csv.gz", base),
        "unknown_accession_matrix": dl.series_matrix_url("GSE999999999", base),
        "unknown_accession_counts": dl.ncbi_counts_url("GSE999999999", base),
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
    url = dl.gene_info_url(fake_geo.base_url)
    fake_geo.fail_with(url, 403)
    dest = tmp_path / "gene_info.gz"
    with pytest.raises(dl.DownloadError, match="HTTP 403") as info:
        dl.fetch(url, dest, **FAST)
    assert info.value.status == 403
    assert fake_geo.hits(url) == 1
    assert_no_output(dest)


def test_html_page_instead_of_file(fake_geo: FakeGeo, shared_data: Path, tmp_path: Path) -> None:
    url = dl.ncbi_counts_url(COUNTS_ACC, fake_geo.base_url)
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
    url = dl.series_matrix_url(MATRIX_ACC, fake_geo.base_url)
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
    url = dl.supplementary_url(SUPPL_ACC, SUPPL_FILE, fake_geo.base_url)
    dest = tmp_path / SUPPL_FILE
    with pytest.raises(dl.DownloadError, match="unexpected content") as info:
        dl.fetch(url, dest, header_check=dl.expect_first_line_prefix("GeneID"), **FAST)
    message = str(info.value)
    assert "'GeneID'" in message and "gene,severe_" in message and url in message
    assert fake_geo.hits(url) == 1
    assert_no_output(dest)


# ------------------------------------------------------------------------------ transient failures


def test_500_twice_then_success(fake_geo: FakeGeo, shared_data: Path, tmp_path: Path) -> None:
    url = dl.series_matrix_url(MATRIX_ACC, fake_geo.base_url)
    fake_geo.fail_with(url, 500, times=2)
    sleep = SleepRecorder()
    dest = tmp_path / "matrix.txt.gz"
    result = dl.fetch(url, dest, retries=4, backoff_s=0.5, sleep=sleep)
    assert result.attempts == 3
    assert sleep.waits == [0.5, 1.0]
    assert result.sha256 == sha256_of(shared_data / MATRIX_ACC / f"{MATRIX_ACC}_series_matrix.txt.gz")
    assert fake_geo.hits(url) == 3


def test_always_500_gives_up(fake_geo: FakeGeo, shared_data: Path, tmp_path: Path) -> None:
    url = dl.series_matrix_url(MATRIX_ACC, fake_geo.base_url)
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
    url = dl.gene_info_url(fake_geo.base_url)
    fake_geo.fail_with(url, 429, times=1)
    result = dl.fetch(url, tmp_path / "gi.gz", sleep=SleepRecorder(), **FAST)
    assert result.attempts == 2


@pytest.mark.parametrize("lie", [False, True], ids=["short-length", "lying-length"])
def test_truncated_gzip_retried_then_ok(
    fake_geo: FakeGeo, shared_data: Path, tmp_path: Path, lie: bool
) -> None:
    url = dl.ncbi_counts_url(COUNTS_ACC, fake_geo.base_url)
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
    url = dl.ncbi_counts_url(COUNTS_ACC, fake_geo.base_url)
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
    url = dl.gene_info_url(fake_geo.base_url)
    fake_geo.drop_connection(url, times=2)
    result = dl.fetch(url, tmp_path / "gi.gz", sleep=SleepRecorder(), **FAST)
    assert result.attempts == 3


def test_timeout_is_retried(fake_geo: FakeGeo, shared_data: Path, tmp_path: Path) -> None:
    url = dl.series_matrix_url(MATRIX_ACC, fake_geo.base_url)
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
    src = shared_data / dl.local_relpath("ncbi_counts", COUNTS_ACC)
    dest = tmp_path / "counts.tsv.gz"
    result = dl.copy_local(
        src, dest, expected_sha256=sha256_of(src), header_check=dl.expect_first_line_prefix("GeneID")
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
    url = dl.ncbi_counts_url(COUNTS_ACC, fake_geo.base_url)
    fake_geo.fail_with(url, 502, times=1)
    caplog.set_level(logging.INFO, logger="il6axis.download")
    dest = tmp_path / "c.tsv.gz"
    result = dl.fetch(url, dest, progress_every_bytes=256 * 1024, sleep=SleepRecorder(), **FAST)
    messages = [r.getMessage() for r in caplog.records if r.name == "il6axis.download"]
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
    dl.fetch(dl.gene_info_url(fake_geo.base_url), tmp_path / "gi.gz", logger=custom, **FAST)
    assert any(r.name == "il6axis.tests.custom" and "sha256=" in r.getMessage() for r in caplog.records)
