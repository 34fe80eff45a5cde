"""A cohort of published log2 values (``counts.value_type: log2_normalised``) through every step that
reads the value scale: DE, expression layers, panel detection, pathway scores, the composition refit,
figure labels and the meta-analysis scale rule.

Planted truth: one data set given twice, as log2 values z (value type ``log2_normalised``) and as
2**z - 1 (``normalised``, whose route takes log2(x + 1) = z). Every downstream number on the log scale
must be identical, the linear layers must differ by exactly 1, and the planted severity effects (a gene
set up by 1.5 log2 units, neutrophil genes rising with severity) must come back on the z scale. A step
that took a second log of the published values, or read them as counts, would break the identity.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from il6axis.analysis.composition import run_composition
from il6axis.analysis.expression_scores import ScoreSettings, expression_and_scores
from il6axis.analysis.meta.plan import off_primary_scale
from il6axis.de import routing
from il6axis.de.contract import DeSettings
from il6axis.vocabulary import EXCLUDED, MILD, SEVERE

NEUTROPHIL = ["CSF3R", "FCGR3B", "CXCR2"]
SET_UP = [f"UP{i}" for i in range(12)]
SET_NULL = [f"NULL{i}" for i in range(12)]
PANEL = ["IL6", "SOCS3", "STAT3", "IL6R"]


def _cohorts(seed: int = 7) -> tuple[ad.AnnData, ad.AnnData, dict[str, float]]:
    """(log2 cohort, normalised cohort, planted effects); 10 mild, 10 severe, 2 excluded samples."""
    rng = np.random.default_rng(seed)
    groups = [MILD] * 10 + [SEVERE] * 10 + [EXCLUDED] * 2
    severe = np.array([g == SEVERE for g in groups], dtype=float)
    genes = [*NEUTROPHIL, *SET_UP, *SET_NULL, *PANEL] + [f"G{i:03d}" for i in range(400)] + ["ZERO1", "ZERO2"]
    n, p = len(groups), len(genes)
    mean = rng.uniform(4.0, 12.0, p)
    effect = pd.Series(0.0, index=genes)
    effect[SET_UP] = 1.5
    effect[NEUTROPHIL] = 1.0
    effect["SOCS3"] = 2.0
    effect["IL6"] = 0.0
    mean[genes.index("IL6")] = 1.0  # barely expressed
    z = mean[None, :] + severe[:, None] * effect.to_numpy()[None, :] + rng.normal(0, 0.35, (n, p))
    z[:, genes.index("IL6")] = np.where(rng.random(n) < 0.5, 0.0, rng.uniform(0.5, 1.5, n))  # half zero
    z[:, -2:] = 0.0  # genes with no reads: log2(0 + 1) = 0, the floor of every sample
    z = np.clip(z, 0.0, None)
    obs = pd.DataFrame(
        {"severity": pd.Categorical(groups, categories=[MILD, SEVERE, EXCLUDED])},
        index=[f"s{i:02d}" for i in range(n)],
    )
    var = pd.DataFrame(index=genes)
    uns = {"cohort": "L", "tissue": "whole_blood", "covariates": []}
    log2 = ad.AnnData(X=z, obs=obs.copy(), var=var.copy(), uns={**uns, "value_type": "log2_normalised"})
    linear = ad.AnnData(
        X=np.exp2(z) - 1.0, obs=obs.copy(), var=var.copy(), uns={**uns, "value_type": "normalised"}
    )
    return log2, linear, effect.to_dict()


def _analyse(adata: ad.AnnData, tmp_path, tag: str):
    settings = DeSettings(lfc_shrink=False, min_count=10)
    de = routing.fit_severity(adata, [], settings)
    panel = pd.DataFrame({"symbol": PANEL, "tier": "core", "role": "signalling"})
    sets = {"up": SET_UP, "null": SET_NULL, "neutrophil": NEUTROPHIL}
    result = expression_and_scores(
        adata, de.table, sets, panel, ScoreSettings(permutations=50, vst_nsub=None)
    )
    paths = {name: tmp_path / f"{tag}.{name}" for name in ("adjusted", "comparison", "status")}
    status = run_composition(
        result.adata, de.table, settings, 0.05, paths["adjusted"], paths["comparison"], paths["status"]
    )
    adjusted = pd.read_csv(paths["adjusted"], sep="\t")
    return de, result, status, adjusted


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("log2_steps")
    log2, linear, effect = _cohorts()
    return _analyse(log2, tmp_path, "log2"), _analyse(linear, tmp_path, "linear"), log2, effect


def test_de_recovers_planted_effects_on_the_published_scale(analysed):
    (de, _, _, _), (de_lin, _, _, _), _, effect = analysed
    table = de.table.set_index("gene")
    assert table.loc["SOCS3", "log2FoldChange"] == pytest.approx(effect["SOCS3"], abs=0.4)
    up = table.loc[SET_UP, "log2FoldChange"]
    assert up.mean() == pytest.approx(1.5, abs=0.15) and (table.loc[SET_UP, "padj"] < 0.05).all()
    assert not table.loc[["ZERO1", "ZERO2", "IL6"], "tested"].any()
    other = de_lin.table.set_index("gene").loc[table.index]
    np.testing.assert_allclose(table["log2FoldChange"], other["log2FoldChange"], rtol=1e-8, atol=1e-10)


def test_panel_table_detection_reads_the_floor():
    """The DE panel table's detection: above each sample's floor for log2 values = count > 0 linear.

    The log2 values are shifted to a log2-CPM-like floor of -4.32, where "value > 0" would call IL6
    (log2 values 0-1.5 above the floor) undetected everywhere."""
    from il6axis.de.outputs import panel_table

    log2, linear, _ = _cohorts()
    log2.X = log2.X - 4.321928
    panel = pd.DataFrame({"symbol": [*PANEL, "ZERO1", "ABSENT"], "tier": "core", "role": "signalling"})
    de = routing.fit_severity(log2, [], DeSettings(lfc_shrink=False)).table
    a = panel_table(de, panel, log2).set_index("symbol")
    b = panel_table(de, panel, linear).set_index("symbol")
    for column in ("detection_mild", "detection_severe"):
        np.testing.assert_allclose(a[column], b[column], equal_nan=True, err_msg=column)
    assert a.loc["ZERO1", "detection_mild"] == 0 and 0 < a.loc["IL6", "detection_severe"] < 1
    assert a.loc["SOCS3", "detection_severe"] == 1 and not a.loc["ABSENT", "present"]


def test_expression_layers_and_panel_detection(analysed):
    (_, res, _, _), (_, res_lin, _, _), log2, _ = analysed
    x = res.adata
    # X stays the published values (the refit reads it with the cohort's value type), vst is the same
    # values (no second log), the normalised layer is 2**x.
    assert x.uns["value_type"] == "log2_normalised" and x.X.dtype == np.float64
    contrast = log2[log2.obs["severity"].isin([MILD, SEVERE])]
    np.testing.assert_allclose(x.X, contrast.X)
    np.testing.assert_allclose(x.layers["vst"], contrast.X)
    np.testing.assert_allclose(x.layers["normalised"], np.exp2(contrast.X))
    np.testing.assert_allclose(x.layers["vst"], res_lin.adata.layers["vst"], atol=1e-9)
    np.testing.assert_allclose(x.layers["normalised"], res_lin.adata.layers["normalised"] + 1.0, rtol=1e-9)
    assert "published log2 values (no second log)" in x.uns["vst"]
    panel = res.panel_expression.set_index("symbol")
    panel_lin = res_lin.panel_expression.set_index("symbol")
    # Zero counts sit at the floor (0 here): detection above it equals count > 0 of the linear values.
    for column in ("detect_mild", "detect_severe", "detect_all", "mean_vst_all"):
        np.testing.assert_allclose(panel[column], panel_lin[column], atol=1e-9, err_msg=column)
    il6_zero = (contrast[:, "IL6"].X.ravel() == 0).mean()
    assert panel.loc["IL6", "detect_all"] == pytest.approx(1 - il6_zero) and 0 < il6_zero < 1
    np.testing.assert_allclose(panel["mean_norm_all"], panel_lin["mean_norm_all"] + 1.0, rtol=1e-9)


def test_scores_and_composition_refit_are_identical(analysed):
    (_, res, status, adjusted), (_, res_lin, status_lin, adjusted_lin), _, _ = analysed
    pd.testing.assert_frame_equal(res.scores_long, res_lin.scores_long, atol=1e-9)
    models = res.models.set_index(["set", "method"])
    pd.testing.assert_frame_equal(models, res_lin.models.set_index(["set", "method"]), atol=1e-9)
    assert models.loc[("up", "mean_z"), "p"] < 1e-4 and models.loc[("up", "mean_z"), "effect"] > 0
    np.testing.assert_allclose(
        res.adata.obs["neutrophil_score"], res_lin.adata.obs["neutrophil_score"], atol=1e-9
    )
    assert status["adjusted"] and status_lin["adjusted"]
    a, b = adjusted.set_index("gene"), adjusted_lin.set_index("gene").loc[adjusted["gene"]]
    assert (a["value_type"] == "log2_normalised").all() and (b["value_type"] == "normalised").all()
    np.testing.assert_allclose(a["log2FoldChange"], b["log2FoldChange"], rtol=1e-6, atol=1e-6)
    assert status["n_composition_driven"] == status_lin["n_composition_driven"]


def test_scale_labels_and_meta_rule():
    log2, linear, _ = _cohorts()
    counts = linear.copy()
    counts.uns["value_type"] = "counts"
    assert routing.scale_of(log2) == routing.scale_of(linear) == "log2_normalised"
    assert routing.scale_of(counts) == "log2_counts"
    assert routing.log_scale_name("log2_normalised") == "published log2 normalised"
    assert "published log2 values" in routing.model_of(log2)
    # Off the primary (count) scale: pooled only in the sensitivity run; with no count cohort, the two
    # log2-normalised cohorts are pooled with each other.
    scales = [("C", routing.scale_of(counts)), ("L", routing.scale_of(log2)),
              ("N", routing.scale_of(linear))]  # fmt: skip
    assert off_primary_scale(scales) == ["L", "N"]
    assert off_primary_scale(scales[1:]) == []


def test_figures_name_the_published_log2_scale(analysed, tmp_path):
    """Axis labels and titles say "published log2 normalised", never VST, counts or log2(x + 1)."""
    from il6axis.analysis import qc
    from il6axis.figures import panel
    from il6axis.figures import qc as fqc
    from il6axis.figures.common import log_scale_name
    from il6axis.figures.de import effect_and_test_names
    from il6axis.figures.style import save

    (de, res, _, _), (de_lin, _, _, _), log2, _ = analysed
    name = "published log2 normalised"
    assert log_scale_name(log2) == name and log_scale_name(res.adata) == name
    assert log_scale_name({"scale": "log2_normalised", "value_type": "log2_normalised"}) == name
    assert log_scale_name({"scale": "log2_normalised"}) == "log2(normalised + 1)"  # older summaries
    effect, test = effect_and_test_names(de.table)
    assert effect == f"difference in {name}, severe vs mild" and test == "moderated t"
    assert "log2(normalised + 1)" in effect_and_test_names(de_lin.table)[0]

    summary = {"cohort": "L", "n_per_group": de.n_per_group, "value_type": "log2_normalised"}
    library = fqc.library_sizes(qc.library_table(log2), summary)
    assert library.axes[0].get_ylabel() == "sum of 2^(log2 value) (millions)"
    assert library.axes[1].get_ylabel() == "detected genes (above sample minimum)"
    table = qc.library_table(log2)
    # zeros sit at the floor (0 here): the two empty genes and IL6 in about half of the samples
    np.testing.assert_array_equal(table["detected_genes"], (log2.X > 0).sum(axis=1))
    assert table["detected_genes"].max() < log2.n_vars - 1
    pca = fqc.pca_plot(*qc.pca_table(res.adata), summary)
    assert f"PCA of {name} expression" in pca.axes[0].get_title()
    panel_de = de.table.rename(columns={"gene": "symbol"}).assign(tier="core")
    panel_de = panel_de[panel_de["symbol"].isin(PANEL)]
    boxes = panel.panel_genes_figure(res.adata, panel_de, summary, genes=PANEL)
    assert boxes.axes[0].get_ylabel() == name and name in boxes._suptitle.get_text()
    assert boxes.axes[0].get_yscale() == "linear"  # published log2 values, not 2**x on a log axis
    save(boxes, [tmp_path / "panel_genes.png"])
    assert (tmp_path / "panel_genes.png").stat().st_size > 0
