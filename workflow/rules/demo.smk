rule simulate_demo_cohort:
    input:
        panel=PANEL_TSV,
        markers=MARKERS_TSV,
    output:
        counts="results/demo/counts.tsv.gz",
        samples="results/demo/samples.tsv",
        truth="results/demo/truth.tsv",
    log:
        "results/logs/simulate_demo_cohort.log",
    localrule: True
    conda:
        "../../envs/cohorts.yaml"
    params:
        demo=config["demo"],
    script:
        "../scripts/simulate_demo_cohort.py"
