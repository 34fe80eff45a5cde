"""Sample QC tables of one cohort: library sizes, sex check (table + summary), PCA."""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)

from il6axis.analysis.qc import CohortQcOutputs, write_cohort_qc
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    write_cohort_qc(
        smk.input.cohort,
        smk.input.expression,
        smk.input.markers,
        CohortQcOutputs(
            library_sizes=smk.output.library_sizes,
            sex_check=smk.output.sex_check,
            sex_check_summary=smk.output.sex_check_summary,
            pca=smk.output.pca,
            pca_variance=smk.output.pca_variance,
        ),
    )
