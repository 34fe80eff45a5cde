"""Every figure of one cohort in one pass: rule plot_cohort.

The figures are those of :data:`il6axis.figures.registry.COHORT_FIGURES`; each is drawn by its family's
module (:mod:`~il6axis.figures.qc`, :mod:`~il6axis.figures.de`, :mod:`~il6axis.figures.panel`,
:mod:`~il6axis.figures.scores`) from the inputs the registry says it reads. Each input is read once, when
the first figure needs it, and shared: one job per cohort, rather than one per figure group, pays the
Python imports and the AnnData read once (bench/bench_plots.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import matplotlib.pyplot as plt
import pandas as pd

from il6axis.figures.common import read_summary
from il6axis.figures.de import load_de, ma_figure, pvalue_histogram_figure, volcano_figure
from il6axis.figures.panel import panel_detection_figure, panel_genes_figure, panel_heatmap_figure
from il6axis.figures.qc import (
    LIBRARY_COLUMNS,
    PCA_COLUMNS,
    PCA_VARIANCE_COLUMNS,
    SEX_COLUMNS,
    library_sizes,
    pca_plot,
    read_qc_table,
    sex_check,
)
from il6axis.figures.registry import COHORT_FIGURES, FigureSpec, input_names
from il6axis.figures.scores import pathway_scores_figure
from il6axis.figures.style import save
from il6axis.jsonio import read_json

log = logging.getLogger(__name__)


def _tsv(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t")


# How each input of :data:`il6axis.figures.registry.COHORT_INPUTS` is read.
LOADERS: dict[str, Callable[[str | Path], Any]] = {
    "summary": read_summary,
    "library_sizes": lambda path: read_qc_table(path, LIBRARY_COLUMNS),
    "sex_check": lambda path: read_qc_table(path, SEX_COLUMNS),
    "sex_check_summary": lambda path: read_json(path, what="sex-check summary", rule="cohort_qc"),
    "pca": lambda path: read_qc_table(path, PCA_COLUMNS),
    "pca_variance": lambda path: read_qc_table(path, PCA_VARIANCE_COLUMNS, index=False),
    "de_results": load_de,
    "panel_de": _tsv,
    "expression": lambda path: ad.read_h5ad(path),
    "panel_expression": _tsv,
    "scores": _tsv,
    "score_models": _tsv,
}

# How each figure of the registry is drawn from its loaded inputs (``data``) and the significance level.
BUILDERS: dict[str, Callable[[Mapping[str, Any], float], plt.Figure]] = {
    "library_sizes": lambda data, alpha: library_sizes(data["library_sizes"], data["summary"]),
    "sex_check": lambda data, alpha: sex_check(data["sex_check"], data["sex_check_summary"], data["summary"]),
    "pca": lambda data, alpha: pca_plot(data["pca"], data["pca_variance"], data["summary"]),
    "volcano": lambda data, alpha: volcano_figure(
        data["de_results"], data["panel_de"], data["summary"], alpha
    ),
    "ma": lambda data, alpha: ma_figure(data["de_results"], data["panel_de"], data["summary"], alpha),
    "pvalue_histogram": lambda data, alpha: pvalue_histogram_figure(data["de_results"], data["summary"]),
    "panel_heatmap": lambda data, alpha: panel_heatmap_figure(
        data["expression"], data["panel_de"], data["summary"], alpha
    ),
    "panel_genes": lambda data, alpha: panel_genes_figure(
        data["expression"], data["panel_de"], data["summary"]
    ),
    "panel_detection": lambda data, alpha: panel_detection_figure(data["panel_expression"], data["summary"]),
    "pathway_scores": lambda data, alpha: pathway_scores_figure(
        data["scores"], data["score_models"], data["summary"]
    ),
}


class FigureInputs(Mapping[str, Any]):
    """The inputs one figure may read (its registry entry's ``inputs``), each loaded on first use from
    a cache shared by all figures of the job."""

    def __init__(self, figure: FigureSpec, paths: Mapping[str, str | Path], cache: dict[str, Any]) -> None:
        self._figure, self._paths, self._cache = figure, paths, cache

    def __getitem__(self, name: str) -> Any:
        if name not in self._figure.inputs:
            raise KeyError(
                f"figure {self._figure.name!r} reads input {name!r}, which its registry entry does not list "
                f"(il6axis.figures.registry: inputs {self._figure.inputs})"
            )
        if name not in self._cache:
            self._cache[name] = LOADERS[name](self._paths[name])
        return self._cache[name]

    def __iter__(self):
        return iter(self._figure.inputs)

    def __len__(self) -> int:
        return len(self._figure.inputs)


def write_cohort_figures(
    inputs: Mapping[str, str | Path],
    outputs: Mapping[str, Sequence[str | Path]],
    alpha: float,
    figures: Sequence[FigureSpec] = COHORT_FIGURES,
) -> dict[str, float]:
    """Draw every per-cohort figure of the registry and write each to its paths (PNG + SVG).

    ``inputs`` maps each input name the figures read (:func:`~il6axis.figures.registry.input_names`) to
    its path; ``outputs`` maps each figure name to its paths. Returns seconds spent per figure, reading
    the inputs it was first to need included (also logged).
    """
    names = [f.name for f in figures]
    missing = [name for name in names if name not in outputs]
    unknown = [name for name in outputs if name not in names]
    if missing or unknown:
        raise ValueError(f"cohort figure outputs: missing {missing}, unknown {unknown}; expected {names}")
    absent = [name for name in input_names(figures) if name not in inputs]
    if absent:
        raise ValueError(f"cohort figure inputs: missing {absent}")
    cache: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for figure in figures:
        started = time.perf_counter()
        save(BUILDERS[figure.name](FigureInputs(figure, inputs, cache), alpha), outputs[figure.name])
        seconds[figure.name] = time.perf_counter() - started
        log.info(
            "%s written to %s (%.1f s)",
            figure.name,
            list(map(str, outputs[figure.name])),
            seconds[figure.name],
        )
    return seconds
