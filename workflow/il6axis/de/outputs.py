"""The DE step's outputs for one cohort: the routed fit, the genome-wide and panel tables, the panel
genes' stability and the run summary (rule ``deseq2``, and the pseudobulk DE of the single-cell step).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace

import anndata as ad
import numpy as np
import pandas as pd
import pydeseq2

from il6axis import __version__ as workflow_version
from il6axis.cohort.contrast import contrast_from_uns
from il6axis.cohort.value_scale import detected_log2
from il6axis.de import routing, stability
from il6axis.de.contract import REFERENCE_LEVEL, DeResult, DeSettings, benjamini_hochberg
from il6axis.vocabulary import MILD, SEVERE

log = logging.getLogger(__name__)


def panel_table(de_table: pd.DataFrame, panel: pd.DataFrame, adata: ad.AnnData) -> pd.DataFrame:
    """One row per pre-specified panel gene: present?, tested?, effect with CI, genome-wide and panel BH.

    Detection (fraction of contrast samples with a count > 0) is reported per group so that a barely
    detected gene (IL6 in blood) is visible instead of silently missing.
    """
    in_contrast = adata.obs["severity"].isin([SEVERE, MILD]).to_numpy()
    sub = adata[in_contrast]
    counts = pd.DataFrame(np.asarray(sub.X), index=sub.obs_names, columns=sub.var_names)
    groups = sub.obs["severity"].astype(str)
    rows = panel[["symbol", "tier", "role"]].copy()
    rows["present"] = rows["symbol"].isin(counts.columns)
    present = list(dict.fromkeys(rows.loc[rows["present"], "symbol"]))
    # Published log2 values: zeros sit at each sample's floor, not at 0 (value_scale.detected_log2).
    detected = detected_log2(counts, present) if routing.is_log2(adata) else counts[present] > 0
    for g in (MILD, SEVERE):
        det = detected.loc[groups == g].mean(axis=0)
        rows[f"detection_{g}"] = rows["symbol"].map(det)
    merged = rows.merge(de_table, how="left", left_on="symbol", right_on="gene").drop(columns="gene")
    for flag in ("tested", "cooks_outlier", "independently_filtered"):
        if flag in merged:
            merged[flag] = merged[flag].eq(True)
    merged.loc[~merged["present"], "not_tested_reason"] = "gene absent from the count matrix"
    merged["padj_panel"] = benjamini_hochberg(merged["pvalue"])
    return merged


def run_and_write(
    adata: ad.AnnData,
    panel: pd.DataFrame,
    covariates: Sequence[str],
    settings: DeSettings,
    cohort: str,
    results_path: str,
    panel_path: str,
    summary_path: str,
    stability_path: str | None = None,
) -> DeResult:
    """Run DE for one cohort and write the genome-wide table, the panel table and a JSON summary.

    The model follows the cohort's values (``routing``): NB GLM for counts, the moderated log2
    linear model for cohorts that publish normalised values only. With ``settings.stability`` the panel
    genes get leave-one-sample-out refits (``il6axis.de.stability``): their class goes into the panel
    table's ``stability`` column and the details to ``stability_path`` (``panel_stability.tsv``).
    """
    if settings.stability is not None and settings.stability.enabled:
        settings = replace(settings, refit_genes=tuple(stability.panel_genes(panel)))
    result = routing.fit_severity(adata, covariates, settings)
    table = result.table
    table.to_csv(results_path, sep="\t", index=False, float_format="%.6g")
    # The declared contrast (config `contrast`, carried in uns): what the `severe` / `mild` slots are.
    declared = contrast_from_uns(adata.uns, source=f"{cohort} AnnData")
    panel_out = panel_table(table, panel, adata).assign(contrast=declared.label)
    stable = stability.run_panel_stability(
        table, panel, result.refit_inputs, settings.alpha, settings.stability
    )
    panel_out["stability"] = panel_out["symbol"].astype(str).map(stable.set_index("gene")["stability"])
    if stability_path is not None:
        stable.to_csv(stability_path, sep="\t", index=False, float_format="%.6g")
    panel_out.to_csv(panel_path, sep="\t", index=False, float_format="%.6g")
    called = table["padj"] < settings.alpha
    summary = {
        "cohort": cohort,
        "contrast": declared.to_dict(result.n_per_group),
        "reference_level": REFERENCE_LEVEL,
        "design": result.design,
        "model": routing.model_of(adata),
        "scale": routing.scale_of(adata),
        "value_type": routing.value_type_of(adata),
        "n_per_group": result.n_per_group,
        "alpha": settings.alpha,
        "n_cpus": settings.n_cpus,
        "n_genes": int(len(table)),
        "n_tested": result.n_tested,
        "de_engine": result.engine,
        "independent_filter_threshold": result.filter_threshold,
        "n_up": int((called & (table["log2FoldChange"] > 0)).sum()),
        "n_down": int((called & (table["log2FoldChange"] < 0)).sum()),
        "tissue": str(adata.uns.get("tissue", "")),
        "pydeseq2_version": pydeseq2.__version__,
        "workflow_version": workflow_version,
    }
    with open(summary_path, "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    log.info("summary %s", summary)
    return result
