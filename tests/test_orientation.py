"""Orientation check: known severity markers tell a correct contrast from a flipped one."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import yaml

from il6axis.build import build_cohort
from il6axis.cohort import define_contrast, to_anndata
from il6axis.de import DeSettings, run_deseq2
from il6axis.demo import DemoSpec, simulate
from il6axis.errors import InputError
from il6axis.orientation import (
    CONSISTENT,
    INCONCLUSIVE,
    REVERSED,
    load_markers,
    log_verdict,
    orientation_check,
)


@pytest.fixture(scope="module")
def markers(project_root):
    return load_markers(project_root / "resources" / "genesets" / "severity_sanity_markers.tsv")


def _orientation(markers: pd.DataFrame) -> pd.DataFrame:
    return markers[markers["role"] == "orientation"]


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


def _expected_sign(markers: pd.DataFrame) -> np.ndarray:
    return _orientation(markers)["expected_in_severe"].map({"up": 1.0, "down": -1.0}).to_numpy()


def _with_isgs(table: pd.DataFrame, markers: pd.DataFrame, lfc: float) -> pd.DataFrame:
    isg = markers.loc[markers["role"] == "interferon_report_only", "symbol"]
    return pd.concat([table, _de_table(isg, [lfc] * len(isg), [1e-8] * len(isg))], ignore_index=True)


# ----------------------------------------------------------------------------- simulated DE tables


def test_all_markers_in_expected_direction_is_consistent(markers):
    sign = _expected_sign(markers)
    table = _de_table(_orientation(markers)["symbol"], 1.2 * sign, np.full(sign.size, 1e-4))
    out, verdict = orientation_check(table, markers, tissue="whole_blood")
    assert verdict.status == CONSISTENT
    assert (verdict.n_tested, verdict.n_agree, verdict.n_disagree) == (17, 17, 0)
    assert verdict.n_sig_agree == 17 and verdict.n_sig_disagree == 0
    assert out.loc[out["used_for_verdict"], "agrees"].all()


def test_all_signs_flipped_is_reversed(markers):
    sign = _expected_sign(markers)
    table = _de_table(_orientation(markers)["symbol"], -1.2 * sign, np.full(sign.size, 1e-4))
    out, verdict = orientation_check(table, markers, tissue="whole_blood")
    assert verdict.status == REVERSED
    assert verdict.n_disagree == 17 and verdict.n_sig_disagree == 17
    assert out.loc[out["used_for_verdict"], "significant_disagree"].all()
    assert "severity.severe and severity.mild" in verdict.message


def test_flipped_signs_without_significance_are_not_called_reversed(markers):
    """A noisy cohort with no significant marker must not fail the run on signs alone."""
    sign = _expected_sign(markers)
    table = _de_table(_orientation(markers)["symbol"], -0.2 * sign, np.full(sign.size, 0.6))
    _, verdict = orientation_check(table, markers, tissue="whole_blood")
    assert verdict.status == INCONCLUSIVE and verdict.n_disagree == 17


def test_half_and_half_is_inconclusive(markers):
    sign = _expected_sign(markers)
    half = np.where(np.arange(sign.size) % 2 == 0, 1.0, -1.0)
    table = _de_table(_orientation(markers)["symbol"], 1.0 * sign * half, np.full(sign.size, 1e-3))
    _, verdict = orientation_check(table, markers, tissue="leukocytes")
    assert verdict.status == INCONCLUSIVE
    assert verdict.n_agree == 9 and verdict.n_disagree == 8


def test_mostly_untested_is_inconclusive_and_pbmc_message(markers):
    sign = _expected_sign(markers)
    tested = np.arange(sign.size) < 4  # 4 of 17 tested, all agreeing
    table = _de_table(_orientation(markers)["symbol"], 1.2 * sign, np.full(sign.size, 1e-4), tested)
    out, verdict = orientation_check(table, markers, tissue="pbmc")
    assert verdict.status == INCONCLUSIVE and verdict.n_tested == 4 and verdict.n_agree == 4
    assert "PBMC lack mature neutrophils" in verdict.message and "tissue pbmc" in verdict.message
    assert out.set_index("symbol").loc["CD177", "note"] == "not tested: below expression filter"
    # Markers absent from the table entirely are reported, not dropped.
    out2, _ = orientation_check(table.iloc[:4], markers, tissue="pbmc")
    assert out2.set_index("symbol").loc["CD74", "note"] == "absent from the DE table"


def test_interferon_genes_are_reported_but_never_used(markers):
    sign = _expected_sign(markers)
    half = np.where(np.arange(sign.size) % 2 == 0, 1.0, -1.0)
    table = _de_table(_orientation(markers)["symbol"], sign * half, np.full(sign.size, 1e-3))
    # Strong, significant ISG changes; even if the marker file wrongly gave them an expected direction,
    # the role (interferon_report_only) keeps them out of the verdict.
    tampered = markers.copy()
    tampered.loc[tampered["role"] == "interferon_report_only", "expected_in_severe"] = "down"
    out, verdict = orientation_check(_with_isgs(table, markers, -3.0), tampered, tissue="whole_blood")
    assert verdict.status == INCONCLUSIVE and verdict.n_tested == 17
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


def test_log_verdict_levels(markers, caplog):
    sign = _expected_sign(markers)
    genes = _orientation(markers)["symbol"]
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
        "cohort BAD looks reversed: 17/17 orientation markers go against expectation"
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
    assert verdict.n_tested == 17
    assert min(verdict.n_sig_agree, verdict.n_sig_disagree) == 0
    assert max(verdict.n_sig_agree, verdict.n_sig_disagree) >= 12


# ------------------------------------------------------------------- real cohort GSE152418 (PBMC)


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
    """Real PBMC cohort, ICU+Severe (10) vs Moderate (4): granulocyte/S100 markers up, MHC-II down."""
    adata = gse152418_cohort(project_root, shared_data)
    assert adata.uns["tissue"] == "pbmc"
    result = run_deseq2(adata, adata.uns["covariates"], DeSettings(n_cpus=2, lfc_shrink=False))
    table, verdict = orientation_check(result.table, markers, tissue=adata.uns["tissue"])
    assert verdict.status == CONSISTENT, verdict.message
    assert verdict.n_agree >= 12 and verdict.n_sig_agree >= 6 and verdict.n_sig_disagree == 0
    observed = table.set_index("symbol")["log2FoldChange"]
    assert observed["S100A12"] > 1 and observed["HLA-DPB1"] < 0 and observed["CD74"] < 0
    assert "PBMC lack mature neutrophils" in verdict.message
