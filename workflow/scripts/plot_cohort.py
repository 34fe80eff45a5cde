"""Every figure of one cohort, as listed in il6axis.figures.registry.COHORT_FIGURES."""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)

from il6axis.figures.cohort import write_cohort_figures
from il6axis.figures.registry import COHORT_FIGURES, input_names, output_paths
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    write_cohort_figures(
        {name: smk.input[name] for name in input_names(COHORT_FIGURES)},
        output_paths(COHORT_FIGURES, smk.output),
        smk.params.alpha,
    )
