"""Random-effects meta-analysis of per-cohort effects (genes or scores), pooled per declared contrast."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from il6axis.meta import run_meta  # noqa: E402
from il6axis.runlog import logged  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    features = (
        pd.read_csv(smk.input.panel, sep="\t")["symbol"].tolist() if "panel" in smk.input.keys() else None
    )
    run_meta(
        cohorts=smk.params.cohorts,
        effect_tables=list(smk.input.de),
        summaries=list(smk.input.summaries),
        features=features,
        alpha=smk.params.alpha,
        strata=smk.params.strata,
        method_re=smk.params.method_re,
        sensitivity_exclude=smk.params.sensitivity_exclude,
        meta_path=smk.output.meta,
        forest_path=smk.output.forest,
        sensitivity_path=smk.output.sensitivity,
    )
