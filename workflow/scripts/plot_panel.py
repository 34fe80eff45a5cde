"""IL-6 panel figures of one cohort: z-scored heatmap, per-gene counts with DE estimates, detection."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from il6axis.figures_cohort import (  # noqa: E402
    panel_detection_from_files,
    panel_genes_from_files,
    panel_heatmap_from_files,
)
from il6axis.runlog import logged  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    panel_heatmap_from_files(
        smk.input.expression,
        smk.input.panel_de,
        smk.input.summary,
        smk.params.alpha,
        [smk.output.heatmap_png, smk.output.heatmap_svg],
    )
    panel_genes_from_files(
        smk.input.expression,
        smk.input.panel_de,
        smk.input.summary,
        [smk.output.genes_png, smk.output.genes_svg],
    )
    panel_detection_from_files(
        smk.input.panel_expression, smk.input.summary, [smk.output.detection_png, smk.output.detection_svg]
    )
