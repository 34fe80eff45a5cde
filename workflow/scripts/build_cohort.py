"""Build results/cohorts/{cohort}.h5ad from the cohort's count table and sample metadata."""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)

from il6axis.acquire.sources import with_chosen_counts
from il6axis.cohort.build import build_cohort, write_cohort
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    spec = smk.params.spec
    if smk.input.count_choice:  # counts.sources: build with the settings of the source taken
        spec = with_chosen_counts(spec, smk.input.count_choice[0])
    built = build_cohort(
        name=smk.wildcards.cohort,
        spec=spec,
        counts_path=smk.input.counts,
        metadata_path=smk.input.metadata,
        gene_info_path=smk.input.gene_info[0] if smk.input.gene_info else None,
    )
    write_cohort(
        built,
        smk.output.h5ad,
        smk.output.samples,
        smk.output.gene_mapping,
        unmatched_path=smk.output.unmatched,
        subjects_path=smk.output.subjects,
    )
