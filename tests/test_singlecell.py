"""Single-cell cohorts: streaming QC and pseudobulk, filters, bulk-layout AnnData and planted effects."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

from il6axis.cohort.samples import define_contrast
from il6axis.de.contract import DeSettings
from il6axis.de.nb import run_deseq2
from il6axis.errors import InputError
from il6axis.singlecell.analysis import analyse_celltypes, pathway_scores, pathway_table
from il6axis.singlecell.build import build_pseudobulk, write_pseudobulk
from il6axis.singlecell.donors import donor_level_fields, donor_table, read_donor_sheet
from il6axis.singlecell.h5 import read_obs
from il6axis.singlecell.pseudobulk import ALL_CELLS, celltype_adata, pseudobulk, pseudobulk_filter
from il6axis.singlecell.qc import qc_mask, qc_metrics_backed
from il6axis.singlecell.settings import SingleCellSettings
from il6axis.singlecell.subsample import panel_subsample

SET_A = [f"MONOUP{i}" for i in range(1, 9)]  # up 2x in severe, monocytes only
SET_B = [f"TUP{i}" for i in range(1, 5)]  # up 2.5x in severe, T cells only
MITO = [f"MT-G{i}" for i in range(1, 6)]
CELL_TYPES = ["monocyte", "T cell", "B cell"]
SPEC = {
    "severity": {"field": "condition", "severe": ["Severe"], "mild": ["Mild"], "exclude": ["Healthy"]},
    "covariates": {"sex": {"field": "sex", "type": "sex"}},
}
QC = {"min_counts": 300, "min_genes": 50, "max_pct_mt": 20.0}
FAST_DE = DeSettings(n_cpus=1, lfc_shrink=False)
# For tests of plumbing, not statistics: skipping the Cook's refit and filter halves pydeseq2's time.
PLUMBING_DE = DeSettings(n_cpus=1, lfc_shrink=False, refit_cooks=False, cooks_filter=False)


@dataclass
class SimCohort:
    counts: np.ndarray  # cells x genes, int
    obs: pd.DataFrame
    genes: list[str]
    low_count_cells: np.ndarray  # planted QC failures (indices)
    damaged_cells: np.ndarray


def simulate_cells(seed: int = 7, n_other_genes: int = 120) -> SimCohort:
    """6 severe, 6 mild and 2 healthy donors; 3 cell types (~100 cells each) plus a rare pDC population.

    Gene expression differs by cell type; each donor has its own per-gene effect (log-normal, sd 0.2), so
    donors, not cells, are the replicates. Planted: SET_A x2 in severe monocytes, SET_B x2.5 in severe T
    cells, nothing else. Donor S1 has only 5 B cells (below min_cells); pDCs exist in one severe donor only.
    A few cells have tiny libraries and some are 'damaged' (half their counts mitochondrial).
    """
    rng = np.random.default_rng(seed)
    genes = SET_A + SET_B + MITO + [f"GENE{i:03d}" for i in range(1, n_other_genes + 1)]
    donors = [f"S{i}" for i in range(1, 7)] + [f"M{i}" for i in range(1, 7)] + ["H1", "H2"]
    condition = {d: {"S": "Severe", "M": "Mild", "H": "Healthy"}[d[0]] for d in donors}
    sex = {d: ("male" if i % 2 else "female") for i, d in enumerate(donors)}
    n_genes = len(genes)
    is_mito = np.isin(genes, MITO)
    profiles = {}
    for ct in [*CELL_TYPES, "pDC"]:
        p = rng.lognormal(0.0, 1.0, n_genes)
        p[is_mito] = p[~is_mito].sum() * 0.01  # ~5% mitochondrial reads in healthy cells
        profiles[ct] = p / p.sum()
    blocks, rows = [], []
    for donor in donors:
        donor_effect = rng.lognormal(0.0, 0.2, n_genes)
        types = {ct: int(rng.integers(80, 121)) for ct in CELL_TYPES}
        if donor == "S1":
            types["B cell"] = 5
            types["pDC"] = 40
        for ct, n_cells in types.items():
            p = profiles[ct] * donor_effect
            if condition[donor] == "Severe" and ct == "monocyte":
                p = p * np.where(np.isin(genes, SET_A), 2.0, 1.0)
            if condition[donor] == "Severe" and ct == "T cell":
                p = p * np.where(np.isin(genes, SET_B), 2.5, 1.0)
            p = p / p.sum()
            lib = rng.lognormal(np.log(2000), 0.3, n_cells)
            blocks.append(rng.poisson(lib[:, None] * p[None, :]))
            rows += [(donor, ct)] * n_cells
    counts = np.vstack(blocks).astype(np.int32)
    obs = pd.DataFrame(rows, columns=["donor", "cell_type"])
    n = len(obs)
    low = rng.choice(n, 15, replace=False)
    counts[low] = rng.poisson(0.3, (len(low), n_genes))  # empty droplets
    damaged = rng.choice(np.setdiff1d(np.arange(n), low), 25, replace=False)
    counts[np.ix_(damaged, np.flatnonzero(is_mito))] += counts[damaged].sum(axis=1, keepdims=True) // 5
    obs.index = [f"cell{i:05d}" for i in range(n)]
    obs["condition"] = obs["donor"].map(condition)
    obs["sex"] = obs["donor"].map(sex)
    obs["barcode_umis"] = counts.sum(axis=1)  # a cell-level column that must not reach the donor table
    for col in ("donor", "cell_type", "condition", "sex"):
        obs[col] = obs[col].astype("category")
    return SimCohort(counts, obs, genes, np.sort(low), np.sort(damaged))


def _write(sim: SimCohort, path: Path, fmt: str = "csr", layer: bool = False) -> Path:
    counts = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "dense": np.asarray}[fmt](sim.counts)
    var = pd.DataFrame(index=pd.Index(sim.genes))
    if layer:  # normalised values in X, raw counts in a layer (the common scanpy layout)
        norm = sim.counts / np.maximum(sim.counts.sum(axis=1, keepdims=True), 1) * 1e4
        adata = ad.AnnData(X=sp.csr_matrix(np.log1p(norm)), obs=sim.obs, var=var, layers={"counts": counts})
    else:
        adata = ad.AnnData(X=counts, obs=sim.obs, var=var)
    adata.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def sim() -> SimCohort:
    return simulate_cells()


@pytest.fixture(scope="module")
def files(sim, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sc")
    return {
        "csr": _write(sim, d / "csr.h5ad"),
        "csc": _write(sim, d / "csc.h5ad", "csc"),
        "dense": _write(sim, d / "dense.h5ad", "dense"),
        "layer": _write(sim, d / "layer.h5ad", layer=True),
    }


def _dense_groupby(sim: SimCohort, keep: np.ndarray) -> pd.DataFrame:
    """Reference pseudobulk: an in-memory pandas groupby-sum over the kept cells."""
    frame = pd.DataFrame(sim.counts[keep].astype(np.int64), columns=sim.genes)
    labels = sim.obs.loc[keep]
    key = labels["donor"].astype(str).to_numpy() + "|" + labels["cell_type"].astype(str).to_numpy()
    return frame.groupby(key).sum()


@pytest.fixture(scope="module")
def qc(files):
    metrics = qc_metrics_backed(files["csr"], chunk_size=700)
    keep, summary = qc_mask(metrics, **QC)
    return metrics, keep, summary


@pytest.fixture(scope="module")
def pb(files, qc):
    return pseudobulk(files["csr"], ("donor", "cell_type"), qc[1], chunk_size=500)


def test_qc_metrics_match_scanpy_on_the_whole_matrix_and_flag_planted_cells(sim, files, qc):
    metrics, keep, summary = qc
    full = ad.AnnData(X=sp.csr_matrix(sim.counts), var=pd.DataFrame(index=sim.genes))
    full.var["mt"] = full.var_names.str.startswith("MT-")
    expected, _ = sc.pp.calculate_qc_metrics(
        full, qc_vars=["mt"], percent_top=None, log1p=False, inplace=False
    )
    np.testing.assert_allclose(metrics["total_counts"], expected["total_counts"])
    np.testing.assert_array_equal(metrics["n_genes_by_counts"], expected["n_genes_by_counts"])
    np.testing.assert_allclose(metrics["pct_counts_mt"], expected["pct_counts_mt"])
    removed = np.flatnonzero(~keep.to_numpy())
    # Every planted empty droplet and damaged cell is removed, and (almost) nothing else.
    assert set(sim.low_count_cells) | set(sim.damaged_cells) <= set(removed)
    assert len(removed) <= len(sim.low_count_cells) + len(sim.damaged_cells) + 5
    by_reason = summary.set_index("reason")["n_cells"]
    assert by_reason["total_counts < 300"] >= len(sim.low_count_cells)
    assert by_reason["pct_counts_mt > 20"] >= len(sim.damaged_cells)
    assert by_reason["removed (any reason)"] == len(removed)
    assert by_reason["kept"] == len(metrics) - len(removed)


def test_csc_and_dense_files_give_the_same_qc_metrics(files, qc):
    for fmt in ("csc", "dense"):
        other = qc_metrics_backed(files[fmt], chunk_size=300, max_nnz=20_000)
        pd.testing.assert_frame_equal(other, qc[0], check_dtype=False)


def test_pseudobulk_equals_dense_groupby_sum_exactly(sim, qc, pb):
    counts, meta = pb
    expected = _dense_groupby(sim, qc[1].to_numpy())
    assert counts.dtypes.eq(np.int64).all()
    pd.testing.assert_frame_equal(counts.loc[expected.index], expected, check_names=False)
    assert list(counts.index) == sorted(counts.index)
    # Every donor x cell type keeps a row; n_cells counts the kept cells, the rest are QC removals.
    sizes = sim.obs.groupby(["donor", "cell_type"], observed=True).size()
    assert len(meta) == len(sizes)
    assert (meta["n_cells"] + meta["n_cells_removed_qc"]).to_numpy().tolist() == [
        sizes[(d, c)] for d, c in zip(meta["donor"], meta["cell_type"], strict=True)
    ]


def test_chunking_and_storage_layout_do_not_change_the_sums(files, qc, pb):
    counts, meta = pb
    whole, whole_meta = pseudobulk(files["csr"], ("donor", "cell_type"), qc[1], chunk_size=10**7)
    tiny, _ = pseudobulk(files["csr"], ("donor", "cell_type"), qc[1], chunk_size=10**7, max_nnz=3_000)
    pd.testing.assert_frame_equal(whole, counts)
    pd.testing.assert_frame_equal(whole_meta, meta)
    pd.testing.assert_frame_equal(tiny, counts)
    for fmt in ("csc", "dense"):
        other, _ = pseudobulk(files[fmt], ("donor", "cell_type"), qc[1], chunk_size=333, max_nnz=50_000)
        pd.testing.assert_frame_equal(other, counts)


def test_counts_layer_is_read_and_normalised_x_is_refused(files, qc, pb):
    from_layer, _ = pseudobulk(files["layer"], ("donor", "cell_type"), qc[1], layer="counts")
    pd.testing.assert_frame_equal(from_layer, pb[0])
    layer_qc = qc_metrics_backed(files["layer"], layer="counts")
    pd.testing.assert_frame_equal(layer_qc, qc[0])
    with pytest.raises(InputError, match=r"layer\.h5ad \(X\).*not a non-negative integer.*\['counts'\]"):
        pseudobulk(files["layer"], ("donor", "cell_type"), qc[1])
    with pytest.raises(InputError, match="layer 'raw' not found"):
        qc_metrics_backed(files["layer"], layer="raw")
    with pytest.raises(InputError, match="obs has no column 'celltype'"):
        pseudobulk(files["csr"], ("donor", "celltype"))


def test_without_cell_types_one_all_cells_group_per_donor(sim, files):
    counts, meta = pseudobulk(files["csr"], ("donor", None))
    assert set(meta["cell_type"]) == {ALL_CELLS}
    assert sorted(meta["donor"]) == sorted(sim.obs["donor"].astype(str).unique())
    per_donor = (
        pd.DataFrame(sim.counts.astype(np.int64), columns=sim.genes)
        .groupby(sim.obs["donor"].astype(str).to_numpy())
        .sum()
    )
    pd.testing.assert_frame_equal(
        counts.set_axis(meta["donor"].to_numpy()).loc[per_donor.index], per_donor, check_names=False
    )


@pytest.fixture(scope="module")
def donor_obs(sim):
    table = donor_table(sim.obs, "donor", donor_level_fields(SPEC), source="sim")
    return define_contrast(table, SPEC, "sim")


def test_donor_table_is_one_row_per_donor_and_refuses_conflicting_severity(sim, donor_obs):
    assert len(donor_obs) == 14
    assert "barcode_umis" not in donor_obs.columns  # varies within donors
    assert donor_obs["severity"].value_counts().to_dict() == {"severe": 6, "mild": 6, "excluded": 2}
    broken = sim.obs.copy()
    broken["condition"] = broken["condition"].astype(str)
    broken.iloc[0, broken.columns.get_loc("condition")] = "Mild"  # a Severe donor's cell says Mild
    with pytest.raises(InputError, match="'condition' takes several values within a donor.*S1"):
        donor_table(broken, "donor", donor_level_fields(SPEC), source="sim")


def test_donor_sheet_adds_columns_and_must_agree_with_obs(sim):
    donors = sorted(sim.obs["donor"].astype(str).unique())
    sheet = pd.DataFrame({"age": np.arange(len(donors)) + 40}, index=donors)
    table = donor_table(sim.obs, "donor", sheet=sheet, source="sim")
    assert table.loc["S3", "age"] == 40 + donors.index("S3") and table.loc["S3", "condition"] == "Severe"
    sheet["sex"] = "female"  # obs says some donors are male
    with pytest.raises(InputError, match="column 'sex' differs between obs"):
        donor_table(sim.obs, "donor", sheet=sheet, source="sim")
    with pytest.raises(InputError, match=r"donors \['S1'\] are not rows of the donor sheet"):
        donor_table(sim.obs, "donor", sheet=sheet.drop(index="S1"), source="sim")


def test_filter_skips_thin_samples_and_cell_types_with_too_few_donors(pb, donor_obs):
    _, meta = pb
    kept, skipped = pseudobulk_filter(meta, 10, 3, donor_obs["severity"])
    assert "S1|B cell" not in kept.index and "S1|pDC" not in kept.index
    assert set(kept["cell_type"]) == set(CELL_TYPES)
    reasons = {(r.cell_type, r.donor): r.reason for r in skipped.itertuples()}
    assert reasons[("B cell", "S1")].endswith("< min_cells=10")
    assert reasons[("pDC", "")].startswith("donors with >= 10 cells: severe 1, mild 0")
    assert len(skipped) == 2
    # Raising min_donors above what B cells have (5 severe after dropping S1) drops the whole cell type.
    kept6, skipped6 = pseudobulk_filter(meta, 10, 6, donor_obs["severity"])
    assert set(kept6["cell_type"]) == {"monocyte", "T cell"}
    assert (
        "severe 5, mild 6; need >= 6 per group"
        in skipped6.set_index("cell_type").loc["B cell"].iloc[-1]["reason"]
    )


@pytest.fixture(scope="module")
def de_tables(pb, donor_obs):
    counts, meta = pb
    kept, _ = pseudobulk_filter(meta, 10, 2, donor_obs["severity"])
    out = {}
    for ct in ("monocyte", "T cell"):
        adata = celltype_adata(counts, kept, donor_obs, ct, cohort="sim", covariates=["sex"])
        out[ct] = (adata, run_deseq2(adata, ["sex"], FAST_DE).table.set_index("gene"))
    return out


def test_celltype_adata_has_the_bulk_cohort_layout(de_tables, donor_obs):
    adata, _ = de_tables["monocyte"]
    assert adata.X.dtype == np.int64 and adata.shape == (14, 137)
    assert list(adata.obs["severity"].cat.categories) == ["mild", "severe", "excluded"]
    assert adata.obs["sample_id"].tolist() == adata.obs_names.tolist()
    assert adata.uns["tissue"] == "single_cell_pseudobulk" and adata.uns["covariates"] == ["sex"]
    assert adata.uns["cell_type"] == "monocyte" and adata.obs["cell_type"].eq("monocyte").all()
    assert (adata.obs["severity"] == donor_obs.loc[adata.obs_names, "severity"]).all()
    assert adata.obs["n_cells"].between(70, 120).all()


def test_planted_cell_type_specific_effects_are_recovered(de_tables):
    mono = de_tables["monocyte"][1]
    tcell = de_tables["T cell"][1]
    assert (mono.loc[SET_A, "padj"] < 0.05).all() and (mono.loc[SET_A, "log2FoldChange"] > 0.6).all()
    assert (tcell.loc[SET_B, "padj"] < 0.05).all() and (tcell.loc[SET_B, "log2FoldChange"] > 0.8).all()
    # ...and only in their own cell type.
    assert not (tcell.loc[SET_A, "padj"] < 0.05).any()
    assert not (mono.loc[SET_B, "padj"] < 0.05).any()
    # Null genes: few false calls in either cell type.
    null = [g for g in mono.index if g not in SET_A + SET_B]
    assert (mono.loc[null, "padj"] < 0.05).sum() <= 3 and (tcell.loc[null, "padj"] < 0.05).sum() <= 3


def test_pathway_scores_see_the_planted_set_in_its_cell_type_only(de_tables):
    sets = {"set_a": SET_A, "set_b": SET_B, "too_small": ["MONOUP1", "NOT_A_GENE"]}
    results = {}
    for ct, (adata, _) in de_tables.items():
        scores = pathway_scores(adata, sets)
        results[ct] = pathway_table(adata, scores, ["sex"]).set_index("gene_set")
    assert (
        results["monocyte"].loc["set_a", "effect"] > 1 and results["monocyte"].loc["set_a", "pvalue"] < 1e-3
    )
    assert results["T cell"].loc["set_b", "effect"] > 1 and results["T cell"].loc["set_b", "pvalue"] < 1e-3
    assert (
        results["T cell"].loc["set_a", "pvalue"] > 0.01 and results["monocyte"].loc["set_b", "pvalue"] > 0.01
    )
    assert np.isnan(results["monocyte"].loc["too_small", "effect"])


def test_panel_subsample_is_seeded_and_normalised_like_scanpy(sim, files, qc, donor_obs):
    metrics, keep, _ = qc
    genes = ["MONOUP1", "TUP1", "GENE001", "ABSENT"]
    args = (files["csr"], genes, ("donor", "cell_type"), keep, donor_obs["severity"], metrics["total_counts"])
    cells = panel_subsample(*args, n_max=400, seed=3, chunk_size=250)
    again = panel_subsample(*args, n_max=400, seed=3)
    from_csc = panel_subsample(files["csc"], *args[1:], n_max=400, seed=3)
    assert cells.n_obs == 400 and list(cells.var_names) == genes[:3]
    assert keep[cells.obs_names].all()
    np.testing.assert_array_equal(cells.X, again.X)
    np.testing.assert_allclose(cells.X, from_csc.X)
    ref = ad.AnnData(X=sim.counts.astype(float), obs=sim.obs[[]], var=pd.DataFrame(index=sim.genes))
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    np.testing.assert_allclose(cells.X, ref[cells.obs_names, genes[:3]].X, rtol=1e-5)


def test_cohort_driver_writes_tables_and_figures(tmp_path):
    # Fewer genes than the other tests: pydeseq2 time grows with genes and this test fits three cell types.
    small = _write(simulate_cells(seed=8, n_other_genes=50), tmp_path / "small.h5ad")
    settings = SingleCellSettings.from_config(
        {"donor_key": "donor", "celltype_key": "cell_type", "qc": QC, "min_cells": 10, "chunk_size": 900}
    )
    result = build_pseudobulk("sim", SPEC, small, settings, plot_genes=SET_A + SET_B)
    slugs = write_pseudobulk(result, tmp_path)
    assert slugs == {"B cell": "B_cell", "T cell": "T_cell", "monocyte": "monocyte"}
    panel = pd.DataFrame({"symbol": SET_A + SET_B, "tier": "core", "role": "planted"})
    overview = analyse_celltypes("sim", tmp_path, panel, {"set_a": SET_A, "set_b": SET_B}, PLUMBING_DE)
    assert overview["n_severe"].tolist() == [5, 6, 6]  # S1 has 5 B cells
    panel_table = pd.read_csv(tmp_path / "de" / "monocyte" / "il6_panel.tsv", sep="\t").set_index("symbol")
    assert (panel_table.loc[SET_A, "padj_panel"] < 0.05).all()
    summary = json.loads((tmp_path / "de" / "T_cell" / "summary.json").read_text())
    assert summary["cell_type"] == "T cell" and summary["tissue"] == "single_cell_pseudobulk"
    for name in ("panel_dotplot", "panel_matrixplot", "pathway_scores", "volcano_monocyte"):
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 10_000
    skipped = pd.read_csv(tmp_path / "skipped_groups.tsv", sep="\t")
    assert set(skipped["cell_type"]) == {"B cell", "pDC"}
    with pytest.raises(InputError, match="unknown key"):
        SingleCellSettings.from_config({"donor_key": "donor", "min_cell": 3})


COMBAT_SPEC = {
    "severity": {
        "field": "condition", "severe": ["Covid_Critical"], "mild": ["Covid_Mild"], "exclude": ["Healthy"],
    },
}  # fmt: skip


def _combat(shared_data: Path) -> Path:
    return shared_data / "COMBAT_scRNA" / "COMBAT_scDAPP_subset_6donors.h5ad"


def test_combat_subset_qc_pseudobulk_and_deseq2(shared_data):
    path = _combat(shared_data)
    metrics = qc_metrics_backed(path, chunk_size=1000)
    assert len(metrics) == 4591
    # Column sums of X equal Seurat's nCount_RNA (PROVENANCE.md): the streamed totals must reproduce them.
    obs = read_obs(path)
    np.testing.assert_array_equal(metrics["total_counts"].to_numpy(), obs["nCount_RNA"].to_numpy())
    np.testing.assert_array_equal(metrics["n_genes_by_counts"].to_numpy(), obs["nFeature_RNA"].to_numpy())
    keep, summary = qc_mask(metrics, min_counts=500, min_genes=200, max_pct_mt=20)
    assert 0 < summary.set_index("reason").loc["removed (any reason)", "n_cells"] < 0.2 * len(metrics)
    counts, meta = pseudobulk(path, ("sample", None), keep, chunk_size=1500)
    assert set(meta["cell_type"]) == {"all_cells"} and len(meta) == 6
    assert int(counts.to_numpy().sum()) == int(metrics.loc[keep, "total_counts"].sum())
    # The upstream sample sheet joins on the donor and agrees with obs (Code == code, Condition == condition).
    sheet = read_donor_sheet(path.parent / "COMBAT_scDAPP_sample_metadata.csv.gz", "Sample")
    sheet = sheet.rename(columns={"Code": "code"})
    table = donor_table(obs, "sample", donor_level_fields(COMBAT_SPEC), sheet, source="COMBAT")
    assert (table["Condition"] == table["condition"]).all()
    donors = define_contrast(table, COMBAT_SPEC, "COMBAT")
    assert donors["severity"].astype(str).to_dict() == {
        "H00049": "excluded", "H00053": "excluded", "S00006": "mild", "S00016": "mild",
        "S00040": "severe", "S00043": "severe",
    }  # fmt: skip
    kept, skipped = pseudobulk_filter(meta, 10, 2, donors["severity"])
    assert skipped.empty
    adata = celltype_adata(counts, kept, donors, "all_cells", cohort="COMBAT")
    assert adata.uns["power_note"].startswith("2 severe vs 2 mild donors: underpowered")
    assert adata.X.dtype == np.int64 and adata.n_vars == 25456
    # pydeseq2 on all 25k genes takes minutes here (the e2e test does it); 250 well-expressed genes plus
    # the IL-6 core exercise the same code path.
    top = list(counts.sum(axis=0).nlargest(250).index)
    genes = list(dict.fromkeys([*top, "SOCS3", "STAT3", "IL6R", "IL6ST", "JAK1"]))
    result = run_deseq2(adata[:, genes].copy(), [], FAST_DE)
    assert result.n_per_group == {"mild": 2, "severe": 2}
    assert len(result.table) == len(genes) and result.table["pvalue"].notna().sum() > 200
    assert result.table.set_index("gene").loc["SOCS3", "tested"]


@pytest.mark.e2e
def test_combat_subset_runs_end_to_end_through_the_driver(shared_data, tmp_path, project_root):
    settings = SingleCellSettings(donor_key="sample", celltype_key=None, chunk_size=1000)
    panel = pd.read_csv(project_root / "resources" / "genesets" / "il6_core.tsv", sep="\t")
    result = build_pseudobulk("COMBAT", COMBAT_SPEC, _combat(shared_data), settings, list(panel["symbol"]))
    write_pseudobulk(result, tmp_path)
    sets = {tier: list(rows["symbol"]) for tier, rows in panel.groupby("tier")}
    overview = analyse_celltypes("COMBAT", tmp_path, panel, sets, FAST_DE)
    assert overview["power_note"].tolist() == [
        "2 severe vs 2 mild donors: underpowered; results exercise the code and support no inference"
    ]
    table = pd.read_csv(tmp_path / "de" / "all_cells" / "severe_vs_mild.tsv", sep="\t")
    assert len(table) == 25456 and table["tested"].sum() > 5000
    summary = json.loads((tmp_path / "de" / "all_cells" / "summary.json").read_text())
    assert summary["power_note"].endswith("support no inference")
    for name in ("panel_dotplot", "panel_matrixplot", "pathway_scores", "volcano_all_cells"):
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 10_000
