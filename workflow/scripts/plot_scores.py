"""Pathway-score figure of one cohort: per gene set, scores by severity with the OLS estimate."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from il6axis.figures_cohort import pathway_scores_from_files  # noqa: E402
from il6axis.runlog import logged  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    pathway_scores_from_files(
        smk.input.scores, smk.input.models, smk.input.summary, [smk.output.png, smk.output.svg]
    )
