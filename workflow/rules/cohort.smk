rule build_cohort:
    input:
        counts=counts_input,
        metadata=metadata_input,
        gene_info=gene_info_input,
        count_choice=count_choice_input,
    output:
        h5ad="results/cohorts/{cohort}.h5ad",
        samples="results/cohorts/{cohort}.samples.tsv",
        gene_mapping="results/cohorts/{cohort}.gene_mapping.tsv",
        unmatched="results/cohorts/{cohort}.unmatched.tsv",
        subjects="results/cohorts/{cohort}.subjects.tsv",
    log:
        "results/logs/build_cohort/{cohort}.log",
    benchmark:
        "results/benchmarks/build_cohort/{cohort}.tsv"
    conda:
        "../../envs/cohorts.yaml"
    resources:
        # Parsing holds a few copies of the matrix: scale with the (compressed) input size.
        mem_mb=lambda wc, input, attempt: (2000 + 40 * int(input.size_mb)) * attempt,
        runtime=lambda wc, attempt: 20 * attempt,
    params:
        spec=cohort_spec,
    script:
        "../scripts/build_cohort.py"
