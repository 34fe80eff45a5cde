"""The per-cohort plotting stage as one job: every figure from one read of each input, drawn fast
without changing what the figures show (box geometry, log ticks, crop, label placement, determinism).

A small simulated cohort (il6axis.acquire.demo) with planted severity effects stands in for a real one; the DE
table is drawn around the planted fold changes, and the expression / score files come from the
project's own functions, so the figures see the workflow's file layouts.
"""

from __future__ import annotations

import dataclasses
import json

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from planted_de import de_table_around_truth

from il6axis.acquire.demo import DemoSpec, simulate
from il6axis.analysis.expression import normalised_counts, panel_expression, size_factors
from il6axis.analysis.qc import CohortQcOutputs, write_cohort_qc
from il6axis.analysis.scores import mean_z_scores, score_model
from il6axis.figures import cohort as fc
from il6axis.figures import common
from il6axis.figures.registry import COHORT_FIGURES, COHORT_INPUTS, input_names
from il6axis.figures.style import save


@pytest.fixture(scope="module")
def cohort_files(project_root, tmp_path_factory):
    """Every input of write_cohort_figures (name -> path), written in the workflow's layouts."""
    out = tmp_path_factory.mktemp("cohort_inputs")
    panel = pd.read_csv(project_root / "resources/genesets/il6_core.tsv", sep="\t")
    markers_path = project_root / "resources/genesets/severity_sanity_markers.tsv"
    markers = pd.read_csv(markers_path, sep="\t")
    demo = simulate(
        [*panel["symbol"], *markers["symbol"]],
        DemoSpec(n_genes=300, n_severe=7, n_mild=6, n_healthy=2, seed=11),
    )
    samples = demo.samples.set_index("sample_id", drop=False)
    severity = samples["group"].map({"severe": "severe", "mild": "mild", "healthy": "excluded"})
    obs = pd.DataFrame(
        {
            "sample_id": samples["sample_id"],
            "severity": pd.Categorical(severity, categories=["mild", "severe", "excluded"]),
            "age": samples["age"].astype(float),
            "sex": pd.Categorical(samples["sex"], categories=["female", "male", "unknown"]),
        },
        index=samples.index,
    )
    uns = {"cohort": "plotcoh", "covariates": ["age", "sex"], "tissue": "whole_blood"}
    adata = ad.AnnData(X=demo.counts.T.to_numpy(), obs=obs, var=pd.DataFrame(index=demo.counts.index))
    adata.uns.update(uns)
    adata.write_h5ad(out / "cohort.h5ad")

    sub = adata[adata.obs["severity"].isin(["mild", "severe"])].copy()
    counts = pd.DataFrame(sub.X, index=sub.obs_names, columns=sub.var_names)
    sf = size_factors(counts)
    norm = normalised_counts(counts, sf)
    sub.layers["normalised"] = norm.to_numpy()
    sub.layers["vst"] = np.log2(norm.to_numpy() + 1.0)
    sub.write_h5ad(out / "expression.h5ad")
    vst = pd.DataFrame(sub.layers["vst"], index=sub.obs_names, columns=sub.var_names)

    truth = demo.truth.set_index("gene")
    table = de_table_around_truth(truth, seed=5)
    table.to_csv(out / "severe_vs_mild.tsv", sep="\t", index=False)
    panel_de = panel[["symbol", "tier", "role"]].merge(table, left_on="symbol", right_on="gene", how="left")
    panel_de["present"] = panel_de["symbol"].isin(set(adata.var_names))
    panel_de.drop(columns="gene").to_csv(out / "il6_panel.tsv", sep="\t", index=False)
    n = sub.obs["severity"].value_counts()
    summary = {
        "cohort": "plotcoh",
        "design": "~ age + sex + severity",
        "n_per_group": {"mild": int(n["mild"]), "severe": int(n["severe"])},
        "alpha": 0.05,
    }
    (out / "summary.json").write_text(json.dumps(summary))

    expr = panel_expression(counts, sub.obs, sf, vst, list(panel["symbol"]))
    expr.assign(symbol=expr["gene"]).to_csv(out / "panel_expression.tsv", sep="\t", index=False)
    scores, _ = mean_z_scores(vst, {"up_set": ["SOCS3", "CEBPD", "IL1R2"], "null_set": ["JAK1", "TYK2"]})
    models = score_model(scores, sub.obs, ["age"]).assign(method="mean_z")
    models.to_csv(out / "score_models.tsv", sep="\t", index=False)
    long = scores.rename_axis("sample_id").reset_index().melt("sample_id", var_name="set", value_name="score")
    long["severity"] = sub.obs.loc[long["sample_id"], "severity"].astype(str).to_numpy()
    long.assign(method="mean_z").to_csv(out / "pathway_scores.tsv", sep="\t", index=False)

    qc = CohortQcOutputs(
        library_sizes=out / "library_sizes.tsv",
        sex_check=out / "sex_check.tsv",
        sex_check_summary=out / "sex_check.json",
        pca=out / "pca.tsv",
        pca_variance=out / "pca_variance.tsv",
    )
    write_cohort_qc(out / "cohort.h5ad", out / "expression.h5ad", markers_path, qc)
    return {
        "summary": out / "summary.json",
        **dataclasses.asdict(qc),
        "de_results": out / "severe_vs_mild.tsv",
        "panel_de": out / "il6_panel.tsv",
        "expression": out / "expression.h5ad",
        "panel_expression": out / "panel_expression.tsv",
        "scores": out / "pathway_scores.tsv",
        "score_models": out / "score_models.tsv",
    }


def _outputs(directory) -> dict[str, list]:
    return {f.name: [directory / f"{f.name}.png", directory / f"{f.name}.svg"] for f in COHORT_FIGURES}


def test_registry_lists_each_input_and_builder_once(cohort_files):
    """The registry's inputs are exactly what the fixture (the rule's layout) provides, and every listed
    figure has a builder: a figure added to the registry without one fails here, not in a run."""
    assert set(input_names(COHORT_FIGURES)) == set(COHORT_INPUTS) == set(cohort_files)
    assert [f.name for f in COHORT_FIGURES] == list(fc.BUILDERS)
    assert len({f.stem for f in COHORT_FIGURES}) == len(COHORT_FIGURES)


def test_a_figure_reading_an_undeclared_input_fails(cohort_files, tmp_path):
    """Each builder sees only the inputs its registry entry lists, so the registry cannot go stale."""
    volcano = next(f for f in COHORT_FIGURES if f.name == "volcano")
    short = dataclasses.replace(volcano, inputs=("summary",))
    with pytest.raises(KeyError, match="does not list"):
        fc.write_cohort_figures(cohort_files, {"volcano": [tmp_path / "v.png"]}, 0.05, figures=(short,))


def test_every_figure_written_with_each_anndata_read_once(cohort_files, tmp_path, monkeypatch):
    reads = []
    real_read = ad.read_h5ad
    monkeypatch.setattr(
        fc.ad, "read_h5ad", lambda path, *a, **k: reads.append(path) or real_read(path, *a, **k)
    )
    seconds = fc.write_cohort_figures(cohort_files, _outputs(tmp_path), alpha=0.05)
    assert reads == [cohort_files["expression"]]  # the QC figures read their tables, not the cohort
    assert list(seconds) == [f.name for f in COHORT_FIGURES]
    for png, svg in _outputs(tmp_path).values():
        with Image.open(png) as img:
            assert img.width > 400 and img.height > 300, (png, img.size)
            assert np.asarray(img.convert("L"), dtype=float).std() > 10, f"{png} is blank"
        assert svg.read_text(encoding="utf-8").startswith("<?xml")
    # The ~300-gene clouds of the volcano and MA plot are one embedded image each in the SVG; only the
    # circled panel genes and legend keys remain vector markers (<use href="#m...">; glyphs are fonts).
    for name in ("volcano", "ma"):
        text = _outputs(tmp_path)[name][1].read_text(encoding="utf-8")
        assert "<image" in text and text.count('href="#m') < 60, name


def test_missing_or_unknown_outputs_are_named(cohort_files, tmp_path):
    outputs = _outputs(tmp_path)
    del outputs["pca"]
    outputs["pie_chart"] = [tmp_path / "pie.png"]
    with pytest.raises(ValueError, match=r"missing \['pca'\], unknown \['pie_chart'\]"):
        fc.write_cohort_figures(cohort_files, outputs, alpha=0.05)
    assert not list(tmp_path.glob("*.png"))  # checked before anything is drawn


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_box_lines_match_matplotlib_boxplot(seed):
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.lognormal(5, 0.4, 15), [rng.lognormal(5, 0.4) * 8]])  # one far outlier
    fig, ax = plt.subplots()
    drawn = ax.boxplot(values, positions=[1.0], widths=common.BOX_WIDTH, showfliers=False)
    frame_x, frame_y, median_x, median_y = common.box_lines(values, 1.0)
    box = drawn["boxes"][0].get_xydata()
    np.testing.assert_allclose(np.column_stack([frame_x[:5], frame_y[:5]]), box)
    segments = np.column_stack([frame_x, frame_y])
    pieces = [segments[i : i + 2] for i in (6, 9, 12, 15)]  # whisker low, whisker high, cap low, cap high
    for piece, line in zip(pieces, [*drawn["whiskers"], *drawn["caps"]], strict=True):
        np.testing.assert_allclose(piece, line.get_xydata())
    np.testing.assert_allclose(np.column_stack([median_x, median_y]), drawn["medians"][0].get_xydata())
    assert max(frame_y[9:11]) < values.max()  # the outlier lies beyond the whisker, drawn as a point only
    plt.close(fig)


@pytest.mark.parametrize(
    "low, high",
    [
        (820, 1200),
        (830, 1650),
        (10_500, 24_000),
        (7_300, 11_000),
        (420, 580),
        (1.0, 1.5),
        (8, 75),
        (30, 1100),
    ],
)
def test_log_ticks_cover_the_panel(low, high):
    ticks = common.log_axis_ticks(low, high)
    assert 3 <= len(ticks) <= 6 and all(low <= t <= high for t in ticks)
    # Labelled ticks span most of the panel (log scale): no half-panel without a number.
    coverage = np.log(max(ticks) / min(ticks)) / np.log(high / low)
    assert coverage >= 0.55, (ticks, coverage)


def test_one_layout_pass_gives_the_tight_crop_and_identical_reruns(tmp_path):
    def figure():
        fig, axes = plt.subplots(2, 3, figsize=(8, 5), dpi=150)
        for i, ax in enumerate(axes.flat):
            ax.plot([0, 1], [0, i])
            ax.set_title(f"panel {i}\nsecond line", y=common.TITLE_Y)
            ax.set_ylabel("a long y axis label (units)")
        fig.suptitle("a suptitle that sticks out well beyond the axes on both sides of the figure")
        fig.tight_layout()
        return fig

    save(figure(), [tmp_path / "a.png", tmp_path / "a.svg"])
    save(figure(), [tmp_path / "b.png", tmp_path / "b.svg"])
    figure().savefig(tmp_path / "tight.png", dpi=150, bbox_inches="tight")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()
    with Image.open(tmp_path / "a.png") as ours, Image.open(tmp_path / "tight.png") as tight:
        assert abs(ours.width - tight.width) <= 2 and abs(ours.height - tight.height) <= 2


def test_label_repulsion_is_repeatable_and_separates_labels():
    def positions():
        fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        texts = [common.halo_text(ax, 0.5, 0.5, f"GENE{i}") for i in range(12)]  # all on one spot
        common.repel_labels(texts, ax)
        out = [t.get_position() for t in texts]
        plt.close(fig)
        return out

    first = positions()
    assert first == positions()
    assert len({np.round(p, 3).tobytes() for p in map(np.asarray, first)}) == len(first)  # pushed apart


def test_box_strip_returns_where_each_point_was_drawn():
    values = pd.Series([5.0, 1.0, np.nan, 7.0, 3.0, 9.0], index=[f"S{i}" for i in range(6)])
    groups = pd.Series(["severe", "mild", "mild", "excluded", "mild", "severe"], index=values.index)
    fig, ax = plt.subplots()
    x = common.box_strip(ax, values, groups, ["mild", "severe"])
    assert x.index.equals(values.index)
    assert x[["S2", "S3"]].isna().all()  # not finite / group not shown: no point
    offsets = pd.DataFrame(ax.collections[0].get_offsets(), columns=["x", "y"])
    drawn = pd.DataFrame({"x": x, "y": values}).dropna()
    assert sorted(map(tuple, offsets.to_numpy())) == sorted(map(tuple, drawn.to_numpy()))
    assert (x[["S1", "S4"]].sub(0).abs() <= 0.18).all() and (x[["S0", "S5"]].sub(1).abs() <= 0.18).all()
    plt.close(fig)


def test_de_figures_name_the_linear_route() -> None:
    """A table from the log2 linear-model route is labelled moderated t, not Wald / MLE."""
    from il6axis.figures.de import effect_and_test_names

    nb = pd.DataFrame({"log2FoldChange": [1.0]})
    assert effect_and_test_names(nb) == ("log2 fold change, severe vs mild (MLE)", "Wald test")
    linear = nb.assign(scale="log2_normalised")
    effect, test = effect_and_test_names(linear)
    assert test == "moderated t" and "log2(normalised + 1)" in effect
