"""The MultiQC report of a reads cohort (fastp per run, salmon per sample), one self-contained HTML file.

Why MultiQC: it is the summary users of nf-core/rnaseq and the snakemake-workflows read first (read
quality, adapter and duplication rates, mapping rates, fragment lengths), and the Snakemake report links
the file per cohort. Run offline: no version check, no uploads, no AI summary.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)


def multiqc_report(inputs: Sequence[str | Path], html_path: str | Path, title: str) -> Path:
    """Write MultiQC's report of ``inputs`` (fastp JSON files and salmon quant folders) to ``html_path``.

    MultiQC searches folders for the files of each tool; it is pointed at a scratch folder of symlinks so
    it sees exactly the files of this cohort. Raises when MultiQC found nothing to report.
    """
    import multiqc  # heavy import: only where used

    html_path = Path(html_path)
    with tempfile.TemporaryDirectory(prefix="multiqc_", dir=html_path.parent) as scratch:
        for item in inputs:
            item = Path(item).resolve()
            link = Path(scratch) / item.name
            if link.exists():  # same basename from two folders (e.g. two quant/<sample>)
                link = Path(scratch) / f"{item.parent.name}_{item.name}"
            link.symlink_to(item, target_is_directory=item.is_dir())
        out_dir = Path(scratch) / "out"
        result = multiqc.run(
            scratch,
            cfg=multiqc.ClConfig(
                title=title,
                output_dir=str(out_dir),
                filename="multiqc_report.html",
                make_data_dir=False,
                force=True,
                quiet=True,
                no_version_check=True,
                no_megaqc_upload=True,
                no_ai=True,
                run_modules=["fastp", "salmon"],
            ),
        )
        report = out_dir / "multiqc_report.html"
        if result.sys_exit_code != 0 or not report.is_file():
            raise RuntimeError(f"MultiQC found no fastp or salmon results in {list(map(str, inputs))}")
        shutil.move(str(report), html_path)
    logger.info("MultiQC report written to %s", html_path)
    return html_path
