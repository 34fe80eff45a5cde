"""Orientation check: known severity markers tell a correct contrast from a flipped one."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import yaml
from real_cohorts import gse155454_local_spec

from il6axis.acquire.demo import DemoSpec, simulate
from il6axis.analysis.orientation import (
    CONSISTENT,
    INCONCLUSIVE,
    REVERSED,
    check_independent,
    load_markers,
    log_verdict,
    markers_for_tissue,
    orientation_check,
    validate_markers,
)
from il6axis.cohort.build import build_cohort
from il6axis.cohort.samples import define_contrast, to_anndata
from il6axis.de.contract import DeSettings
from il6axis.de.nb import run_deseq2
from il6axis.errors import InputError
from il6axis.vocabulary import TISSUES

# The design documented in resources/genesets/README.md: granulocyte genes need granulocytes in the
# sample (blood fractions only); S100 alarmins and MHC-II change within monocytes (every material).
GRANULOCYTE = ["ARG1", "OLFM4", "MMP8", "CD177", "ORM1"]
MONOCYTE_INTRINSIC = ["S100A8", "S100A9", "S100A12", "HLA-DRA", "CD74", "HLA-DPA1", "HLA-DPB1"]


@pytest.fixture(scope="module")
def markers(project_root):
    return load_markers(project_root / "resources" / "genesets" / "severity_sanity_markers.tsv")


def _orientation(markers: pd.DataFrame, tissue: str = "whole_blood") -> pd.DataFrame:
    return markers_for_tissue(markers, tissue)[0]


def _de_table(genes, lfc, padj, tested=None) -> pd.DataFrame:
    """A DE table in the severe_vs_mild.tsv layout with the given effects."""
    lfc = np.asarray(lfc, dtype=float)
    padj = np.asarray(padj, dtype=float)
    tested = np.ones(len(genes), dtype=bool) if tested is None else np.asarray(tested)
    return pd.DataFrame(
        {
            "gene": list(genes),
            "baseMean": 500.0,
            "log2FoldChange": np.where(tested, lfc, np.nan),
            "lfcSE": np.where(tested, 0.3, np.nan),
            "pvalue": np.where(tested, padj / 10, np.nan),
            "padj": np.where(tested, padj, np.nan),
            "tested": tested,
            "not_tested_reason": np.where(tested, "", "below expression filter"),
        }
    )


def _expected_sign(markers: pd.DataFrame, tissue: str = "whole_blood") -> np.ndarray:
    return _orientation(markers, tissue)["expected_in_severe"].map({"up": 1.0, "down": -1.0}).to_numpy()


def _with_isgs(table: pd.DataFrame, markers: pd.DataFrame, lfc: float) -> pd.DataFrame:
    isg = markers.loc[markers["role"] == "interferon_report_only", "symbol"]
    return pd.concat([table, _de_table(isg, [lfc] * len(isg), [1e-8] * len(isg))], ignore_index=True)


# ----------------------------------------------------------------------------- the shipped marker design


def test_markers_per_tissue_follow_the_documented_design(markers):
    blood = GRANULOCYTE + MONOCYTE_INTRINSIC
    for tissue in ("whole_blood", "leukocytes", "pbmc"):
        assert sorted(_orientation(markers, tissue)["symbol"]) == sorted(blood), tissue
    assert sorted(_orientation(markers, "other")["symbol"]) == sorted(MONOCYTE_INTRINSIC)
    for tissue in TISSUES:
        directions = set(_orientation(markers, tissue)["expected_in_severe"])
        assert directions == {"up", "down"}, tissue  # a global shift cannot mimic agreement
    # The genes under test and the tissue-specific OSM are no orientation markers any more.
    orient = set(markers.loc[markers["role"] == "orientation", "symbol"])
    assert orient.isdisjoint({"OSM", "CEBPD", "LCN2", "HP", "IL1R2"})


# ----------------------------------------------------------------------------- simulated DE tables


def test_all_markers_in_expected_direction_is_consistent(markers):
    sign = _expected_sign(markers)
    table = _de_table(_orientation(markers)["symbol"], 1.2 * sign, np.full(sign.size, 1e-4))
    out, verdict = orientation_check(table, markers, tissue="whole_blood")
    assert verdict.status == CONSISTENT
    assert (verdict.n_markers, verdict.n_tested, verdict.n_agree, verdict.n_disagree) == (12, 12, 12, 0)
    assert verdict.n_sig_agree == 12 and verdict.n_sig_disagree == 0
    assert out.loc[out["used_for_verdict"], "agrees"].all()
    assert verdict.not_for_tissue == () and "not used for" not in verdict.message


def test_all_signs_flipped_is_reversed(markers):
    sign = _expected_sign(markers)
    table = _de_table(_orientation(markers)["symbol"], -1.2 * sign, np.full(sign.size, 1e-4))
    out, verdict = orientation_check(table, markers, tissue="whole_blood")
    assert verdict.status == REVERSED
    assert verdict.n_disagree == 12 and verdict.n_sig_disagree == 12
    assert out.loc[out["used_for_verdict"], "significant_disagree"].all()
    assert "severity.severe (the case slot)" in verdict.message
    assert "severity.mild (the reference slot)" in verdict.message


def test_flipped_signs_without_significance_are_not_called_reversed(markers):
    """A noisy cohort with no significant marker must not fail the run on signs alone, but the message
    says the labels may be swapped."""
    sign = _expected_sign(markers)
    table = _de_table(_orientation(markers)["symbol"], -0.2 * sign, np.full(sign.size, 0.6))
    _, verdict = orientation_check(table, markers, tissue="whole_blood")
    assert verdict.status == INCONCLUSIVE and verdict.n_disagree == 12
    assert "labels may be swapped" in verdict.message


def test_half_and_half_is_inconclusive(markers):
    sign = _expected_sign(markers)
    half = np.where(np.arange(sign.size) % 2 == 0, 1.0, -1.0)
    table = _de_table(_orientation(markers)["symbol"], 1.0 * sign * half, np.full(sign.size, 1e-3))
    _, verdict = orientation_check(table, markers, tissue="leukocytes")
    assert verdict.status == INCONCLUSIVE
    assert verdict.n_agree == 6 and verdict.n_disagree == 6
    assert "neither confirm nor contradict" in verdict.message


def test_mostly_untested_is_inconclusive_and_pbmc_message(markers):
    sign = _expected_sign(markers, "pbmc")
    tested = np.arange(sign.size) < 4  # 4 of 12 tested, all agreeing
    genes = _orientation(markers, "pbmc")["symbol"]
    table = _de_table(genes, 1.2 * sign, np.full(sign.size, 1e-4), tested)
    out, verdict = orientation_check(table, markers, tissue="pbmc")
    assert verdict.status == INCONCLUSIVE and verdict.n_tested == 4 and verdict.n_agree == 4
    assert "PBMC lack mature neutrophils" in verdict.message and "tissue pbmc" in verdict.message
    assert out.set_index("symbol").loc["ORM1", "note"] == "not tested: below expression filter"
    # Markers absent from the table entirely are reported, not dropped.
    out2, _ = orientation_check(table.iloc[:4], markers, tissue="pbmc")
    assert out2.set_index("symbol").loc["CD74", "note"] == "absent from the DE table"


def test_tissue_selects_the_markers(markers):
    """Planted: granulocyte genes strongly against expectation, monocyte-intrinsic markers with it. In
    whole blood that is a contradiction; for material 'other' the granulocyte genes are not markers."""
    genes = GRANULOCYTE + MONOCYTE_INTRINSIC
    expected = markers.set_index("symbol").loc[genes, "expected_in_severe"].map({"up": 1.0, "down": -1.0})
    lfc = np.where(np.isin(genes, GRANULOCYTE), -2.0, 1.0) * expected.to_numpy()
    table = _de_table(genes, lfc, np.full(len(genes), 1e-4))

    out, other = orientation_check(table, markers, tissue="other")
    assert other.status == CONSISTENT
    assert (other.n_markers, other.n_tested, other.n_agree, other.n_sig_agree) == (7, 7, 7, 7)
    assert set(out.loc[out["role"] == "orientation", "symbol"]) == set(MONOCYTE_INTRINSIC)
    assert other.not_for_tissue == tuple(GRANULOCYTE)
    assert "not used for other" in other.message and "ARG1" in other.message
    # Seven markers in three correlated blocks: "consistent" is said to be weak evidence.
    assert "no sign of swapped labels rather than a confirmation" in other.message

    _, blood = orientation_check(table, markers, tissue="whole_blood")
    assert blood.status == INCONCLUSIVE and (blood.n_agree, blood.n_sig_disagree) == (7, 5)


def test_unknown_tissue_is_an_input_error(markers):
    table = _de_table(["CD74"], [-1.0], [0.01])
    with pytest.raises(InputError, match=r"unknown cohort tissue 'lung'.*whole_blood"):
        orientation_check(table, markers, tissue="lung")


def test_interferon_genes_are_reported_but_never_used(markers):
    sign = _expected_sign(markers)
    half = np.where(np.arange(sign.size) % 2 == 0, 1.0, -1.0)
    table = _de_table(_orientation(markers)["symbol"], sign * half, np.full(sign.size, 1e-3))
    # Strong, significant ISG changes; even if the marker file wrongly gave them an expected direction,
    # the role (interferon_report_only) keeps them out of the verdict.
    tampered = markers.copy()
    tampered.loc[tampered["role"] == "interferon_report_only", "expected_in_severe"] = "down"
    out, verdict = orientation_check(_with_isgs(table, markers, -3.0), tampered, tissue="whole_blood")
    assert verdict.status == INCONCLUSIVE and verdict.n_tested == 12
    isg = out[out["role"] == "interferon_report_only"]
    assert set(isg["symbol"]) == {"IFI27", "RSAD2", "ISG15", "MX1"}
    assert not isg["used_for_verdict"].any() and isg["agrees"].isna().all()
    assert isg["note"].str.contains("never orient").all()
    assert isg["log2FoldChange"].eq(-3.0).all()  # the observed values are still reported


def test_bad_marker_table_names_the_problem(markers):
    table = _de_table(["CD74"], [-1.0], [0.01])
    broken = markers.copy()
    broken.loc[broken["symbol"] == "CD74", "expected_in_severe"] = ""
    with pytest.raises(InputError, match=r"\['CD74'\] need expected_in_severe"):
        orientation_check(table, broken, tissue="whole_blood")
    with pytest.raises(InputError, match="DE table: missing column"):
        orientation_check(table.drop(columns="padj"), markers, tissue="whole_blood")


def test_marker_tissues_are_validated(markers, tmp_path):
    no_column = tmp_path / "markers.tsv"
    markers.drop(columns="tissues").to_csv(no_column, sep="\t", index=False)
    with pytest.raises(InputError, match=r"markers\.tsv: missing column\(s\) \['tissues'\]"):
        load_markers(no_column)
    empty = markers.copy()
    empty.loc[empty["symbol"] == "ARG1", "tissues"] = ""
    with pytest.raises(InputError, match=r"\['ARG1'\] have an empty 'tissues' field"):
        validate_markers(empty)
    typo = markers.copy()
    typo.loc[typo["symbol"] == "CD74", "tissues"] = "whole_blood; PBMC ;blood"
    with pytest.raises(InputError, match=r"unknown value\(s\) in column 'tissues': \{'CD74': \['blood'\]\}"):
        validate_markers(typo)  # case and blanks are forgiven, unknown materials are not


def test_overlap_with_genes_under_test_is_refused(markers, tmp_path):
    """Planted overlap: a user panel listing S100A8, and one naming it only by Ensembl ID (alias)."""
    panel = pd.DataFrame({"symbol": ["SOCS3", "S100A8"], "ensembl_gene_id": ["ENSG00000184557", ""]})
    with pytest.raises(InputError, match=r"my_markers\.tsv: .*\['S100A8'\] with my_panel\.tsv"):
        check_independent(markers, "my_markers.tsv", {"my_panel.tsv": panel})
    alias = pd.DataFrame({"symbol": ["MRP8"], "ensembl_gene_id": ["ENSG00000143546"]})
    with pytest.raises(InputError, match=r"\['S100A8'\] with alias\.tsv"):
        check_independent(markers, "m.tsv", {"alias.tsv": alias})
    # Non-orientation rows may be in a set under test: CSF3R (neutrophil score) is a hallmark gene.
    check_independent(markers, "m.tsv", {"hallmark": pd.DataFrame({"symbol": ["CSF3R", "IL1R2"]})})

    path = tmp_path / "markers.tsv"
    markers.to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match=r"markers\.tsv: .*\['S100A8'\] with panel"):
        load_markers(path, genes_under_test={"panel": panel})


def test_log_verdict_levels(markers, caplog):
    sign = _expected_sign(markers, "pbmc")
    genes = _orientation(markers, "pbmc")["symbol"]
    log = logging.getLogger("il6axis.test_orientation")
    _, good = orientation_check(_de_table(genes, sign, np.full(sign.size, 1e-3)), markers, tissue="pbmc")
    _, bad = orientation_check(_de_table(genes, -sign, np.full(sign.size, 1e-3)), markers, tissue="pbmc")
    with caplog.at_level(logging.INFO, logger=log.name):
        log_verdict(good, "GOOD", log)
        log_verdict(bad, "BAD", log)
    (info,), (warning,) = (
        [r for r in caplog.records if r.levelno == lvl] for lvl in (logging.INFO, logging.WARNING)
    )
    assert "cohort GOOD: orientation consistent" in info.getMessage()
    assert warning.getMessage().startswith(
        "cohort BAD looks reversed: 12/12 orientation markers go against expectation"
    )
    assert "check severity.severe/mild in config" in warning.getMessage()


# ----------------------------------------------------------------- demo cohort through pydeseq2


def _demo_adata(cohort, swap: bool):
    """Demo cohort as AnnData; ``swap`` relabels severe samples as mild and vice versa in the data."""
    meta = cohort.samples.set_index("sample_id")
    if swap:
        meta["group"] = meta["group"].map({"severe": "mild", "mild": "severe"}).fillna(meta["group"])
    spec = {
        "severity": {"field": "group", "severe": ["severe"], "mild": ["mild"], "exclude": ["healthy"]},
        "covariates": {"age": {"field": "age", "type": "numeric"}, "sex": {"field": "sex", "type": "sex"}},
    }
    obs = define_contrast(meta, spec, "demo")
    return to_anndata(cohort.counts, obs, {"cohort": "demo", "tissue": "whole_blood"})


@pytest.fixture(scope="module")
def demo_cohort(markers):
    spec = DemoSpec(n_genes=200, n_severe=8, n_mild=8, n_healthy=0, seed=5)
    return simulate(markers["symbol"].tolist(), spec)


@pytest.mark.parametrize(("swap", "expected"), [(False, CONSISTENT), (True, REVERSED)])
def test_demo_cohort_orientation(demo_cohort, markers, swap, expected):
    result = run_deseq2(
        _demo_adata(demo_cohort, swap), ["age", "sex"], DeSettings(n_cpus=1, lfc_shrink=False)
    )
    _, verdict = orientation_check(result.table, markers, tissue="whole_blood")
    assert verdict.status == expected, verdict.message
    assert verdict.n_tested == 12
    assert min(verdict.n_sig_agree, verdict.n_sig_disagree) == 0
    assert max(verdict.n_sig_agree, verdict.n_sig_disagree) >= 9


# ------------------------------------------------------------------------------------- real cohorts


def _swapped(table: pd.DataFrame) -> pd.DataFrame:
    """The DE table of the same cohort with severe and mild swapped: the Wald fit is symmetric in the two
    levels, so the log2 fold changes change sign and the p-values stay (checked on GSE152418 and GSE293708
    by refitting with swapped labels: |LFC difference| < 2e-4)."""
    return table.assign(log2FoldChange=-table["log2FoldChange"], stat=-table["stat"])


def gse152418_cohort(project_root, shared_data):
    """GSE152418 built from the NCBI counts and GEOquery sheet with the shipped config block."""
    config = yaml.safe_load((project_root / "config" / "config.yaml").read_text())
    spec = dict(config["cohorts"]["GSE152418"])
    spec["counts"] = {"value_type": "counts", "map_symbols": True, "id_column": None, **spec["counts"]}
    sheet = shared_data / "GSE152418" / "GSE152418_sample_metadata_GEOquery_pData.csv.gz"
    spec["metadata"] = {"source": "sample_sheet", "path": str(sheet), "sample_column": "geo_accession"}
    return build_cohort(
        "GSE152418",
        spec,
        shared_data / "GSE152418" / "GSE152418_raw_counts_GRCh38.p13_NCBI.tsv.gz",
        sheet,
        shared_data / "NCBI_gene_info" / "Homo_sapiens.gene_info.gz",
    ).adata


@pytest.mark.e2e
def test_gse152418_orientation_is_consistent(project_root, shared_data, markers):
    """Real PBMC cohort, ICU+Severe (10) vs Moderate (4): granulocyte/S100 markers up, MHC-II down.
    Measured: 9/9 tested markers agree, 6 significantly; swapped, all 9 against (6 significant)."""
    adata = gse152418_cohort(project_root, shared_data)
    assert adata.uns["tissue"] == "pbmc"
    result = run_deseq2(adata, adata.uns["covariates"], DeSettings(n_cpus=2, lfc_shrink=False))
    table, verdict = orientation_check(result.table, markers, tissue=adata.uns["tissue"])
    assert verdict.status == CONSISTENT, verdict.message
    assert verdict.n_agree == verdict.n_tested >= 8 and verdict.n_sig_agree >= 5
    observed = table.set_index("symbol")["log2FoldChange"]
    assert observed["S100A12"] > 1 and observed["HLA-DPB1"] < 0 and observed["CD74"] < 0
    assert "PBMC lack mature neutrophils" in verdict.message
    _, flipped = orientation_check(_swapped(result.table), markers, tissue="pbmc")
    assert flipped.status == REVERSED and flipped.n_sig_disagree >= 5


def _gse293708_counts(shared_data):
    """GSE293708 reconstructed raw counts, Severe + Critical (8) vs Mild (4); material not stated."""
    folder = shared_data / "GSE293708"
    spec = {
        "tissue": "other",
        "counts": {"gene_id": "symbol", "value_type": "counts", "map_symbols": True, "id_column": "Symbol"},
        "metadata": {"source": "sample_sheet", "sample_column": "sample"},
        "severity": {
            "field": "severity",
            "severe": ["Severe", "Critical"],
            "mild": ["Mild"],
            "exclude": ["Normal"],
        },
    }
    return build_cohort(
        "GSE293708",
        spec,
        folder / "GSE293708_reconstructed_raw_counts.csv.gz",
        folder / "GSE293708_sample_sheet_from_colnames.csv.gz",
        shared_data / "NCBI_gene_info" / "Homo_sapiens.gene_info.gz",
    ).adata


@pytest.mark.e2e
def test_gse293708_few_markers_pass_and_a_swap_is_flagged(shared_data, markers):
    """Low-depth cohort of unstated material ('other': the 7 monocyte-intrinsic markers). Measured: 6/6
    tested agree (1 significant). Swapped, all 6 go against but only 1 significantly: not 'reversed'
    (that needs 3), but the warning says the labels may be swapped."""
    adata = _gse293708_counts(shared_data)
    result = run_deseq2(adata, [], DeSettings(n_cpus=2, lfc_shrink=False))
    _, verdict = orientation_check(result.table, markers, tissue="other")
    assert verdict.status == CONSISTENT, verdict.message
    assert verdict.n_agree == verdict.n_tested >= 5 and verdict.n_sig_disagree == 0
    assert "rather than a confirmation" in verdict.message
    _, flipped = orientation_check(_swapped(result.table), markers, tissue="other")
    assert flipped.status == INCONCLUSIVE and flipped.n_disagree == flipped.n_tested
    assert "labels may be swapped" in flipped.message


@pytest.mark.e2e
def test_gse155454_is_too_weak_to_orient(shared_data, markers):
    """Whole blood, severe (7) vs mild (9), curated counts: no marker reaches padj < 0.05 and the S100
    genes go against expectation (as in the public re-analysis, S100A12 -1.20). Measured: 6/10 agree.
    Neither direction is confirmed, so neither labelling can stop a run."""
    folder = shared_data / "GSE155454"
    spec = gse155454_local_spec()
    adata = build_cohort(
        "GSE155454",
        spec,
        folder / "GSE155454_counts_kuanrongchan_v1.csv.gz",
        folder / "GSE155454_sample_sheet_from_colnames.csv.gz",
        shared_data / "NCBI_gene_info" / "Homo_sapiens.gene_info.gz",
    ).adata
    result = run_deseq2(adata, adata.uns["covariates"], DeSettings(n_cpus=2, lfc_shrink=False))
    for table in (result.table, _swapped(result.table)):
        _, verdict = orientation_check(table, markers, tissue="whole_blood")
        assert verdict.status == INCONCLUSIVE, verdict.message
        assert verdict.n_sig_agree == verdict.n_sig_disagree == 0
        assert "neither confirm nor contradict" in verdict.message
