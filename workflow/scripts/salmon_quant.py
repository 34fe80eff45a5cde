"""Quantify one sample with salmon (all its runs together) and check the detected library type."""

import json
import shutil
from pathlib import Path

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)

from il6axis.reads.salmon import check_strandedness, quant_command, read_quant_qc, run_logged
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]) as log:
    runs, n_mates = smk.params.runs, smk.params.n_mates
    mates = [
        [str(Path(d) / f"{run}_{m}.fastq.gz") for d, run in zip(smk.input.trimmed, runs, strict=True)]
        for m in range(1, n_mates + 1)
    ]
    out = smk.output.quant
    cmd = quant_command(smk.input.index, mates, out, smk.threads, smk.params.extra_args)
    try:
        run_logged(cmd, smk.log[0], f"salmon quant of sample {smk.wildcards.sample}")
        qc = read_quant_qc(out)
        log.info("sample %s: %s", smk.wildcards.sample, json.dumps(qc))
        check_strandedness(
            smk.wildcards.sample, qc["libtype_detected"], smk.params.strandedness, smk.params.strandedness_key
        )
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
