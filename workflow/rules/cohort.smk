rule build_cohort:
    input:
        counts=counts_input,
        metadata=metadata_input,
        gene_info=gene_info_input,
    output:
        h5ad="results/cohorts/{cohort}.h5ad",
        samples="results/cohorts/{cohort}.samples.tsv",
        gene_mapping="results/cohorts/{cohort}.gene_mapping.tsv",
    log:
        "results/logs/build_cohort/{cohort}.log",
    conda:
        "../../envs/cohorts.yaml"
    params:
        spec=cohort_spec,
    script:
        "../scripts/build_cohort.py"
