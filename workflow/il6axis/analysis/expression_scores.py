"""One cohort's expression tables and pathway scores, as rule ``expression_scores`` writes them.

Composes :mod:`~il6axis.analysis.expression` (size factors, VST, the IL-6 panel by group),
:mod:`~il6axis.analysis.scores` (two per-sample scores per gene set, their models, the competitive test)
and :func:`il6axis.analysis.composition.neutrophil_score` (stored for the composition sensitivity rule),
so the rule script stays thin.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from il6axis.analysis import composition, expression, scores
from il6axis.de.routing import is_log2, is_normalised, value_type_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreSettings:
    """Parameters of the VST, the two per-sample scores and the competitive test."""

    vst_nsub: int | None = 1000
    min_genes: int = 3
    ctrl_size: int = 50
    n_bins: int = 25
    random_state: int = 0
    permutations: int = 1000
    seed: int = 0
    min_size: int = 3
    max_size: int = 500
    alpha: float = 0.05
    n_cpus: int = 1

    @classmethod
    def from_config(cls, scores_config: Mapping[str, Any], alpha: float, n_cpus: int) -> ScoreSettings:
        """The settings of the config's ``scores`` block, with the DE ``alpha`` (config ``de.alpha``) and
        the cores the rule was given (``n_cpus``)."""
        return cls(
            vst_nsub=scores_config["vst_nsub"],
            min_genes=scores_config["min_genes"],
            ctrl_size=scores_config["ctrl_size"],
            n_bins=scores_config["n_bins"],
            random_state=scores_config["random_state"],
            permutations=scores_config["permutations"],
            seed=scores_config["seed"],
            min_size=scores_config["min_size"],
            max_size=scores_config["max_size"],
            alpha=alpha,
            n_cpus=n_cpus,
        )


@dataclass
class ExpressionResult:
    """Everything rule ``expression_scores`` writes for one cohort (the tables in the script's layout)."""

    adata: ad.AnnData  # contrast samples: counts in X, layers normalised / vst, obsm pathway scores
    panel_expression: pd.DataFrame
    scores_long: pd.DataFrame  # sample, severity, set, method, score
    coverage: pd.DataFrame
    models: pd.DataFrame
    score_effects: pd.DataFrame  # models in the DE-table layout the meta-analysis reads
    gsea: pd.DataFrame


def score_effects_table(models: pd.DataFrame) -> pd.DataFrame:
    """Score models as DE-like rows (``gene`` = ``set (method)``) so the meta-analysis pools them."""
    out = pd.DataFrame(
        {
            "gene": models["set"] + " (" + models["method"] + ")",
            "log2FoldChange": models["effect"],
            "lfcSE": models["se"],
            "stat": models["t"],
            "pvalue": models["p"],
            "padj": models["padj"],
            "tested": models["effect"].notna(),
            "not_tested_reason": models["note"].fillna(""),
        }
    )
    out["scale"] = "score_" + models["method"]
    return out


def _long_scores(wide: pd.DataFrame, method: str, obs: pd.DataFrame) -> pd.DataFrame:
    long = (
        wide.rename_axis("sample_id")
        .reset_index()
        .melt(id_vars="sample_id", var_name="set", value_name="score")
    )
    long["method"] = method
    long["severity"] = long["sample_id"].map(obs["severity"].astype(str))
    return long[["sample_id", "severity", "set", "method", "score"]]


def _expression_scales(
    adata: ad.AnnData, settings: ScoreSettings
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.DataFrame, pd.DataFrame, str]:
    """(values, obs, size factors, normalised, log-scale, description) for the contrast samples.

    Counts get DESeq2 size factors and the VST blind to severity; a cohort that publishes normalised
    values only keeps them as they are (size factor 1) with log2(value + 1) as its log scale, or, when
    they are log2 already, with the values themselves as the log scale and 2**x as the normalised layer.
    """
    if is_normalised(adata):
        values, obs = expression.contrast_values(adata)
        sf = pd.Series(1.0, index=values.index, name="size_factor")
        linear, logged = expression.published_scales(values, value_type_of(adata))
        note = (
            "published log2 values (no second log): the cohort publishes log2 normalised values only"
            if is_log2(adata)
            else "log2(normalised value + 1): the cohort publishes normalised values only"
        )
        return values, obs, sf, linear, logged, note
    counts, obs = expression.contrast_counts(adata)
    sf = expression.size_factors(counts)
    norm = expression.normalised_counts(counts, sf)
    vst = expression.vst(counts, n_cpus=settings.n_cpus, nsub=settings.vst_nsub, seed=settings.seed)
    note = f"pydeseq2 vst, blind to severity, trend from nsub={settings.vst_nsub}"
    return counts, obs, sf, norm, vst, note


def expression_and_scores(
    adata: ad.AnnData,
    de_table: pd.DataFrame,
    gene_sets: Mapping[str, Sequence[str]],
    panel: pd.DataFrame,
    settings: ScoreSettings,
) -> ExpressionResult:
    """Normalise, VST (blind to severity), score every gene set two ways, test the scores and the sets."""
    covariates = list(adata.uns.get("covariates", []))
    counts, obs, sf, norm, vst, vst_note = _expression_scales(adata, settings)
    panel_genes = panel["symbol"].tolist()
    # Published log2 values: levels from 2**x, detection above each sample's floor (zeros are not visible).
    detected = expression.detected_in(counts, value_type_of(adata), panel_genes)
    panel_expr = (
        panel[["symbol", "tier", "role"]]
        .merge(
            expression.panel_expression(
                norm if is_log2(adata) else counts, obs, sf, vst, panel_genes, detected=detected
            ),
            left_on="symbol",
            right_on="gene",
            how="left",
        )
        .drop(columns="gene")
    )

    sets = {name: list(genes) for name, genes in gene_sets.items()}
    mean_z, coverage = scores.mean_z_scores(vst, sets, min_genes=settings.min_genes)
    score_genes, _ = scores.score_genes_scores(
        vst,
        sets,
        ctrl_size=settings.ctrl_size,
        n_bins=settings.n_bins,
        random_state=settings.random_state,
        min_genes=settings.min_genes,
    )
    models = pd.concat(
        [
            scores.score_model(mean_z, obs, covariates, alpha=settings.alpha, method="mean_z"),
            scores.score_model(score_genes, obs, covariates, alpha=settings.alpha, method="score_genes"),
        ],
        ignore_index=True,
    )
    gsea = scores.competitive_test(
        de_table,
        sets,
        permutations=settings.permutations,
        seed=settings.seed,
        min_size=settings.min_size,
        max_size=settings.max_size,
        threads=settings.n_cpus,
    )

    neutrophil, neutrophil_note = composition.neutrophil_score(vst)
    out_obs = obs.copy()
    out_obs["size_factor"] = sf
    out_obs[composition.SCORE_COLUMN] = neutrophil if neutrophil is not None else np.nan
    result = ad.AnnData(
        X=counts.to_numpy(dtype=np.float64 if is_normalised(adata) else np.int64),
        obs=out_obs,
        var=pd.DataFrame(index=counts.columns),
        layers={"normalised": norm.to_numpy(), "vst": vst.loc[counts.index, counts.columns].to_numpy()},
        obsm={
            f"pathway_scores_{m}": s.loc[counts.index]
            for m, s in (("mean_z", mean_z), ("score_genes", score_genes))
        },
    )
    result.uns.update({k: v for k, v in adata.uns.items()})
    result.uns["neutrophil_score"] = neutrophil_note
    result.uns["vst"] = vst_note
    log.info("%s: %d gene sets scored; %s", adata.uns.get("cohort", "cohort"), len(sets), neutrophil_note)
    scores_long = pd.concat(
        [_long_scores(mean_z, "mean_z", obs), _long_scores(score_genes, "score_genes", obs)],
        ignore_index=True,
    )
    return ExpressionResult(
        adata=result,
        panel_expression=panel_expr,
        scores_long=scores_long,
        coverage=coverage,
        models=models,
        score_effects=score_effects_table(models),
        gsea=gsea,
    )
