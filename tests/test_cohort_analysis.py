"""Orchestration of the per-cohort analyses: score effects for the meta-analysis, orientation stop."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import PROJECT_ROOT
from snakemake.utils import validate

from il6axis.analysis.expression_scores import ScoreSettings, score_effects_table
from il6axis.analysis.orientation import load_markers, run_orientation
from il6axis.errors import InputError


def _de_table(sign: float) -> pd.DataFrame:
    markers = load_markers(PROJECT_ROOT / "resources/genesets/severity_sanity_markers.tsv")
    orient = markers[markers["role"] == "orientation"]
    expected = np.where(orient["expected_in_severe"] == "up", 1.0, -1.0)
    return pd.DataFrame(
        {
            "gene": orient["symbol"].to_numpy(),
            "baseMean": 500.0,
            "log2FoldChange": sign * expected,
            "lfcSE": 0.2,
            "pvalue": 1e-6,
            "padj": 1e-5,
            "tested": True,
            "not_tested_reason": "",
        }
    )


def test_reversed_cohort_stops_with_the_fix(tmp_path):
    markers = load_markers(PROJECT_ROOT / "resources/genesets/severity_sanity_markers.tsv")
    paths = {"table_path": tmp_path / "o.tsv", "verdict_path": tmp_path / "o.json"}
    with pytest.raises(InputError, match=r"GSEX: .*reversed.*severity\.severe / severity\.mild"):
        run_orientation(_de_table(-1.0), markers, "whole_blood", 0.05, "GSEX", **paths)
    assert not paths["table_path"].exists()
    verdict = run_orientation(
        _de_table(-1.0), markers, "whole_blood", 0.05, "GSEX", **paths, fail_on_reversed=False
    )
    assert (
        verdict.status == "reversed" and json.loads(paths["verdict_path"].read_text())["status"] == "reversed"
    )
    assert (
        run_orientation(_de_table(1.0), markers, "whole_blood", 0.05, "GSEX", **paths).status == "consistent"
    )


def test_score_effects_use_the_de_layout():
    models = pd.DataFrame(
        {
            "set": ["a", "b"],
            "method": ["mean_z", "score_genes"],
            "effect": [0.5, np.nan],
            "se": [0.1, np.nan],
            "t": [5.0, np.nan],
            "p": [1e-4, np.nan],
            "padj": [2e-4, np.nan],
            "note": [None, "fewer than 3 genes present"],
        }
    )
    effects = score_effects_table(models)
    assert effects["gene"].tolist() == ["a (mean_z)", "b (score_genes)"]
    assert effects["tested"].tolist() == [True, False]
    assert effects.loc[1, "not_tested_reason"] == "fewer than 3 genes present"
    assert effects["scale"].tolist() == ["score_mean_z", "score_score_genes"]


def test_normalised_cohort_uses_its_values_and_log2_scale_and_the_linear_model():
    """A cohort with normalised values only: no size factors, no VST, the linear route in the refit."""
    import anndata as ad

    from il6axis.analysis import expression
    from il6axis.analysis.expression_scores import _expression_scales
    from il6axis.de import routing as severity_model
    from il6axis.de.contract import DeSettings

    rng = np.random.default_rng(11)
    n_genes, groups = 300, ["mild"] * 6 + ["severe"] * 6 + ["excluded"] * 2
    values = rng.gamma(4.0, 40.0, size=(len(groups), n_genes))
    values[6:12, 0] *= 8.0  # planted: gene g0 up ~3 log2 units in severe
    obs = pd.DataFrame(
        {"severity": pd.Categorical(groups, categories=["mild", "severe", "excluded"])},
        index=[f"s{i}" for i in range(len(groups))],
    )
    adata = ad.AnnData(X=values, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
    adata.uns.update({"cohort": "norm", "value_type": "normalised", "covariates": []})

    kept, obs_out, sf, norm, logged, note = _expression_scales(adata, ScoreSettings())
    assert kept.shape == (12, n_genes) and (sf == 1.0).all() and norm is kept
    np.testing.assert_allclose(logged.to_numpy(), np.log2(values[:12] + 1))
    assert "log2(normalised value + 1)" in note and list(obs_out["severity"].cat.categories) == [
        "mild",
        "severe",
    ]

    result = severity_model.fit_severity(adata, [], DeSettings(min_count=10))
    table = result.table.set_index("gene")
    assert (table["scale"] == "log2_normalised").all() and "moderated t" in result.design
    assert table.loc["g0", "log2FoldChange"] == pytest.approx(3.0, abs=0.5) and table.loc["g0", "padj"] < 0.01

    adata.X[0, 0] = -1.0
    with pytest.raises(InputError, match="negative"):
        expression.contrast_values(adata)


def _demo_config(**sections: dict) -> dict:
    """The demo config with ``sections`` replaced, validated so the schema fills every default."""
    config = yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())
    config.update(copy.deepcopy(sections))
    validate(config, str(PROJECT_ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    return config


def test_score_settings_come_from_the_scores_block():
    # The schema's defaults are the dataclass defaults, so a config without `scores` runs as documented.
    config = _demo_config(scores={})
    assert ScoreSettings.from_config(config["scores"], alpha=0.05, n_cpus=1) == ScoreSettings()
    # Planted values: each config key lands in its own field; alpha and cores come from the rule.
    planted = {"vst_nsub": None, "min_genes": 4, "ctrl_size": 30, "n_bins": 20, "random_state": 7}
    planted |= {"permutations": 200, "seed": 11, "min_size": 5, "max_size": 200}
    config = _demo_config(scores=planted)
    settings = ScoreSettings.from_config(config["scores"], alpha=0.01, n_cpus=3)
    assert {key: getattr(settings, key) for key in planted} == planted
    assert (settings.alpha, settings.n_cpus) == (0.01, 3)
