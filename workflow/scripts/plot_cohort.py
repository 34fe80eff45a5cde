"""Every figure of one cohort: sample QC, DE (volcano, MA, p-values), IL-6 panel, pathway scores."""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)

from il6axis.figures.cohort import CohortFigureInputs, write_cohort_figures
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    out = smk.output
    write_cohort_figures(
        CohortFigureInputs(
            cohort=smk.input.cohort,
            expression=smk.input.expression,
            markers=smk.input.markers,
            de_results=smk.input.results,
            panel_de=smk.input.panel,
            panel_expression=smk.input.panel_expression,
            summary=smk.input.summary,
            scores=smk.input.scores,
            score_models=smk.input.models,
        ),
        {
            "library_sizes": [out.library_png, out.library_svg],
            "sex_check": [out.sex_png, out.sex_svg],
            "pca": [out.pca_png, out.pca_svg],
            "volcano": [out.volcano_png, out.volcano_svg],
            "ma": [out.ma_png, out.ma_svg],
            "pvalue_histogram": [out.pvalues_png, out.pvalues_svg],
            "panel_heatmap": [out.heatmap_png, out.heatmap_svg],
            "panel_genes": [out.genes_png, out.genes_svg],
            "panel_detection": [out.detection_png, out.detection_svg],
            "pathway_scores": [out.scores_png, out.scores_svg],
        },
        smk.params.alpha,
    )
