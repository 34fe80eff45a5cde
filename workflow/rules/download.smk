# Downloads run on the submitting node (localrule): compute nodes of many clusters have no internet.
# Each writes the verified file plus a one-line record; download_manifest collects the records.


rule download_series_matrix:
    output:
        file=series_matrix_path("{accession}"),
        record=record_path(series_matrix_path("{accession}")),
    log:
        "results/logs/download/{accession}_series_matrix.log",
    localrule: True
    conda:
        "../../envs/cohorts.yaml"
    params:
        kind=geo.KIND_SERIES_MATRIX,
        settings=config["download"],
        sha256=lambda wc, output: expected_sha256(output.file),
        config_key=lambda wc, output: config_key_of(output.file),
    script:
        "../scripts/download.py"


rule download_ncbi_counts:
    output:
        file=ncbi_counts_path("{accession}"),
        record=record_path(ncbi_counts_path("{accession}")),
    log:
        "results/logs/download/{accession}_ncbi_counts.log",
    localrule: True
    conda:
        "../../envs/cohorts.yaml"
    params:
        kind=geo.KIND_NCBI_COUNTS,
        settings=config["download"],
        sha256=lambda wc, output: expected_sha256(output.file),
    script:
        "../scripts/download.py"


rule download_supplementary:
    output:
        file=supplementary_path("{accession}", "{file}"),
        record=record_path(supplementary_path("{accession}", "{file}")),
    log:
        "results/logs/download/{accession}_suppl_{file}.log",
    localrule: True
    conda:
        "../../envs/cohorts.yaml"
    params:
        kind=geo.KIND_SUPPLEMENTARY,
        settings=config["download"],
        sha256=lambda wc, output: expected_sha256(output.file),
        config_key=lambda wc, output: config_key_of(output.file),
    script:
        "../scripts/download.py"


rule download_gene_info:
    output:
        file=GENE_INFO_DOWNLOAD,
        record=record_path(GENE_INFO_DOWNLOAD),
    log:
        "results/logs/download/gene_info.log",
    localrule: True
    conda:
        "../../envs/cohorts.yaml"
    params:
        kind=geo.KIND_GENE_INFO,
        settings=config["download"],
        sha256=config["gene_info"]["sha256"],
    script:
        "../scripts/download.py"


# A cohort with `counts.sources`: the first source whose file exists (a 404/410 or a file absent from
# download.local_dir moves on; any other failure stops), plus a record of the choice for build_cohort.
rule fetch_count_sources:
    input:
        # `source: local` files are inputs, so an edited local table reruns the choice.
        local=lambda wc: [
            s["path"] for s in count_sources(wc.cohort) if s["source"] == "local"
        ],
    output:
        file=chosen_counts_path("{cohort}"),
        record=record_path(chosen_counts_path("{cohort}")),
        choice=count_choice_path("{cohort}"),
    log:
        "results/logs/download/{cohort}_count_sources.log",
    localrule: True
    conda:
        "../../envs/cohorts.yaml"
    params:
        sources=lambda wc: count_sources(wc.cohort),
        accession=lambda wc: config["cohorts"][wc.cohort].get("accession", wc.cohort),
        settings=config["download"],
    script:
        "../scripts/fetch_count_sources.py"


rule download_manifest:
    input:
        records=lambda wc: [record_path(f) for f in downloaded_files()],
    output:
        report(
            f"{DOWNLOADS}/manifest.tsv",
            caption="../report/download_manifest.rst",
            category="6. Provenance",
            labels={"item": "downloaded files and sha256"},
        ),
    log:
        "results/logs/download/manifest.log",
    localrule: True
    conda:
        "../../envs/cohorts.yaml"
    script:
        "../scripts/download_manifest.py"
