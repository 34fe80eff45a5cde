"""Pathway-score figure of one cohort: per-sample scores of each gene set by group, with the
covariate-adjusted OLS difference (the score model of :mod:`il6axis.analysis.scores`) in each title."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from il6axis.cohort.contrast import Contrast
from il6axis.errors import InputError
from il6axis.figures.common import (
    TITLE_Y,
    box_strip,
    effect_text,
    grid_shape,
    log_scale_name,
    message_panel,
    summary_contrast,
    summary_title,
)
from il6axis.vocabulary import SEVERITY_ORDER


def pathway_score_boxes(
    scores: pd.DataFrame,
    models: pd.DataFrame,
    title: str,
    method: str = "mean_z",
    scale: str = "VST",
    n_cols: int = 4,
    contrast: Contrast | None = None,
) -> plt.Figure:
    """Per gene set: per-sample score by group, with the covariate-adjusted OLS difference annotated."""
    needed = {"sample_id", "severity", "set", "method", "score"}
    if not needed <= set(scores.columns):
        raise InputError(
            f"pathway scores lack {sorted(needed - set(scores.columns))}; expected pathway_scores.tsv."
        )
    scores = scores[scores["method"] == method]
    models = models[models["method"] == method].drop_duplicates("set").set_index("set")
    sets = [s for s in models.index if s in set(scores["set"])] + [
        s for s in dict.fromkeys(scores["set"]) if s not in models.index
    ]
    n_rows, n_cols = grid_shape(max(len(sets), 1), n_cols)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(3.1 * n_cols, 3.0 * n_rows + 0.9), dpi=150, squeeze=False
    )
    for ax, name in zip(axes.flat, sets, strict=False):
        sub = scores[scores["set"] == name]
        if sub["score"].notna().any():
            box_strip(ax, sub["score"], sub["severity"], SEVERITY_ORDER, contrast=contrast)
            ax.axhline(0, color="0.8", lw=0.6, zorder=0)
            ax.tick_params(axis="both", labelsize=7.5)
        else:
            message_panel(ax, "no score\n(too few genes present)")
        note = _model_note(models.loc[name] if name in models.index else None)
        ax.set_title(f"{name}\n{note}", fontsize=7.5, y=TITLE_Y)
        ax.set_ylabel("")
    for ax in axes.flat[len(sets) :]:
        ax.set_visible(False)
    if not sets:
        message_panel(axes.flat[0], f"no '{method}' scores")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"score (mean z of {scale})" if method == "mean_z" else f"score ({method})", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(h_pad=1.2)
    return fig


def _model_note(row: pd.Series | None) -> str:
    if row is None:
        return "no model"
    effect = float(row.get("effect", np.nan))
    if not np.isfinite(effect):
        note = row.get("note")
        return f"no model: {note}" if isinstance(note, str) and note else "no model"
    return effect_text("Δ", effect, float(row["ci_low"]), float(row["ci_high"]), float(row["padj"]))


def pathway_scores_figure(
    scores: pd.DataFrame, models: pd.DataFrame, summary: Mapping, method: str = "mean_z"
) -> plt.Figure:
    """:func:`pathway_score_boxes` with the report's title (confidence level from the DE summary)."""
    level = 100 * (1 - float(summary.get("alpha", 0.05)))
    scale = log_scale_name(summary)
    contrast = summary_contrast(summary)
    what = (
        f"pathway scores (mean z of {scale}); Δ = {contrast.case} − {contrast.reference}, OLS with "
        f"covariates [{level:g}% CI], BH padj"
    )
    return pathway_score_boxes(scores, models, summary_title(summary, what), method, scale, contrast=contrast)
