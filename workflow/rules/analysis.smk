rule expression_scores:
    input:
        h5ad="results/cohorts/{cohort}.h5ad",
        de="results/de/{cohort}/severe_vs_mild.tsv",
        panel=PANEL_TSV,
        markers=MARKERS_TSV,
        hallmark=str(
            RESOURCES / "genesets" / "hallmark_il6_jak_stat3.msigdb_v7.5.1.tsv"
        ),
        genesets=GENESET_FILES,
    output:
        h5ad="results/expression/{cohort}.h5ad",
        panel="results/expression/{cohort}/panel_expression.tsv",
        scores="results/scores/{cohort}/pathway_scores.tsv",
        coverage="results/scores/{cohort}/coverage.tsv",
        models="results/scores/{cohort}/score_models.tsv",
        effects="results/scores/{cohort}/score_effects.tsv",
        gsea="results/scores/{cohort}/gsea.tsv",
    log:
        "results/logs/expression_scores/{cohort}.log",
    benchmark:
        "results/benchmarks/expression_scores/{cohort}.tsv"
    conda:
        "../../envs/deseq2.yaml"
    # One core unless the VST fits every gene (vst_nsub: null): the nsub trend fit runs in-process
    # (il6axis.analysis.expression.VST_WORKER_MIN_GENES) and the GSEA permutations are drawn one after another.
    threads: 1 if config["scores"]["vst_nsub"] else config["scores"]["threads"]
    resources:
        # Peak ~0.3 GB on GSE152418 (34 samples x 39,353 genes), at most the deseq2 step's; imports are
        # ~0.22 GB of it and each dense contrast matrix copy is a few MB (bench/bench_expression_memory.py).
        mem_mb=lambda wc, input, attempt: (1000 + 100 * int(input.size_mb)) * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    params:
        # Built-in sets are read from the shipped resources folder (where the hallmark file sits).
        resources_dir=lambda wc, input: str(Path(input.hallmark).parents[1]),
        user_files=config["genesets"]["user_files"],
        settings=config["scores"],
        alpha=config["de"]["alpha"],
    script:
        "../scripts/expression_scores.py"


rule orientation_check:
    input:
        de="results/de/{cohort}/severe_vs_mild.tsv",
        summary="results/de/{cohort}/summary.json",
        markers=MARKERS_TSV,
        # The markers must share no gene with the genes under test (panel and IL-6 pathway sets).
        panel=PANEL_TSV,
        hallmark=RESOURCES / "genesets" / "hallmark_il6_jak_stat3.msigdb_v7.5.1.tsv",
        genesets=GENESET_FILES,
    output:
        table="results/qc/{cohort}/orientation.tsv",
        verdict="results/qc/{cohort}/orientation.json",
    log:
        "results/logs/orientation_check/{cohort}.log",
    localrule: True
    conda:
        "../../envs/deseq2.yaml"
    params:
        alpha=config["de"]["alpha"],
        fail_on_reversed=config["qc"]["fail_on_reversed"],
        # The shipped pathway-set files are read from the resources folder (where the hallmark file sits).
        resources_dir=lambda wc, input: str(Path(input.hallmark).parents[1]),
    script:
        "../scripts/orientation_check.py"


rule composition_sensitivity:
    input:
        h5ad="results/expression/{cohort}.h5ad",
        de="results/de/{cohort}/severe_vs_mild.tsv",
    output:
        adjusted="results/de/{cohort}/severe_vs_mild.neutrophil_adjusted.tsv",
        comparison="results/de/{cohort}/composition_sensitivity.tsv",
        status="results/de/{cohort}/composition_sensitivity.json",
    log:
        "results/logs/composition_sensitivity/{cohort}.log",
    benchmark:
        "results/benchmarks/composition_sensitivity/{cohort}.tsv"
    conda:
        "../../envs/deseq2.yaml"
    threads: config["de"]["threads"]
    resources:
        mem_mb=lambda wc, input, attempt: (2000 + 100 * int(input.size_mb)) * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
    params:
        alpha=config["de"]["alpha"],
        min_count=config["de"]["min_count"],
        cooks_refit=config["de"]["cooks_refit"],
        engine=config["de"]["engine"],
    script:
        "../scripts/composition_sensitivity.py"


# Sample QC as tables (library sizes, recorded vs expression sex, PCA); the QC figures of plot_cohort
# draw these. A cohort counted from reads also gets its reads QC (mapping rate, flags) in library_sizes.tsv.
# Columns: README.md, "Outputs".
rule cohort_qc:
    input:
        cohort="results/cohorts/{cohort}.h5ad",
        expression="results/expression/{cohort}.h5ad",
        markers=MARKERS_TSV,
        reads_qc=_reads_sample_qc,
    output:
        library_sizes="results/qc/{cohort}/library_sizes.tsv",
        sex_check="results/qc/{cohort}/sex_check.tsv",
        sex_check_summary="results/qc/{cohort}/sex_check.json",
        pca="results/qc/{cohort}/pca.tsv",
        pca_variance="results/qc/{cohort}/pca_variance.tsv",
    log:
        "results/logs/cohort_qc/{cohort}.log",
    benchmark:
        "results/benchmarks/cohort_qc/{cohort}.tsv"
    conda:
        "../../envs/deseq2.yaml"
    resources:
        mem_mb=lambda wc, input, attempt: (1000 + 50 * int(input.size_mb)) * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        min_library_fraction=config["qc"]["min_library_fraction"],
        reads_qc=_reads_qc_params,
    script:
        "../scripts/cohort_qc.py"
