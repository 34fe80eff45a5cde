"""How the analysis rules write their tables: tab-separated, no index, 6 significant digits and ``\\n``
line ends, so that a rerun on the same input gives the same bytes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def write_tsv(frame: pd.DataFrame, path: str | Path) -> None:
    """Write ``frame`` to ``path`` in the analysis stage's stable text layout."""
    frame.to_csv(path, sep="\t", index=False, float_format="%.6g", lineterminator="\n")
