"""Structural replicas of GEO files that are too large to ship, built from the facts that record their layout.

The default config's cohorts read four count files from GEO. Only GSE152418's is real in ``../shared/data``;
the others are rebuilt here from what each folder's PROVENANCE.md and the domain brief say about them (file
name, separator, header, gene-ID type, sample columns, value scale), with counts simulated around a planted
severe-vs-mild effect that the tests recover:

- GSE157103: GEO's NCBI-generated raw counts (tab-separated, ``GeneID`` then one integer column per GSM of the
  real series matrix, Entrez rows).
- GSE172114: the author's ``GSE172114_rsem_gene_count_matrix_TMM_69samples.csv.gz``: log2 TMM values
  (negatives occur), versioned Ensembl rows, columns named like the GEO titles (``C10-R``) or their prefix
  (``C10``). GEO has no NCBI-generated counts for it here, so the default config's first source 404s.
- GSE161731: ``GSE161731_counts.csv.gz``: comma-separated, EMPTY first header cell, 60,675 unversioned Ensembl
  rows, the key's 195 ``rna_id`` columns plus the six columns that have no key row.
- GSE152418: the real NCBI counts, plus a series matrix rebuilt from the real GEOquery export (the series
  matrix itself is not in shared/).

Real metadata files are linked, never copied, into the served tree.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parents[1]
GENESETS = PROJECT_ROOT / "resources" / "genesets"

GSE161731_EXTRA_COLUMNS = [
    "434482",
    "434741",
    "94478",
    "DU09-02S0000150_batch2",
    "DU09-02S0000154_batch2",
    "DU09-02S0000158_batch2",
]
GSE161731_N_ROWS = 60_675
GSE172114_SUPPL = "GSE172114_rsem_gene_count_matrix_TMM_69samples.csv.gz"

# Planted severe-vs-mild log2 fold changes of named IL-6 axis genes (the rest of the planted set is drawn at
# random). The orientation markers get their expected direction so the run's orientation check passes.
PANEL_EFFECTS = {"SOCS3": 1.5, "IL6R": 1.0, "STAT3": 0.8, "IL6ST": -0.8, "JAK2": 0.7, "TYK2": -0.6}
MARKER_LFC = 1.3
SEX_GENES = {"XIST": "female", "RPS4Y1": "male", "DDX3Y": "male", "KDM5D": "male", "UTY": "male"}


@dataclass
class Universe:
    """Genes the replicas express: symbol, Entrez ID and Ensembl ID, from the real NCBI gene_info."""

    genes: pd.DataFrame  # columns symbol, entrez, ensembl; index = symbol
    planted: pd.Series = field(default_factory=pd.Series)  # symbol -> planted log2FC (0 = null)


def _shipped_symbols(name: str, column: str = "symbol") -> list[str]:
    return pd.read_csv(GENESETS / name, sep="\t", comment=None)[column].astype(str).tolist()


def _orientation_markers() -> pd.Series:
    markers = pd.read_csv(GENESETS / "severity_sanity_markers.tsv", sep="\t", dtype=str).fillna("")
    orient = markers[markers["role"].eq("orientation") & markers["expected_in_severe"].isin(["up", "down"])]
    return pd.Series(
        np.where(orient["expected_in_severe"].eq("up"), MARKER_LFC, -MARKER_LFC), index=orient["symbol"]
    )


def load_universe(gene_info: Path, n_genes: int = 2500, seed: int = 7) -> Universe:
    """Protein-coding genes with one Ensembl xref, always including the panel, markers and pathway genes."""
    info = pd.read_csv(
        gene_info,
        sep="\t",
        usecols=["#tax_id", "GeneID", "Symbol", "dbXrefs", "type_of_gene"],
        dtype=str,
    )
    info = info[info["#tax_id"].eq("9606") & info["type_of_gene"].eq("protein-coding")]
    ensembl = info["dbXrefs"].str.findall(r"Ensembl:(ENSG\d+)")
    info = info.assign(ensembl=ensembl.str[0], n_ens=ensembl.str.len())
    info = info[info["n_ens"].eq(1) & ~info["Symbol"].duplicated(keep=False)]
    info = info[~info["ensembl"].duplicated(keep=False)]
    genes = pd.DataFrame(
        {"symbol": info["Symbol"].to_numpy(), "entrez": info["GeneID"].to_numpy(), "ensembl": info["ensembl"]}
    ).set_index("symbol", drop=False)

    wanted = set(_shipped_symbols("il6_core.tsv")) | set(_shipped_symbols("severity_sanity_markers.tsv"))
    for gmt in ("hallmark_il6_jak_stat3.msigdb_v7.5.1.tsv", "reactome_il6.tsv"):
        frame = pd.read_csv(GENESETS / gmt, sep="\t", dtype=str)
        col = "symbol" if "symbol" in frame.columns else frame.columns[-1]
        wanted |= set(frame[col].dropna())
    wanted |= set(SEX_GENES)
    required = genes.index.intersection(sorted(wanted))
    rng = np.random.default_rng(seed)
    others = genes.index.difference(required)
    n_other = max(0, n_genes - len(required))
    picked = rng.choice(np.asarray(others), size=min(n_other, len(others)), replace=False)
    genes = genes.loc[list(required) + sorted(picked)]

    planted = pd.Series(0.0, index=genes.index)
    candidates = genes.index.difference(list(PANEL_EFFECTS) + list(SEX_GENES))
    random_de = rng.choice(np.asarray(candidates), size=len(genes) // 12, replace=False)
    planted[random_de] = rng.choice([-1.0, 1.0], size=len(random_de)) * rng.uniform(0.8, 1.6, len(random_de))
    markers = _orientation_markers()
    markers = markers[markers.index.isin(genes.index)]
    planted[markers.index] = markers
    for symbol, lfc in PANEL_EFFECTS.items():
        if symbol in planted.index:
            planted[symbol] = lfc
    return Universe(genes=genes, planted=planted)


def simulate_counts(universe: Universe, severe: np.ndarray, female: np.ndarray, seed: int) -> pd.DataFrame:
    """NB counts (genes x samples): base mean x size factor x 2^(planted LFC if severe), dispersion trend."""
    rng = np.random.default_rng(seed)
    n_genes, n = len(universe.genes), len(severe)
    base = np.exp(rng.normal(5.0, 1.6, n_genes))
    # Named genes sit well above the filter so their planted effects are testable.
    named = universe.genes.index.isin(list(PANEL_EFFECTS)) | (universe.planted.abs().to_numpy() > 0)
    base[named] = np.maximum(base[named], 150.0)
    size_factor = np.exp(rng.normal(0.0, 0.25, n))
    lfc = universe.planted.to_numpy()[:, None] * severe[None, :].astype(float)
    mu = base[:, None] * size_factor[None, :] * np.exp2(lfc)
    sex_rows = {s: i for i, s in enumerate(universe.genes.index) if s in SEX_GENES}
    for symbol, row in sex_rows.items():
        expressed = female if SEX_GENES[symbol] == "female" else ~female
        mu[row] = np.where(expressed, 400.0, 0.05) * size_factor
    dispersion = (0.05 + 2.0 / base)[:, None]
    shape = 1.0 / dispersion
    counts = rng.poisson(rng.gamma(shape, mu / shape))
    return pd.DataFrame(counts, index=universe.genes.index)


def _link(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() or dest.is_symlink():
        dest.unlink()
    os.symlink(src, dest)


def _gzip_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
        fh.write(text)


def _severe_female(meta: pd.DataFrame, severe_rule, female_rule) -> tuple[np.ndarray, np.ndarray]:
    return meta.apply(severe_rule, axis=1).to_numpy(bool), meta.apply(female_rule, axis=1).to_numpy(bool)


def write_gse157103(root: Path, shared: Path, universe: Universe) -> None:
    """Real series matrix + NCBI raw-count layout for its 126 GSMs (Entrez rows, tab-separated)."""
    from il6axis.acquire.geo_metadata import read_series_matrix

    real = shared / "GSE157103" / "GSE157103_series_matrix.txt.gz"
    _link(real, root / "GSE157103" / real.name)
    meta = read_series_matrix(real)
    severe, female = _severe_female(
        meta, lambda r: str(r["icu"]).strip() == "yes", lambda r: str(r["Sex"]).strip().lower() == "female"
    )
    counts = simulate_counts(universe, severe, female, seed=157103)
    counts.index = universe.genes["entrez"].to_numpy()
    counts.columns = list(meta.index)
    body = counts.to_csv(sep="\t", index_label="GeneID", lineterminator="\n")
    _gzip_text(root / "GSE157103" / "GSE157103_raw_counts_GRCh38.p13_NCBI.tsv.gz", body)


def _quote(value: object) -> str:
    return '"' + str(value).replace('"', "'") + '"'


def write_gse152418(root: Path, shared: Path) -> None:
    """Real NCBI counts + a series matrix rebuilt from the real GEOquery export (same samples and values)."""
    counts = shared / "GSE152418" / "GSE152418_raw_counts_GRCh38.p13_NCBI.tsv.gz"
    _link(counts, root / "GSE152418" / counts.name)
    pdata = pd.read_csv(
        shared / "GSE152418" / "GSE152418_sample_metadata_GEOquery_pData.csv.gz",
        dtype=str,
        keep_default_na=False,
    )
    lines = [
        '!Series_title\t"Systems biological assessment of immunity to mild versus severe COVID-19 infection"',
        '!Series_geo_accession\t"GSE152418"',
        '!Series_platform_id\t"GPL24676"',
        "",
    ]
    for key in ("title", "geo_accession", "status", "source_name_ch1", "organism_ch1"):
        lines.append(f"!Sample_{key}\t" + "\t".join(_quote(v) for v in pdata[key]))
    for col in [c for c in pdata.columns if c.startswith("characteristics_ch1")]:
        lines.append("!Sample_characteristics_ch1\t" + "\t".join(_quote(v) for v in pdata[col]))
    lines.append("!series_matrix_table_begin")
    lines.append('"ID_REF"\t' + "\t".join(_quote(g) for g in pdata["geo_accession"]))
    lines.append("!series_matrix_table_end")
    _gzip_text(root / "GSE152418" / "GSE152418_series_matrix.txt.gz", "\n".join(lines) + "\n")


def gse172114_columns(meta: pd.DataFrame, form: str) -> list[str]:
    """Matrix column names for the GEO titles: ``title`` (C10-R) or ``prefix`` (C10)."""
    titles = meta["title"].astype(str)
    return list(titles) if form == "title" else [t.split("-")[0] for t in titles]


def write_gse172114(root: Path, shared: Path, universe: Universe, column_form: str = "prefix") -> None:
    """Real series matrix + the author matrix: log2 TMM values with negatives, versioned Ensembl rows."""
    from il6axis.acquire.geo_metadata import read_series_matrix

    real = shared / "GSE172114" / "GSE172114_series_matrix.txt.gz"
    _link(real, root / "GSE172114" / real.name)
    meta = read_series_matrix(real)
    rng = np.random.default_rng(172114)
    severe = meta["disease state"].astype(str).str.strip().eq("Critical").to_numpy()
    female = rng.random(len(meta)) < 0.4
    counts = simulate_counts(universe, severe, female, seed=172114)
    # TMM-like: counts per million of effective library size, then log2 without a pseudo-count floor of 1
    # (edgeR's cpm(log=TRUE) adds a small prior), so low counts go negative as in the published matrix.
    lib = counts.sum(axis=0).to_numpy(float)
    log2_tmm = np.log2((counts.to_numpy(float) + 0.25) / lib[None, :] * 1e6)
    versions = rng.integers(1, 20, len(universe.genes))
    index = [f"{e}.{v}" for e, v in zip(universe.genes["ensembl"], versions, strict=True)]
    frame = pd.DataFrame(np.round(log2_tmm, 6), index=index, columns=gse172114_columns(meta, column_form))
    _gzip_text(root / "GSE172114" / GSE172114_SUPPL, frame.to_csv(index_label="", lineterminator="\n"))


def write_gse161731(root: Path, shared: Path, universe: Universe) -> None:
    """Real key + counts in GEO's layout: empty first header cell, 195 key columns + 6 without metadata."""
    key_path = shared / "GSE161731" / "GSE161731_key.csv.gz"
    _link(key_path, root / "GSE161731" / key_path.name)
    key = pd.read_csv(key_path, dtype=str).fillna("")
    rng = np.random.default_rng(161731)
    columns = list(key["rna_id"])
    for extra in GSE161731_EXTRA_COLUMNS:  # scattered, not appended, as a real export would not sort them
        columns.insert(int(rng.integers(0, len(columns) + 1)), extra)
    by_id = key.set_index("rna_id")
    severe = np.array([by_id.loc[c, "hospitalized"] == "Yes" if c in by_id.index else False for c in columns])
    female = np.array([by_id.loc[c, "gender"] == "Female" if c in by_id.index else False for c in columns])
    counts = simulate_counts(universe, severe, female, seed=161731)
    counts.columns = columns
    counts.index = universe.genes["ensembl"].to_numpy()
    # Fill to GEO's 60,675 rows with all-zero IDs that gene_info does not know (as most non-coding rows are).
    n_fill = GSE161731_N_ROWS - len(counts)
    filler = [f"ENSG9{i:010d}" for i in range(n_fill)]
    lines = ["," + ",".join(columns)]
    lines += [
        f"{gid}," + ",".join(map(str, row)) for gid, row in zip(counts.index, counts.to_numpy(), strict=True)
    ]
    zero_row = "," + ",".join(["0"] * len(columns))
    lines += [gid + zero_row for gid in filler]
    _gzip_text(root / "GSE161731" / "GSE161731_counts.csv.gz", "\n".join(lines) + "\n")


def build_default_geo_tree(root: Path, shared: Path, column_form: str = "prefix") -> Universe:
    """Serve-ready tree ``<root>/<GSE>/<file>`` for the four default cohorts, plus the real gene_info."""
    gene_info = shared / "NCBI_gene_info" / "Homo_sapiens.gene_info.gz"
    _link(gene_info, root / "NCBI_gene_info" / gene_info.name)
    universe = load_universe(gene_info)
    write_gse157103(root, shared, universe)
    write_gse152418(root, shared)
    write_gse172114(root, shared, universe, column_form)
    write_gse161731(root, shared, universe)
    return universe
