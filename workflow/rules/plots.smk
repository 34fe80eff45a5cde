# Figures, each as PNG (shown in the report) and SVG (vector, for papers). Which figures exist, their files,
# captions, report categories and the inputs each reads are listed once, in il6axis.figures.registry; the
# outputs and inputs below are built from it (figure_outputs and rule_inputs, common.smk).


# Every figure of one cohort in one job: a plotting job spends seconds importing matplotlib, pandas and
# anndata and reading the expression AnnData, so one job per cohort pays that once (bench/bench_plots.py).
# The QC figures draw the tables of rule cohort_qc (analysis.smk).
rule plot_cohort:
    input:
        **rule_inputs(COHORT_FIGURES, COHORT_INPUTS),
    output:
        **figure_outputs(COHORT_FIGURES),
    log:
        "results/logs/plot_cohort/{cohort}.log",
    benchmark:
        "results/benchmarks/plot_cohort/{cohort}.tsv"
    conda:
        "../../envs/plots.yaml"
    resources:
        mem_mb=lambda wc, input, attempt: (2000 + 50 * int(input.size_mb)) * attempt,
        runtime=lambda wc, attempt: 20 * attempt,
    params:
        alpha=config["de"]["alpha"],
    script:
        "../scripts/plot_cohort.py"


rule plot_meta:
    input:
        **rule_inputs(META_FIGURES, META_INPUTS, enabled_cohorts()),
    output:
        **figure_outputs(META_FIGURES),
    log:
        "results/logs/plot_meta/plot_meta.log",
    benchmark:
        "results/benchmarks/plot_meta/plot_meta.tsv"
    conda:
        "../../envs/plots.yaml"
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        cohorts=enabled_cohorts(),
        alpha=config["meta"]["alpha"],
    script:
        "../scripts/plot_meta.py"
