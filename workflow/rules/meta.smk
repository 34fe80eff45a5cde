rule meta_panel_genes:
    input:
        de=expand("results/de/{cohort}/severe_vs_mild.tsv", cohort=enabled_cohorts()),
        summaries=expand("results/de/{cohort}/summary.json", cohort=enabled_cohorts()),
        panel=PANEL_TSV,
    output:
        meta="results/meta/panel_genes.tsv",
        forest="results/meta/forest_panel_genes.tsv",
        sensitivity="results/meta/panel_genes_sensitivity.tsv",
    log:
        "results/logs/meta/panel_genes.log",
    benchmark:
        "results/benchmarks/meta/panel_genes.tsv"
    conda:
        "../../envs/deseq2.yaml"
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        cohorts=enabled_cohorts(),
        settings=config["meta"],
    script:
        "../scripts/meta_analysis.py"


rule meta_pathway_scores:
    input:
        de=expand("results/scores/{cohort}/score_effects.tsv", cohort=enabled_cohorts()),
        summaries=expand("results/de/{cohort}/summary.json", cohort=enabled_cohorts()),
    output:
        meta="results/meta/pathway_scores.tsv",
        forest="results/meta/forest_pathway_scores.tsv",
        sensitivity="results/meta/pathway_scores_sensitivity.tsv",
    log:
        "results/logs/meta/pathway_scores.log",
    benchmark:
        "results/benchmarks/meta/pathway_scores.tsv"
    conda:
        "../../envs/deseq2.yaml"
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        cohorts=enabled_cohorts(),
        settings=config["meta"],
    script:
        "../scripts/meta_analysis.py"
