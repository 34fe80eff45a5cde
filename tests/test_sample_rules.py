"""Rules for real GEO metadata: unmatched samples, one sample per patient, title-prefix matching.

Built on the real GSE161731 key (195 rows; GEO's count matrix has 201 columns, 6 without a key row;
subject 45FBA5 has two `early` samples labelled hospitalized No and Yes) and the real GSE172114 series
matrix (titles `C10-R`, `P10-J8`). Count matrices are synthetic, written in the layout GEO serves, and
every column carries a planted code (its position in the key / series matrix) that must come back in
the matched sample's row.
"""

from __future__ import annotations

import copy
import gzip
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import PROJECT_ROOT
from docutils.core import publish_parts
from geo_replicas import GSE161731_EXTRA_COLUMNS
from snakemake.utils import validate

from il6axis.acquire.geo_metadata import read_sample_sheet, read_series_matrix
from il6axis.acquire.sample_matching import (
    COLUMN_WITHOUT_METADATA,
    DEFAULT_MAX_UNMATCHED,
    ROW_WITHOUT_COLUMN,
    UnmatchedLimit,
    make_names,
    match_samples,
)
from il6axis.cohort.build import build_cohort, write_cohort
from il6axis.cohort.samples import (
    DEFAULT_CONFLICT,
    DEFAULT_TIE_BREAK,
    SUBJECT_COLUMNS,
    build_contrast,
)
from il6axis.errors import InputError
from il6axis.report.headlines import headlines_rst

SCHEMA = str(PROJECT_ROOT / "workflow" / "schemas" / "config.schema.yaml")
EXTRA_COLUMNS = GSE161731_EXTRA_COLUMNS
CONFLICTED = "45FBA5"
CONFLICT_NO, CONFLICT_YES = "DU18-02S0011618", "DU18-02S0011669"
N_GENES = 40
CODE_GENE = 0  # row holding each column's planted code


def _default_cohort(name: str) -> dict:
    """The cohort's block of config/config.yaml with the schema's defaults filled in."""
    config = yaml.safe_load((PROJECT_ROOT / "config" / "config.yaml").read_text())
    validate(config, SCHEMA)
    return copy.deepcopy(config["cohorts"][name])


# ------------------------------------------------------------------------------------------- GSE161731
@pytest.fixture(scope="module")
def key_path(shared_data: Path) -> Path:
    return shared_data / "GSE161731" / "GSE161731_key.csv.gz"


@pytest.fixture(scope="module")
def key(key_path: Path) -> pd.DataFrame:
    return read_sample_sheet(key_path, "rna_id")


@pytest.fixture(scope="module")
def gene_info(tmp_path_factory) -> tuple[Path, list[str]]:
    """A small NCBI gene_info with one unversioned Ensembl ID per gene (what GSE161731 rows carry)."""
    path = tmp_path_factory.mktemp("gene_info") / "Homo_sapiens.gene_info"
    ens = [f"ENSG{i:011d}" for i in range(1, N_GENES + 1)]
    rows = [
        "\t".join(["9606", str(1000 + i), f"GENE{i}", "-", f"Ensembl:{e}", "protein-coding", f"GENE{i}"])
        for i, e in enumerate(ens)
    ]
    header = "#tax_id\tGeneID\tSymbol\tSynonyms\tdbXrefs\ttype_of_gene\tSymbol_from_nomenclature_authority"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path, ens


def _gse161731_counts(path: Path, columns: list[str], ensembl: list[str], seed: int = 0) -> dict[str, int]:
    """GEO's layout: comma-separated, gzipped, EMPTY first header cell, unversioned Ensembl rows.

    Returns each column's planted code (row ``CODE_GENE``), unique per column.
    """
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 500, size=(len(ensembl), len(columns)))
    codes = {c: 10_000 + i for i, c in enumerate(columns)}
    values[CODE_GENE] = [codes[c] for c in columns]
    lines = ["," + ",".join(f'"{c}"' for c in columns)]
    lines += [f'"{g}",' + ",".join(map(str, row)) for g, row in zip(ensembl, values, strict=True)]
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    return codes


def _columns_with_extras(key: pd.DataFrame) -> list[str]:
    """The 195 key IDs with the 6 extra columns spread among them (GEO's matrix is not in key order)."""
    columns = list(key.index)
    for i, extra in enumerate(EXTRA_COLUMNS):
        columns.insert(17 + 31 * i, extra)
    return columns


def _build_gse161731(tmp_path, key, key_path, gene_info, spec=None, columns=None):
    info_path, ensembl = gene_info
    columns = columns if columns is not None else _columns_with_extras(key)
    counts_path = tmp_path / "GSE161731_counts.csv.gz"
    codes = _gse161731_counts(counts_path, columns, ensembl)
    spec = spec if spec is not None else _default_cohort("GSE161731")
    return build_cohort("GSE161731", spec, counts_path, key_path, info_path), codes


def _expected_groups(key: pd.DataFrame) -> dict[str, int]:
    """Subjects per group, read from the key itself: COVID-19 subjects whose labels all agree."""
    covid = key[key["cohort"] == "COVID-19"]
    labels = covid.groupby("subject_id")["hospitalized"].agg(lambda s: frozenset(s))
    return {
        "severe": int((labels == frozenset({"Yes"})).sum()),
        "mild": int((labels == frozenset({"No"})).sum()),
    }


def test_gse161731_builds_and_sets_aside_the_six_columns(
    tmp_path, key, key_path, gene_info, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.INFO):
        built, codes = _build_gse161731(tmp_path, key, key_path, gene_info)
    adata = built.adata
    assert adata.n_obs == len(key) == 195
    # Every kept column landed on its own metadata row: the planted code comes back.
    code = adata[:, "GENE0"].X.ravel()
    assert dict(zip(adata.obs_names, code, strict=True)) == {s: codes[s] for s in key.index}
    table = built.unmatched
    assert table["sample"].tolist() == EXTRA_COLUMNS
    assert set(table["side"]) == {COLUMN_WITHOUT_METADATA}
    assert not set(EXTRA_COLUMNS) & set(adata.obs_names)
    log_text = "\n".join(r.getMessage() for r in caplog.records)
    assert "6 count column(s) have no metadata row" in log_text
    for name in EXTRA_COLUMNS:
        assert name in log_text
    # Default conflict policy: subject 45FBA5 leaves the contrast, with the reason on both samples.
    obs = adata.obs.set_index("sample_id")
    for sample in (CONFLICT_NO, CONFLICT_YES):
        assert obs.loc[sample, "severity"] == "excluded"
        reason = obs.loc[sample, "exclusion_reason"]
        assert "conflicting severity labels" in reason and "conflict: exclude" in reason
    in_contrast = obs[obs["severity"].isin(["severe", "mild"])]
    assert in_contrast["subject_id"].is_unique
    assert in_contrast["severity"].astype(str).value_counts().to_dict() == _expected_groups(key)
    subjects = built.subjects.set_index("subject")
    assert bool(subjects.loc[CONFLICTED, "conflict"]) and subjects.loc[CONFLICTED, "kept_sample"] == ""
    assert list(built.subjects.columns) == SUBJECT_COLUMNS


def test_written_tables_list_the_unmatched_and_the_subjects(tmp_path, key, key_path, gene_info):
    built, _ = _build_gse161731(tmp_path, key, key_path, gene_info)
    out = {n: tmp_path / n for n in ("c.h5ad", "c.samples.tsv", "c.map.tsv", "c.unmatched.tsv", "c.subj.tsv")}
    write_cohort(built, *out.values())
    unmatched = pd.read_csv(out["c.unmatched.tsv"], sep="\t", dtype=str)
    assert list(unmatched.columns) == ["sample", "side", "reason"]
    assert unmatched["sample"].tolist() == EXTRA_COLUMNS
    assert unmatched["reason"].str.contains("metadata index \\(rna_id\\)").all()
    subjects = pd.read_csv(out["c.subj.tsv"], sep="\t", dtype=str, keep_default_na=False)
    assert CONFLICTED in set(subjects["subject"])


@pytest.mark.parametrize(
    ("bound", "stops"),
    [
        ({"fraction": 0.02, "count": None}, True),  # 6 / 201 = 3% > 2%
        ({"fraction": None, "count": 5}, True),
        ({"fraction": 0.03, "count": 6}, False),
        ({"fraction": None, "count": None}, False),
    ],
)
def test_unmatched_bound(tmp_path, key, key_path, gene_info, bound, stops):
    spec = _default_cohort("GSE161731")
    spec["metadata"]["max_unmatched_columns"] = bound
    if not stops:
        built, _ = _build_gse161731(tmp_path, key, key_path, gene_info, spec)
        assert len(built.unmatched) == 6
        return
    with pytest.raises(InputError) as err:
        _build_gse161731(tmp_path, key, key_path, gene_info, spec)
    msg = str(err.value)
    assert msg.startswith("GSE161731: GSE161731_key.csv.gz vs GSE161731_counts.csv.gz: cannot match")
    assert "6 of 201 count column(s) have no metadata row" in msg
    assert "`metadata.max_unmatched_columns`" in msg and "`metadata.match_keys`" in msg
    for name in EXTRA_COLUMNS:
        assert repr(name) in msg


def test_metadata_rows_without_counts_never_stop_the_run(tmp_path, key, key_path, gene_info):
    """A matrix with a subset of the key's samples builds even with a zero bound; the rest are listed."""
    spec = _default_cohort("GSE161731")
    spec["metadata"]["max_unmatched_columns"] = {"fraction": 0, "count": 0}
    covid = list(key.index[key["cohort"] == "COVID-19"])
    built, codes = _build_gse161731(tmp_path, key, key_path, gene_info, spec, columns=covid[::-1])
    assert sorted(built.adata.obs_names) == sorted(covid)
    rows = built.unmatched
    assert set(rows["side"]) == {ROW_WITHOUT_COLUMN}
    assert set(rows["sample"]) == set(key.index) - set(covid)
    code = built.adata[:, "GENE0"].X.ravel()
    assert dict(zip(built.adata.obs_names, code, strict=True)) == codes


# ----------------------------------------------------------------------------------- one per patient
def _contrast(key: pd.DataFrame, **opp) -> tuple[pd.DataFrame, pd.DataFrame]:
    spec = _default_cohort("GSE161731")
    spec["one_per_patient"].update(opp)
    result = build_contrast(key, spec, "GSE161731")
    return result.obs, result.subjects


def test_tie_break_is_independent_of_row_order(key):
    """sample_id: the kept samples and the subject table do not depend on the key's row order."""
    obs, subjects = _contrast(key)
    kept = set(obs.index[obs["severity"] != "excluded"])
    rng = np.random.default_rng(11)
    for _ in range(3):
        shuffled = key.iloc[rng.permutation(len(key))]
        obs2, subjects2 = _contrast(shuffled)
        assert set(obs2.index[obs2["severity"] != "excluded"]) == kept
        pd.testing.assert_frame_equal(subjects2, subjects)
    # Ties are the subjects with several samples at their earliest time point, read from the key.
    covid = key[key["cohort"] == "COVID-19"]
    rank = covid["time_since_onset"].map({"early": 0, "middle": 1, "late": 2})
    first = covid[rank == rank.groupby(covid["subject_id"]).transform("min")]
    tied = first.groupby("subject_id").size()
    tied = set(tied[tied > 1].index)
    assert set(subjects.loc[subjects["tie"], "subject"]) == tied
    for row in subjects[subjects["tie"] & ~subjects["conflict"]].itertuples():
        candidates = first.index[first["subject_id"] == row.subject]
        assert row.kept_sample == min(candidates)  # sample ID order (same length: plain order)
        assert "broken by sample ID order" in row.decision
        losers = obs.loc[candidates.drop(row.kept_sample), "exclusion_reason"]
        assert losers.str.contains("tie at time_since_onset").all()


def test_input_order_tie_break_follows_the_rows(key):
    obs, subjects = _contrast(key, tie_break="input_order")
    rev_obs, rev_subjects = _contrast(key.iloc[::-1], tie_break="input_order")
    ties = subjects[subjects["tie"] & ~subjects["conflict"]].set_index("subject")["kept_sample"]
    rev_ties = rev_subjects[rev_subjects["tie"] & ~rev_subjects["conflict"]].set_index("subject")[
        "kept_sample"
    ]
    assert len(ties) and (ties != rev_ties.reindex(ties.index)).all()


def test_natural_sample_id_order():
    """GSM999 sorts before GSM1000 (digit runs compare as numbers), whatever the row order."""
    meta = pd.DataFrame(
        {"g": ["severe", "severe", "severe", "mild", "mild"], "p": list("aadbc"), "t": ["1"] * 5},
        index=["GSM1000", "GSM999", "GSM7", "GSM5", "GSM6"],
    )
    spec = {
        "severity": {"field": "g", "severe": ["severe"], "mild": ["mild"]},
        "one_per_patient": {"patient_field": "p", "order_field": "t"},
    }
    for frame in (meta, meta.iloc[::-1]):
        obs = build_contrast(frame, spec, "t").obs
        assert obs.loc["GSM999", "severity"] == "severe" and obs.loc["GSM1000", "severity"] == "excluded"


@pytest.mark.parametrize(
    ("policy", "kept", "severity"),
    [("exclude", None, None), ("most_severe", CONFLICT_YES, "severe"), ("first", CONFLICT_NO, "mild")],
)
def test_conflict_policies_on_subject_45FBA5(key, policy, kept, severity):  # noqa: N802
    obs, subjects = _contrast(key, conflict=policy)
    row = subjects.set_index("subject").loc[CONFLICTED]
    assert bool(row["conflict"]) and row["samples"] == f"{CONFLICT_NO}, {CONFLICT_YES}"
    assert row["severity_labels"] == "mild (No), severe (Yes)"
    assert f"resolved by {policy}" in row["decision"] or policy == "exclude"
    pair = obs.loc[[CONFLICT_NO, CONFLICT_YES]]
    if kept is None:
        assert (pair["severity"] == "excluded").all() and row["kept_sample"] == ""
        assert pair["exclusion_reason"].str.contains("subject excluded").all()
        return
    assert row["kept_sample"] == kept and obs.loc[kept, "severity"] == severity
    other = CONFLICT_YES if kept == CONFLICT_NO else CONFLICT_NO
    assert obs.loc[other, "severity"] == "excluded"
    assert f"kept {kept} (one_per_patient.conflict: {policy})" in obs.loc[other, "exclusion_reason"]


def test_conflicts_consider_every_eligible_sample_not_only_the_tie():
    """A subject mild at its first draw and severe at a later one is a conflict (severity is per course)."""
    meta = pd.DataFrame(
        {
            "hosp": ["No", "Yes", "No", "No", "Yes", "Yes", "No"],
            "subject": ["s1", "s1", "s2", "s3", "s4", "s5", "s1"],
            "time": ["early", "late", "early", "early", "early", "middle", "middle"],
            "cohort": ["COVID-19"] * 6 + ["healthy"],  # s1's third sample is filtered out: not considered
        },
        index=["A1", "A2", "B1", "C1", "D1", "E1", "A3"],
    )
    spec = {
        "filters": {"cohort": ["COVID-19"]},
        "severity": {"field": "hosp", "severe": ["Yes"], "mild": ["No"]},
        "one_per_patient": {
            "patient_field": "subject",
            "order_field": "time",
            "order_values": ["early", "middle", "late"],
        },
    }
    result = build_contrast(meta, spec, "t")
    row = result.subjects.set_index("subject").loc["s1"]
    assert bool(row["conflict"]) and not bool(row["tie"]) and row["samples"] == "A1, A2"
    assert (result.obs.loc[["A1", "A2"], "severity"] == "excluded").all()
    spec["one_per_patient"]["conflict"] = "most_severe"
    obs = build_contrast(meta, spec, "t").obs
    assert obs.loc["A2", "severity"] == "severe" and obs.loc["A1", "severity"] == "excluded"
    spec["one_per_patient"]["conflict"] = "first"
    obs = build_contrast(meta, spec, "t").obs
    assert obs.loc["A1", "severity"] == "mild" and obs.loc["A2", "severity"] == "excluded"


def test_without_order_field_the_tie_break_alone_decides():
    meta = pd.DataFrame(
        {"g": ["severe", "severe", "severe", "mild", "mild"], "p": list("aabcd")},
        index=["S10", "S9", "S3", "S4", "S5"],
    )
    spec = {
        "severity": {"field": "g", "severe": ["severe"], "mild": ["mild"]},
        "one_per_patient": {"patient_field": "p"},
    }
    result = build_contrast(meta, spec, "t")
    assert result.obs.loc["S9", "severity"] == "severe" and result.obs.loc["S10", "severity"] == "excluded"
    assert "no order_field; tie among S9, S10" in result.obs.loc["S10", "exclusion_reason"]
    assert result.subjects[["subject", "kept_sample"]].values.tolist() == [["a", "S9"]]


def test_schema_defaults_match_the_code():
    config = {
        "cohorts": {
            "c": {
                "counts": {"source": "local", "path": "x"},
                "metadata": {"source": "sample_sheet", "path": "s"},
                "severity": {"field": "g", "severe": ["s"], "mild": ["m"]},
                "one_per_patient": {"patient_field": "p"},
            }
        }
    }
    validate(config, SCHEMA)
    cohort = config["cohorts"]["c"]
    assert cohort["metadata"]["max_unmatched_columns"] == DEFAULT_MAX_UNMATCHED
    assert cohort["metadata"]["match_keys"] is None
    assert cohort["one_per_patient"]["tie_break"] == DEFAULT_TIE_BREAK
    assert cohort["one_per_patient"]["conflict"] == DEFAULT_CONFLICT
    assert UnmatchedLimit.from_config(None) == UnmatchedLimit(**DEFAULT_MAX_UNMATCHED)


# ------------------------------------------------------------------------------------------- GSE172114
@pytest.fixture(scope="module")
def series(shared_data: Path) -> pd.DataFrame:
    return read_series_matrix(shared_data / "GSE172114" / "GSE172114_series_matrix.txt.gz")


def _forms(series: pd.DataFrame) -> dict[str, dict[str, str]]:
    """Column name -> GSM for every form a GSE172114 matrix may use, derived from the real titles."""
    titles = series["title"]
    return {
        "gsm": {g: g for g in series.index},
        "title": {t: g for g, t in titles.items()},
        "prefix": {t.split("-")[0]: g for g, t in titles.items()},
        "R make.names of title": {make_names(t): g for g, t in titles.items()},
    }


@pytest.mark.parametrize("form", ["gsm", "title", "prefix", "R make.names of title"])
def test_gse172114_every_column_form_matches_with_the_default_config(series, form):
    truth = _forms(series)[form]
    columns = list(truth)[::-1]  # not in series-matrix order
    keys = _default_cohort("GSE172114")["metadata"]["match_keys"]
    match = match_samples(columns, series, keys=keys, file_label="GSE172114")
    assert match.mapping == truth and not match.unmatched_columns and not match.unmatched_rows
    assert len(set(match.mapping.values())) == 69


def test_gse172114_prefix_columns_build_a_cohort(tmp_path, series, shared_data):
    """build_cohort with the config's metadata block: C10/P10 columns get their GSM's severity."""
    truth = _forms(series)["prefix"]
    columns = sorted(truth)
    rng = np.random.default_rng(3)
    values = rng.integers(0, 200, size=(N_GENES, len(columns)))
    values[CODE_GENE] = [int(re.sub(r"\D", "", g)) - 5_242_000 for g in (truth[c] for c in columns)]
    counts = pd.DataFrame(values, index=[f"GENE{i}" for i in range(N_GENES)], columns=columns)
    counts_path = tmp_path / "GSE172114_counts.csv"
    counts.to_csv(counts_path, index_label="gene")
    spec = _default_cohort("GSE172114")
    spec["counts"] = {
        "source": "local",
        "path": str(counts_path),
        "gene_id": "symbol",
        "map_symbols": False,
        "value_type": "counts",
    }
    built = build_cohort(
        "GSE172114", spec, counts_path, shared_data / "GSE172114" / "GSE172114_series_matrix.txt.gz"
    )
    obs = built.adata.obs.set_index("sample_id")
    codes = built.adata[:, "GENE0"].X.ravel()
    assert [int(c) for c in codes] == [int(g[3:]) - 5_242_000 for g in obs.index]
    # Titles C* are non-critical (mild), P* critical (severe): the matched labels say the same.
    expected = obs["title"].str[0].map({"C": "mild", "P": "severe"})
    assert (obs["severity"].astype(str) == expected).all()
    assert obs["severity"].astype(str).value_counts().to_dict() == {"severe": 46, "mild": 23}
    assert built.unmatched.empty


def test_ambiguous_title_prefix_names_both_samples(series):
    meta = series.copy()
    gsm_a, gsm_b = meta.index[meta["title"] == "C10-R"][0], meta.index[meta["title"] == "C11-R"][0]
    meta.loc[gsm_b, "title"] = "C10-J2"  # two titles now share the prefix C10
    columns = [t.split("-")[0] for t in series["title"]]
    keys = _default_cohort("GSE172114")["metadata"]["match_keys"]
    with pytest.raises(InputError) as err:
        match_samples(columns, meta, keys=keys, file_label="GSE172114_series_matrix.txt.gz")
    msg = str(err.value)
    assert msg.startswith("GSE172114_series_matrix.txt.gz: ambiguous sample match by 'title' with regex")
    assert f"'C10' matches '{gsm_a}' (title 'C10-R'), '{gsm_b}' (title 'C10-J2')" in msg
    assert "`metadata.match_keys`" in msg


def test_prefixes_are_not_guessed_without_config(series):
    """Without `metadata.match_keys` a prefix matrix stops with the fix, instead of a guessed match."""
    columns = [t.split("-")[0] for t in series["title"]]
    with pytest.raises(
        InputError, match=r"69 of 69 count column\(s\) have no metadata row.*metadata\.match_keys"
    ):
        match_samples(columns, series, keys=None, limit=UnmatchedLimit(), file_label="GSE172114")


def test_match_key_errors_name_the_config_key(series):
    with pytest.raises(InputError, match=r"`metadata.match_keys` names 'titel'.*available: 'index', 'title'"):
        match_samples(["C10"], series, keys=["titel"], file_label="f")
    with pytest.raises(InputError, match=r"needs a capture group"):
        match_samples(["C10"], series, keys=[{"field": "title", "regex": "^C"}], file_label="f")
    # The index may be named by its own name (gsm for a series matrix).
    assert match_samples([series.index[0]], series, keys=["gsm"], file_label="f").mapping == {
        series.index[0]: series.index[0]
    }


# ---------------------------------------------------------------------------------------------- report
def test_report_lists_samples_set_aside_and_subject_decisions(tmp_path, key, key_path, gene_info):
    built, _ = _build_gse161731(tmp_path, key, key_path, gene_info)
    meta = pd.DataFrame(
        [
            {
                "stratum": "all",
                "feature": "SOCS3",
                "k": 1,
                "pooled_log2FoldChange": np.nan,
                "ci_low": np.nan,
                "ci_high": np.nan,
                "q": np.nan,
                "i2": np.nan,
                "sign_summary": "1 up",
            }
        ]
    )
    summaries = {
        c: {"tissue": "whole_blood", "n_per_group": {"severe": 3, "mild": 3}} for c in ("GSE161731", "X")
    }
    empty_unmatched = built.unmatched.iloc[:0]
    text = headlines_rst(
        meta,
        meta.assign(feature="set (mean_z)"),
        summaries,
        {},
        {},
        0.05,
        unmatched={"GSE161731": built.unmatched.astype(str), "X": empty_unmatched},
        subjects={"GSE161731": built.subjects.astype(str), "X": built.subjects.iloc[:0]},
    )
    section = text.split("Samples set aside", 1)[1]
    assert "``GSE161731``: 6 count column(s) without a metadata row: " in section
    for name in EXTRA_COLUMNS:
        assert f"``{name}``" in section
    assert f"subject ``{CONFLICTED}``: conflicting severity labels" in section
    ties = built.subjects[~built.subjects["conflict"]]
    assert f"{len(ties)} subject(s) with a tie" in section
    assert "Nothing set aside in ``X``" in section
    # Valid reStructuredText: docutils renders it without a warning (halt_level 2), as the report does.
    html = publish_parts(text, writer="html", settings_overrides={"halt_level": 2, "report_level": 2})["body"]
    assert "DU09-02S0000150_batch2" in re.sub(r"<[^>]+>", "", html)
