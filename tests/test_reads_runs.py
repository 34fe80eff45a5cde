"""Run discovery for the reads count source (il6axis.reads.runs): run tables, sample sheets, bad input."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT
from snakemake.utils import validate

from il6axis.errors import InputError
from il6axis.reads.runs import Run, read_run_table, runs_by_sample, runs_from_config

SCHEMA = str(PROJECT_ROOT / "workflow" / "schemas" / "config.schema.yaml")
SHEET_HEADER = ["sample", "run", "layout", "fastq_1", "fastq_2"]


def _sheet(
    path: Path, rows: list[list[str]], header: list[str] = SHEET_HEADER, delimiter: str = "\t"
) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _fastq(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        fh.write("@r1\nACGT\n+\nIIII\n")
    return str(path)


# --------------------------------------------------------------------------------------------
# The real GSE198256 SraRunTable
# --------------------------------------------------------------------------------------------


def _independent_run_map(table: Path) -> dict[str, tuple[str, str]]:
    """run -> (GSM, layout) parsed here with the csv module, as the truth for the module under test."""
    with gzip.open(table, "rt", encoding="utf-8", newline="") as fh:
        return {row["Run"]: (row["Sample Name"], row["LibraryLayout"]) for row in csv.DictReader(fh)}


def test_real_sra_run_table(shared_data):
    table = shared_data / "GSE198256" / "GSE198256_SraRunTable.csv.gz"
    runs = runs_from_config("GSE198256", {"runs": str(table)})
    truth = _independent_run_map(table)
    assert len(runs) == 34 == len(truth)
    assert {r.run: (r.sample, r.layout.upper()) for r in runs} == truth
    assert all(r.layout == "paired" and r.source == "ena" and r.fastq == () for r in runs)
    # Two rows read off the file by eye: a quoted field with commas sits before Sample Name.
    by_run = {r.run: r for r in runs}
    assert by_run["SRR18280823"].sample == "GSM5942372"
    assert by_run["SRR18280824"].sample == "GSM5942371"
    # Every GSM of the run table is a column of the series' count table (PROVENANCE.md: same set).
    counts = shared_data / "GSE198256" / "GSE198256_NCBI_raw_counts_filtered.tsv.gz"
    with gzip.open(counts, "rt") as fh:
        columns = fh.readline().rstrip("\n").split("\t")[1:]
    assert set(runs_by_sample(runs)) == set(columns)
    assert all(len(v) == 1 for v in runs_by_sample(runs).values())


def test_real_table_subset_and_sra_download(shared_data):
    table = str(shared_data / "GSE198256" / "GSE198256_SraRunTable.csv.gz")
    runs = runs_from_config(
        "GSE198256", {"runs": table, "download": "sra", "only_runs": ["SRR18280856", "SRR18280823"]}
    )
    # Table order is kept, not the order of only_runs.
    assert [r.run for r in runs] == ["SRR18280823", "SRR18280856"]
    assert {r.source for r in runs} == {"sra"}
    with pytest.raises(InputError, match=r"only_runs: SRR00000001 not in the run table .*Fix"):
        runs_from_config("GSE198256", {"runs": table, "only_runs": ["SRR18280823", "SRR00000001"]})


# --------------------------------------------------------------------------------------------
# Sample sheets
# --------------------------------------------------------------------------------------------


def test_sample_sheet_replicates_layouts_and_local_files(tmp_path):
    sheet_dir = tmp_path / "sheets"
    sheet_dir.mkdir()
    a1 = _fastq(sheet_dir / "fq" / "A_L1_1.fastq.gz")
    a2 = _fastq(sheet_dir / "fq" / "A_L1_2.fastq.gz")
    elsewhere = _fastq(tmp_path / "abs" / "C.fastq.gz")
    sheet = _sheet(
        sheet_dir / "runs.tsv",
        [
            ["A", "A_L1", "paired", "fq/A_L1_1.fastq.gz", "fq/A_L1_2.fastq.gz"],
            ["B", "SRR1000001", "PAIRED", "", ""],
            ["A", "SRR1000002", "Paired", "", ""],  # second run of A: a technical replicate
            ["C", "C_run", "single", elsewhere, ""],
            ["", "", "", "", ""],  # blank lines are ignored
            ["D", "ERR2000001", "SINGLE", "", ""],
        ],
    )
    runs = runs_from_config("c", {"runs": str(sheet), "download": "ena"})
    assert runs == [
        Run("A_L1", "A", "paired", "local", (a1, a2)),
        Run("SRR1000001", "B", "paired", "ena", ()),
        Run("SRR1000002", "A", "paired", "ena", ()),
        Run("C_run", "C", "single", "local", (elsewhere,)),
        Run("ERR2000001", "D", "single", "ena", ()),
    ]
    grouped = runs_by_sample(runs)
    assert list(grouped) == ["A", "B", "C", "D"]
    assert [r.run for r in grouped["A"]] == ["A_L1", "SRR1000002"]


def test_csv_sheet_gzipped_custom_columns(tmp_path):
    plain = _sheet(
        tmp_path / "runs.csv",
        [
            ["GSM1", "SRR3000001", "single"],
            ["GSM1", "SRR3000002", "single"],
            ["GSM2", "SRR3000003", "single"],
        ],
        header=["patient sample", "accession", "lib"],
        delimiter=",",
    )
    gz = tmp_path / "runs.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    spec = {
        "runs": str(gz),
        "run_column": "accession",
        "sample_column": "patient sample",
        "layout_column": "lib",
    }
    runs = runs_from_config("c", spec)
    assert {s: [r.run for r in rs] for s, rs in runs_by_sample(runs).items()} == {
        "GSM1": ["SRR3000001", "SRR3000002"],
        "GSM2": ["SRR3000003"],
    }


def test_download_local_requires_every_file(tmp_path):
    r1, r2 = _fastq(tmp_path / "x_1.fq.gz"), _fastq(tmp_path / "x_2.fq.gz")
    sheet = _sheet(tmp_path / "s.tsv", [["S", "x", "paired", r1, r2]])
    assert runs_from_config("c", {"runs": str(sheet), "download": "local"})[0].fastq == (r1, r2)


# --------------------------------------------------------------------------------------------
# Bad input: each names the file, the line, the column and the fix
# --------------------------------------------------------------------------------------------

BAD_SHEETS = {
    "unknown_layout": (
        [["S", "SRR1000001", "interleaved", "", ""]],
        r"line 2 \(run SRR1000001\), column 'layout': unknown library layout 'interleaved'.*Fix: write",
    ),
    "empty_layout": ([["S", "SRR1000001", "", "", ""]], r"line 2.*unknown library layout empty"),
    "duplicate_run": (
        [["S1", "SRR1000001", "paired", "", ""], ["S2", "SRR1000001", "paired", "", ""]],
        r"line 3 \(run SRR1000001\): run SRR1000001 is listed twice \(lines 2 and 3\).*Fix",
    ),
    "run_without_sample": (
        [["", "SRR1000001", "paired", "", ""]],
        r"line 2 \(run SRR1000001\): column 'sample' is empty, so the run belongs to no sample.*Fix",
    ),
    "empty_run": ([["S", "", "paired", "", ""]], r"line 2: column 'run' is empty.*Fix"),
    "local_fastq_missing": (
        [["S", "r1", "single", "nowhere/r1.fastq.gz", ""]],
        r"line 2 \(run r1\), column 'fastq_1': FASTQ file .*nowhere/r1.fastq.gz does not exist.*Fix",
    ),
    "paired_without_fastq_2": (
        [["S", "r1", "paired", "{fq}", ""]],
        r"line 2 \(run r1\): layout paired but column 'fastq_2' is empty.*Fix",
    ),
    "single_with_fastq_2": (
        [["S", "r1", "single", "{fq}", "{fq2}"]],
        r"layout single but column 'fastq_2' names a second file.*Fix",
    ),
    "fastq_2_without_fastq_1": (
        [["S", "SRR1000001", "paired", "", "{fq}"]],
        r"fastq_2 is given but fastq_1 is empty.*Fix",
    ),
    "same_file_two_runs": (
        [["S", "r1", "single", "{fq}", ""], ["S", "r2", "single", "{fq}", ""]],
        r"line 3 \(run r2\): FASTQ .* is also listed for run r1.*Fix",
    ),
    "not_an_accession": (
        [["S", "lane1", "paired", "", ""]],
        r"'lane1' is not an SRA/ENA/DDBJ run accession.*download = ena.*Fix",
    ),
    "run_id_with_slash": ([["S", "a/b", "paired", "", ""]], r"run ID 'a/b' may hold only.*Fix"),
    "sample_with_space": ([["S 1", "SRR1000001", "paired", "", ""]], r"sample 'S 1' may hold only.*Fix"),
    "mixed_layouts_in_sample": (
        [["S", "SRR1000001", "paired", "", ""], ["S", "SRR1000002", "single", "", ""]],
        r"sample S mixes single- and paired-end runs: SRR1000001 \(paired\), SRR1000002 \(single\).*Fix",
    ),
    "too_many_fields": (
        [["S", "SRR1000001", "paired", "", "", "extra"]],
        r"line 2: 6 fields but the header has 5.*Fix",
    ),
    "no_rows": ([], r"the run table has no rows.*Fix"),
}


@pytest.mark.parametrize("case", sorted(BAD_SHEETS))
def test_bad_sample_sheet(tmp_path, case):
    rows, pattern = BAD_SHEETS[case]
    fq, fq2 = _fastq(tmp_path / "f_1.fastq.gz"), _fastq(tmp_path / "f_2.fastq.gz")
    rows = [[cell.format(fq=fq, fq2=fq2) for cell in row] for row in rows]
    sheet = _sheet(tmp_path / "bad.tsv", rows)
    with pytest.raises(InputError, match=pattern) as err:
        runs_from_config("c", {"runs": str(sheet)})
    assert str(sheet) in str(err.value)


def test_download_local_without_files(tmp_path):
    sheet = _sheet(tmp_path / "s.tsv", [["S", "SRR1000001", "paired"]], header=["sample", "run", "layout"])
    with pytest.raises(InputError, match=r"line 2.*download is local but the run has no fastq_1 column.*Fix"):
        runs_from_config("c", {"runs": str(sheet), "download": "local"})


def test_missing_columns_and_files(tmp_path):
    sheet = _sheet(tmp_path / "s.tsv", [["S", "SRR1000001"]], header=["sample", "run"])
    with pytest.raises(
        InputError, match=r"no layout column \(looked for 'LibraryLayout'.*The table has: sample, run"
    ):
        runs_from_config("c", {"runs": str(sheet)})
    with pytest.raises(InputError, match=r"no column 'Sample' \(cohorts.c.counts.reads.sample_column\)"):
        runs_from_config("c", {"runs": str(sheet), "sample_column": "Sample"})
    with pytest.raises(
        InputError, match=r"cohorts.c.counts.reads.runs: run table .*absent.tsv does not exist"
    ):
        runs_from_config("c", {"runs": str(tmp_path / "absent.tsv")})
    with pytest.raises(InputError, match=r"cohorts.c.counts.reads.runs is not set"):
        runs_from_config("c", {})
    broken = tmp_path / "cut.tsv.gz"
    broken.write_bytes(gzip.compress(b"sample\trun\tlayout\nS\tSRR1000001\tpaired\n")[:-6])
    with pytest.raises(InputError, match=r"cut.tsv.gz: gzip file is truncated or corrupt"):
        runs_from_config("c", {"runs": str(broken)})
    with pytest.raises(InputError, match=r"download: 'ftp' is not one of ena, sra, local"):
        read_run_table(sheet, download="ftp")


# --------------------------------------------------------------------------------------------
# Config schema: the keys and their defaults
# --------------------------------------------------------------------------------------------


def _reads_config(reads: dict) -> dict:
    return {
        "cohorts": {
            "r": {
                "counts": {"source": "reads", "reads": reads},
                "metadata": {"source": "sample_sheet", "path": "s.tsv"},
                "severity": {"field": "g", "severe": ["s"], "mild": ["m"]},
            }
        }
    }


def test_schema_fills_reads_defaults():
    config = _reads_config({"runs": "runs.tsv"})
    validate(config, SCHEMA)
    reads = config["cohorts"]["r"]["counts"]["reads"]
    assert {
        k: reads[k] for k in ("download", "run_column", "sample_column", "layout_column", "only_runs")
    } == {
        "download": "ena",
        "run_column": None,
        "sample_column": None,
        "layout_column": None,
        "only_runs": None,
    }
    assert config["reads"]["ena"] == {
        "portal_base": "https://www.ebi.ac.uk/ena/portal/api",
        "fastq_base": "https://ftp.sra.ebi.ac.uk",
    }
    assert config["reads"]["sra"] == {"fasterq_dump": "fasterq-dump", "threads": 2}


@pytest.mark.parametrize(
    "reads, message",
    [
        ({"runs": "r.tsv", "download": "ftp"}, "'ftp' is not one of"),
        ({"runs": "r.tsv", "only_runs": []}, "should be non-empty"),
        ({"runs": "r.tsv", "layout": "paired"}, "Additional properties are not allowed"),
    ],
)
def test_schema_rejects_bad_reads_keys(reads, message):
    from snakemake.exceptions import WorkflowError

    with pytest.raises(WorkflowError, match=message):
        validate(_reads_config(reads), SCHEMA)
