# Count source `reads`: FASTQ -> fastp (per run) -> salmon (per sample) -> pytximport (per cohort).
# The FASTQ files of a run come from `fastq_files(run)` (common.smk): ENA / SRA downloads of rules/fastq.smk
# (temp()) or the user's local files. Trimmed reads are temp() and deleted once the sample is quantified.
# Disk per sample (paired-end, gzipped): raw FASTQ (deleted after fastp when downloaded) + trimmed FASTQ
# (about the same size, deleted after salmon) at once, i.e. about 2x the raw download, plus ~10-20 MB of
# salmon output kept. Helpers (reads_runs(), reads_samples(), ...) are in rules/common.smk.
# config/README.md, "Counts from reads", has the figures for GSE172114.

# Job sizes from bench/bench_reads.py (2 cores; per-core throughput of the tools), with headroom.
FASTP_MB_PER_MIN = 40  # gzipped input per thread-minute
SALMON_MB_PER_MIN = 60  # gzipped trimmed reads per thread-minute


wildcard_constraints:
    run=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    sample=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


rule reads_tx2gene:
    input:
        transcriptome=lambda wc: config["reads"]["transcriptome"],
        tx2gene=lambda wc: (
            [config["reads"]["tx2gene"]] if config["reads"]["tx2gene"] else []
        ),
    output:
        tx2gene=f"{READS_REFERENCE}/tx2gene.tsv",
    log:
        "results/logs/reads_tx2gene/reads_tx2gene.log",
    conda:
        "../../envs/reads.yaml"
    resources:
        mem_mb=lambda wc, input, attempt: (1000 + 4 * int(input.size_mb)) * attempt,
        runtime=lambda wc, input, attempt: (5 + int(input.size_mb / 50)) * attempt,
    script:
        "../scripts/reads_tx2gene.py"


# The index depends on the checked map, so a FASTA whose IDs do not match it fails before indexing.
rule salmon_index:
    input:
        transcriptome=lambda wc: config["reads"]["transcriptome"],
        tx2gene=rules.reads_tx2gene.output.tx2gene,
        decoys=lambda wc: (
            [config["reads"]["decoys"]] if config["reads"]["decoys"] else []
        ),
    output:
        index=directory(f"{READS_REFERENCE}/salmon_index"),
    log:
        "results/logs/salmon_index/salmon_index.log",
    cache: True
    conda:
        "../../envs/reads.yaml"
    threads: config["reads"]["salmon"]["index_threads"]
    resources:
        # Human GENCODE transcripts (~75 MB gz): ~4 GB; with the genome as decoys (~0.9 GB gz): ~20 GB.
        mem_mb=lambda wc, input, attempt: (2000 + 20 * int(input.size_mb)) * attempt,
        runtime=lambda wc, input, attempt: (10 + int(input.size_mb / 8)) * attempt,
        disk_mb=lambda wc, input: 1000 + 20 * int(input.size_mb),
    params:
        kmer=config["reads"]["salmon"]["kmer"],
    script:
        "../scripts/salmon_index.py"


rule fastp:
    input:
        reads=lambda wc: fastq_files(wc.run),
    output:
        trimmed=temp(directory(f"{READS}/trimmed/{{run}}")),
        json=f"{READS}/fastp/{{run}}.fastp.json",
        html=f"{READS}/fastp/{{run}}.fastp.html",
    log:
        "results/logs/fastp/{run}.log",
    conda:
        "../../envs/reads.yaml"
    threads: config["reads"]["fastp"]["threads"]
    resources:
        # fastp holds ~1.3 GB at 2 threads whatever the input size (bench/bench_reads.py); more per thread.
        mem_mb=lambda wc, input, threads, attempt: (1500 + 200 * threads) * attempt,
        runtime=lambda wc, input, threads, attempt: (
            5 + int(input.size_mb / (FASTP_MB_PER_MIN * threads))
        )
        * attempt,
        # trimmed reads are about as large as the input
        disk_mb=lambda wc, input: 100 + int(1.1 * input.size_mb),
    params:
        extra_args=config["reads"]["fastp"]["extra_args"],
    script:
        "../scripts/fastp_run.py"


rule salmon_quant:
    input:
        index=rules.salmon_index.output.index,
        trimmed=lambda wc: [f"{READS}/trimmed/{r.run}" for r in _sample_runs(wc)],
    output:
        quant=directory(f"{READS}/quant/{{cohort}}/{{sample}}"),
    log:
        "results/logs/salmon_quant/{cohort}/{sample}.log",
    conda:
        "../../envs/reads.yaml"
    threads: config["reads"]["salmon"]["threads"]
    resources:
        # salmon holds the index in memory (about its size on disk) plus ~1 GB of working memory.
        mem_mb=lambda wc, input, attempt: (1500 + int(1.2 * _dir_size_mb(input.index)))
        * attempt,
        runtime=lambda wc, input, threads, attempt: (
            5
            + int(
                sum(_dir_size_mb(d) for d in input.trimmed)
                / (SALMON_MB_PER_MIN * threads)
            )
        )
        * attempt,
    params:
        runs=lambda wc: [r.run for r in _sample_runs(wc)],
        n_mates=lambda wc: 2 if _sample_runs(wc)[0].layout == "paired" else 1,
        strandedness=lambda wc: config["cohorts"][wc.cohort]["counts"]["reads"][
            "strandedness"
        ],
        strandedness_key=lambda wc: f"cohorts.{wc.cohort}.counts.reads.strandedness",
        extra_args=config["reads"]["salmon"]["extra_args"],
    script:
        "../scripts/salmon_quant.py"


rule tximport:
    input:
        quant=_sample_quant_dirs,
        fastp_json=_cohort_fastp_json,
        tx2gene=rules.reads_tx2gene.output.tx2gene,
    output:
        counts=f"{READS}/{{cohort}}/gene_counts.tsv",
        qc=f"{READS}/{{cohort}}/sample_qc.tsv",
    log:
        "results/logs/tximport/{cohort}.log",
    conda:
        "../../envs/reads.yaml"
    resources:
        mem_mb=lambda wc, input, attempt: (1500 + 100 * len(input.quant)) * attempt,
        runtime=lambda wc, input, attempt: (5 + len(input.quant) // 20) * attempt,
    params:
        samples=lambda wc: list(reads_samples(wc.cohort)),
        runs=lambda wc: [r.run for r in reads_runs(wc.cohort)],
        runs_of_sample=lambda wc: {
            s: [r.run for r in runs] for s, runs in reads_samples(wc.cohort).items()
        },
        counts_from_abundance=config["reads"]["counts_from_abundance"],
        gene_key=config["reads"]["gene_key"],
        min_mapping_rate=config["reads"]["qc"]["min_mapping_rate"],
        min_read_pairs=config["reads"]["qc"]["min_read_pairs"],
    script:
        "../scripts/tximport_counts.py"


rule reads_multiqc:
    input:
        fastp_json=_cohort_fastp_json,
        quant=_sample_quant_dirs,
    output:
        html=report(
            f"{READS}/{{cohort}}/{{cohort}}.multiqc.html",
            caption="../report/multiqc.rst",
            category="1. Quality control",
            subcategory="{cohort}",
            labels={"figure": "MultiQC: reads QC (fastp, salmon)"},
        ),
    log:
        "results/logs/reads_multiqc/{cohort}.log",
    conda:
        "../../envs/reads.yaml"
    resources:
        mem_mb=lambda wc, input, attempt: (2000 + 20 * len(input.quant)) * attempt,
        runtime=lambda wc, input, attempt: (10 + len(input.quant) // 20) * attempt,
    script:
        "../scripts/multiqc_report.py"


checkpoint simulate_reads_demo:
    input:
        panel=PANEL_TSV,
        markers=MARKERS_TSV,
    output:
        runs=READS_DEMO_RUNS,
        samples=f"{READS_DEMO}/samples.tsv",
        truth=f"{READS_DEMO}/truth.tsv",
        truth_counts=f"{READS_DEMO}/truth_counts.tsv",
        transcripts=f"{READS_DEMO}/transcripts.tsv",
        transcriptome=f"{READS_DEMO}/transcriptome.fa.gz",
        fastq=directory(f"{READS_DEMO}/fastq"),
    log:
        "results/logs/simulate_reads_demo/simulate_reads_demo.log",
    # Like the bulk demo's simulation: a few seconds of input-making, not a compute job for the cluster.
    localrule: True
    conda:
        "../../envs/reads.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        spec=config["reads_demo"],
    script:
        "../scripts/simulate_reads_demo.py"
