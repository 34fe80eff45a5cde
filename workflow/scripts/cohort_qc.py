"""Sample QC tables of one cohort: library sizes (with the reads QC of a cohort counted from reads), sex
check (table + summary), PCA."""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)

from il6axis.analysis.qc import CohortQcOutputs, ReadsQcInput, write_cohort_qc
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    reads_qc = smk.params.reads_qc
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
        low_library_fraction=smk.params.min_library_fraction,
        reads=(
            ReadsQcInput(
                path=smk.input.reads_qc[0],
                min_mapping_rate=reads_qc["min_mapping_rate"],
                min_read_pairs=reads_qc["min_read_pairs"],
                match_keys=reads_qc["match_keys"],
            )
            if smk.input.reads_qc
            else None
        ),
    )
