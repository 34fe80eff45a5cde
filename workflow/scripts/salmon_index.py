"""Build the salmon index of the configured transcriptome (with the genome as decoys when configured)."""

import shutil
from pathlib import Path

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)

from il6axis.reads.annotation import is_gencode_fasta
from il6axis.reads.salmon import index_command, run_logged, write_gentrome
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    transcripts, decoys_txt, work = smk.input.transcriptome, None, None
    if smk.input.decoys:
        work = Path(f"{smk.output.index}.gentrome")
        transcripts, decoys_txt = write_gentrome(smk.input.transcriptome, smk.input.decoys[0], work)
    cmd = index_command(
        str(transcripts),
        smk.output.index,
        smk.threads,
        smk.params.kmer,
        is_gencode_fasta(smk.input.transcriptome),
        str(decoys_txt) if decoys_txt else None,
    )
    try:
        run_logged(cmd, smk.log[0], "salmon index")
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
