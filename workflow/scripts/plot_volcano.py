"""Volcano plot of one cohort's severe-vs-mild results with the IL-6 panel genes labelled."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from il6axis.plots import volcano_from_files  # noqa: E402
from il6axis.runlog import logged  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    volcano_from_files(
        results_path=smk.input.results,
        panel_path=smk.input.panel,
        summary_path=smk.input.summary,
        alpha=smk.params.alpha,
        out_paths=[smk.output.png, smk.output.svg],
    )
