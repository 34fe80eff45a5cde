"""Gene-set resources (counts, membership, identifiers, licences) and the il6axis.analysis.genesets loader."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from il6axis.analysis.genesets import (
    BUILTIN_SETS,
    SETS_UNDER_TEST,
    GeneSet,
    genes_present,
    load_builtin_sets,
    load_gene_sets,
    read_user_sets,
    tables_under_test,
)
from il6axis.analysis.orientation import marker_overlaps
from il6axis.errors import InputError
from il6axis.vocabulary import TISSUES

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESOURCES = PROJECT_ROOT / "resources"
GENESETS = RESOURCES / "genesets"

ID_FILES = [
    "il6_core.tsv",
    "severity_sanity_markers.tsv",
    "hallmark_il6_jak_stat3.msigdb_v7.5.1.tsv",
    "reactome_il6.tsv",
    "kegg_medicus_n01556.msigdb_2025.1.tsv",
]

# il6_core.tsv as issued before the source/hgnc_id columns were added: columns and row order must survive.
CORE_ORIGINAL_COLUMNS = [
    "symbol",
    "ensembl_gene_id",
    "ncbi_gene_id",
    "tier",
    "role",
    "in_hallmark",
    "in_reactome_il6",
    "in_reactome_il6_family",
    "stat3_target_reactome",
]
CORE_ORDER = (
    "IL6 IL6R IL6ST ADAM17 ADAM10 JAK1 JAK2 TYK2 STAT3 STAT1 PTPN11 CBL SOCS3 SOCS1 PIAS3 PTPN2 PTPN1 "
    "OSM LIF IL11 OSMR LIFR IL11RA "
    "JUNB CEBPD MYC PIM1 BCL2L1 MCL1 TNFRSF1B ICAM1 S1PR1 TIMP1 LBP MMP9 LCN2 CEBPB BCL3 CD163 "
    "CRP SAA1 SAA2 HP FGB SERPINA3 HAMP JAK3"
).split()

REACTOME_IL6 = set("CBL IL6 IL6R IL6ST JAK1 JAK2 PTPN11 SOCS3 STAT1 STAT3 TYK2".split())
REACTOME_FAMILY_EXTRA = set("CLCF1 CNTF CNTFR CRLF1 CTF1 IL11 IL11RA IL31 IL31RA LIF LIFR OSM OSMR".split())


def _tsv(name: str) -> pd.DataFrame:
    return pd.read_csv(GENESETS / name, sep="\t", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def builtin() -> dict[str, GeneSet]:
    return load_builtin_sets(RESOURCES)


# --- counts and membership ---------------------------------------------------------------------------


def test_builtin_set_sizes(builtin):
    sizes = {name: len(s.genes) for name, s in builtin.items()}
    assert sizes == {
        "il6_core_signalling": 17,
        "stat3_targets": 16,
        "reactome_il6_signaling": 11,
        "reactome_il6_family": 24,
        "hallmark_il6_jak_stat3": 87,
        "kegg_medicus_il6_family_jak_stat": 27,
        "neutrophil_score": 3,
    }
    assert list(builtin) == list(BUILTIN_SETS)
    for s in builtin.values():
        assert len(set(s.genes)) == len(s.genes), s.name


def test_file_row_counts():
    assert len(_tsv("hallmark_il6_jak_stat3.msigdb_v7.5.1.tsv")) == 87
    assert len(_tsv("kegg_medicus_n01556.msigdb_2025.1.tsv")) == 27
    reactome = _tsv("reactome_il6.tsv")
    assert reactome.groupby("set_id").size().to_dict() == {"R-HSA-1059683": 11, "R-HSA-6783589": 24}
    assert set(reactome["set_name"]) == {"Interleukin-6 signaling", "Interleukin-6 family signaling"}
    core = _tsv("il6_core.tsv")
    assert core["tier"].value_counts().to_dict() == {
        "core": 17,
        "STAT3-target": 16,
        "acute-phase": 7,
        "family": 6,
        "control": 1,
    }


def test_membership_spot_checks(builtin):
    hallmark = set(builtin["hallmark_il6_jak_stat3"].genes)
    kegg = set(builtin["kegg_medicus_il6_family_jak_stat"].genes)
    # Brief §3: the receptor chain, JAK1/2 and the sheddases are NOT hallmark members; IFNAR1 genuinely is.
    assert hallmark.isdisjoint({"IL6R", "JAK1", "JAK2", "JAK3", "ADAM10", "ADAM17", "PIAS3"})
    assert {"IFNAR1", "SOCS3", "STAT3", "IL6ST", "CXCL10", "TNF", "CSF3R"} <= hallmark
    # Brief §5: KEGG MEDICUS N01556 is broader (IL-4/IL-13, IL-27, STAT6) and lacks the feedback machinery.
    assert kegg.isdisjoint({"SOCS3", "PTPN11", "CBL", "CRLF1"})
    assert {"IL4R", "IL13", "IL13RA1", "IL13RA2", "IL27", "IL27RA", "STAT6", "IL6R", "JAK1"} <= kegg
    assert set(builtin["reactome_il6_signaling"].genes) == REACTOME_IL6
    assert set(builtin["reactome_il6_family"].genes) == REACTOME_IL6 | REACTOME_FAMILY_EXTRA
    assert builtin["neutrophil_score"].genes == ("CSF3R", "FCGR3B", "CXCR2")
    core = set(builtin["il6_core_signalling"].genes)
    assert {"IL6", "IL6R", "IL6ST", "JAK1", "STAT3", "SOCS3", "STAT1"} <= core
    assert "JAK3" not in core and "OSM" not in core
    assert {"JUNB", "CEBPD", "MCL1", "CD163"} <= set(builtin["stat3_targets"].genes)


def test_core_flags_agree_with_the_set_files(builtin):
    """The H/R/fam flags in il6_core.tsv are derived data: they must match the shipped set files."""
    core = _tsv("il6_core.tsv").set_index("symbol")
    expected = {
        "in_hallmark": set(builtin["hallmark_il6_jak_stat3"].genes),
        "in_reactome_il6": set(builtin["reactome_il6_signaling"].genes),
        "in_reactome_il6_family": set(builtin["reactome_il6_family"].genes),
    }
    for column, members in expected.items():
        flagged = set(core.index[core[column] == "1"])
        assert flagged == members & set(core.index), column
        assert set(core[column]) <= {"0", "1"}


# --- identifiers against NCBI gene_info --------------------------------------------------------------


@pytest.fixture(scope="module")
def gene_info(shared_data) -> pd.DataFrame:
    """Human gene_info rows indexed by symbol, with the Ensembl and HGNC cross-references split out."""
    path = shared_data / "NCBI_gene_info" / "Homo_sapiens.gene_info.gz"
    table = pd.read_csv(
        path, sep="\t", dtype=str, usecols=["#tax_id", "GeneID", "Symbol", "dbXrefs"], keep_default_na=False
    )
    table = table[table["#tax_id"] == "9606"]
    xrefs = table["dbXrefs"].str.split("|")
    table = table.assign(
        ensembl=xrefs.map(lambda xs: {x.removeprefix("Ensembl:") for x in xs if x.startswith("Ensembl:")}),
        hgnc=xrefs.map(lambda xs: {x.removeprefix("HGNC:") for x in xs if x.startswith("HGNC:HGNC:")}),
    )
    return table


@pytest.mark.parametrize("name", ID_FILES)
def test_identifiers_match_gene_info(name, gene_info):
    table = _tsv(name)
    wanted = gene_info[gene_info["Symbol"].isin(set(table["symbol"]))]
    counts = wanted["Symbol"].value_counts()
    assert (counts == 1).all(), counts[counts != 1]
    by_symbol = wanted.set_index("Symbol")
    disagreements = []
    for row in table.itertuples(index=False):
        if row.symbol not in by_symbol.index:
            disagreements.append(f"{row.symbol}: not in gene_info")
            continue
        ref = by_symbol.loc[row.symbol]
        if row.ensembl_gene_id not in ref["ensembl"]:
            disagreements.append(f"{row.symbol}: {row.ensembl_gene_id} not in {sorted(ref['ensembl'])}")
        if row.ncbi_gene_id != ref["GeneID"]:
            disagreements.append(f"{row.symbol}: GeneID {row.ncbi_gene_id} != {ref['GeneID']}")
        if "hgnc_id" in table.columns and {row.hgnc_id} != ref["hgnc"]:
            disagreements.append(f"{row.symbol}: {row.hgnc_id} != {sorted(ref['hgnc'])}")
    assert disagreements == []
    assert table["ensembl_gene_id"].str.fullmatch(r"ENSG\d{11}").all()


def test_same_symbol_same_ids_across_files():
    rows = pd.concat([_tsv(n)[["symbol", "ensembl_gene_id", "ncbi_gene_id"]] for n in ID_FILES])
    per_symbol = rows.drop_duplicates().groupby("symbol").size()
    assert (per_symbol == 1).all(), per_symbol[per_symbol > 1]


def test_ncbi_ids_present_in_real_ncbi_counts(shared_data):
    """NCBI-generated GEO tables are keyed by GeneID: every shipped GeneID must occur in a real one."""
    counts = shared_data / "GSE152418" / "GSE152418_raw_counts_GRCh38.p13_NCBI.tsv.gz"
    ids = set(pd.read_csv(counts, sep="\t", usecols=["GeneID"], dtype=str)["GeneID"])
    for name in ID_FILES:
        missing = set(_tsv(name)["ncbi_gene_id"]) - ids
        assert not missing, (name, missing)


def test_genes_present_on_real_symbol_counts(builtin, shared_data):
    counts = shared_data / "GSE155454" / "GSE155454_counts_kuanrongchan_v1.csv.gz"
    symbols = set(pd.read_csv(counts, usecols=["gene"], dtype=str)["gene"])
    for gene_set in builtin.values():
        present, missing = genes_present(gene_set, symbols)
        assert present + missing != [] and sorted(present + missing) == sorted(gene_set.genes)
        assert set(present) <= symbols and not set(missing) & symbols
    # The author table is filtered to ~10k expressed genes: IL6 mRNA is too low in blood to survive.
    assert genes_present(builtin["neutrophil_score"], symbols) == (["CSF3R", "FCGR3B", "CXCR2"], [])
    assert "IL6" in genes_present(builtin["reactome_il6_signaling"], symbols)[1]


# --- edited panel files keep their contract ----------------------------------------------------------


def test_il6_core_keeps_rows_columns_and_order():
    core = _tsv("il6_core.tsv")
    assert list(core.columns) == [*CORE_ORIGINAL_COLUMNS, "hgnc_id", "source"]
    assert core["symbol"].tolist() == CORE_ORDER
    assert core["source"].str.startswith("domain brief genesets.md §2").all()
    assert core["hgnc_id"].str.fullmatch(r"HGNC:\d+").all()
    # KEGG MEDICUS is CC BY-SA: no derived KEGG flag in this project-licensed file.
    assert not [c for c in core.columns if "kegg" in c.lower()]
    reactome_rows = core[core["in_reactome_il6"] == "1"]
    assert reactome_rows["source"].str.contains("R-HSA-1059683").all()


def test_marker_file_columns_and_roles():
    markers = _tsv("severity_sanity_markers.tsv")
    assert list(markers.columns) == [
        "symbol",
        "ensembl_gene_id",
        "ncbi_gene_id",
        "role",
        "expected_in_severe",
        "tissues",
        "note",
        "hgnc_id",
    ]
    assert markers["role"].value_counts().to_dict() == {
        "orientation": 12,
        "interferon_report_only": 4,
        "glucocorticoid": 3,
        "neutrophil_score": 3,
        "sex_female": 1,
        "sex_male": 1,
    }
    assert markers["hgnc_id"].str.fullmatch(r"HGNC:\d+").all()
    orient = markers["role"] == "orientation"
    assert markers.loc[orient, "tissues"].str.split(";").map(lambda ts: set(ts) <= set(TISSUES)).all()
    assert (markers.loc[~orient, "tissues"] == "").all()  # tissues only select orientation markers


# --- orientation markers are independent of the genes under test ------------------------------------


def _orientation_keys() -> tuple[set[str], set[str]]:
    markers = _tsv("severity_sanity_markers.tsv")
    orient = markers[markers["role"] == "orientation"]
    return set(orient["symbol"]), set(orient["ensembl_gene_id"])


@pytest.mark.parametrize(
    "name",
    [
        "il6_core.tsv",
        "hallmark_il6_jak_stat3.msigdb_v7.5.1.tsv",
        "reactome_il6.tsv",
        "kegg_medicus_n01556.msigdb_2025.1.tsv",
    ],
)
def test_shipped_orientation_markers_are_not_genes_under_test(name):
    """Read straight from the files, by symbol and by Ensembl ID: any shared gene fails."""
    symbols, ids = _orientation_keys()
    table = _tsv(name)
    assert not symbols & set(table["symbol"]), name
    assert not ids & set(table["ensembl_gene_id"]), name


def test_sets_under_test_cover_the_scored_il6_sets():
    assert set(SETS_UNDER_TEST) == set(BUILTIN_SETS) - {"neutrophil_score"}
    tables = tables_under_test(RESOURCES)
    assert sorted(Path(label).name for label in tables) == sorted(
        {BUILTIN_SETS[name].file for name in SETS_UNDER_TEST}
    )
    assert marker_overlaps(_tsv("severity_sanity_markers.tsv"), tables) == {}
    # The pre-issue-13 overlap is what the check exists to catch.
    assert marker_overlaps(pd.DataFrame({"symbol": ["OSM"], "role": ["orientation"]}), tables) == {
        label: ["OSM"]
        for label in tables
        if Path(label).name in {"il6_core.tsv", "reactome_il6.tsv", "kegg_medicus_n01556.msigdb_2025.1.tsv"}
    }


def test_user_markers_overlapping_the_panel_and_pathways_are_refused(tmp_path):
    markers = _tsv("severity_sanity_markers.tsv")
    osm = pd.DataFrame(
        [["OSM", "ENSG00000099985", "5008", "orientation", "up", "whole_blood", "ligand", "HGNC:8506"]],
        columns=markers.columns,
    )
    path = tmp_path / "my_markers.tsv"
    pd.concat([markers, osm]).to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError) as caught:
        load_builtin_sets(RESOURCES, markers_path=path)
    message = str(caught.value)
    assert message.startswith(f"{path} (config genesets.markers): orientation marker(s) overlap")
    for file in ("il6_core.tsv", "reactome_il6.tsv", "kegg_medicus_n01556.msigdb_2025.1.tsv"):
        assert f"['OSM'] with {GENESETS / file}" in message
    assert "hallmark" not in message  # OSM is no hallmark gene


def test_user_panel_overlapping_the_markers_is_refused(tmp_path):
    core = _tsv("il6_core.tsv")
    extra = core.iloc[:1].assign(symbol="S100A12", ensembl_gene_id="ENSG00000163221", tier="STAT3-target")
    panel = tmp_path / "panel.tsv"
    pd.concat([core, extra]).to_csv(panel, sep="\t", index=False)
    with pytest.raises(
        InputError,
        match=r"severity_sanity_markers\.tsv: orientation marker\(s\) overlap the genes under test: "
        r"\['S100A12'\] with .*panel\.tsv \(config genesets\.panel\)",
    ):
        load_builtin_sets(RESOURCES, panel_path=panel)
    # Non-orientation marker roles may share genes with a set under test (CSF3R: hallmark member).
    assert "CSF3R" in load_builtin_sets(RESOURCES)["hallmark_il6_jak_stat3"].genes


# --- licences and README ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("notice", "phrases"),
    [
        (
            "NOTICE.hallmark_il6_jak_stat3.md",
            [
                "HALLMARK_IL6_JAK_STAT3_SIGNALING",
                "MSigDB v7.5.1",
                "Liberzon",
                "Cell Systems 1:417",
                "CC BY 4.0",
            ],
        ),
        ("NOTICE.reactome.md", ["R-HSA-1059683", "R-HSA-6783589", "CC0"]),
        (
            "NOTICE.kegg_medicus_n01556.md",
            [
                "KEGG MEDICUS via MSigDB v2025.1.Hs",
                "CC BY-SA 4.0",
                "modified versions must keep this licence",
            ],
        ),
    ],
)
def test_notice_files_name_their_licence(notice, phrases):
    text = (GENESETS / notice).read_text(encoding="utf-8")
    for phrase in phrases:
        assert phrase in text, (notice, phrase)


def test_builtin_licences_match_notices(builtin):
    assert builtin["hallmark_il6_jak_stat3"].licence == "CC BY 4.0"
    assert builtin["kegg_medicus_il6_family_jak_stat"].licence == "CC BY-SA 4.0"
    assert builtin["reactome_il6_family"].licence.startswith("CC0")


def test_readme_lists_every_file_and_the_exclusions():
    text = (GENESETS / "README.md").read_text(encoding="utf-8")
    for path in GENESETS.iterdir():
        assert f"`{path.name}`" in text, path.name
    assert "hsa04630" in text and "never shipped" in text.lower()
    assert "PROGENy" in text and "interferon" in text


def test_readme_justifies_every_orientation_marker_and_removal():
    text = (GENESETS / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Orientation markers") :]
    markers = _tsv("severity_sanity_markers.tsv")
    for row in markers[markers["role"] == "orientation"].itertuples():
        assert f"| {row.symbol} | {row.expected_in_severe} | {row.tissues} |" in section, row.symbol
    for removed in ("OSM", "CEBPD", "LCN2", "HP", "IL1R2"):
        assert f"**{removed}**" in section, removed


# --- user gene sets ------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_read_gmt(tmp_path):
    gmt = _write(
        tmp_path / "mine.gmt",
        "MY_UP\thttp://example.org/up\tSOCS3\tCEBPD\tSOCS3\t\n\nMY_DOWN\tna\tHLA-DRA\tCD74\n",
    )
    sets = read_user_sets(gmt)
    assert list(sets) == ["MY_UP", "MY_DOWN"]
    assert sets["MY_UP"].genes == ("SOCS3", "CEBPD")  # duplicate and trailing empty field dropped
    assert sets["MY_UP"].description == "http://example.org/up"
    assert sets["MY_DOWN"].genes == ("HLA-DRA", "CD74")
    assert sets["MY_DOWN"].licence == "user-supplied" and "mine.gmt" in sets["MY_DOWN"].source


def test_read_gzipped_gmt(tmp_path):
    path = tmp_path / "mine.gmt.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("A\tdesc\tX\tY\n")
    assert read_user_sets(path)["A"].genes == ("X", "Y")


def test_read_long_tsv_both_headers(tmp_path):
    first = _write(tmp_path / "a.tsv", "set\tgene\nS1\tSOCS3\nS2\tJUNB\nS1\tBCL3\n")
    sets = read_user_sets(first)
    assert sets["S1"].genes == ("SOCS3", "BCL3") and sets["S2"].genes == ("JUNB",)
    second = _write(
        tmp_path / "b.txt",
        "symbol\tset_name\tdescription\nIL6\tmy_axis\tmy IL-6 axis\nIL6R\tmy_axis\t\n",
    )
    sets = read_user_sets(second)
    assert sets["my_axis"].genes == ("IL6", "IL6R")
    assert sets["my_axis"].description == "my IL-6 axis"


@pytest.mark.parametrize(
    ("filename", "text", "expected"),
    [
        ("e.gmt", "GOOD\td\tA\nEMPTY\tdesc\t\t\n", r"e\.gmt line 2: set 'EMPTY' has no genes"),
        ("n.gmt", "ONLYNAME\n", r"n\.gmt line 1: set 'ONLYNAME' has no genes"),
        (
            "d.gmt",
            "S\td\tA\nT\td\tB\nS\td\tC\n",
            r"d\.gmt line 3: duplicate set name 'S' \(first on line 1\)",
        ),
        ("u.txt", "S\td\tA\tB\n", r"u\.txt: unknown gene-set format"),
        ("z.gmt", "\n\n", r"z\.gmt: file is empty"),
        ("g.tsv", "set\tgene\nS1\tA\nS1\t\n", r"g\.tsv line 3: empty 'gene'"),
        ("f.tsv", "set_name\tsymbol\nS1\tA\textra\n", r"f\.tsv line 2: 3 fields but the header has 2"),
        ("h.tsv", "set\tgene\n", r"h\.tsv: header only"),
    ],
)
def test_user_set_errors_name_file_and_line(tmp_path, filename, text, expected):
    with pytest.raises(InputError, match=expected):
        read_user_sets(_write(tmp_path / filename, text))


def test_missing_user_file(tmp_path):
    with pytest.raises(InputError, match="not found; fix genesets.user_files"):
        read_user_sets(tmp_path / "absent.gmt")


def test_load_gene_sets_merges_and_guards_names(tmp_path):
    gmt = _write(tmp_path / "extra.gmt", "EXTRA\td\tSOCS3\tJUNB\n")
    sets = load_gene_sets(RESOURCES, [str(gmt)])
    assert list(sets)[: len(BUILTIN_SETS)] == list(BUILTIN_SETS)
    assert sets["EXTRA"].genes == ("SOCS3", "JUNB")
    assert load_gene_sets(RESOURCES, []).keys() == BUILTIN_SETS.keys()

    clash = _write(tmp_path / "clash.tsv", "set\tgene\nhallmark_il6_jak_stat3\tSOCS3\n")
    with pytest.raises(InputError, match=r"clash\.tsv: set name 'hallmark_il6_jak_stat3' .* built-in set"):
        load_gene_sets(RESOURCES, [str(clash)])
    again = _write(tmp_path / "again.gmt", "EXTRA\td\tIL6\n")
    with pytest.raises(
        InputError, match=r"again\.gmt: set name 'EXTRA' is already used by a set in .*extra\.gmt"
    ):
        load_gene_sets(RESOURCES, [str(gmt), str(again)])


def test_panel_override_defines_tier_sets(tmp_path):
    core = _tsv("il6_core.tsv")
    subset = core[core["symbol"].isin(["SOCS3", "STAT3", "JUNB"])]
    panel = tmp_path / "panel.tsv"
    subset.to_csv(panel, sep="\t", index=False)
    sets = load_builtin_sets(RESOURCES, panel_path=panel)
    assert sets["il6_core_signalling"].genes == ("STAT3", "SOCS3")
    assert sets["stat3_targets"].genes == ("JUNB",)
    assert len(sets["hallmark_il6_jak_stat3"].genes) == 87  # other sets still come from resources

    subset.drop(columns="tier").to_csv(panel, sep="\t", index=False)
    with pytest.raises(InputError, match=r"panel\.tsv: column 'tier' missing .*genesets\.panel"):
        load_builtin_sets(RESOURCES, panel_path=panel)


def test_missing_resource_file_is_input_error(tmp_path):
    (tmp_path / "genesets").mkdir()
    with pytest.raises(InputError, match=r"genesets/il6_core\.tsv not found"):
        load_builtin_sets(tmp_path)


def test_genes_present_keeps_set_order():
    gene_set = GeneSet("s", ("SOCS3", "IL6", "STAT3", "JAK1"), "test", "n/a", "")
    assert genes_present(gene_set, ["JAK1", "SOCS3", "OTHER"]) == (["SOCS3", "JAK1"], ["IL6", "STAT3"])
    assert genes_present(gene_set, []) == ([], ["SOCS3", "IL6", "STAT3", "JAK1"])
