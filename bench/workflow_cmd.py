"""The snakemake command line the workflow benchmarks run (imported by the bench_*.py scripts)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def snakemake_cmd(workdir: str | Path, configfile: str | Path, cores: int, *extra: str) -> list[str]:
    """This interpreter's snakemake on the project's Snakefile, in ``workdir`` with ``configfile``."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--cores",
        str(cores),
        *extra,
    ]
