"""Normalised / VST expression, the IL-6 panel by group, pathway scores and their tests for one cohort."""

from pathlib import Path

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)
import anndata as ad
import pandas as pd

from il6axis.analysis.expression_scores import ScoreSettings, expression_and_scores
from il6axis.analysis.genesets import load_gene_sets
from il6axis.analysis.tsv import write_tsv
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)
DE_COLUMNS = {"gene", "stat", "tested"}  # what il6axis.analysis.scores.competitive_test ranks by

with logged(smk.log[0]):
    settings = ScoreSettings.from_config(smk.params.settings, alpha=smk.params.alpha, n_cpus=smk.threads)
    gene_sets = load_gene_sets(
        Path(smk.params.resources_dir),
        list(smk.params.user_files),
        panel_path=smk.input.panel,
        markers_path=smk.input.markers,
    )
    # Memory (bench/README.md): the cohort is opened backed, so only the contrast samples' counts are ever
    # read, and only the DE columns the competitive test ranks by are loaded.
    result = expression_and_scores(
        adata=ad.read_h5ad(smk.input.h5ad, backed="r"),
        de_table=pd.read_csv(smk.input.de, sep="\t", usecols=lambda column: column in DE_COLUMNS),
        gene_sets={name: gs.genes for name, gs in gene_sets.items()},
        panel=pd.read_csv(smk.input.panel, sep="\t"),
        settings=settings,
    )
    result.adata.write_h5ad(smk.output.h5ad, compression="gzip")
    write_tsv(result.panel_expression, smk.output.panel)
    write_tsv(result.scores_long, smk.output.scores)
    write_tsv(result.coverage, smk.output.coverage)
    write_tsv(result.models, smk.output.models)
    write_tsv(result.score_effects, smk.output.effects)
    write_tsv(result.gsea, smk.output.gsea)
