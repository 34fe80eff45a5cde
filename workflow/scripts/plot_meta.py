"""Every across-cohort figure, as listed in il6axis.figures.registry.META_FIGURES."""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)

from il6axis.figures.meta import write_meta_figures
from il6axis.figures.registry import META_FIGURES, input_names, output_paths
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    write_meta_figures(
        {name: smk.input[name] for name in input_names(META_FIGURES)},
        output_paths(META_FIGURES, smk.output),
        list(smk.params.cohorts),
        smk.params.alpha,
    )
