"""Across-cohort figures: forest plots (panel genes, pathway scores), log2FC heatmap, orientation summary."""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)

from il6axis.figures import meta as fm
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    cohorts = list(smk.params.cohorts)
    # Each cohort's declared contrast (what its two groups are) labels its rows and the titles.
    contrasts = fm.contrasts_from_summaries(list(smk.input.summaries), cohorts)
    fm.forest_genes_from_files(
        smk.input.meta_genes,
        smk.input.forest_genes,
        [smk.output.forest_genes_png, smk.output.forest_genes_svg],
        cohorts=cohorts,
        contrasts=contrasts,
    )
    fm.forest_scores_from_files(
        smk.input.meta_scores,
        smk.input.forest_scores,
        [smk.output.forest_scores_png, smk.output.forest_scores_svg],
        cohorts=cohorts,
        contrasts=contrasts,
    )
    fm.lfc_heatmap_from_files(
        list(smk.input.panels),
        cohorts,
        smk.params.alpha,
        [smk.output.lfc_heatmap_png, smk.output.lfc_heatmap_svg],
        tissues=fm.tissues_from_verdicts(list(smk.input.orientation), cohorts),
        contrasts=contrasts,
    )
    fm.orientation_summary_from_files(
        list(smk.input.orientation_tables),
        list(smk.input.orientation),
        cohorts,
        smk.params.alpha,
        [smk.output.orientation_png, smk.output.orientation_svg],
        contrasts=contrasts,
    )
