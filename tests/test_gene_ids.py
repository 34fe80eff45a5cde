"""Tests for il6axis.cohort.gene_ids: NCBI gene_info loading and Entrez/Ensembl/symbol -> symbol
harmonisation."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from il6axis.acquire.count_tables import read_count_table
from il6axis.cohort.gene_ids import (
    GeneInfo,
    MappingReport,
    check_panel_presence,
    load_gene_info,
    map_to_symbols,
    strip_ensembl_version,
)
from il6axis.errors import InputError

PANEL_ENTREZ = {
    "IL6": "3569",
    "IL6R": "3570",
    "IL6ST": "3572",
    "JAK1": "3716",
    "JAK2": "3717",
    "JAK3": "3718",
    "TYK2": "7297",
    "STAT3": "6774",
    "SOCS3": "9021",
}

HEADER = (
    "#tax_id\tGeneID\tSymbol\tLocusTag\tSynonyms\tdbXrefs\tchromosome\tmap_location\tdescription\t"
    "type_of_gene\tSymbol_from_nomenclature_authority\tFull_name_from_nomenclature_authority\t"
    "Nomenclature_status\tOther_designations\tModification_date\tFeature_type"
)


def _gene_row(
    tax: str, gid: str, sym: str, syn: str, xref: str, kind: str = "protein-coding", hgnc: str | None = None
) -> str:
    hgnc = sym if hgnc is None else hgnc
    return "\t".join(
        [tax, gid, sym, "-", syn, xref, "1", "1p1", "desc", kind, hgnc, "name", "O", "-", "2019", "-"]
    )


@pytest.fixture(scope="module")
def toy_gene_info(tmp_path_factory: pytest.TempPathFactory) -> GeneInfo:
    """Small gene_info covering every mapping rule: synonyms (unique/ambiguous/shadowed), shared Ensembl IDs,
    a gene with two Ensembl IDs, an NCBI-vs-HGNC symbol difference, and a row of another taxon."""
    rows = [
        _gene_row("9606", "1", "GENEA", "OLDA|SHARED|GENEB", "MIM:1|HGNC:HGNC:1|Ensembl:ENSG00000000001"),
        _gene_row(
            "9606", "2", "GENEB", "SHARED", "HGNC:HGNC:2|Ensembl:ENSG00000000002|Ensembl:ENSG00000000022"
        ),
        _gene_row("9606", "3", "GENEC", "-", "Ensembl:ENSG00000000003"),
        _gene_row("9606", "4", "GENEC-AS1", "-", "Ensembl:ENSG00000000003", kind="ncRNA"),
        _gene_row("9606", "5", "COX2", "COII|MTCO2", "HGNC:HGNC:7421|Ensembl:ENSG00000198712", hgnc="MT-CO2"),
        _gene_row("9606", "6", "MTCO2P12", "MT-CO2|COXII", "-", kind="pseudo"),
        _gene_row("9606", "7", "GENED", "OLDD", "-"),
        _gene_row("63221", "8", "GENEX", "-", "-"),
    ]
    path = tmp_path_factory.mktemp("gi") / "toy.gene_info.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(HEADER + "\n" + "\n".join(rows) + "\n")
    return load_gene_info(path)


@pytest.fixture(scope="module")
def gene_info(shared_data: Path) -> GeneInfo:
    return load_gene_info(shared_data / "NCBI_gene_info" / "Homo_sapiens.gene_info.gz")


def _frame(ids: list[str], n_samples: int = 2) -> pd.DataFrame:
    values = np.arange(len(ids) * n_samples, dtype=np.int64).reshape(len(ids), n_samples) + 1
    return pd.DataFrame(
        values, index=pd.Index(ids, name="gene_id"), columns=[f"S{j}" for j in range(n_samples)]
    )


def _check_invariants(report: MappingReport) -> None:
    assert report.n_input == report.n_mapped + report.n_unmapped + report.n_ambiguous + report.n_par_y_dropped
    assert report.n_output == report.n_mapped - report.n_merged_rows


# ----------------------------------------------------------------------------------------- loading
def test_load_toy_gene_info(toy_gene_info: GeneInfo) -> None:
    gi = toy_gene_info
    assert gi.n_genes == 7  # the tax_id 63221 row is dropped
    assert "GENEX" not in gi.official_symbols
    assert gi.entrez_to_symbol["5"] == "MT-CO2"  # HGNC form wins over NCBI's COX2
    assert gi.symbol_aliases == {"COX2": "MT-CO2"}
    assert gi.ensembl_to_symbol["ENSG00000000002"] == "GENEB"
    assert gi.ensembl_to_symbol["ENSG00000000022"] == "GENEB"
    assert gi.ensembl_ambiguous == {"ENSG00000000003": ("GENEC", "GENEC-AS1")}
    assert gi.symbol_to_ensembl["GENEB"] == ("ENSG00000000002", "ENSG00000000022")
    assert gi.synonym_to_symbol["OLDA"] == "GENEA"
    assert gi.synonym_ambiguous["SHARED"] == ("GENEA", "GENEB")
    assert "GENEB" not in gi.synonym_to_symbol  # an official symbol is never a synonym of another gene
    assert "MT-CO2" not in gi.synonym_to_symbol  # ... also in its HGNC form (pseudogene alias)
    assert gi.synonym_to_symbol["COXII"] == "MTCO2P12"
    assert gi.entrez_type["4"] == "ncRNA"


def test_load_real_gene_info(gene_info: GeneInfo, shared_data: Path) -> None:
    # Load time is measured in bench/bench_download_parse.py, not asserted here.
    assert gene_info.n_genes == 61320  # 61,393 rows minus 73 archaic-human rows
    for symbol, gid in PANEL_ENTREZ.items():
        assert gene_info.entrez_to_symbol[gid] == symbol
    assert gene_info.ensembl_to_symbol["ENSG00000136244"] == "IL6"
    assert gene_info.ensembl_to_symbol["ENSG00000160712"] == "IL6R"
    assert gene_info.entrez_to_symbol["4513"] == "MT-CO2"
    assert len(gene_info.ensembl_ambiguous) > 0
    assert all(len(v) > 1 for v in gene_info.ensembl_ambiguous.values())
    assert not set(gene_info.synonym_to_symbol) & gene_info.official_symbols


def test_load_gene_info_wrong_file(tmp_path: Path) -> None:
    path = tmp_path / "genes.tsv"
    path.write_text("GeneID\tSymbol\n1\tA1BG\n")
    with pytest.raises(InputError, match=r"genes.tsv: not an NCBI gene_info table.*dbXrefs"):
        load_gene_info(path)


def test_load_gene_info_wrong_taxon(toy_gene_info: GeneInfo) -> None:
    with pytest.raises(InputError, match=r"toy.gene_info.gz: no rows with tax_id 10090"):
        load_gene_info(toy_gene_info.source, tax_id=10090)


def test_load_gene_info_missing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"not found.*gene_info"):
        load_gene_info(tmp_path / "missing.gz")


# ----------------------------------------------------------------------------------------- entrez
def test_entrez_gse152418(gene_info: GeneInfo, shared_data: Path) -> None:
    counts = read_count_table(shared_data / "GSE152418" / "GSE152418_raw_counts_GRCh38.p13_NCBI.tsv.gz")
    by_symbol, report = map_to_symbols(counts, "entrez", gene_info)
    assert report.n_input == 39376
    assert report.n_mapped == 39368 and report.n_unmapped == 8
    assert len(report.examples_unmapped) == 8
    _check_invariants(report)
    assert by_symbol.index.name == "symbol"
    assert by_symbol.index.is_unique and by_symbol.index.is_monotonic_increasing
    assert (by_symbol.dtypes == np.int64).all()
    assert list(by_symbol.columns) == list(counts.columns)
    for symbol, gid in PANEL_ENTREZ.items():
        assert by_symbol.loc[symbol].tolist() == counts.loc[gid].tolist(), symbol
    mapped_total = counts.loc[counts.index.isin(gene_info.entrez_to_symbol.keys())].to_numpy().sum()
    assert by_symbol.to_numpy().sum() == mapped_total  # summing never loses or creates reads
    presence = check_panel_presence(by_symbol.index, PANEL_ENTREZ)
    assert presence["present"].all()


def test_entrez_float_like_ids(toy_gene_info: GeneInfo) -> None:
    out, report = map_to_symbols(_frame(["1.0", "2", "999"]), "entrez", toy_gene_info)
    assert list(out.index) == ["GENEA", "GENEB"]
    assert report.n_unmapped == 1 and report.examples_unmapped == ["999"]


# ----------------------------------------------------------------------------------------- ensembl
def test_ensembl_toy(toy_gene_info: GeneInfo) -> None:
    ids = [
        "ENSG00000000001.7",  # versioned -> GENEA
        "ENSG00000000002.1",  # GENEB, first of two Ensembl IDs
        "ENSG00000000022.4",  # GENEB, second ID -> merged (summed)
        "ENSG00000000003.2",  # shared by GENEC and GENEC-AS1 -> ambiguous
        "ENSG00000000001.7_PAR_Y",  # Y copy of a PAR gene -> dropped
        "ENSG00000999999.1",  # unknown
        "__no_feature",  # htseq summary row
        "ENSG00000198712",  # unversioned -> MT-CO2
    ]
    counts = _frame(ids)
    out, report = map_to_symbols(counts, "ensembl", toy_gene_info)
    assert list(out.index) == ["GENEA", "GENEB", "MT-CO2"]
    assert out.loc["GENEB"].tolist() == (counts.iloc[1] + counts.iloc[2]).tolist()
    assert out.loc["GENEA"].tolist() == counts.iloc[0].tolist()  # the PAR_Y copy was not added
    assert report.n_input == 8 and report.n_mapped == 4
    assert report.n_ambiguous == 1 and report.examples_ambiguous == ["ENSG00000000003.2"]
    assert report.n_par_y_dropped == 1
    assert report.n_unmapped == 2 and report.examples_unmapped == ["ENSG00000999999.1", "__no_feature"]
    assert report.n_merged_rows == 1 and report.examples_merged == ["GENEB"]
    assert report.n_version_stripped == 6  # every ID with a '.N' suffix, PAR_Y included
    _check_invariants(report)


def test_ensembl_versioned_from_real_dbxrefs(gene_info: GeneInfo) -> None:
    """An Ensembl-keyed table built from gene_info dbXrefs (with versions) maps back to the symbols."""
    symbols = [*PANEL_ENTREZ, "CD177", "LCN2", "HLA-DRA", "S100A8"]
    ids = [f"{gene_info.symbol_to_ensembl[s][0]}.{i + 3}" for i, s in enumerate(symbols)]
    ambiguous_id = sorted(gene_info.ensembl_ambiguous)[0]
    ids += [f"{ambiguous_id}.1", "ENSG00000160712.12_PAR_Y"]
    counts = _frame(ids, n_samples=3)
    out, report = map_to_symbols(counts, "ensembl", gene_info)
    assert sorted(out.index) == sorted(symbols)
    assert out.loc["IL6R"].tolist() == counts.iloc[1].tolist()
    assert report.n_mapped == len(symbols) and report.n_ambiguous == 1 and report.n_par_y_dropped == 1
    assert report.n_unmapped == 0
    _check_invariants(report)


def test_strip_ensembl_version() -> None:
    base, par_y = strip_ensembl_version(pd.Index(["ENSG00000223972.5", "ENSG00000182378.14_PAR_Y", "ENSG1"]))
    assert base.tolist() == ["ENSG00000223972", "ENSG00000182378", "ENSG1"]
    assert par_y.tolist() == [False, True, False]


# ----------------------------------------------------------------------------------------- symbols
def test_symbol_rules_toy(toy_gene_info: GeneInfo) -> None:
    ids = ["GENEA", "OLDD", "SHARED", "NOPE", "COX2", "GENEC"]
    counts = _frame(ids)
    out, report = map_to_symbols(counts, "symbol", toy_gene_info)
    assert list(out.index) == ["GENEA", "GENEC", "GENED", "MT-CO2"]  # OLDD renamed, COX2 -> HGNC form
    assert out.loc["GENED"].tolist() == counts.loc["OLDD"].tolist()
    assert report.n_via_synonym == 1 and report.examples_synonym == ["OLDD->GENED"]
    assert report.n_ambiguous == 1 and report.examples_ambiguous == ["SHARED"]
    assert report.n_unmapped == 1 and report.examples_unmapped == ["NOPE"]
    assert report.checked is True
    _check_invariants(report)


def test_symbol_synonym_conflict_is_dropped(toy_gene_info: GeneInfo) -> None:
    """OLDA is a synonym of GENEA, but GENEA is also in the table: the source saw two genes."""
    counts = _frame(["GENEA", "OLDA"])
    out, report = map_to_symbols(counts, "symbol", toy_gene_info)
    assert list(out.index) == ["GENEA"]
    assert out.loc["GENEA"].tolist() == counts.loc["GENEA"].tolist()
    assert report.n_synonym_conflicts == 1 and report.n_ambiguous == 1 and report.n_via_synonym == 0
    _check_invariants(report)


def test_symbol_hgnc_mito_name_not_sent_to_pseudogene(toy_gene_info: GeneInfo) -> None:
    """MT-CO2 is listed as a synonym of a pseudogene in gene_info; it must stay MT-CO2."""
    out, report = map_to_symbols(_frame(["MT-CO2", "MTCO2P12"]), "symbol", toy_gene_info)
    assert list(out.index) == ["MT-CO2", "MTCO2P12"] and report.n_merged_rows == 0


def test_symbol_without_gene_info_gse155454(shared_data: Path) -> None:
    counts = read_count_table(shared_data / "GSE155454" / "GSE155454_counts_kuanrongchan_v1.csv.gz")
    out, report = map_to_symbols(counts, "symbol", None)
    assert report.checked is False
    assert report.n_input == 10013 and report.n_output == 10010 and report.n_merged_rows == 3
    assert report.examples_merged == ["POLR2J3", "Y_RNA"]
    for symbol in ("POLR2J3", "Y_RNA"):
        assert out.loc[symbol].tolist() == counts.loc[symbol].sum(axis=0).tolist()
    assert out.to_numpy().sum() == counts.to_numpy().sum()
    assert (out.dtypes == np.int64).all()
    _check_invariants(report)


def test_symbol_with_gene_info_gse155454(gene_info: GeneInfo, shared_data: Path) -> None:
    counts = read_count_table(shared_data / "GSE155454" / "GSE155454_counts_kuanrongchan_v1.csv.gz")
    out, report = map_to_symbols(counts, "symbol", gene_info)
    _check_invariants(report)
    assert out.loc["POLR2J3"].tolist() == counts.loc["POLR2J3"].sum(axis=0).tolist()
    assert "Y_RNA" not in out.index  # an Ensembl biotype name, not a gene symbol: unmapped
    assert out.loc["MT-CO2"].tolist() == counts.loc["MT-CO2"].tolist()
    assert report.n_via_synonym > 0  # newer HGNC symbols than this 2019 gene_info, e.g. CARS1 -> CARS
    assert "CARS1->CARS" in report.examples_synonym
    panel = [s for s in PANEL_ENTREZ if s != "IL6"]  # IL6 was filtered out upstream
    assert check_panel_presence(out.index, panel)["present"].all()
    assert not check_panel_presence(out.index, ["IL6"])["present"].any()


# ----------------------------------------------------------------------------------------- errors, helpers
def test_map_errors(toy_gene_info: GeneInfo) -> None:
    with pytest.raises(InputError, match=r"'refseq' is not supported"):
        map_to_symbols(_frame(["A"]), "refseq", toy_gene_info)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"entrez IDs needs the NCBI gene_info.*`gene_info`"):
        map_to_symbols(_frame(["1"]), "entrez", None)


def test_report_frame_and_dict(toy_gene_info: GeneInfo) -> None:
    _, report = map_to_symbols(_frame(["GENEA", "NOPE", "OTHER"]), "symbol", toy_gene_info)
    as_dict = report.to_dict()
    assert as_dict["n_unmapped"] == 2 and as_dict["examples_unmapped"] == ["NOPE", "OTHER"]
    frame = report.to_frame().set_index("metric")["value"]
    assert frame["examples_unmapped"] == "NOPE;OTHER"
    assert frame["n_output"] == 1
    assert "2 rows" not in report.summary() and "3 rows -> 1 symbols" in report.summary()


def test_check_panel_presence() -> None:
    out = check_panel_presence(["IL6R", "STAT3"], ["STAT3", "IL6", "STAT3", " IL6R "])
    assert list(out.columns) == ["symbol", "present"]
    assert out["symbol"].tolist() == ["STAT3", "IL6", "IL6R"]
    assert out["present"].tolist() == [True, False, True]
    assert out["present"].dtype == bool
