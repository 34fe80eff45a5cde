"""Sample QC figures of one cohort: library sizes, recorded sex vs XIST/RPS4Y1, PCA of the VST."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from il6axis.figures_cohort import (  # noqa: E402
    library_sizes_from_files,
    pca_from_files,
    sex_check_from_files,
)
from il6axis.runlog import logged  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    library_sizes_from_files(smk.input.cohort, [smk.output.library_png, smk.output.library_svg])
    sex_check_from_files(smk.input.cohort, smk.input.markers, [smk.output.sex_png, smk.output.sex_svg])
    pca_from_files(smk.input.expression, [smk.output.pca_png, smk.output.pca_svg])
