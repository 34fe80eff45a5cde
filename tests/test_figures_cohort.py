"""Per-cohort report figures and the QC tables behind them: each figure writes a real PNG + SVG, and the
QC tables (il6axis.analysis.qc) find what was planted.

A small simulated cohort (il6axis.acquire.demo) stands in for a real one: counts with planted severity and sex
effects, a recorded-sex label deliberately swapped on one sample, a log-count matrix standing in for
the VST, a DE table drawn around the planted truth, and the real panel / marker resources.
"""

from __future__ import annotations

import json
import re

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from planted_de import de_table_around_truth

from il6axis.acquire.demo import DemoSpec, simulate
from il6axis.analysis import qc
from il6axis.analysis.expression import normalised_counts, panel_expression, size_factors
from il6axis.analysis.scores import mean_z_scores, score_model
from il6axis.de.contract import benjamini_hochberg
from il6axis.errors import InputError
from il6axis.figures import de as plots
from il6axis.figures import panel
from il6axis.figures import qc as fqc
from il6axis.figures.common import format_estimate, log_scale_name, read_summary
from il6axis.figures.scores import pathway_score_boxes, pathway_scores_figure
from il6axis.figures.style import save

SWAPPED = "DEMO003"  # recorded sex flipped on this sample: the sex check must flag it
SUMMARY = {"cohort": "testcoh"}  # what the QC figures need of the DE summary (contrast: severe vs mild)


def _png_ok(path) -> None:
    with Image.open(path) as img:
        assert img.width > 400 and img.height > 400, img.size
        pixels = np.asarray(img.convert("L"), dtype=float)
    assert pixels.std() > 10, "image is (nearly) blank"


def _svg_ok(path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "<svg" in text and len(text) > 5000


def _figure_text(fig) -> str:
    """All text drawn in a figure (titles, labels, annotations, legends, tick labels)."""
    return "\n".join(t.get_text() for t in fig.findobj(match=lambda a: hasattr(a, "get_text")))


@pytest.fixture(scope="module")
def resources(project_root):
    panel = pd.read_csv(project_root / "resources/genesets/il6_core.tsv", sep="\t")
    markers = pd.read_csv(project_root / "resources/genesets/severity_sanity_markers.tsv", sep="\t")
    return panel, markers


@pytest.fixture(scope="module")
def cohort(resources):
    """Cohort AnnData (all samples, raw counts) with one recorded sex swapped."""
    panel, markers = resources
    named = [*panel["symbol"], *markers["symbol"]]
    demo = simulate(named, DemoSpec(n_genes=400, n_severe=8, n_mild=7, n_healthy=3, seed=7))
    samples = demo.samples.set_index("sample_id", drop=False)
    severity = samples["group"].map({"severe": "severe", "mild": "mild", "healthy": "excluded"})
    sex = samples["sex"].copy()
    sex[SWAPPED] = "female" if sex[SWAPPED] == "male" else "male"
    obs = pd.DataFrame(
        {
            "sample_id": samples["sample_id"],
            "severity": pd.Categorical(severity, categories=["mild", "severe", "excluded"]),
            "age": samples["age"].astype(float),
            "sex": pd.Categorical(sex, categories=["female", "male", "unknown"]),
        },
        index=samples.index,
    )
    adata = ad.AnnData(X=demo.counts.T.to_numpy(), obs=obs, var=pd.DataFrame(index=demo.counts.index))
    adata.uns.update({"cohort": "testcoh", "covariates": ["age", "sex"], "tissue": "whole_blood"})
    return adata, demo.truth.set_index("gene")


@pytest.fixture(scope="module")
def expression(cohort):
    """Contrast samples with 'normalised' and a log2 stand-in for the 'vst' layer (needs only a log scale)."""
    adata, _ = cohort
    sub = adata[adata.obs["severity"].isin(["mild", "severe"])].copy()
    counts = pd.DataFrame(sub.X, index=sub.obs_names, columns=sub.var_names)
    sf = size_factors(counts)
    norm = normalised_counts(counts, sf)
    sub.layers["normalised"] = norm.to_numpy()
    sub.layers["vst"] = np.log2(norm.to_numpy() + 1.0)
    sub.obs["size_factor"] = sf
    return sub, counts, sf


@pytest.fixture(scope="module")
def de_files(cohort, resources, tmp_path_factory):
    """severe_vs_mild.tsv / il6_panel.tsv / summary.json drawn around the planted log2 fold changes."""
    adata, truth = cohort
    panel, _ = resources
    table = de_table_around_truth(truth, seed=3)
    low = table["baseMean"] < 5  # IL6, CRP, ... : filtered like the real low-count filter
    table.loc[low, ["log2FoldChange", "lfcSE", "ci_low", "ci_high", "stat", "pvalue", "padj"]] = np.nan
    table.loc[low, "tested"] = False
    table.loc[low, "not_tested_reason"] = "below expression filter"
    panel_de = panel[["symbol", "tier", "role"]].merge(table, left_on="symbol", right_on="gene", how="left")
    panel_de["present"] = panel_de["symbol"].isin(set(adata.var_names))
    panel_de["padj_panel"] = benjamini_hochberg(panel_de["pvalue"])
    out = tmp_path_factory.mktemp("de")
    table.to_csv(out / "severe_vs_mild.tsv", sep="\t", index=False)
    panel_de.drop(columns="gene").to_csv(out / "il6_panel.tsv", sep="\t", index=False)
    n = adata.obs["severity"].value_counts()
    summary = {
        "cohort": "testcoh",
        "design": "~ age + sex + severity",
        "n_per_group": {"mild": int(n["mild"]), "severe": int(n["severe"])},
        "alpha": 0.05,
        "tissue": "whole_blood",
    }
    (out / "summary.json").write_text(json.dumps(summary))
    return out


# ---------------------------------------------------------------------------------------------------
# QC
# ---------------------------------------------------------------------------------------------------


def test_library_sizes_writes_png_and_svg(cohort, tmp_path):
    adata, _ = cohort
    table = qc.library_table(adata)
    save(fqc.library_sizes(table, SUMMARY), [tmp_path / "lib.png", tmp_path / "lib.svg"])
    _png_ok(tmp_path / "lib.png")
    _svg_ok(tmp_path / "lib.svg")
    assert table.loc[adata.obs_names[0], "total_millions"] == pytest.approx(adata.X[0].sum() / 1e6)
    assert (table["detected_genes"] == (adata.X > 0).sum(axis=1)).all()
    assert (table["genes_in_matrix"] == adata.n_vars).all() and not table["low_library"].any()


def test_library_sizes_labels_a_shallow_sample(cohort):
    adata, _ = cohort
    shallow = adata.copy()
    shallow.X[4] = shallow.X[4] // 20  # ~5% of the median library: must be labelled
    table = qc.library_table(shallow)
    assert list(table.index[table["low_library"]]) == [shallow.obs_names[4]]
    fig = fqc.library_sizes(table, SUMMARY)
    assert shallow.obs_names[4] in _figure_text(fig)
    assert adata.obs_names[5] not in _figure_text(fqc.library_sizes(qc.library_table(adata), SUMMARY))


def test_sex_check_without_recorded_sex_makes_no_discordance_call(cohort, resources):
    adata, _ = cohort
    _, markers = resources
    sub = adata.copy()
    del sub.obs["sex"]
    sub.uns["covariates"] = ["age"]
    table, check = qc.sex_check_table(sub, markers)
    assert check["recorded_sex_column"] is None and check["status"] == "no_recorded_sex"
    assert (table["agreement"] == "not_recorded").all() and not check["discordant_samples"]
    assert set(table["inferred_sex"]) <= {"female", "male"}
    assert "no recorded sex in the metadata" in _figure_text(fqc.sex_check(table, check, SUMMARY))


def test_sex_check_flags_the_planted_swap(cohort, resources, tmp_path):
    adata, _ = cohort
    _, markers = resources
    table, check = qc.sex_check_table(adata, markers)
    assert check["recorded_sex_column"] == "sex" and check["status"] == "checked"
    assert list(table.index[table["agreement"] == "discordant"]) == [SWAPPED]
    assert check["discordant_samples"] == [SWAPPED] and check["agreement"]["discordant"] == 1
    # Every other sample's expression call matches its (true) recorded sex.
    others = table.drop(index=SWAPPED)
    assert (others["inferred_sex"] == others["recorded_sex"]).all() and (others["agreement"] == "agree").all()
    assert check["female_markers"] == ["XIST"] and check["male_markers"] == ["RPS4Y1"]
    fig = fqc.sex_check(table, check, SUMMARY)
    assert SWAPPED in _figure_text(fig)
    save(fig, [tmp_path / "sex.png", tmp_path / "sex.svg"])
    _png_ok(tmp_path / "sex.png")
    _svg_ok(tmp_path / "sex.svg")


@pytest.mark.parametrize(
    ("dropped", "expected"),
    [(["XIST", "RPS4Y1"], "XIST and RPS4Y1 absent"), (["RPS4Y1"], "RPS4Y1 absent")],
)
def test_sex_check_without_marker_genes_says_why(cohort, resources, tmp_path, dropped, expected):
    adata, _ = cohort
    _, markers = resources
    sub = adata[:, ~adata.var_names.isin(dropped)].copy()
    table, check = qc.sex_check_table(sub, markers)
    assert (table["inferred_sex"] == "not_called").all() and (table["agreement"] == "no_call").all()
    assert check["status"] == "markers_missing"
    fig = fqc.sex_check(table, check, SUMMARY)
    assert expected in _figure_text(fig)
    fig.savefig(tmp_path / "sex.png", dpi=150)
    _png_ok(tmp_path / "sex.png")


def test_cohort_qc_writes_the_tables_the_figures_read(cohort, expression, resources, tmp_path):
    """Rule cohort_qc's files: the planted swap is in sex_check.tsv and its summary, the tables read back
    as they were computed, and the QC figures draw from the files alone."""
    adata, _ = cohort
    adata = adata.copy()
    adata.obs_names = [f"00{i}" for i in range(adata.n_obs)]  # numeric-looking ids stay text
    swapped = adata.obs_names[list(cohort[0].obs_names).index(SWAPPED)]
    sub = expression[0].copy()
    adata.write_h5ad(tmp_path / "cohort.h5ad")
    sub.write_h5ad(tmp_path / "expression.h5ad")
    outputs = qc.CohortQcOutputs(*(tmp_path / name for name in (
        "library_sizes.tsv", "sex_check.tsv", "sex_check.json", "pca.tsv", "pca_variance.tsv")))  # fmt: skip
    markers = tmp_path / "markers.tsv"
    resources[1].to_csv(markers, sep="\t", index=False)
    qc.write_cohort_qc(tmp_path / "cohort.h5ad", tmp_path / "expression.h5ad", markers, outputs)

    sex = fqc.read_qc_table(outputs.sex_check, fqc.SEX_COLUMNS)
    assert list(sex.index) == list(adata.obs_names)
    assert list(sex.index[sex["agreement"] == "discordant"]) == [swapped]
    check = json.loads(outputs.sex_check_summary.read_text())
    assert check["discordant_samples"] == [swapped] and check["n_samples"] == adata.n_obs
    assert check["recorded"]["female"] + check["recorded"]["male"] == adata.n_obs
    library = fqc.read_qc_table(outputs.library_sizes, fqc.LIBRARY_COLUMNS)
    pd.testing.assert_frame_equal(library, qc.library_table(adata), check_dtype=False)
    pca = fqc.read_qc_table(outputs.pca, fqc.PCA_COLUMNS)
    variance = fqc.read_qc_table(outputs.pca_variance, fqc.PCA_VARIANCE_COLUMNS, index=False)
    assert len(pca) == sub.n_obs and list(pca.columns[2:12]) == [f"PC{i}" for i in range(1, 11)]
    assert len(variance) == sub.n_obs and variance["variance_fraction"].sum() == pytest.approx(1.0)
    assert swapped in _figure_text(fqc.sex_check(sex, check, SUMMARY))
    fqc.library_sizes(library, SUMMARY)
    fqc.pca_plot(pca, variance, SUMMARY)
    with pytest.raises(InputError, match="lacks column"):
        fqc.read_qc_table(outputs.pca_variance, fqc.PCA_COLUMNS)


# Reads QC of a cohort counted from reads: thresholds of the test, the planted failures.
MIN_RATE, MIN_PAIRS = 0.5, 5_000_000
LOW_RATE_SAMPLE, FEW_PAIRS_SAMPLE = 2, 9  # positions in the cohort


def _sample_qc(adata: ad.AnnData, path) -> pd.DataFrame:
    """sample_qc.tsv (rule tximport) for the cohort's samples, named by library (obs ``library_name``),
    with one low mapping rate and one shallow sample planted, and one reads sample not in the cohort."""
    n = adata.n_obs
    rate = np.linspace(0.82, 0.93, n)
    rate[LOW_RATE_SAMPLE] = 0.31
    fragments = np.full(n, 20_000_000)
    fragments[FEW_PAIRS_SAMPLE] = 3_100_000
    table = pd.DataFrame(
        {
            "sample": [*adata.obs["library_name"], "L_not_in_cohort"],
            "runs": "R",
            "n_runs": 1,
            "reads_before_filtering": [*(2.1 * fragments).astype(int), 1000],
            "reads_after_filtering": [*(2 * fragments).astype(int), 900],
            "fragments_processed": [*fragments, 450],
            "fragments_mapped": [*(rate * fragments).astype(int), 400],
            "mapping_rate": [*rate, 0.89],
            "libtype_detected": "ISR",
            "strandedness_detected": "reverse",
        }
    )
    table["low_mapping_rate"] = table["mapping_rate"] < MIN_RATE
    table["low_library_size"] = table["fragments_processed"] < MIN_PAIRS
    table.to_csv(path, sep="\t", index=False)
    return table


@pytest.fixture
def reads_cohort(cohort, tmp_path):
    """The test cohort as if counted from reads: its reads samples are named by library, not by sample id
    (matched through the obs column ``library_name``), and its sample_qc.tsv."""
    adata = cohort[0].copy()
    adata.obs["library_name"] = [f"L{i:03d}" for i in range(adata.n_obs)]
    _sample_qc(adata, tmp_path / "sample_qc.tsv")
    reads = qc.ReadsQcInput(tmp_path / "sample_qc.tsv", MIN_RATE, MIN_PAIRS)
    return adata, reads


def test_reads_qc_joins_mapping_rate_and_flags_to_the_cohort_samples(reads_cohort):
    adata, reads = reads_cohort
    library = qc.with_reads_qc(qc.library_table(adata), adata.obs, reads, 0.3)
    assert list(library.index) == list(adata.obs_names)  # the extra reads sample is not in the cohort
    assert list(library["reads_sample"]) == list(adata.obs["library_name"])
    low_rate, few_pairs = adata.obs_names[LOW_RATE_SAMPLE], adata.obs_names[FEW_PAIRS_SAMPLE]
    assert list(library.index[library["low_mapping_rate"]]) == [low_rate]
    assert list(library.index[library["low_read_pairs"]]) == [few_pairs]
    assert library.loc[low_rate, "mapping_rate"] == pytest.approx(0.31)
    assert library.loc[low_rate, "reads_flags"] == "mapping rate 31% < 50%"
    assert library.loc[few_pairs, "reads_flags"] == "3.1 M fragments < 5 M"
    assert (library.drop(index=[low_rate, few_pairs])["reads_flags"] == "").all()
    assert (library["min_library_fraction"] == 0.3).all() and (library["libtype_detected"] == "ISR").all()
    # Flagged, never dropped: every sample keeps its severity and library columns.
    pd.testing.assert_frame_equal(library[list(fqc.LIBRARY_COLUMNS[1:])], qc.library_table(adata))


def test_reads_qc_refuses_stale_or_foreign_tables(reads_cohort, tmp_path):
    adata, reads = reads_cohort
    table = pd.read_csv(reads.path, sep="\t")
    stale = tmp_path / "stale.tsv"
    table.assign(low_mapping_rate=False).to_csv(stale, sep="\t", index=False)
    with pytest.raises(
        InputError, match=r"stale.tsv: column 'low_mapping_rate' disagrees .* rerun rule tximport"
    ):
        qc.with_reads_qc(qc.library_table(adata), adata.obs, qc.ReadsQcInput(stale, MIN_RATE, MIN_PAIRS))
    short = tmp_path / "short.tsv"
    table.drop(index=[4]).to_csv(short, sep="\t", index=False)
    with pytest.raises(
        InputError, match=rf"short.tsv: cohort sample\(s\) \['{adata.obs_names[4]}'\] have no row"
    ):
        qc.with_reads_qc(qc.library_table(adata), adata.obs, qc.ReadsQcInput(short, MIN_RATE, MIN_PAIRS))


def test_library_figure_of_a_reads_cohort_shows_mapping_rate_and_flags(reads_cohort, tmp_path):
    adata, reads = reads_cohort
    library = qc.with_reads_qc(qc.library_table(adata), adata.obs, reads, 0.3)
    fig = fqc.library_sizes(library, SUMMARY)
    text = _figure_text(fig)
    assert len(fig.axes) == 3 and fig.axes[2].get_ylabel() == "salmon mapping rate (% of fragments)"
    assert fig.axes[2].get_ylim() == (0, 102) and "flag below 50%" in text
    for position in (LOW_RATE_SAMPLE, FEW_PAIRS_SAMPLE):
        assert adata.obs_names[position] in text
    assert "ringed = flagged (2)" in text and "counted from reads" in text
    assert f"all {adata.n_obs} samples" in text
    save(fig, [tmp_path / "lib_reads.png", tmp_path / "lib_reads.svg"])
    _png_ok(tmp_path / "lib_reads.png")
    _svg_ok(tmp_path / "lib_reads.svg")
    # A cohort not from reads keeps its two panels.
    assert len(fqc.library_sizes(qc.library_table(adata), SUMMARY).axes) == 2
    plt.close("all")


def test_low_library_fraction_default_is_the_schemas(project_root):
    import yaml

    schema = yaml.safe_load((project_root / "workflow/schemas/config.schema.yaml").read_text())
    assert (
        schema["properties"]["qc"]["properties"]["min_library_fraction"]["default"] == qc.LOW_LIBRARY_FRACTION
    )


def test_pca_of_too_few_samples_says_so(expression):
    sub = expression[0][:2].copy()
    table, variance = qc.pca_table(sub)
    assert len(table) == 2 and table["PC1"].isna().all() and variance.empty
    assert "PCA needs at least 3 samples" in _figure_text(fqc.pca_plot(table, variance, SUMMARY))


def test_recorded_sex_falls_back_to_geo_characteristics():
    obs = pd.DataFrame(
        {"title": ["a", "b", "c"], "characteristics_ch1.1": ["gender: M", "gender: F", "gender: unknown"]}
    )
    sex, column = qc.recorded_sex(obs, covariates=[])
    assert column == "characteristics_ch1.1"
    assert sex.tolist() == ["male", "female", "unknown"]
    assert qc.recorded_sex(pd.DataFrame({"x": [1, 2]}))[0] is None


def test_recorded_sex_sets_unknown_spellings_aside_without_failing():
    """A QC check compares, it never drops a sample: a spelling the workflow does not know is 'unknown'
    (the DE covariate, by contrast, raises on it: il6axis.acquire.geo_metadata.normalise_sex)."""
    obs = pd.DataFrame({"Gender": ["Woman", "man", "sex: F", "intersex?", None]})
    sex, column = qc.recorded_sex(obs)
    assert column == "Gender" and sex.tolist() == ["female", "male", "female", "unknown", "unknown"]


def test_infer_sex_calls_and_ambiguity():
    female = pd.Series([7.0, 0.2, 0.1, 6.0])
    male = pd.Series([0.0, 8.0, 0.3, 6.5])
    assert qc.infer_sex(female, male).tolist() == ["female", "male", "ambiguous", "ambiguous"]


def test_pca_recovers_planted_groups_and_labels_variance(tmp_path):
    rng = np.random.default_rng(0)
    n, genes = 20, 800
    groups = np.array(["mild"] * 10 + ["severe"] * 10)
    x = rng.normal(0, 0.3, (n, genes))
    x[groups == "severe", :100] += 3.0  # a strong planted group effect on 100 genes
    vst = pd.DataFrame(x, index=[f"S{i:02d}" for i in range(n)], columns=[f"G{j}" for j in range(genes)])
    coords, ratio = qc.pca_vst(vst, n_top=500)
    assert ratio.sum() == pytest.approx(1.0)
    assert abs(np.corrcoef(coords["PC1"], groups == "severe")[0, 1]) > 0.95
    obs = pd.DataFrame({"severity": pd.Categorical(groups), "sex": ["female", "male"] * 10}, index=vst.index)
    adata = ad.AnnData(X=np.zeros((n, genes)), obs=obs, var=pd.DataFrame(index=vst.columns))
    adata.layers["vst"] = vst.to_numpy()
    adata.uns.update({"cohort": "pcacoh", "covariates": ["sex"]})
    table, variance = qc.pca_table(adata)
    assert table["PC1"].to_numpy() == pytest.approx(coords["PC1"].to_numpy())
    assert variance["variance_fraction"].to_numpy() == pytest.approx(ratio)
    assert (variance["genes_used"] == 500).all() and not table["outlier"].any()
    fig = fqc.pca_plot(table, variance, {"cohort": "pcacoh"})
    ax = fig.axes[0]
    shares = [
        float(re.search(r"\(([\d.]+)% variance\)", lab).group(1))
        for lab in (ax.get_xlabel(), ax.get_ylabel())
    ]
    assert shares[0] >= shares[1] and sum(shares) <= 100
    assert shares[0] == pytest.approx(100 * ratio[0], abs=0.05)
    save(fig, [tmp_path / "pca.png", tmp_path / "pca.svg"])
    _png_ok(tmp_path / "pca.png")
    _svg_ok(tmp_path / "pca.svg")


# ---------------------------------------------------------------------------------------------------
# DE
# ---------------------------------------------------------------------------------------------------


def _de_inputs(de_files):
    """The DE table, panel table and summary as the plot_cohort job loads them."""
    return (
        plots.load_de(de_files / "severe_vs_mild.tsv"),
        pd.read_csv(de_files / "il6_panel.tsv", sep="\t"),
        read_summary(de_files / "summary.json"),
    )


def test_de_figures_write_png_and_svg(de_files, tmp_path):
    table, panel, summary = _de_inputs(de_files)
    save(
        plots.volcano_figure(table, panel, summary, 0.05),
        [tmp_path / "volcano.png", tmp_path / "volcano.svg"],
    )
    save(plots.ma_figure(table, panel, summary, 0.05), [tmp_path / "ma.png", tmp_path / "ma.svg"])
    save(plots.pvalue_histogram_figure(table, summary), [tmp_path / "p.png", tmp_path / "p.svg"])
    for name in ("volcano", "ma", "p"):
        _png_ok(tmp_path / f"{name}.png")
        _svg_ok(tmp_path / f"{name}.svg")


def test_pvalue_histogram_counts_tested_genes_and_expectation():
    rng = np.random.default_rng(1)
    p = np.concatenate([rng.uniform(size=900), rng.uniform(0, 0.01, size=100)])
    table = pd.DataFrame({"pvalue": np.append(p, np.nan), "tested": [True] * 1000 + [False]})
    fig = plots.pvalue_histogram(table, "t")
    ax = fig.axes[0]
    heights = [patch.get_height() for patch in ax.patches]
    assert len(heights) == 20 and sum(heights) == 1000
    assert heights[0] > 100  # the planted signal piles up in the first bin
    assert ax.lines[0].get_ydata()[0] == pytest.approx(1000 / 20)
    assert plots.storey_pi0(p) == pytest.approx(0.9, abs=0.06)


def test_volcano_clips_extreme_fold_changes_to_the_edge():
    lfc = np.r_[np.linspace(-2, 2, 2000), 25.0]
    table = pd.DataFrame({"gene": [f"G{i}" for i in range(2001)], "log2FoldChange": lfc})
    table["pvalue"] = 0.5
    table["padj"] = 0.9
    fig = plots.volcano(table, [], 0.05, "t")
    low, high = fig.axes[0].get_xlim()
    assert high < 5 and "drawn at the edge (n=1)" in _figure_text(fig)


# ---------------------------------------------------------------------------------------------------
# IL-6 panel and pathway scores
# ---------------------------------------------------------------------------------------------------


def test_panel_figures_write_png_and_svg(expression, de_files, tmp_path):
    sub, counts, sf = expression
    _, panel_de, summary = _de_inputs(de_files)
    save(panel.panel_heatmap_figure(sub, panel_de, summary, 0.05), [tmp_path / "h.png", tmp_path / "h.svg"])
    genes = ["IL6", "IL6R", "SOCS3", "NOTAGENE"]
    save(panel.panel_genes_figure(sub, panel_de, summary, genes), [tmp_path / "g.png", tmp_path / "g.svg"])
    vst = pd.DataFrame(sub.layers["vst"], index=sub.obs_names, columns=sub.var_names)
    expr = panel_de[["symbol", "tier", "role"]].merge(
        panel_expression(counts, sub.obs, sf, vst, [*panel_de["symbol"], "NOTAGENE"]),
        left_on="symbol",
        right_on="gene",
        how="right",
    )
    expr["symbol"] = expr["gene"]
    save(
        panel.panel_detection_figure(expr, summary, genes=["IL6", "IL6R", "NOTAGENE"]),
        [tmp_path / "d.png", tmp_path / "d.svg"],
    )
    for name in ("h", "g", "d"):
        _png_ok(tmp_path / f"{name}.png")
        _svg_ok(tmp_path / f"{name}.svg")
    # The absent gene keeps its slot, labelled, in the detection and per-gene figures.
    fig = panel.panel_detection(expr, ["IL6", "NOTAGENE"], "t")
    assert "absent from\nthe matrix" in _figure_text(fig)
    fig = panel.panel_gene_boxes(sub, panel_de, ["NOTAGENE"], "t")
    assert "absent from the\ncount matrix" in _figure_text(fig)


def test_de_annotation_reports_estimate_or_reason(de_files):
    panel_de = pd.read_csv(de_files / "il6_panel.tsv", sep="\t").set_index("symbol")
    socs3 = panel_de.loc["SOCS3"]
    text = panel.de_annotation(socs3)
    assert text.startswith(f"log2FC {socs3['log2FoldChange']:.2f} [{socs3['ci_low']:.2f}, ")
    assert "panel q" in text
    assert panel.de_annotation(panel_de.loc["IL6"]) == "not tested:\nbelow expression filter"
    assert format_estimate(-0.001) == "0.00"


def test_pathway_scores_figure_annotates_the_model(expression, de_files, tmp_path):
    sub, _, _ = expression
    vst = pd.DataFrame(sub.layers["vst"], index=sub.obs_names, columns=sub.var_names)
    sets = {"planted_up": ["SOCS3", "CEBPD", "IL1R2", "ARG1"], "null_set": ["IL6ST", "JAK1", "TYK2", "STAT1"]}
    scores, _ = mean_z_scores(vst, sets)
    models = score_model(scores, sub.obs, ["age"])
    models["method"] = "mean_z"
    long = scores.rename_axis("sample_id").reset_index().melt("sample_id", var_name="set", value_name="score")
    long["severity"] = sub.obs.loc[long["sample_id"], "severity"].astype(str).to_numpy()
    long["method"] = "mean_z"
    save(
        pathway_scores_figure(long, models, read_summary(de_files / "summary.json")),
        [tmp_path / "s.png", tmp_path / "s.svg"],
    )
    _png_ok(tmp_path / "s.png")
    _svg_ok(tmp_path / "s.svg")
    row = models.set_index("set").loc["planted_up"]
    assert row["effect"] > 0 and row["padj"] < 0.05  # the planted up-regulated set is found
    fig = pathway_score_boxes(long, models, "t")
    assert f"Δ {row['effect']:.2f} [" in _figure_text(fig)


def test_reruns_write_byte_identical_svg_and_png(de_files, tmp_path):
    digests = []
    for run in ("a", "b"):
        outs = [tmp_path / f"{run}.svg", tmp_path / f"{run}.png"]
        table, panel, summary = _de_inputs(de_files)  # read afresh, as a rerun would
        save(plots.volcano_figure(table, panel, summary, 0.05), outs)
        digests.append([p.read_bytes() for p in outs])
    assert digests[0] == digests[1]


def test_normalised_cohort_figures_name_their_scale() -> None:
    """A cohort with normalised values only: labels say log2(normalised + 1), not VST or read counts."""
    assert log_scale_name({"scale": "log2_normalised"}) == "log2(normalised + 1)"
    assert log_scale_name({"scale": "log2_counts"}) == "VST"
    rng = np.random.default_rng(3)
    values = rng.gamma(2.0, 50.0, size=(12, 40))
    obs = pd.DataFrame(
        {
            "severity": pd.Categorical(
                ["mild"] * 6 + ["severe"] * 6, categories=["mild", "severe", "excluded"]
            )
        },
        index=[f"s{i}" for i in range(12)],
    )
    adata = ad.AnnData(X=values, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(40)]))
    adata.uns.update({"cohort": "tmm", "value_type": "normalised", "covariates": []})
    summary = {"cohort": "tmm", "value_type": "normalised"}
    fig = fqc.library_sizes(qc.library_table(adata), summary)
    assert fig.axes[0].get_ylabel() == "sum of normalised values (millions)"
    adata.layers["vst"] = np.log2(values + 1)
    fig = fqc.pca_plot(*qc.pca_table(adata), summary)
    assert "PCA of log2(normalised + 1) expression" in fig.axes[0].get_title()


def test_every_figure_names_the_declared_contrast(cohort, expression, de_files, resources):
    """A cohort whose reference slot holds healthy donors: no figure may call its groups severe / mild."""
    from il6axis.cohort.contrast import Contrast

    declared = Contrast("disease_vs_healthy", "acute COVID-19", "healthy donors")
    adata = cohort[0].copy()
    adata.uns["contrast"] = declared.to_uns()
    sub = expression[0].copy()
    sub.uns["contrast"] = declared.to_uns()
    table, panel_de, summary = _de_inputs(de_files)
    summary = {**summary, "contrast": declared.to_dict(summary["n_per_group"])}
    n_case, n_ref = summary["n_per_group"]["severe"], summary["n_per_group"]["mild"]
    head = f"testcoh: acute COVID-19 (n={n_case}) vs healthy donors (n={n_ref})"
    vst = pd.DataFrame(sub.layers["vst"], index=sub.obs_names, columns=sub.var_names)
    scores, _ = mean_z_scores(vst, {"set_a": ["SOCS3", "CEBPD", "IL1R2", "ARG1"]})
    models = score_model(scores, sub.obs, ["age"]).assign(method="mean_z")
    long = scores.rename_axis("sample_id").reset_index().melt("sample_id", var_name="set", value_name="score")
    long["severity"] = sub.obs.loc[long["sample_id"], "severity"].astype(str).to_numpy()
    figures = {
        "library": fqc.library_sizes(qc.library_table(adata), summary),
        "sex": fqc.sex_check(*qc.sex_check_table(adata, resources[1]), summary),
        "pca": fqc.pca_plot(*qc.pca_table(sub), summary),
        "volcano": plots.volcano_figure(table, panel_de, summary, 0.05),
        "ma": plots.ma_figure(table, panel_de, summary, 0.05),
        "pvalues": plots.pvalue_histogram_figure(table, summary),
        "heatmap": panel.panel_heatmap_figure(sub, panel_de, summary, 0.05),
        "genes": panel.panel_genes_figure(sub, panel_de, summary, ["SOCS3", "IL6R"]),
        "scores": pathway_scores_figure(long.assign(method="mean_z"), models, summary),
    }
    for name, fig in figures.items():
        text = " ".join(_figure_text(fig).split())  # long tick labels are wrapped
        assert "not a severity contrast" in text, name
        assert re.search(r"\b(mild|severe) \(n=", text) is None, (name, re.findall(r"\w+ \(n=\d+\)", text))
        if name not in ("library", "sex"):  # those count every sample, excluded ones too
            assert head in text, name
    groups = " ".join(_figure_text(figures["genes"]).split())
    assert f"acute COVID-19 (n={n_case})" in groups and f"healthy donors (n={n_ref})" in groups
    assert "up in acute COVID-19" in _figure_text(figures["volcano"])
    assert "log2 fold change, acute COVID-19 vs healthy donors (MLE)" in _figure_text(figures["volcano"])
    assert "Δ = acute COVID-19 − healthy donors" in _figure_text(figures["scores"])
