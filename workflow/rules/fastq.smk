# FASTQ files of the runs of cohorts counted from reads (`counts.source: reads`). Runs to download
# (`download: ena` or `sra`) are fetched on the submitting node (localrule), like the GEO downloads:
# compute nodes of many clusters have no internet. The files are temp(): deleted once fastp has read
# them; each gets a record for results/downloads/manifest.tsv. Runs with local files (fastq_1 /
# fastq_2) are read where they are, never copied. fastq_run() and FASTQ_DIR are in rules/common.smk.


rule download_fastq_paired:
    output:
        fastq_1=temp(f"{FASTQ_DIR}/{{run}}/{{run}}_1.fastq.gz"),
        fastq_2=temp(f"{FASTQ_DIR}/{{run}}/{{run}}_2.fastq.gz"),
        record_1=record_path(f"{FASTQ_DIR}/{{run}}/{{run}}_1.fastq.gz"),
        record_2=record_path(f"{FASTQ_DIR}/{{run}}/{{run}}_2.fastq.gz"),
    log:
        "results/logs/reads/download/{run}.log",
    wildcard_constraints:
        run=r"[SED]RR[0-9]+",
    localrule: True
    conda:
        "../../envs/reads.yaml"
    # fasterq-dump is multi-threaded; an ENA download is one HTTP stream.
    threads: lambda wc: fastq_download_threads(wc.run)
    resources:
        # ENA files stream to disk in 256 KiB chunks; fasterq-dump sorts in memory (100 MB per thread).
        mem_mb=lambda wc, threads: (
            512 + 128 * threads if fastq_run(wc.run).source == "sra" else 256
        ),
        runtime=240,
    params:
        layout=lambda wc: fastq_run(wc.run).layout,
        source=lambda wc: fastq_run(wc.run).source,
        # Only the settings of the run's source: other `reads` keys do not refetch it.
        settings=lambda wc: config["reads"][fastq_run(wc.run).source],
        download=config["download"],
    script:
        "../scripts/download_fastq.py"


rule download_fastq_single:
    output:
        fastq=temp(f"{FASTQ_DIR}/{{run}}/{{run}}.fastq.gz"),
        record=record_path(f"{FASTQ_DIR}/{{run}}/{{run}}.fastq.gz"),
    log:
        "results/logs/reads/download/{run}.log",
    wildcard_constraints:
        run=r"[SED]RR[0-9]+",
    localrule: True
    conda:
        "../../envs/reads.yaml"
    threads: lambda wc: fastq_download_threads(wc.run)
    resources:
        # ENA files stream to disk in 256 KiB chunks; fasterq-dump sorts in memory (100 MB per thread).
        mem_mb=lambda wc, threads: (
            512 + 128 * threads if fastq_run(wc.run).source == "sra" else 256
        ),
        runtime=240,
    params:
        layout=lambda wc: fastq_run(wc.run).layout,
        source=lambda wc: fastq_run(wc.run).source,
        # Only the settings of the run's source: other `reads` keys do not refetch it.
        settings=lambda wc: config["reads"][fastq_run(wc.run).source],
        download=config["download"],
    script:
        "../scripts/download_fastq.py"
