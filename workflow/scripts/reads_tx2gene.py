"""Write the checked transcript -> gene map of the configured transcript FASTA (reads.tx2gene or headers)."""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)

from il6axis.reads.annotation import build_tx2gene
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]) as log:
    tx2gene = build_tx2gene(smk.input.transcriptome, smk.input.tx2gene[0] if smk.input.tx2gene else None)
    tx2gene.to_csv(smk.output.tx2gene, sep="\t", index=False)
    log.info("%d transcripts of %d genes", len(tx2gene), tx2gene["gene_id"].nunique())
