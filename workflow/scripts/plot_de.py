"""Differential-expression figures of one cohort: volcano, MA plot and p-value histogram."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from il6axis.plots import ma_from_files, pvalue_histogram_from_files, volcano_from_files  # noqa: E402
from il6axis.runlog import logged  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    de_args = (smk.input.results, smk.input.panel, smk.input.summary, smk.params.alpha)
    volcano_from_files(*de_args, [smk.output.volcano_png, smk.output.volcano_svg])
    ma_from_files(*de_args, [smk.output.ma_png, smk.output.ma_svg])
    pvalue_histogram_from_files(
        smk.input.results, smk.input.summary, [smk.output.pvalues_png, smk.output.pvalues_svg]
    )
