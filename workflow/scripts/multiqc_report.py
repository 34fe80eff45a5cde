"""MultiQC report of one reads cohort over its fastp and salmon outputs."""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)

from il6axis.reads.report import multiqc_report
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    multiqc_report(
        [*smk.input.fastp_json, *smk.input.quant],
        smk.output.html,
        title=f"Reads QC: {smk.wildcards.cohort}",
    )
