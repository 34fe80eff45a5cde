"""Put workflow/ (the il6axis package) and tests/ (fake GEO server, replicas) on sys.path for the benchmarks.

Benchmarks run as plain scripts (``python bench/x.py``), so only bench/ is on the path; importing this
module first is the one place that knows the layout, and the scripts' own imports stay at the top.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT / "tests", ROOT / "workflow"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
