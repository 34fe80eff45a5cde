"""The report's figures, listed once: what each is called, where it is written, its caption and report
section, and which rule inputs it reads.

Everything that needs the list reads it from here: the outputs and inputs of rules plot_cohort and
plot_meta (workflow/rules/plots.smk, through helpers in common.smk), the workflow's default targets
(``all_targets``), and the plotting code, which draws every figure listed
(:func:`il6axis.figures.cohort.write_cohort_figures`, :func:`il6axis.figures.meta.write_meta_figures`).
A new figure is one entry here, one drawing function in its family's module and one caption file in
workflow/report/.

Plain Python (no matplotlib, no Snakemake): the Snakefile imports it while it parses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

COHORT_FOLDER = "results/plots/{cohort}"
META_FOLDER = "results/plots/meta"


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the report, written as PNG (shown in the report) and SVG (vector, for papers).

    ``name`` keys the figure in the plotting code and names the rule outputs (``<name>_png``,
    ``<name>_svg``); ``stem`` is the file name without suffix; ``caption`` a file in workflow/report/;
    ``inputs`` the names of the rule inputs the figure reads (:data:`COHORT_INPUTS` / :data:`META_INPUTS`).
    """

    name: str
    stem: str
    caption: str
    category: str
    label: str
    inputs: tuple[str, ...]
    per_cohort: bool = True
    subcategory: str | None = "{cohort}"

    @property
    def folder(self) -> str:
        return COHORT_FOLDER if self.per_cohort else META_FOLDER

    @property
    def png(self) -> str:
        return f"{self.folder}/{self.stem}.png"

    @property
    def svg(self) -> str:
        return f"{self.folder}/{self.stem}.svg"

    def report_labels(self) -> dict[str, str]:
        """Labels of the figure in the report's table of results."""
        return {"cohort": "{cohort}", "figure": self.label} if self.per_cohort else {"figure": self.label}


QC = "1. Quality control"
DE = "2. Differential expression"
PANEL = "3. IL-6 panel"
SCORES = "4. Pathway scores"
ACROSS = "5. Across cohorts"

# Every input a per-cohort figure can read, by the name the rule and the plotting code use.
COHORT_INPUTS = {
    "summary": "results/de/{cohort}/summary.json",
    "library_sizes": "results/qc/{cohort}/library_sizes.tsv",
    "sex_check": "results/qc/{cohort}/sex_check.tsv",
    "sex_check_summary": "results/qc/{cohort}/sex_check.json",
    "pca": "results/qc/{cohort}/pca.tsv",
    "pca_variance": "results/qc/{cohort}/pca_variance.tsv",
    "de_results": "results/de/{cohort}/severe_vs_mild.tsv",
    "panel_de": "results/de/{cohort}/il6_panel.tsv",
    "expression": "results/expression/{cohort}.h5ad",
    "panel_expression": "results/expression/{cohort}/panel_expression.tsv",
    "scores": "results/scores/{cohort}/pathway_scores.tsv",
    "score_models": "results/scores/{cohort}/score_models.tsv",
}

# Per-cohort figures, in the order plot_cohort draws them (QC, DE, IL-6 panel, pathway scores).
COHORT_FIGURES = (
    FigureSpec("library_sizes", "qc_library_sizes", "qc_library.rst", QC, "library sizes and detected genes",
               ("library_sizes", "summary")),
    FigureSpec("sex_check", "qc_sex_check", "qc_sex.rst", QC, "sex check",
               ("sex_check", "sex_check_summary", "summary")),
    FigureSpec("pca", "qc_pca", "qc_pca.rst", QC, "PCA", ("pca", "pca_variance", "summary")),
    FigureSpec("volcano", "volcano", "volcano.rst", DE, "volcano", ("de_results", "panel_de", "summary")),
    FigureSpec("ma", "ma", "ma.rst", DE, "MA plot", ("de_results", "panel_de", "summary")),
    FigureSpec("pvalue_histogram", "pvalue_histogram", "pvalues.rst", DE, "p-value histogram",
               ("de_results", "summary")),
    FigureSpec("panel_heatmap", "panel_heatmap", "panel_heatmap.rst", PANEL, "heatmap",
               ("expression", "panel_de", "summary")),
    FigureSpec("panel_genes", "panel_genes", "panel_genes.rst", PANEL, "genes by severity",
               ("expression", "panel_de", "summary")),
    FigureSpec("panel_detection", "panel_detection", "panel_detection.rst", PANEL,
               "detection of IL6 and receptors", ("panel_expression", "summary")),
    FigureSpec("pathway_scores", "pathway_scores", "pathway_scores.rst", SCORES, "scores by severity",
               ("scores", "score_models", "summary")),
)  # fmt: skip

# Every input an across-cohort figure can read; ``{cohort}`` paths stand for one file per enabled cohort.
META_INPUTS = {
    "meta_genes": "results/meta/panel_genes.tsv",
    "forest_genes": "results/meta/forest_panel_genes.tsv",
    "meta_scores": "results/meta/pathway_scores.tsv",
    "forest_scores": "results/meta/forest_pathway_scores.tsv",
    "summaries": "results/de/{cohort}/summary.json",
    "panels": "results/de/{cohort}/il6_panel.tsv",
    "orientation": "results/qc/{cohort}/orientation.json",
    "orientation_tables": "results/qc/{cohort}/orientation.tsv",
}

META_FIGURES = (
    FigureSpec("forest_genes", "forest_panel_genes", "forest_panel_genes.rst", ACROSS,
               "forest plot, IL-6 panel genes", ("meta_genes", "forest_genes", "summaries"),
               per_cohort=False, subcategory=None),
    FigureSpec("forest_scores", "forest_pathway_scores", "forest_pathway_scores.rst", ACROSS,
               "forest plot, pathway scores", ("meta_scores", "forest_scores", "summaries"),
               per_cohort=False, subcategory=None),
    FigureSpec("lfc_heatmap", "lfc_heatmap", "lfc_heatmap.rst", ACROSS, "cohort x gene log2FC heatmap",
               ("panels", "orientation", "summaries"), per_cohort=False, subcategory=None),
    FigureSpec("orientation", "orientation_summary", "orientation_summary.rst", QC, "orientation check",
               ("orientation_tables", "orientation", "summaries"), per_cohort=False,
               subcategory="all cohorts"),
)  # fmt: skip


def input_names(figures: Sequence[FigureSpec]) -> list[str]:
    """Every input the figures read, each once, in first-use order."""
    return list(dict.fromkeys(name for figure in figures for name in figure.inputs))


def rule_inputs(
    figures: Sequence[FigureSpec], paths: Mapping[str, str], cohorts: Sequence[str] | None = None
) -> dict[str, str | list[str]]:
    """The rule's named inputs: the path of each input the figures read. With ``cohorts`` (plot_meta), a
    ``{cohort}`` path becomes one path per cohort; without (plot_cohort), it stays a wildcard."""
    inputs: dict[str, str | list[str]] = {}
    for name in input_names(figures):
        path = paths[name]
        per_cohort = cohorts is not None and "{cohort}" in path
        inputs[name] = [path.format(cohort=c) for c in cohorts] if per_cohort else path
    return inputs


def output_paths(figures: Sequence[FigureSpec], outputs: Mapping[str, object]) -> dict[str, list[str]]:
    """Figure name -> [PNG, SVG] paths, from a rule's named outputs (``<name>_png``, ``<name>_svg``)."""
    return {f.name: [str(outputs[f"{f.name}_png"]), str(outputs[f"{f.name}_svg"])] for f in figures}


def figure_targets(cohorts: Sequence[str]) -> list[str]:
    """The PNG of every figure: each listed figure of each cohort, then the across-cohort figures."""
    per_cohort = [f.png.format(cohort=c) for c in cohorts for f in COHORT_FIGURES]
    return per_cohort + [f.png for f in META_FIGURES]
