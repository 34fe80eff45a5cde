# Single-cell cohorts: streamed QC and donor x cell-type pseudobulk, then the bulk DE / panel / pathway
# machinery per cell type.


rule singlecell_pseudobulk:
    input:
        h5ad=lambda wc: singlecell_spec(wc)["single_cell"]["h5ad"],
        donor_sheet=lambda wc: singlecell_spec(wc)["single_cell"]["donor_sheet"] or [],
        panel=PANEL_TSV,
    output:
        pseudobulk=directory("results/singlecell/{cohort}/pseudobulk"),
        qc_summary="results/singlecell/{cohort}/qc_summary.tsv",
        qc_by_donor="results/singlecell/{cohort}/qc_by_donor.tsv",
        donors="results/singlecell/{cohort}/donors.tsv",
        samples="results/singlecell/{cohort}/pseudobulk_samples.tsv",
        skipped="results/singlecell/{cohort}/skipped_groups.tsv",
        cell_types="results/singlecell/{cohort}/cell_types.tsv",
        cells="results/singlecell/{cohort}/panel_cells.h5ad",
    log:
        "results/logs/singlecell_pseudobulk/{cohort}.log",
    benchmark:
        "results/benchmarks/singlecell_pseudobulk/{cohort}.tsv"
    conda:
        "../../envs/deseq2.yaml"
    resources:
        # Streaming: memory stays ~1 GB even for 10^6 cells (bench/bench_pseudobulk.py).
        mem_mb=lambda wc, attempt: 3000 * attempt,
        runtime=lambda wc, input, attempt: (10 + int(input.size_mb) // 100) * attempt,
    params:
        spec=singlecell_spec,
    script:
        "../scripts/singlecell_pseudobulk.py"


rule singlecell_analysis:
    input:
        pseudobulk="results/singlecell/{cohort}/pseudobulk",
        cell_types="results/singlecell/{cohort}/cell_types.tsv",
        donors="results/singlecell/{cohort}/donors.tsv",
        cells="results/singlecell/{cohort}/panel_cells.h5ad",
        panel=PANEL_TSV,
        markers=MARKERS_TSV,
        hallmark=str(
            RESOURCES / "genesets" / "hallmark_il6_jak_stat3.msigdb_v7.5.1.tsv"
        ),
        genesets=GENESET_FILES,
    output:
        de=directory("results/singlecell/{cohort}/de"),
        scores="results/singlecell/{cohort}/pathway_scores.tsv",
        table="results/singlecell/{cohort}/pathway_table.tsv",
        analysed="results/singlecell/{cohort}/cell_types_analysed.tsv",
        plots=report(
            directory("results/plots/{cohort}/singlecell"),
            patterns=["{name}.png"],
            caption="../report/singlecell.rst",
            category="7. Single-cell",
            subcategory="{cohort}",
            labels={"cohort": "{cohort}", "figure": "{name}"},
        ),
    log:
        "results/logs/singlecell_analysis/{cohort}.log",
    benchmark:
        "results/benchmarks/singlecell_analysis/{cohort}.tsv"
    conda:
        "../../envs/deseq2.yaml"
    threads: config["de"]["threads"]
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
    params:
        outdir=lambda wc, output: str(Path(output.scores).parent),
        resources_dir=lambda wc, input: str(Path(input.hallmark).parents[1]),
        user_files=config["genesets"]["user_files"],
        alpha=config["de"]["alpha"],
        min_count=config["de"]["min_count"],
        cooks_refit=config["de"]["cooks_refit"],
        engine=config["de"]["engine"],
    script:
        "../scripts/singlecell_analysis.py"
