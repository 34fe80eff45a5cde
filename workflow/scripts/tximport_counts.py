"""Gene x sample counts of a reads cohort with pytximport, and the per-sample QC table."""

from pathlib import Path

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)
import pandas as pd

from il6axis.reads.aggregate import gene_counts, sample_qc
from il6axis.reads.fastp import read_fastp_summary
from il6axis.reads.salmon import read_quant_qc
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]) as log:
    samples = list(smk.params.samples)
    quant_dirs = dict(zip(samples, smk.input.quant, strict=True))
    tx2gene = pd.read_csv(smk.input.tx2gene, sep="\t", dtype=str)
    counts = gene_counts(
        {s: Path(d) / "quant.sf" for s, d in quant_dirs.items()},
        tx2gene,
        smk.params.counts_from_abundance,
        smk.params.gene_key,
    )
    fastp_json = dict(zip(smk.params.runs, smk.input.fastp_json, strict=True))
    fastp_by_sample = {
        s: [{"run": r, **read_fastp_summary(fastp_json[r])} for r in runs]
        for s, runs in smk.params.runs_of_sample.items()
    }
    qc = sample_qc(
        samples,
        {s: read_quant_qc(d) for s, d in quant_dirs.items()},
        fastp_by_sample,
        smk.params.min_mapping_rate,
        smk.params.min_read_pairs,
    )
    counts.to_csv(smk.output.counts, sep="\t", float_format="%.6g")
    qc.to_csv(smk.output.qc, sep="\t", index=False)
    log.info("%d genes x %d samples (%s)", *counts.shape, smk.params.counts_from_abundance)
