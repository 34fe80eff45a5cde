"""Put workflow/ on sys.path so that rule scripts can import the il6axis package.

Snakemake runs a ``script:`` from a copy under .snakemake/scripts and adds only the script's own folder
(this one) to ``sys.path``; the package sits one level up. Importing this module first is the one place
that knows it, so the scripts themselves start with plain imports.
"""

import sys
from pathlib import Path

WORKFLOW_DIR = str(Path(__file__).resolve().parents[1])
if WORKFLOW_DIR not in sys.path:
    sys.path.insert(0, WORKFLOW_DIR)
