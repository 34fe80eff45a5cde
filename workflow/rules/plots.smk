rule volcano:
    input:
        results="results/de/{cohort}/severe_vs_mild.tsv",
        panel="results/de/{cohort}/il6_panel.tsv",
        summary="results/de/{cohort}/summary.json",
    output:
        png="results/plots/{cohort}/volcano.png",
        svg="results/plots/{cohort}/volcano.svg",
    log:
        "results/logs/volcano/{cohort}.log",
    benchmark:
        "results/benchmarks/volcano/{cohort}.tsv"
    conda:
        "../../envs/plots.yaml"
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        alpha=config["de"]["alpha"],
    script:
        "../scripts/plot_volcano.py"
