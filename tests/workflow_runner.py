"""Run the workflow with Snakemake in a subprocess, from a temporary working directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def run_snakemake(
    workdir: Path, configfile: Path, *extra: str, cores: int = 2, timeout: int = 900
) -> subprocess.CompletedProcess[str]:
    """``snakemake --cores N --configfile F --directory workdir`` with the repository's Snakefile."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(PROJECT_ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--cores",
        str(cores),
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir)
