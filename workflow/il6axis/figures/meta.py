"""Every across-cohort figure in one pass: rule plot_meta.

The figures are those of :data:`il6axis.figures.registry.META_FIGURES`: forest plots of the IL-6 panel
genes and of the pathway scores (:mod:`~il6axis.figures.meta_forest`), the cohort x gene log2FC heatmap
(:mod:`~il6axis.figures.meta_heatmap`) and the orientation-check summary
(:mod:`~il6axis.figures.meta_orientation`). Each cohort's declared contrast, read once from its DE summary,
labels its rows and the titles of all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from il6axis.cohort.contrast import Contrast, contrast_from_summary
from il6axis.errors import InputError
from il6axis.figures.meta_forest import forest_genes_from_files, forest_scores_from_files
from il6axis.figures.meta_heatmap import lfc_heatmap_from_files
from il6axis.figures.meta_orientation import orientation_summary_from_files
from il6axis.figures.registry import META_FIGURES, FigureSpec
from il6axis.jsonio import read_json

log = logging.getLogger(__name__)

Paths = str | Path | Sequence[str | Path]


def tissues_from_verdicts(verdict_paths: Sequence[str | Path], cohorts: Sequence[str]) -> dict[str, str]:
    """Cohort -> tissue from the orientation verdicts (they record the cohort's material)."""
    return {
        c: str(read_json(p, what="orientation verdict", rule="orientation_check").get("tissue", ""))
        for c, p in zip(cohorts, verdict_paths, strict=True)
    }


def contrasts_from_summaries(
    summary_paths: Sequence[str | Path], cohorts: Sequence[str]
) -> dict[str, Contrast]:
    """Cohort -> declared contrast from the DE summaries (``summary.json``; severe vs mild if absent)."""
    if len(summary_paths) != len(cohorts):
        raise InputError(
            f"{len(summary_paths)} DE summaries for {len(cohorts)} cohorts; give one per cohort."
        )
    return {
        c: contrast_from_summary(read_json(p, what="DE summary", rule="deseq2"), source=str(p))
        for c, p in zip(cohorts, summary_paths, strict=True)
    }


# How each figure of the registry is written: from its inputs to its output paths, given the cohorts (in
# input order), the significance level and each cohort's declared contrast.
Writer = Callable[[Mapping[str, Paths], Sequence[str], Sequence[str], float, Mapping[str, Contrast]], object]


def _forest_genes(inputs, out, cohorts, alpha, contrasts):
    return forest_genes_from_files(
        inputs["meta_genes"], inputs["forest_genes"], out, cohorts=cohorts, contrasts=contrasts
    )


def _forest_scores(inputs, out, cohorts, alpha, contrasts):
    return forest_scores_from_files(
        inputs["meta_scores"], inputs["forest_scores"], out, cohorts=cohorts, contrasts=contrasts
    )


def _lfc_heatmap(inputs, out, cohorts, alpha, contrasts):
    tissues = tissues_from_verdicts(list(inputs["orientation"]), cohorts)
    return lfc_heatmap_from_files(list(inputs["panels"]), cohorts, alpha, out, tissues, contrasts)


def _orientation(inputs, out, cohorts, alpha, contrasts):
    tables, verdicts = list(inputs["orientation_tables"]), list(inputs["orientation"])
    return orientation_summary_from_files(tables, verdicts, cohorts, alpha, out, contrasts)


WRITERS: dict[str, Writer] = {
    "forest_genes": _forest_genes,
    "forest_scores": _forest_scores,
    "lfc_heatmap": _lfc_heatmap,
    "orientation": _orientation,
}


def write_meta_figures(
    inputs: Mapping[str, Paths],
    outputs: Mapping[str, Sequence[str | Path]],
    cohorts: Sequence[str],
    alpha: float,
    figures: Sequence[FigureSpec] = META_FIGURES,
) -> None:
    """Write every across-cohort figure of the registry to its paths (PNG + SVG).

    ``inputs`` maps each input name the figures read to its path (per-cohort inputs: one path per
    cohort, in ``cohorts`` order); ``outputs`` maps each figure name to its paths. Each figure sees only
    the inputs its registry entry lists.
    """
    names = [f.name for f in figures]
    if sorted(outputs) != sorted(names):
        raise ValueError(f"meta figure outputs: got {sorted(outputs)}, expected {names}")
    contrasts = contrasts_from_summaries(list(inputs["summaries"]), list(cohorts))
    for figure in figures:
        declared = {name: inputs[name] for name in figure.inputs}
        WRITERS[figure.name](declared, outputs[figure.name], list(cohorts), alpha, contrasts)
        log.info("%s written", figure.name)
