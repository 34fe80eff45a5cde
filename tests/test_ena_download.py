"""FASTQ acquisition for the reads count source: ENA over HTTPS (against a local fake ENA) and fasterq-dump.

The fake ENA (tests/ena_server.py) serves the Portal API file report and the vol1/fastq/ tree with the
faults the GEO download tests inject (5xx, truncated bodies, dropped connections, HTML pages with status
200, stalls), plus a wrong md5 and runs ENA does not have. The FASTQ files are small synthetic ones
written here; every download is compared byte for byte with the file the server holds.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import shutil
import stat
import sys
from pathlib import Path

import pytest
import yaml
from ena_server import FakeEna
from workflow_runner import run_snakemake

from il6axis.acquire.download import DownloadError, HtmlPageError
from il6axis.acquire.download_records import read_manifest
from il6axis.errors import InputError
from il6axis.reads.ena import (
    RunNotInEnaError,
    fastq_dir,
    fastq_url,
    fetch_ena_run,
    filereport_url,
    parse_filereport,
)
from il6axis.reads.fastq_fetch import (
    download_names,
    downloaded_paths,
    fastq_paths,
    fetch_run,
    find_run,
    write_records,
)
from il6axis.reads.fastq_sra import fasterq_dump_command, fetch_sra_run
from il6axis.reads.runs import Run

RUN = "SRR18280823"
SINGLE_RUN = "ERR2000001"
FAST = {"retries": 3, "backoff_s": 0, "timeout_s": 5}


def _no_sleep(_seconds: float) -> None:
    return None


def _reads(n: int, seed: int, mate: int) -> str:
    rng = random.Random(seed * 10 + mate)
    lines = []
    for i in range(n):
        seq = "".join(rng.choice("ACGT") for _ in range(60))
        lines += [f"@read{i}/{mate}", seq, "+", "I" * 60]
    return "\n".join(lines) + "\n"


def _fastq_gz(path: Path, n: int = 400, seed: int = 1, mate: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(_reads(n, seed, mate).encode(), mtime=0))
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def ena(tmp_path):
    with FakeEna(tmp_path / "server") as server:
        yield server


@pytest.fixture
def paired_run(ena, tmp_path):
    """A paired run on the fake ENA with its two mates and a file of reads that lost their mate."""
    src = tmp_path / "src"
    files = [
        _fastq_gz(src / f"{RUN}_1.fastq.gz", mate=1),
        _fastq_gz(src / f"{RUN}_2.fastq.gz", mate=2),
        _fastq_gz(src / f"{RUN}.fastq.gz", n=7, mate=0),
    ]
    ena.add_run(RUN, files)
    return files


def _dests(tmp_path: Path, run: str = RUN, layout: str = "paired") -> list[Path]:
    return [tmp_path / "out" / run / name for name in download_names(run, layout)]


def _leftovers(tmp_path: Path) -> list[str]:
    out = tmp_path / "out"
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) if out.exists() else []


# --------------------------------------------------------------------------------------------
# ENA's URL layout
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "run, folder",
    [
        ("ERR000916", "vol1/fastq/ERR000/ERR000916"),  # six digits: no second folder
        ("SRR1016916", "vol1/fastq/SRR101/006/SRR1016916"),  # seven: 00 + last digit
        ("SRR18280823", "vol1/fastq/SRR182/023/SRR18280823"),  # eight: 0 + last two
        ("SRR123456789", "vol1/fastq/SRR123/789/SRR123456789"),  # nine: last three
    ],
)
def test_fastq_dir_follows_ena_layout(run, folder):
    assert fastq_dir(run) == folder


def test_urls():
    assert filereport_url(RUN) == (
        "https://www.ebi.ac.uk/ena/portal/api/filereport?accession=SRR18280823&result=read_run"
        "&fields=run_accession,fastq_ftp,fastq_md5,fastq_bytes,library_layout&format=tsv"
    )
    path = f"ftp.sra.ebi.ac.uk/{fastq_dir(RUN)}/{RUN}_1.fastq.gz"
    assert fastq_url(path) == f"https://ftp.sra.ebi.ac.uk/vol1/fastq/SRR182/023/{RUN}/{RUN}_1.fastq.gz"
    assert (
        fastq_url("ftp://" + path, "http://127.0.0.1:8/")
        == f"http://127.0.0.1:8/{fastq_dir(RUN)}/{RUN}_1.fastq.gz"
    )


def test_parse_filereport_splits_files():
    text = (
        "run_accession\tfastq_ftp\tfastq_md5\tfastq_bytes\tlibrary_layout\n"
        f"{RUN}\th/a/{RUN}_1.fastq.gz;h/a/{RUN}_2.fastq.gz\tAB12;cd34\t10;20\tPAIRED\n"
    )
    layout, files = parse_filereport(text, RUN, "http://x")
    assert layout == "paired"
    assert [(f.name, f.url, f.md5, f.n_bytes) for f in files] == [
        (f"{RUN}_1.fastq.gz", f"http://x/a/{RUN}_1.fastq.gz", "ab12", 10),
        (f"{RUN}_2.fastq.gz", f"http://x/a/{RUN}_2.fastq.gz", "cd34", 20),
    ]
    with pytest.raises(DownloadError, match="lists 2 file.* but 1 md5"):
        parse_filereport(text.replace("AB12;cd34", "AB12"), RUN)


# --------------------------------------------------------------------------------------------
# Downloads that succeed
# --------------------------------------------------------------------------------------------


def test_paired_run_downloaded_verified_and_recorded(ena, paired_run, tmp_path):
    dests = _dests(tmp_path)
    results = fetch_ena_run(RUN, "paired", dests, ena.settings(), FAST, _no_sleep)
    for src, dest, result in zip(paired_run[:2], dests, results, strict=True):
        assert dest.read_bytes() == src.read_bytes()
        assert (result.path, result.sha256, result.n_bytes, result.attempts) == (
            dest,
            _sha256(src),
            src.stat().st_size,
            1,
        )
        assert result.url == ena.base_url + ena.fastq_target(RUN, src.name)
    # The file of reads without a mate is listed by ENA but not fetched.
    assert ena.hits(ena.fastq_target(RUN, f"{RUN}.fastq.gz")) == 0
    assert _leftovers(tmp_path) == [f"{RUN}/{RUN}_1.fastq.gz", f"{RUN}/{RUN}_2.fastq.gz"]
    records = [dest.with_name(dest.name + ".record.tsv") for dest in dests]
    write_records(results, records)
    rows = [row for record in records for row in read_manifest(record)]
    assert [(r["file"], r["sha256"], r["bytes"]) for r in rows] == [
        (str(d), _sha256(s), s.stat().st_size) for d, s in zip(dests, paired_run, strict=False)
    ]


@pytest.mark.parametrize("ena_name", [f"{SINGLE_RUN}.fastq.gz", f"{SINGLE_RUN}_1.fastq.gz"])
def test_single_run_either_ena_name(ena, tmp_path, ena_name):
    src = _fastq_gz(tmp_path / "src" / ena_name, seed=5)
    ena.add_run(SINGLE_RUN, [src], layout="SINGLE")
    dests = _dests(tmp_path, SINGLE_RUN, "single")
    [result] = fetch_run(SINGLE_RUN, "single", "ena", dests, ena.settings(), FAST, _no_sleep)
    assert dests == [tmp_path / "out" / SINGLE_RUN / f"{SINGLE_RUN}.fastq.gz"]
    assert dests[0].read_bytes() == src.read_bytes() and result.sha256 == _sha256(src)


# --------------------------------------------------------------------------------------------
# Transient faults: retried, then the verified file
# --------------------------------------------------------------------------------------------

FASTQ_FAULTS = {
    "503_twice": (lambda ena, t: ena.fail_with(t, 503, times=2), 3),
    "429_once": (lambda ena, t: ena.fail_with(t, 429, times=1), 2),
    "short_body_vs_content_length": (lambda ena, t: ena.truncate(t, 500, lie_about_length=True, times=1), 2),
    "truncated_gzip_consistent_length": (lambda ena, t: ena.truncate(t, 700, times=2), 3),
    "dropped_connection": (lambda ena, t: ena.drop_connection(t, times=1), 2),
    "stall_past_timeout": (lambda ena, t: ena.stall(t, 1.5, times=1), 2),
}


@pytest.mark.parametrize("fault", sorted(FASTQ_FAULTS))
def test_transient_fastq_faults_are_retried(ena, paired_run, tmp_path, fault):
    inject, attempts = FASTQ_FAULTS[fault]
    target = ena.fastq_target(RUN, f"{RUN}_2.fastq.gz")
    inject(ena, target)
    settings = {**FAST, "timeout_s": 0.5} if fault == "stall_past_timeout" else FAST
    results = fetch_ena_run(RUN, "paired", _dests(tmp_path), ena.settings(), settings, _no_sleep)
    assert [r.attempts for r in results] == [1, attempts]
    assert ena.hits(target) == attempts
    assert results[1].path.read_bytes() == paired_run[1].read_bytes()


def test_filereport_5xx_then_success(ena, paired_run, tmp_path):
    report = filereport_url(RUN, ena.portal_base)
    ena.fail_with(report, 502, times=2)
    fetch_ena_run(RUN, "paired", _dests(tmp_path), ena.settings(), FAST, _no_sleep)
    assert ena.hits(report) == 3


# --------------------------------------------------------------------------------------------
# Permanent failures: a clear error and no file left
# --------------------------------------------------------------------------------------------


def test_html_page_instead_of_fastq(ena, paired_run, tmp_path):
    ena.serve_html_instead(ena.fastq_target(RUN, f"{RUN}_2.fastq.gz"))
    with pytest.raises(HtmlPageError, match="HTML page instead of the data file"):
        fetch_ena_run(RUN, "paired", _dests(tmp_path), ena.settings(), FAST, _no_sleep)
    # The first mate had arrived intact; without its partner it is removed too.
    assert _leftovers(tmp_path) == []


def test_html_page_instead_of_filereport(ena, paired_run, tmp_path):
    ena.serve_html_instead(filereport_url(RUN, ena.portal_base))
    with pytest.raises(HtmlPageError):
        fetch_ena_run(RUN, "paired", _dests(tmp_path), ena.settings(), FAST, _no_sleep)
    assert _leftovers(tmp_path) == []


def test_server_failing_every_time_gives_up(ena, paired_run, tmp_path):
    target = ena.fastq_target(RUN, f"{RUN}_1.fastq.gz")
    ena.fail_with(target, 500)
    with pytest.raises(DownloadError, match=r"giving up on .* after 3 attempts.*HTTP 500"):
        fetch_ena_run(RUN, "paired", _dests(tmp_path), ena.settings(), FAST, _no_sleep)
    assert ena.hits(target) == 3 and _leftovers(tmp_path) == []


def test_truncated_every_time_gives_up(ena, paired_run, tmp_path):
    ena.truncate(ena.fastq_target(RUN, f"{RUN}_1.fastq.gz"), 700)
    with pytest.raises(DownloadError, match="gzip stream is truncated or corrupt"):
        fetch_ena_run(RUN, "paired", _dests(tmp_path), ena.settings(), FAST, _no_sleep)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("mate", [1, 2])
def test_wrong_md5_is_an_error_and_leaves_no_file(ena, tmp_path, mate):
    src = tmp_path / "src"
    files = [_fastq_gz(src / f"{RUN}_{m}.fastq.gz", mate=m) for m in (1, 2)]
    wrong = "0" * 32
    ena.add_run(RUN, files, md5_override={files[mate - 1].name: wrong})
    with pytest.raises(
        DownloadError, match=rf"md5 mismatch for .*{RUN}_{mate}.fastq.gz: ENA lists {wrong}"
    ) as err:
        fetch_ena_run(RUN, "paired", _dests(tmp_path), ena.settings(), FAST, _no_sleep)
    true_md5 = hashlib.md5(files[mate - 1].read_bytes()).hexdigest()
    assert true_md5 in str(err.value) and "Fix:" in str(err.value)
    # Not retried: the bytes arrived complete and decoded; ENA's checksum disagrees.
    assert ena.hits(ena.fastq_target(RUN, files[mate - 1].name)) == 1
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("style", ["empty", "header", "404"])
def test_run_missing_from_ena(tmp_path, style):
    with FakeEna(tmp_path / "server", missing_run_style=style) as ena:
        with pytest.raises(RunNotInEnaError) as err:
            fetch_ena_run(
                "SRR9999999", "paired", _dests(tmp_path, "SRR9999999"), ena.settings(), FAST, _no_sleep
            )
    message = str(err.value)
    assert "run SRR9999999: ENA has no FASTQ files" in message
    assert "download: sra" in message and "fastq_1" in message
    assert _leftovers(tmp_path) == []


def test_run_listed_without_fastq(ena, tmp_path):
    ena.add_run("SRR9999998", [], layout="PAIRED")
    with pytest.raises(RunNotInEnaError, match="lists the run with no FASTQ files"):
        fetch_ena_run("SRR9999998", "paired", _dests(tmp_path, "SRR9999998"), ena.settings(), FAST, _no_sleep)


def test_layout_contradicting_ena(ena, tmp_path):
    src = _fastq_gz(tmp_path / "src" / f"{SINGLE_RUN}.fastq.gz")
    ena.add_run(SINGLE_RUN, [src], layout="SINGLE")
    with pytest.raises(
        InputError, match=r"says paired-end but ENA has no .*_1 / .*_2 pair.*ENA layout single"
    ):
        fetch_ena_run(SINGLE_RUN, "paired", _dests(tmp_path, SINGLE_RUN), ena.settings(), FAST, _no_sleep)
    pair = [_fastq_gz(tmp_path / "src2" / f"{RUN}_{m}.fastq.gz", mate=m) for m in (1, 2)]
    ena.add_run(RUN, pair)
    with pytest.raises(InputError, match="says single-end but ENA has two mate files"):
        fetch_ena_run(RUN, "single", _dests(tmp_path, RUN, "single"), ena.settings(), FAST, _no_sleep)
    assert _leftovers(tmp_path) == []


def test_fetch_run_checks_destination_names(tmp_path):
    with pytest.raises(ValueError, match="should be named"):
        fetch_run(RUN, "paired", "ena", [tmp_path / "a.fastq.gz", tmp_path / "b.fastq.gz"], {}, FAST)
    with pytest.raises(ValueError, match="only ena and sra runs are downloaded"):
        fetch_run("x", "single", "local", [tmp_path / "x.fastq.gz"], {}, FAST)


def test_fastq_paths_and_run_lookup():
    paired = Run(RUN, "S1", "paired", "ena")
    single = Run(SINGLE_RUN, "S2", "single", "sra")
    local = Run("L1", "S3", "paired", "local", ("/data/L1_1.fq.gz", "/data/L1_2.fq.gz"))
    assert fastq_paths(paired, "fq") == [f"fq/{RUN}/{RUN}_1.fastq.gz", f"fq/{RUN}/{RUN}_2.fastq.gz"]
    assert fastq_paths(single, "fq") == [f"fq/{SINGLE_RUN}/{SINGLE_RUN}.fastq.gz"]
    assert fastq_paths(local, "fq") == list(local.fastq)  # read in place, never copied
    # A run shared by two cohorts is fetched once; local files are not downloads.
    cohorts = {"a": [paired, local], "b": [single, paired]}
    assert downloaded_paths(cohorts, "fq") == sorted(fastq_paths(paired, "fq") + fastq_paths(single, "fq"))
    assert find_run(RUN, cohorts) == paired
    with pytest.raises(InputError, match="run SRR1 is in the run table of no enabled cohort"):
        find_run("SRR1", cohorts)
    with pytest.raises(InputError, match=f"run {RUN} has another layout, download or files in cohorts a, c"):
        find_run(RUN, {"a": [paired], "c": [Run(RUN, "S1", "paired", "sra")]})


# --------------------------------------------------------------------------------------------
# sra-tools fasterq-dump
# --------------------------------------------------------------------------------------------


def test_fasterq_dump_command():
    assert fasterq_dump_command(RUN, "/o", "/t", threads=3) == [
        "fasterq-dump",
        RUN,
        "--split-3",
        "--outdir",
        "/o",
        "--temp",
        "/t",
        "--threads",
        "3",
    ]


def test_missing_fasterq_dump_is_a_clear_error(tmp_path):
    with pytest.raises(DownloadError, match=r"'no-such-fasterq-dump' was not found .*Fix: install sra-tools"):
        fetch_sra_run(
            RUN, "paired", _dests(tmp_path), {"fasterq_dump": "no-such-fasterq-dump"}, FAST, _no_sleep
        )
    assert _leftovers(tmp_path) == []


FAKE_DUMP = """#!{python}
# Stand-in for fasterq-dump: writes planted FASTQ files named as fasterq-dump names them.
import os, sys
args = sys.argv[1:]
run, outdir = args[0], args[args.index("--outdir") + 1]
mode = os.environ["FAKE_DUMP_MODE"]
counter = os.environ["FAKE_DUMP_COUNTER"]
calls = int(open(counter).read()) if os.path.exists(counter) else 0
open(counter, "w").write(str(calls + 1))
if mode == "fail" or (mode == "fail_once" and calls == 0):
    sys.stderr.write("err: cannot reach the SRA service\\n")
    sys.exit(3)
os.makedirs(outdir, exist_ok=True)
def reads(n, mate):
    return "".join(f"@{{run}}.{{i}} {{i}}/{{mate}}\\nACGTACGT\\n+\\nIIIIIIII\\n" for i in range(n))
n2 = 4 if mode == "uneven" else 5
if mode == "single":
    open(os.path.join(outdir, run + ".fastq"), "w").write(reads(6, 1))
else:
    open(os.path.join(outdir, run + "_1.fastq"), "w").write(reads(5, 1))
    open(os.path.join(outdir, run + "_2.fastq"), "w").write(reads(n2, 2))
    open(os.path.join(outdir, run + ".fastq"), "w").write(reads(2, 0))
"""


@pytest.fixture
def fake_dump(tmp_path, monkeypatch):
    script = tmp_path / "bin" / "fake-fasterq-dump"
    script.parent.mkdir()
    script.write_text(FAKE_DUMP.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("FAKE_DUMP_COUNTER", str(tmp_path / "calls"))

    def configure(mode: str) -> dict[str, object]:
        monkeypatch.setenv("FAKE_DUMP_MODE", mode)
        return {"fasterq_dump": str(script), "threads": 1}

    return configure


def _fastq_records(path: Path) -> list[str]:
    with gzip.open(path, "rt") as fh:
        return fh.read().splitlines()[0::4]


def test_fasterq_dump_output_gzipped_and_recorded(tmp_path, fake_dump):
    dests = _dests(tmp_path)
    results = fetch_run(RUN, "paired", "sra", dests, fake_dump("ok"), FAST, _no_sleep)
    assert [_fastq_records(d) for d in dests] == [
        [f"@{RUN}.{i} {i}/{mate}" for i in range(5)] for mate in (1, 2)
    ]
    assert [(r.url, r.path, r.sha256, r.attempts) for r in results] == [
        (f"fasterq-dump:{RUN}", d, _sha256(d), 1) for d in dests
    ]
    # Only the two mates are kept; the scratch folder with the unpaired reads is gone.
    assert _leftovers(tmp_path) == [f"{RUN}/{RUN}_1.fastq.gz", f"{RUN}/{RUN}_2.fastq.gz"]


def test_fasterq_dump_single_end(tmp_path, fake_dump):
    dests = _dests(tmp_path, SINGLE_RUN, "single")
    fetch_sra_run(SINGLE_RUN, "single", dests, fake_dump("single"), FAST, _no_sleep)
    assert len(_fastq_records(dests[0])) == 6


def test_fasterq_dump_retried_then_succeeds(tmp_path, fake_dump):
    results = fetch_sra_run(RUN, "paired", _dests(tmp_path), fake_dump("fail_once"), FAST, _no_sleep)
    assert [r.attempts for r in results] == [2, 2]


def test_fasterq_dump_failing_gives_up(tmp_path, fake_dump):
    with pytest.raises(DownloadError, match=r"exit status 3.*cannot reach the SRA service.*Gave up after 3"):
        fetch_sra_run(RUN, "paired", _dests(tmp_path), fake_dump("fail"), FAST, _no_sleep)
    assert (tmp_path / "calls").read_text() == "3" and _leftovers(tmp_path) == []


def test_fasterq_dump_uneven_mates(tmp_path, fake_dump):
    with pytest.raises(DownloadError, match=r"5 reads to .*_1.fastq.gz but 4 to .*_2.fastq.gz"):
        fetch_sra_run(RUN, "paired", _dests(tmp_path), fake_dump("uneven"), FAST, _no_sleep)
    assert _leftovers(tmp_path) == []


def test_fasterq_dump_layout_mismatch(tmp_path, fake_dump):
    with pytest.raises(DownloadError, match="says single-end but fasterq-dump wrote"):
        fetch_sra_run(RUN, "single", _dests(tmp_path, RUN, "single"), fake_dump("ok"), FAST, _no_sleep)
    assert _leftovers(tmp_path) == []


@pytest.mark.skipif(shutil.which("fasterq-dump") is None, reason="sra-tools not installed")
def test_real_fasterq_dump_failure_is_reported(tmp_path):
    """The real tool, given something that is not a run, fails; the error carries its message."""
    bogus = tmp_path / "not_a_run.sra"
    bogus.write_text("not an SRA archive\n")
    dests = _dests(tmp_path)
    with pytest.raises(
        DownloadError, match=r"fasterq-dump failed for run .*not_a_run.sra \(exit status [1-9]"
    ):
        fetch_sra_run(str(bogus), "paired", dests, {"fasterq_dump": "fasterq-dump"}, {**FAST, "retries": 1})
    assert _leftovers(tmp_path) == []
    assert not [p for p in os.listdir(dests[0].parent) if p.startswith(".sra-")]


# --------------------------------------------------------------------------------------------
# The download rules (rules/fastq.smk) in the workflow, against the fake ENA
# --------------------------------------------------------------------------------------------

WORKFLOW_PAIRED, WORKFLOW_SINGLE = "SRR18280823", "ERR2000001"


def _reads_workflow_config(tmp_path: Path, ena: FakeEna, sheet: Path) -> Path:
    samples = tmp_path / "samples.tsv"
    samples.write_text("sample_id\tgroup\nP1\tsevere\nP2\tmild\nP3\tmild\n")
    config = {
        "cohorts": {
            "readsc": {
                "counts": {
                    "source": "reads",
                    "value_type": "expected_counts",
                    "reads": {"runs": str(sheet), "download": "ena"},
                },
                "metadata": {"source": "sample_sheet", "path": str(samples)},
                "severity": {"field": "group", "severe": ["severe"], "mild": ["mild"]},
            }
        },
        # Only the download rules run here: the reference is named, never read.
        "reads": {"transcriptome": str(tmp_path / "unused.fa.gz"), "ena": ena.settings()},
        "download": {"retries": 3, "backoff_s": 0, "timeout_s": 10},
        "gene_info": {"source": "local", "path": str(tmp_path / "unused_gene_info.gz")},
    }
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    return configfile


@pytest.mark.e2e
def test_workflow_downloads_runs_into_the_manifest(ena, tmp_path):
    src = tmp_path / "src"
    paired = [_fastq_gz(src / f"{WORKFLOW_PAIRED}_{m}.fastq.gz", seed=3, mate=m) for m in (1, 2)]
    single = _fastq_gz(src / f"{WORKFLOW_SINGLE}.fastq.gz", seed=4)
    ena.add_run(WORKFLOW_PAIRED, paired)
    ena.add_run(WORKFLOW_SINGLE, [single], layout="SINGLE")
    ena.fail_with(ena.fastq_target(WORKFLOW_PAIRED, paired[1].name), 503, times=1)
    local = _fastq_gz(tmp_path / "mine" / "P3.fastq.gz", seed=5)
    sheet = tmp_path / "runs.tsv"
    sheet.write_text(
        "sample\trun\tlayout\tfastq_1\n"
        f"P1\t{WORKFLOW_PAIRED}\tPAIRED\t\nP2\t{WORKFLOW_SINGLE}\tSINGLE\t\nP3\tP3_lane1\tsingle\t{local}\n"
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    configfile = _reads_workflow_config(tmp_path, ena, sheet)
    fastq_dir = Path("results/reads/fastq")
    kept = fastq_dir / WORKFLOW_PAIRED / f"{WORKFLOW_PAIRED}_1.fastq.gz"
    proc = run_snakemake(workdir, configfile, str(kept), "results/downloads/manifest.tsv", cores=1)
    assert proc.returncode == 0, proc.stderr[-5000:]

    manifest = {row["file"]: row for row in read_manifest(workdir / "results/downloads/manifest.tsv")}
    expected = {str(fastq_dir / WORKFLOW_PAIRED / p.name): p for p in paired} | {
        str(fastq_dir / WORKFLOW_SINGLE / single.name): single
    }
    # The local run is read in place: neither downloaded nor recorded.
    assert set(manifest) == set(expected)
    for rel, source in expected.items():
        assert manifest[rel]["sha256"] == _sha256(source)
        assert manifest[rel]["url"] == ena.base_url + ena.fastq_target(Path(rel).parent.name, source.name)
    assert manifest[str(fastq_dir / WORKFLOW_PAIRED / paired[1].name)]["attempts"] == 2
    # The requested file is kept; the others are temp() and gone, as nothing here reads them.
    assert (workdir / kept).read_bytes() == paired[0].read_bytes()
    assert not (workdir / fastq_dir / WORKFLOW_SINGLE / single.name).exists()
    log = (workdir / "results/logs/reads/download" / f"{WORKFLOW_PAIRED}.log").read_text()
    assert "md5" in log and "matches ENA" in log
    # Deleted temp files do not make the downloads stale.
    proc = run_snakemake(workdir, configfile, "results/downloads/manifest.tsv", "-n", cores=1)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.e2e
def test_workflow_run_missing_from_ena_fails_clearly(ena, tmp_path):
    sheet = tmp_path / "runs.tsv"
    sheet.write_text(f"sample\trun\tlayout\nP1\t{WORKFLOW_PAIRED}\tpaired\n")
    workdir = tmp_path / "work"
    workdir.mkdir()
    configfile = _reads_workflow_config(tmp_path, ena, sheet)
    proc = run_snakemake(workdir, configfile, "results/downloads/manifest.tsv", cores=1)
    assert proc.returncode != 0
    log = (workdir / "results/logs/reads/download" / f"{WORKFLOW_PAIRED}.log").read_text()
    assert f"run {WORKFLOW_PAIRED}: ENA has no FASTQ files" in log and "download: sra" in log
    assert f"run {WORKFLOW_PAIRED}: ENA has no FASTQ files" in proc.stderr
    assert not list((workdir / "results/reads/fastq").rglob("*.fastq.gz"))
