"""Random-effects meta-analysis of per-cohort effects (genes or scores), pooled per declared contrast."""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)
import pandas as pd

from il6axis.analysis.meta.run import MetaSettings, run_meta
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)

with logged(smk.log[0]):
    settings = MetaSettings.from_config(smk.params.settings)
    features = (
        pd.read_csv(smk.input.panel, sep="\t")["symbol"].tolist() if "panel" in smk.input.keys() else None
    )
    run_meta(
        cohorts=smk.params.cohorts,
        effect_tables=list(smk.input.de),
        summaries=list(smk.input.summaries),
        features=features,
        alpha=settings.alpha,
        strata=settings.strata,
        method_re=settings.method_re,
        sensitivity_exclude=settings.sensitivity_exclude,
        meta_path=smk.output.meta,
        forest_path=smk.output.forest,
        sensitivity_path=smk.output.sensitivity,
    )
