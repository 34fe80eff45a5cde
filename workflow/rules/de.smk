rule deseq2:
    input:
        h5ad="results/cohorts/{cohort}.h5ad",
        panel=PANEL_TSV,
    output:
        results="results/de/{cohort}/severe_vs_mild.tsv",
        panel="results/de/{cohort}/il6_panel.tsv",
        summary="results/de/{cohort}/summary.json",
        stability="results/de/{cohort}/panel_stability.tsv",
    log:
        "results/logs/deseq2/{cohort}.log",
    benchmark:
        "results/benchmarks/deseq2/{cohort}.tsv"
    conda:
        "../../envs/deseq2.yaml"
    threads: config["de"]["threads"]
    resources:
        # The gzip-compressed h5ad is ~5-10x smaller than the dense int64 matrix, and the DE step peaks at
        # ~6-7 such matrices above a ~210 MB baseline (bench/README.md); the factor leaves room for both.
        mem_mb=lambda wc, input, attempt: (2000 + 200 * int(input.size_mb)) * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
    params:
        covariates=lambda wc: list(config["cohorts"][wc.cohort]["covariates"]),
        alpha=config["de"]["alpha"],
        min_count=config["de"]["min_count"],
        lfc_shrink=config["de"]["lfc_shrink"],
        cooks_refit=config["de"]["cooks_refit"],
        engine=config["de"]["engine"],
        stability=config["de"]["stability"],
    script:
        "../scripts/run_deseq2.py"
