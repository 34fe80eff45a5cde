"""A DE table drawn around a demo cohort's planted log2 fold changes, for figure tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from il6axis.de.contract import benjamini_hochberg


def de_table_around_truth(truth: pd.DataFrame, seed: int, se: float = 0.25) -> pd.DataFrame:
    """severe_vs_mild.tsv layout: true log2FC (``truth`` by gene) plus N(0, se) noise, Wald z and p, BH."""
    rng = np.random.default_rng(seed)
    ses = np.full(len(truth), se)
    lfc = truth["true_log2FoldChange"].to_numpy() + rng.normal(0, se, len(truth))
    z = lfc / ses
    p = 2 * stats.norm.sf(np.abs(z))
    return pd.DataFrame(
        {
            "gene": truth.index,
            "baseMean": truth["base_mean"].to_numpy(),
            "log2FoldChange": lfc,
            "lfcSE": ses,
            "ci_low": lfc - 1.96 * ses,
            "ci_high": lfc + 1.96 * ses,
            "stat": z,
            "pvalue": p,
            "padj": benjamini_hochberg(pd.Series(p)).to_numpy(),
            "tested": True,
            "not_tested_reason": "",
        }
    )
