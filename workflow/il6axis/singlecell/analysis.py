"""Rule ``singlecell_analysis``: per cell type, the bulk DE, panel and pathway-score analysis on the donor
pseudobulk written by :mod:`il6axis.singlecell.build`, and the cohort's single-cell figures.

Each cell type's pseudobulk AnnData has the layout of a bulk cohort, so the bulk code runs on it
unchanged: :func:`il6axis.de.outputs.run_and_write` for the DE and panel tables, and the bulk pathway-score
functions (:func:`il6axis.analysis.scores.mean_z_scores`, :func:`il6axis.analysis.scores.score_model`)
on log2-CPM of the donors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from il6axis.analysis.genesets import CORE_SIGNALLING
from il6axis.analysis.scores import mean_z_scores, score_model
from il6axis.cohort.contrast import Contrast, contrast_from_uns
from il6axis.de.contract import DeSettings
from il6axis.de.outputs import run_and_write
from il6axis.jsonio import read_json
from il6axis.singlecell.donors import power_note
from il6axis.singlecell.figures import celltype_volcano, donor_counts_text, panel_dotplot, pathway_score_plot
from il6axis.vocabulary import MILD, SEVERE

log = logging.getLogger(__name__)

# A set needs this many usable genes for a score: with a handful of donors a one-gene "pathway" score is
# that gene's z-score, nothing more.
MIN_SET_GENES = 2
TABLE_COLUMNS = [
    "gene_set",
    "n_genes_used",
    "n_mild",
    "n_severe",
    "mean_mild",
    "mean_severe",
    "effect",
    "se",
    "ci_low",
    "ci_high",
    "pvalue",
    "df_resid",
]


def log_cpm(adata: ad.AnnData, prior: float = 1.0) -> pd.DataFrame:
    """log2(CPM + prior) per sample (samples x genes)."""
    counts = np.asarray(adata.X, dtype=float)
    lib = counts.sum(axis=1, keepdims=True)
    lib[lib == 0] = 1.0
    return pd.DataFrame(np.log2(counts / lib * 1e6 + prior), index=adata.obs_names, columns=adata.var_names)


def pathway_scores(
    adata: ad.AnnData, gene_sets: Mapping[str, Sequence[str]], min_genes: int = MIN_SET_GENES
) -> pd.DataFrame:
    """Per sample and set: the bulk mean z-score (:func:`il6axis.analysis.scores.mean_z_scores`) of the
    set's genes, on log2-CPM standardised across this AnnData's samples (every donor of the cell type).

    Genes absent, or constant across samples, are not used; a set with fewer than ``min_genes`` usable
    genes gets no score (NaN). Long format: ``sample_id``, ``gene_set``, ``score``, ``n_genes_in_set``,
    ``n_genes_used``, sets in the order given.
    """
    wide, coverage = mean_z_scores(log_cpm(adata), gene_sets, min_genes)
    long = (
        wide.rename_axis(index="sample_id")
        .reset_index()
        .melt(id_vars="sample_id", var_name="gene_set", value_name="score")
    )
    per_set = coverage.set_index("set")
    long["n_genes_in_set"] = long["gene_set"].map(per_set["n_genes"])
    long["n_genes_used"] = long["gene_set"].map(per_set["n_present"])
    return long


def pathway_table(
    adata: ad.AnnData, scores: pd.DataFrame, covariates: Sequence[str], alpha: float = 0.05
) -> pd.DataFrame:
    """Severity effect on each set score: the bulk model (:func:`il6axis.analysis.scores.score_model`,
    OLS ``score ~ covariates + severity``, mild the reference) on the mild + severe donors.

    ``scores`` is :func:`pathway_scores`' long table. Per set: usable genes, donors and mean score per
    group, the severe - mild coefficient with its SE, ``1 - alpha`` CI and p-value; NaN statistics (and
    ``df_resid`` 0 when there is no score) when the model cannot be fitted.
    """
    sets = list(dict.fromkeys(scores["gene_set"]))
    wide = scores.pivot(index="sample_id", columns="gene_set", values="score")[sets]
    model = score_model(wide, adata.obs, covariates, alpha=alpha).set_index("set")
    severity = adata.obs["severity"]
    severity = severity[severity.isin([SEVERE, MILD])]
    rows = []
    for name, part in scores.groupby("gene_set", sort=False):
        score = part.set_index("sample_id")["score"].reindex(severity.index)
        fit = model.loc[str(name)]
        rows.append(
            {
                "gene_set": name,
                "n_genes_used": int(part["n_genes_used"].iloc[0]),
                "n_mild": int((severity == MILD).sum()),
                "n_severe": int((severity == SEVERE).sum()),
                "mean_mild": score[severity == MILD].mean(),
                "mean_severe": score[severity == SEVERE].mean(),
                "effect": fit["effect"],
                "se": fit["se"],
                "ci_low": fit["ci_low"],
                "ci_high": fit["ci_high"],
                "pvalue": fit["p"],
                "df_resid": fit["df_resid"] if np.isfinite(fit["df_resid"]) else 0,
            }
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def analyse_celltypes(
    name: str,
    outdir: str | Path,
    panel: pd.DataFrame,
    gene_sets: Mapping[str, Sequence[str]],
    de_settings: DeSettings,
    label_genes: Sequence[str] = CORE_SIGNALLING,
    plots_dir: str | Path | None = None,
) -> pd.DataFrame:
    """DE, panel and pathway tables and figures for every cell type written by
    :func:`il6axis.singlecell.build.write_pseudobulk`.

    Per cell type ``de/<slug>/`` gets the bulk outputs (severe_vs_mild.tsv, il6_panel.tsv, summary.json with
    the cell type and power note added) and ``<plots_dir>/volcano_<slug>.png``; the cohort gets
    pathway_scores.tsv, pathway_table.tsv and, in ``plots_dir`` (default ``outdir/plots``),
    pathway_scores.png, panel_dotplot.png and panel_matrixplot.png.
    Returns one row per analysed cell type (n donors, genes tested, power note).
    """
    out = Path(outdir)
    plots = Path(plots_dir) if plots_dir is not None else out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    types = pd.read_csv(out / "cell_types.tsv", sep="\t", dtype=str)
    overview, all_scores, all_tables = [], [], []
    declared = Contrast()  # every cell type of a cohort carries the cohort's declared contrast
    for ct, s in zip(types["cell_type"], types["slug"], strict=True):
        adata = ad.read_h5ad(out / "pseudobulk" / f"{s}.h5ad")
        covariates = list(adata.uns.get("covariates", []))
        de_dir = out / "de" / s
        de_dir.mkdir(parents=True, exist_ok=True)
        result = run_and_write(
            adata, panel, covariates, de_settings, name,
            str(de_dir / "severe_vs_mild.tsv"), str(de_dir / "il6_panel.tsv"), str(de_dir / "summary.json"),
        )  # fmt: skip
        declared = contrast_from_uns(adata.uns, source=f"{name} {ct} pseudobulk")
        note = power_note(result.n_per_group, declared)
        summary_path = de_dir / "summary.json"
        summary = read_json(summary_path, what="DE summary", rule="singlecell_analysis")
        summary.update({"cell_type": ct, "power_note": note, "n_cells": int(adata.obs["n_cells"].sum())})
        summary_path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        n = result.n_per_group
        title = f"{name}, {ct} (pseudobulk): {declared.with_n(n)} donors"
        if "underpowered" in note:
            title += "\nunderpowered: results exercise the code and support no inference"
        significant = result.table.loc[result.table["padj"] < de_settings.alpha, "gene"]
        labels = [*label_genes, *[g for g in panel["symbol"] if g in set(significant)]]
        title += "\ncircled: IL-6 receptor-JAK-STAT3 core and significant IL-6 panel genes"
        celltype_volcano(result.table, labels, de_settings.alpha, title, plots / f"volcano_{s}.png", declared)
        scores = pathway_scores(adata, gene_sets)
        table = pathway_table(adata, scores, covariates)
        sev = adata.obs["severity"].astype(str)
        all_scores.append(scores.assign(cell_type=ct, severity=scores["sample_id"].map(sev.to_dict())))
        all_tables.append(table.assign(cell_type=ct))
        overview.append({"cell_type": ct, "slug": s, "n_severe": n[SEVERE], "n_mild": n[MILD],
                         "n_tested": result.n_tested, "power_note": note})  # fmt: skip
    if all_scores:
        scores_long = pd.concat(all_scores, ignore_index=True).rename(columns={"sample_id": "donor"})
        scores_long.to_csv(out / "pathway_scores.tsv", sep="\t", index=False, float_format="%.6g")
        tables = pd.concat(all_tables, ignore_index=True)
        tables = tables[["cell_type", *[c for c in tables.columns if c != "cell_type"]]]
        tables.to_csv(out / "pathway_table.tsv", sep="\t", index=False, float_format="%.6g")
        donors = pd.read_csv(out / "donors.tsv", sep="\t", index_col=0)
        pathway_score_plot(
            scores_long, plots / "pathway_scores.png",
            f"{name}: gene-set score per donor (pseudobulk), {donor_counts_text(donors, declared)}",
        )  # fmt: skip
    cells_path = out / "panel_cells.h5ad"
    if cells_path.exists():
        cells = ad.read_h5ad(cells_path)
        donors = pd.read_csv(out / "donors.tsv", sep="\t", index_col=0)
        genes: list[str] | dict[str, list[str]] = list(panel["symbol"])
        if "tier" in panel.columns:  # bracket the gene axis by panel tier, in the panel's order
            genes = {t: list(panel.loc[panel["tier"] == t, "symbol"]) for t in dict.fromkeys(panel["tier"])}
        for kind in ("dotplot", "matrixplot"):
            panel_dotplot(
                cells, genes, plots / f"panel_{kind}.png",
                f"{name}: IL-6 panel in {cells.n_obs:,} cells; {donor_counts_text(donors, declared)}",
                kind=kind,
            )  # fmt: skip
    frame = pd.DataFrame(overview)
    frame.to_csv(out / "cell_types_analysed.tsv", sep="\t", index=False)
    return frame
