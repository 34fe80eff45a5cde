"""Tests for il6axis.acquire.count_tables (count-table reading/validation, integer conversion) and
il6axis.acquire.sample_matching (sample-ID matching)."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from il6axis.acquire.count_tables import read_count_table, to_integer_counts
from il6axis.acquire.geo_metadata import clean_geoquery_columns, read_sample_sheet, read_series_matrix
from il6axis.acquire.sample_matching import INDEX, make_names, reconcile_sample_ids
from il6axis.errors import InputError

GSE152418_COUNTS = ("GSE152418", "GSE152418_raw_counts_GRCh38.p13_NCBI.tsv.gz")
GSE152418_PDATA = ("GSE152418", "GSE152418_sample_metadata_GEOquery_pData.csv.gz")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


# ----------------------------------------------------------------------------------------- real data
def test_read_gse152418_ncbi_counts(shared_data: Path) -> None:
    counts = read_count_table(shared_data.joinpath(*GSE152418_COUNTS))
    assert counts.shape == (39376, 34)
    assert counts.index.name == "gene_id"
    assert (counts.dtypes == np.int64).all()
    assert counts.index[0] == "100287102"
    assert {"3569", "3570", "3572", "3716", "3717", "3718", "7297", "6774", "9021"} <= set(counts.index)
    assert counts.columns[0] == "GSM4614985" and counts.columns[-1] == "GSM4615037"
    assert int((counts.sum(axis=1) == 0).sum()) == 925
    libsize = counts.sum(axis=0)
    assert 14.4e6 < libsize.min() < 14.6e6 and 22.3e6 < libsize.max() < 22.5e6


def test_read_gse155454_symbol_counts(shared_data: Path) -> None:
    counts = read_count_table(shared_data / "GSE155454" / "GSE155454_counts_kuanrongchan_v1.csv.gz")
    assert counts.shape == (10013, 32)
    assert (counts.dtypes == np.int64).all()
    dup = counts.index[counts.index.duplicated(keep=False)].value_counts().to_dict()
    assert dup == {"Y_RNA": 3, "POLR2J3": 2}
    assert counts.columns[0] == "severe_n008_acute_day7"
    assert "IL6" not in counts.index and "IL6R" in counts.index


def test_read_gse293708_drops_symbol_column(shared_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = shared_data / "GSE293708" / "GSE293708_reconstructed_raw_counts.csv.gz"
    with caplog.at_level(logging.INFO, logger="il6axis.acquire.count_tables"):
        counts = read_count_table(path)
    assert counts.shape == (13403, 16)
    assert "Symbol" not in counts.columns and list(counts.columns[:2]) == ["H1", "H2"]
    assert any("annotation" in r.message and "'Symbol'" in r.message for r in caplog.records)


def test_read_gse293708_sample_columns(shared_data: Path) -> None:
    path = shared_data / "GSE293708" / "GSE293708_DESeq2_normalized_counts.csv.gz"
    counts = read_count_table(path, id_column="Symbol", sample_columns=["CS1", "CM1"])
    assert list(counts.columns) == ["CS1", "CM1"]
    assert counts.dtypes.iloc[0] == np.float64  # DESeq2-normalised values are fractional
    assert "IL6" in counts.index


# ----------------------------------------------------------------------------------------- synthetic reading
@pytest.mark.parametrize(
    ("name", "sep"),
    [("t.tsv", "\t"), ("t.csv", ","), ("t.txt.gz", "\t"), ("t.csv.gz", ","), ("t.txt", ";")],
)
def test_separator_detection(tmp_path: Path, name: str, sep: str) -> None:
    text = (
        sep.join(["gene", "S1", "S2"]) + "\n" + sep.join(["A", "1", "2"]) + "\n" + sep.join(["B", "0", "5"])
    )
    counts = read_count_table(_write(tmp_path, name, text + "\n"))
    assert list(counts.columns) == ["S1", "S2"]
    assert list(counts.index) == ["A", "B"]
    assert counts.loc["B", "S2"] == 5 and counts.dtypes.iloc[0] == np.int64


def test_gz_detected_by_content_not_extension(tmp_path: Path) -> None:
    path = tmp_path / "counts.tsv"  # gzipped although the name says plain text
    with gzip.open(path, "wt") as handle:
        handle.write("gene\tS1\nA\t3\n")
    assert read_count_table(path).loc["A", "S1"] == 3


def test_id_column_and_ids_as_strings(tmp_path: Path) -> None:
    text = "Symbol\tGeneID\tS1\tS2\nIL6\t3569\t1\t2\nNA\t0042\t3\t4\n"
    counts = read_count_table(
        _write(tmp_path, "c.tsv", text), id_column="GeneID", sample_columns=["S1", "S2"]
    )
    assert list(counts.index) == ["3569", "0042"]  # leading zeros kept, not parsed as numbers
    counts = read_count_table(_write(tmp_path, "c.tsv", text))
    assert list(counts.index) == ["IL6", "NA"]  # the symbol "NA" is not turned into a missing value
    assert list(counts.columns) == ["S1", "S2"]  # GeneID column dropped as annotation


def test_fractional_values_are_float(tmp_path: Path) -> None:
    counts = read_count_table(_write(tmp_path, "ec.tsv", "#symbol\tC1\tC2\nA\t1.5\t2\nB\t0\t3.25\n"))
    assert (counts.dtypes == np.float64).all()
    assert counts.loc["B", "C2"] == 3.25


def test_drop_rows(tmp_path: Path) -> None:
    text = "Sample_sheet,S1,S2\nbatch,1,1\nlane,a,b\nENSG1,5,6\nENSG2,7,8\n"
    counts = read_count_table(_write(tmp_path, "c.csv", text), drop_rows=2)
    assert list(counts.index) == ["ENSG1", "ENSG2"] and counts.loc["ENSG2", "S2"] == 8


def test_header_without_id_field(tmp_path: Path) -> None:
    counts = read_count_table(_write(tmp_path, "r.txt", "S1\tS2\nA\t1\t2\nB\t3\t4\n"))
    assert list(counts.columns) == ["S1", "S2"] and list(counts.index) == ["A", "B"]


def test_trailing_separator_column_is_dropped(tmp_path: Path) -> None:
    counts = read_count_table(_write(tmp_path, "t.tsv", "gene\tS1\tS2\t\nA\t1\t2\t\nB\t3\t4\t\n"))
    assert list(counts.columns) == ["S1", "S2"]


def test_known_numeric_annotation_dropped(tmp_path: Path) -> None:
    text = "Geneid\tChr\tStart\tEnd\tStrand\tLength\tS1\nG1\tchr1;chr1\t1;5\t4;9\t+;+\t8\t10\n"
    counts = read_count_table(_write(tmp_path, "fc.tsv", text))
    assert list(counts.columns) == ["S1"]


# ----------------------------------------------------------------------------------------- validation errors
def test_non_numeric_cell(tmp_path: Path) -> None:
    text = "gene,severe_t005,mild_t006\nIL6R,abc,2\nSTAT3,4,5\nJAK1,6,7\n"
    path = _write(tmp_path, "GSE155454_counts.csv", text)
    with pytest.raises(InputError) as err:
        read_count_table(path)
    msg = str(err.value)
    for part in (
        "GSE155454_counts.csv",
        "'severe_t005'",
        "'IL6R'",
        "'abc'",
        "non-negative integers",
        "counts.id_column",
    ):
        assert part in msg


def test_wrong_separator_gives_actionable_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.csv", "gene;S1;S2\nA;1,5;2\nB;3;4\n")
    with pytest.raises(InputError, match=r"c.csv.*separator"):
        read_count_table(path, sep=",")


def test_missing_cell(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.tsv", "gene\tS1\tS2\nA\t1\t2\nB\tNA\t4\n")
    with pytest.raises(InputError, match=r"c.tsv: column 'S1' row 'B'.*empty/NA"):
        read_count_table(path)


def test_negative_cell(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.tsv", "gene\tS1\tS2\nA\t1\t2\nB\t3\t-4\n")
    with pytest.raises(InputError, match=r"c.tsv: column 'S2' row 'B' value -4 is negative"):
        read_count_table(path)


def test_infinite_cell(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.tsv", "gene\tS1\nA\tinf\nB\t3\n")
    with pytest.raises(InputError, match=r"c.tsv: column 'S1' row 'A'.*infinite"):
        read_count_table(path)


def test_duplicated_sample_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.tsv", "gene\tS1\tS2\tS1\nA\t1\t2\t3\n")
    with pytest.raises(InputError, match=r"c.tsv: duplicated sample column name\(s\) 'S1'"):
        read_count_table(path)


def test_empty_table(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"c.tsv.*no data rows"):
        read_count_table(_write(tmp_path, "c.tsv", "gene\tS1\tS2\n"))
    with pytest.raises(InputError, match=r"e.tsv.*empty"):
        read_count_table(_write(tmp_path, "e.tsv", ""))


def test_empty_gene_id(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"c.tsv: 1 row\(s\) have an empty gene ID \(first at line 3\)"):
        read_count_table(_write(tmp_path, "c.tsv", "gene\tS1\nA\t1\n\t2\n"))


def test_unknown_id_column(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"c.tsv.*'ENSEMBLID'.*available columns: 'gene', 'S1'"):
        read_count_table(_write(tmp_path, "c.tsv", "gene\tS1\nA\t1\n"), id_column="ENSEMBLID")


def test_unknown_sample_column(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"c.tsv.*'S9'.*counts.sample_columns"):
        read_count_table(_write(tmp_path, "c.tsv", "gene\tS1\nA\t1\n"), sample_columns=["S1", "S9"])


def test_no_separator(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"c.txt.*separator.*counts.sep"):
        read_count_table(_write(tmp_path, "c.txt", "gene\nA\n"))


def test_only_text_columns(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"c.tsv: no numeric sample columns"):
        read_count_table(_write(tmp_path, "c.tsv", "gene\tdesc\nA\tkinase\nB\treceptor\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope.tsv.*not found.*counts.path"):
        read_count_table(tmp_path / "nope.tsv")


def test_large_table_parses(tmp_path: Path) -> None:
    """A 60,000 genes x 200 samples table parses completely (speed: bench/bench_download_parse.py)."""
    rng = np.random.default_rng(1)
    rows = ["\t".join(map(str, rng.integers(0, 5000, 200))) for _ in range(50)]
    body = "\n".join(f"ENSG{i:011d}.3\t{rows[i % 50]}" for i in range(60_000))
    path = tmp_path / "big.tsv"
    path.write_text("gene_id\t" + "\t".join(f"S{j}" for j in range(200)) + "\n" + body + "\n")
    counts = read_count_table(path)
    assert counts.shape == (60_000, 200)
    assert counts.iloc[59_999].tolist() == [int(v) for v in rows[59_999 % 50].split("\t")]


# ----------------------------------------------------------------------------------------- integer counts
def test_to_integer_whole_numbers() -> None:
    df = pd.DataFrame({"S1": [1.0, 2.0], "S2": [0.0, 7.0]}, index=["A", "B"])
    out, info = to_integer_counts(df, source_name="x")
    assert (out.dtypes == np.int64).all()
    assert info == {"rounded": False, "max_abs_change": 0.0, "n_changed": 0, "fraction_changed": 0.0}
    assert out.loc["B", "S2"] == 7 and list(out.index) == ["A", "B"]


def test_to_integer_int_input_is_copy() -> None:
    df = pd.DataFrame({"S1": [1, 2]}, index=["A", "B"])
    out, info = to_integer_counts(df, source_name="x")
    out.iloc[0, 0] = 99
    assert df.iloc[0, 0] == 1 and info["rounded"] is False


def test_to_integer_rounds_half_to_even() -> None:
    df = pd.DataFrame({"S1": [0.5, 1.5, 2.5, 3.2], "S2": [4.0, 5.0, 6.7, 7.0]}, index=list("ABCD"))
    out, info = to_integer_counts(df, source_name="GSE157103 ec")
    assert out["S1"].tolist() == [0, 2, 2, 3]
    assert out["S2"].tolist() == [4, 5, 7, 7]
    assert info["rounded"] is True
    assert info["n_changed"] == 5
    assert info["max_abs_change"] == pytest.approx(0.5)
    assert info["fraction_changed"] == pytest.approx(5 / 8)


@pytest.mark.parametrize(("value", "what"), [(-1.5, "negative"), (np.nan, "NaN"), (np.inf, "infinite")])
def test_to_integer_rejects(value: float, what: str) -> None:
    df = pd.DataFrame({"S1": [1.0, value]}, index=["A", "B"])
    with pytest.raises(InputError, match=rf"cohortX: column 'S1' row 'B'.*{what}"):
        to_integer_counts(df, source_name="cohortX")


def test_to_integer_rejects_negative_int() -> None:
    with pytest.raises(InputError, match=r"cohortX.*negative"):
        to_integer_counts(pd.DataFrame({"S1": [1, -2]}, index=["A", "B"]), source_name="cohortX")


# ----------------------------------------------------------------------------------------- sample IDs
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("S145_nCOV001-C", "S145_nCOV001.C"),
        ("S147_nCoV001EUHM-Draw-1", "S147_nCoV001EUHM.Draw.1"),
        ("1_t030_acute_day4", "X1_t030_acute_day4"),
        ("a b", "a.b"),
        (".5x", "X.5x"),
        (".x", ".x"),
        ("NA", "NA."),
        ("", "X"),
        ("ok.name_1", "ok.name_1"),
    ],
)
def test_make_names(raw: str, expected: str) -> None:
    assert make_names(raw) == expected


def test_reconcile_gsm_exact(shared_data: Path) -> None:
    counts = read_count_table(shared_data.joinpath(*GSE152418_COUNTS))
    meta = clean_geoquery_columns(read_sample_sheet(shared_data.joinpath(*GSE152418_PDATA), "geo_accession"))
    mapping = reconcile_sample_ids(list(counts.columns), meta, file_label="GSE152418")
    assert mapping == {c: c for c in counts.columns}
    assert list(meta.index) == list(counts.columns)  # same set and order, as documented


def test_reconcile_r_mangled_titles(shared_data: Path) -> None:
    """The author matrix has titles with '-' turned into '.' by R (nCoV001EUHM-Draw-1 -> ...Draw.1)."""
    meta = clean_geoquery_columns(read_sample_sheet(shared_data.joinpath(*GSE152418_PDATA), "geo_accession"))
    columns = [t.replace("-", ".") for t in meta["title"]][::-1]
    mapping = reconcile_sample_ids(columns, meta, file_label="author counts")
    assert mapping["S145_nCOV001_C"] == "GSM4614985"
    assert mapping["S147_nCoV001EUHM.Draw.1"] == "GSM4614986"
    assert len(set(mapping.values())) == 34


def test_reconcile_description_gse157103(shared_data: Path) -> None:
    """GSE157103 ec/tpm columns C1..C103 / NC1..NC26 are the series matrix's !Sample_description."""
    meta = read_series_matrix(shared_data / "GSE157103" / "GSE157103_series_matrix.txt.gz")
    columns = ["C1", "C2", "NC26", "C103"]
    mapping = reconcile_sample_ids(columns, meta, file_label="GSE157103_genes.ec.tsv.gz")
    assert mapping["C1"] == "GSM4753021"
    assert meta.loc[mapping["NC26"], "title"].startswith("NONCOVID_26")
    assert meta.loc[mapping["C103"], "title"].startswith("COVID_103")


def test_reconcile_prefers_index_then_title(caplog: pytest.LogCaptureFixture) -> None:
    meta = pd.DataFrame({"title": ["GSM2", "x", "y"]}, index=pd.Index(["GSM1", "GSM2", "GSM3"], name="gsm"))
    assert reconcile_sample_ids(["GSM2"], meta, file_label="f") == {"GSM2": "GSM2"}
    with caplog.at_level(logging.INFO, logger="il6axis.acquire.sample_matching"):
        assert reconcile_sample_ids(["x", "y"], meta, file_label="f") == {"x": "GSM2", "y": "GSM3"}
    assert any("no count column" in r.message and "GSM1" in r.message for r in caplog.records)


def test_reconcile_explicit_candidates() -> None:
    meta = pd.DataFrame({"title": ["a", "b"], "alias": ["b", "a"]}, index=["G1", "G2"])
    assert reconcile_sample_ids(["a", "b"], meta, candidates=["alias"], file_label="f") == {
        "a": "G2",
        "b": "G1",
    }
    assert reconcile_sample_ids(["G1"], meta, candidates=[INDEX], file_label="f") == {"G1": "G1"}
    with pytest.raises(
        InputError, match=r"f: `metadata.match_keys` names 'nope'.*available: 'index', 'title'"
    ):
        reconcile_sample_ids(["a"], meta, candidates=["nope"], file_label="f")


def test_reconcile_ambiguous_title_is_an_error_naming_both_rows() -> None:
    """Two metadata rows with the same title cannot identify a count column: both are named."""
    meta = pd.DataFrame({"title": ["P1", "P1", "P2"]}, index=["G1", "G2", "G3"])
    with pytest.raises(InputError, match=r"f: ambiguous sample match by 'title': 'P1' matches 'G1'.*'G2'"):
        reconcile_sample_ids(["P1", "P2"], meta, file_label="f")


def test_reconcile_two_columns_same_sample() -> None:
    """'A-1' and 'A.1' both normalise to A.1: a mapping must be one-to-one."""
    meta = pd.DataFrame({"title": ["A-1", "B"]}, index=["G1", "G2"])
    with pytest.raises(InputError, match=r"cannot match.*'A-1'|cannot match.*'A.1'"):
        reconcile_sample_ids(["A-1", "A.1"], meta, file_label="f")


def test_reconcile_failure_message() -> None:
    meta = pd.DataFrame(
        {"title": [f"patient {i}" for i in range(8)]},
        index=pd.Index([f"GSM{i}" for i in range(8)], name="gsm"),
    )
    columns = ["patient 1", "patient 2"] + [f"lib{i}" for i in range(7)]
    with pytest.raises(InputError) as err:
        reconcile_sample_ids(columns, meta, file_label="GSE1_counts.tsv")
    msg = str(err.value)
    assert msg.startswith("GSE1_counts.tsv: cannot match")
    assert "7 of 9" in msg
    assert all(f"'lib{i}'" in msg for i in range(7))  # every unmatched column is named
    # Examples of metadata IDs and titles are cut at 5, and the message says how many were left out.
    assert "'GSM0'" in msg and "'patient 0'" in msg and "and 3 more (8 in total)" in msg
    assert "metadata.match_keys" in msg and "metadata.max_unmatched_columns" in msg
