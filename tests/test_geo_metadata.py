"""Tests for il6axis.acquire.geo_metadata: series-matrix and sample-sheet parsing, age and sex helpers."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from il6axis.acquire.geo_metadata import (
    clean_geoquery_columns,
    normalise_sex,
    parse_age,
    read_sample_sheet,
    read_series_matrix,
)
from il6axis.errors import InputError


# ----------------------------------------------------------------------------------------- helpers
def _matrix_text(rows: list[list[str]]) -> str:
    """A minimal series matrix: series header, quoted !Sample_* rows, empty data table."""
    lines = ['!Series_title\t"test series"', '!Series_geo_accession\t"GSE1"', ""]
    for key, *cells in rows:
        lines.append("\t".join([key, *(f'"{c}"' for c in cells)]))
    lines += ["!series_matrix_table_begin", '"ID_REF"\t"GSM1"\t"GSM2"\t"GSM3"', "!series_matrix_table_end"]
    return "\n".join(lines) + "\n"


SYNTHETIC_ROWS = [
    ["!Sample_title", "P1 day-1", "P2", "P3"],
    ["!Sample_geo_accession", "GSM1", "GSM2", "GSM3"],
    ["!Sample_status", "Public", "Public", "Public"],
    ["!Sample_source_name_ch1", "blood", "blood", "blood"],
    ["!Sample_organism_ch1", "Homo sapiens", "Homo sapiens", "Homo sapiens"],
    ["!Sample_characteristics_ch1", "severity: severe", "severity: mild", "severity: mild"],
    # keys differ per sample in one row; an empty cell means "no characteristic here"
    ["!Sample_characteristics_ch1", "age: 45", "gender: F", ""],
    ["!Sample_characteristics_ch1", "gender: M", "age: >89", "age: unknown"],
    ["!Sample_characteristics_ch1", "treatment: steroid", "treatment: none", "treatment: none"],
    ["!Sample_characteristics_ch1", "treatment: IL-6R antibody", "note: a: b", "flag:"],
    ["!Sample_description", "S1", "S2", "S3"],
    ["!Sample_data_processing", "x", "x", "x"],
]


@pytest.fixture()
def synthetic_matrix(tmp_path: Path) -> Path:
    path = tmp_path / "GSE1_series_matrix.txt"
    path.write_text(_matrix_text(SYNTHETIC_ROWS))
    return path


# ----------------------------------------------------------------------------------------- series matrix
def test_series_matrix_gse157103_real(shared_data: Path) -> None:
    meta = read_series_matrix(shared_data / "GSE157103" / "GSE157103_series_matrix.txt.gz")
    assert meta.shape[0] == 126
    assert meta.index.name == "gsm"
    assert meta.index[0] == "GSM4753021" and meta.index[-1] == "GSM4753146"
    assert meta.index.is_unique
    for col in ("title", "source_name", "organism", "description", "disease state", "icu", "Sex"):
        assert col in meta.columns, col
    assert (meta["organism"] == "Homo sapiens").all()
    assert meta["disease state"].value_counts().to_dict() == {"COVID-19": 100, "non-COVID-19": 26}
    covid = meta[meta["disease state"] == "COVID-19"]
    assert covid["icu"].value_counts().to_dict() == {"yes": 50, "no": 50}
    assert set(meta["icu"]) == {"yes", "no"}
    assert set(meta["Sex"]) == {"male", "female", "unknown"}
    assert (covid["Sex"].value_counts().to_dict()) == {"male": 62, "female": 38}
    # raw strings are kept: ':' for COVID_06 and '>89' for two samples
    by_title = meta.set_index("title")
    assert by_title.loc["COVID_06_:y_male_NonICU", "age (years)"] == ":"
    assert (meta["age (years)"] == ">89").sum() == 2
    assert (meta["apacheii"] == "unknown").sum() > 0
    # the count-table column name of GSE157103 lives in the first !Sample_description row
    assert meta["description"].iloc[0] == "C1" and meta["description"].iloc[-1] == "NC26"
    assert meta["title"].iloc[0] == "COVID_01_39y_male_NonICU"
    # all values stay strings (or NaN for absent keys)
    assert all(meta[c].dtype == object for c in meta.columns)


def test_series_matrix_age_and_sex_real(shared_data: Path) -> None:
    meta = read_series_matrix(shared_data / "GSE157103" / "GSE157103_series_matrix.txt.gz")
    age = parse_age(meta["age (years)"])
    assert age["age"].isna().sum() == 1
    assert meta.loc[age["age"].isna(), "title"].tolist() == ["COVID_06_:y_male_NonICU"]
    censored = meta.loc[age["age_censored"], "title"].tolist()
    assert sorted(censored) == ["COVID_89_90y_female_NonICU", "NONCOVID_04_90y_male_NonICU"]
    assert (age.loc[age["age_censored"], "age"] == 90.0).all()
    sex = normalise_sex(meta["Sex"])
    assert sex.value_counts().to_dict() == {"male": 74, "female": 51, "unknown": 1}


def test_series_matrix_per_cell_keys(synthetic_matrix: Path) -> None:
    meta = read_series_matrix(synthetic_matrix)
    assert list(meta.index) == ["GSM1", "GSM2", "GSM3"]
    assert meta.loc["GSM1", "title"] == "P1 day-1"
    assert meta.loc["GSM1", "source_name"] == "blood"
    assert meta["severity"].tolist() == ["severe", "mild", "mild"]
    assert meta["age"].tolist() == ["45", ">89", "unknown"]
    assert meta.loc["GSM1", "gender"] == "M" and meta.loc["GSM2", "gender"] == "F"
    assert pd.isna(meta.loc["GSM3", "gender"])
    # a key repeated for one sample becomes key_2; split happens at the first ": " only
    assert meta.loc["GSM1", "treatment"] == "steroid"
    assert meta.loc["GSM1", "treatment_2"] == "IL-6R antibody"
    assert meta.loc["GSM2", "note"] == "a: b"
    assert meta.loc["GSM3", "flag"] == ""
    assert meta["description"].tolist() == ["S1", "S2", "S3"]
    # rows outside the kept set are not columns
    assert "status" not in meta.columns and "data_processing" not in meta.columns


def test_series_matrix_gz_and_trailing_tab(tmp_path: Path) -> None:
    text = _matrix_text(SYNTHETIC_ROWS).replace('"P3"\n', '"P3"\t\n')
    path = tmp_path / "x_series_matrix.txt.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(text)
    meta = read_series_matrix(path)
    assert meta.shape[0] == 3 and meta.loc["GSM3", "title"] == "P3"


def test_series_matrix_html_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "GSE1_series_matrix.txt"
    path.write_text("<!DOCTYPE html>\n<html><body>Not found</body></html>\n")
    with pytest.raises(InputError, match=r"GSE1_series_matrix.txt.*!Sample_geo_accession.*HTML"):
        read_series_matrix(path)


def test_series_matrix_soft_is_rejected(shared_data: Path) -> None:
    with pytest.raises(InputError, match=r"GSE157103_family.soft.gz.*SOFT"):
        read_series_matrix(shared_data / "GSE157103" / "GSE157103_family.soft.gz")


def test_series_matrix_ragged_row(tmp_path: Path) -> None:
    rows = [r[:] for r in SYNTHETIC_ROWS]
    rows[5] = ["!Sample_characteristics_ch1", "severity: severe", "severity: mild"]
    path = tmp_path / "bad_series_matrix.txt"
    path.write_text(_matrix_text(rows))
    with pytest.raises(
        InputError, match=r"bad_series_matrix.txt.*!Sample_characteristics_ch1.*2 values.*3 samples"
    ):
        read_series_matrix(path)


def test_series_matrix_duplicated_gsm(tmp_path: Path) -> None:
    rows = [r[:] for r in SYNTHETIC_ROWS]
    rows[1] = ["!Sample_geo_accession", "GSM1", "GSM1", "GSM3"]
    path = tmp_path / "dup_series_matrix.txt"
    path.write_text(_matrix_text(rows))
    with pytest.raises(InputError, match=r"dup_series_matrix.txt.*GSM1"):
        read_series_matrix(path)


def test_series_matrix_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope.txt.*not found"):
        read_series_matrix(tmp_path / "nope.txt")


# ----------------------------------------------------------------------------------------- sample sheets
def test_sample_sheet_geoquery_real(shared_data: Path) -> None:
    path = shared_data / "GSE152418" / "GSE152418_sample_metadata_GEOquery_pData.csv.gz"
    sheet = clean_geoquery_columns(read_sample_sheet(path, "geo_accession"))
    assert sheet.shape[0] == 34
    assert sheet.index.name == "geo_accession"
    assert sheet.index[0] == "GSM4614985"
    for col in ("severity", "disease state", "gender", "days_post_symptom_onset", "title", "source_name"):
        assert col in sheet.columns, col
    assert "severity:ch1" not in sheet.columns
    assert sheet["severity"].value_counts().to_dict() == {
        "Healthy": 17,
        "Severe": 8,
        "Moderate": 4,
        "ICU": 4,
        "Convalescent": 1,
    }
    assert sheet["disease state"].value_counts().to_dict() == {
        "Healthy": 17,
        "COVID-19": 16,
        "Convalescent": 1,
    }
    assert set(normalise_sex(sheet["gender"])) == {"male", "female"}
    # values are literal strings: R's NA stays "NA" for the typed helpers to interpret
    assert (sheet["days_post_symptom_onset"] == "NA").sum() == 17
    # the characteristics columns are still there unchanged
    assert sheet["characteristics_ch1.3"].str.startswith("severity: ").all()


def test_sample_sheet_tsv_gz(tmp_path: Path) -> None:
    path = tmp_path / "sheet.txt.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("sample\tgroup\tage\nA\tsevere\t50\nB\tmild\tNA\n")
    sheet = read_sample_sheet(path, "sample")
    assert list(sheet.index) == ["A", "B"]
    assert sheet.loc["B", "age"] == "NA"
    assert list(sheet.columns) == ["group", "age"]


def test_sample_sheet_numeric_ids_are_strings(tmp_path: Path) -> None:
    path = tmp_path / "sheet.csv"
    path.write_text("rna_id,cohort\n94189,COVID-19\n007,healthy\n")
    sheet = read_sample_sheet(path, "rna_id")
    assert list(sheet.index) == ["94189", "007"]


def test_sample_sheet_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "sheet.csv"
    path.write_text("sample,group\nA,severe\n")
    with pytest.raises(
        InputError, match=r"sheet.csv.*'gsm' not found.*'sample', 'group'.*metadata.sample_column"
    ):
        read_sample_sheet(path, "gsm")


def test_sample_sheet_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "sheet.csv"
    path.write_text("sample,group\nA,severe\nB,mild\nA,mild\n")
    with pytest.raises(InputError, match=r"sheet.csv.*'sample'.*duplicated.*\['A'\]"):
        read_sample_sheet(path, "sample")


def test_sample_sheet_empty_id(tmp_path: Path) -> None:
    path = tmp_path / "sheet.csv"
    path.write_text("sample,group\nA,severe\n,mild\n")
    with pytest.raises(InputError, match=r"sheet.csv.*'sample' is empty at line 3"):
        read_sample_sheet(path, "sample")


def test_clean_geoquery_columns_collision() -> None:
    df = pd.DataFrame(columns=["title", "severity:ch1", "severity", "organism_ch1", "age:ch1"])
    out = clean_geoquery_columns(df)
    assert list(out.columns) == ["title", "severity:ch1", "severity", "organism", "age"]


# ----------------------------------------------------------------------------------------- parse_age
@pytest.mark.parametrize(
    ("raw", "age", "censored"),
    [
        ("39", 39.0, False),
        (" 52.5 ", 52.5, False),
        (">89", 90.0, True),
        ("> 89", 90.0, True),
        ("90+", 90.0, True),
        (">=90", 90.0, True),
        (61, 61.0, False),
        ("", np.nan, False),
        (":", np.nan, False),
        ("unknown", np.nan, False),
        ("NA", np.nan, False),
        ("n/a", np.nan, False),
        ("nan", np.nan, False),
        (None, np.nan, False),
        (float("nan"), np.nan, False),
    ],
)
def test_parse_age_values(raw: object, age: float, censored: bool) -> None:
    out = parse_age(pd.Series([raw], index=["s1"], name="age"))
    assert list(out.columns) == ["age", "age_censored"]
    assert out["age"].dtype == float and out["age_censored"].dtype == bool
    got = out.loc["s1", "age"]
    assert (np.isnan(got) and np.isnan(age)) or got == age
    assert bool(out.loc["s1", "age_censored"]) is censored


def test_parse_age_keeps_index() -> None:
    values = pd.Series(["40", ">89", ":"], index=["GSM3", "GSM1", "GSM2"], name="age (years)")
    out = parse_age(values)
    assert list(out.index) == ["GSM3", "GSM1", "GSM2"]
    assert int(out["age"].isna().sum()) == 1 and int(out["age_censored"].sum()) == 1


@pytest.mark.parametrize("bad", ["forty", "39y", "<18", "-3"])
def test_parse_age_rejects(bad: str) -> None:
    values = pd.Series(["40", bad], index=["GSM1", "GSM2"], name="age (years)")
    with pytest.raises(InputError, match=r"series.txt.*'age \(years\)'.*'GSM2'") as err:
        parse_age(values, source="series.txt")
    assert repr(bad) in str(err.value)


# ----------------------------------------------------------------------------------------- normalise_sex
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("M", "male"),
        ("Male", "male"),
        ("male", "male"),
        ("MALE", "male"),
        ("m", "male"),
        (" male ", "male"),
        ("man", "male"),
        ("Men", "male"),
        ("gender: M", "male"),
        ("Sex=male", "male"),
        ("F", "female"),
        ("female", "female"),
        ("Female", "female"),
        ("f", "female"),
        ("woman", "female"),
        ("WOMEN", "female"),
        ("sex: F", "female"),
        ("gender:female", "female"),
        ("sex: NA", "unknown"),
        ("gender:", "unknown"),
        ("unknown", "unknown"),
        ("NA", "unknown"),
        ("", "unknown"),
        (None, "unknown"),
        (np.nan, "unknown"),
    ],
)
def test_normalise_sex_values(raw: object, expected: str) -> None:
    assert normalise_sex(pd.Series([raw], index=["s1"])).loc["s1"] == expected


def test_normalise_sex_list_input_and_index() -> None:
    assert normalise_sex(["M", "F", "NA"]).tolist() == ["male", "female", "unknown"]
    s = normalise_sex(pd.Series(["F", "M"], index=["b", "a"], name="gender"))
    assert list(s.index) == ["b", "a"] and s.name == "gender"


@pytest.mark.parametrize("bad", ["x", "intersex?", "2"])
def test_normalise_sex_rejects(bad: str) -> None:
    with pytest.raises(InputError, match=r"sheet.csv.*'gender'.*'s2'.*accepted spellings.*M/Male") as err:
        normalise_sex(pd.Series(["M", bad], index=["s1", "s2"], name="gender"), source="sheet.csv")
    assert repr(bad) in str(err.value)


def test_normalise_sex_unrecognised_modes(caplog: pytest.LogCaptureFixture) -> None:
    """Both modes read the same spellings; only an unrecognised value differs (error vs unknown + warning)."""
    truth = {"s1": "female", "s2": "male", "s3": "unknown", "s4": "unknown", "s5": "male", "s6": "unknown"}
    raw = pd.Series(
        ["gender: F", "Men", "intersex?", "NA", "m", "2"], index=list(truth), name="characteristics_ch1.3"
    )
    with pytest.raises(InputError, match=r"'s3' has unrecognised sex 'intersex\?'"):
        normalise_sex(raw)
    with pytest.raises(InputError, match="unrecognised sex"):
        normalise_sex(raw, unrecognised="raise")
    with caplog.at_level(logging.WARNING, logger="il6axis.acquire.geo_metadata"):
        sex = normalise_sex(raw, unrecognised="unknown", source="obs")
    assert sex.to_dict() == truth and sex.name == "characteristics_ch1.3"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 value(s)" in warnings[0] and "'2', 'intersex?'" in warnings[0]
    recognised = raw.drop(["s3", "s6"])
    assert normalise_sex(recognised).equals(normalise_sex(recognised, unrecognised="unknown"))


def test_normalise_sex_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="unrecognised must be one of"):
        normalise_sex(["M"], unrecognised="drop")
