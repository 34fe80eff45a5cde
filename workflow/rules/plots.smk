# Figures, each as PNG (shown in the report) and SVG (vector, for papers). Report categories follow the
# analysis: QC, DE, IL-6 panel, pathways, meta-analysis; subcategories are cohorts.


# Every figure of one cohort in one job: a plotting job spends seconds importing matplotlib, pandas and
# anndata and reading the cohort's AnnData, so one job per cohort pays that once (see bench/bench_plots.py).
rule plot_cohort:
    input:
        cohort="results/cohorts/{cohort}.h5ad",
        expression="results/expression/{cohort}.h5ad",
        markers=MARKERS_TSV,
        results="results/de/{cohort}/severe_vs_mild.tsv",
        panel="results/de/{cohort}/il6_panel.tsv",
        summary="results/de/{cohort}/summary.json",
        panel_expression="results/expression/{cohort}/panel_expression.tsv",
        scores="results/scores/{cohort}/pathway_scores.tsv",
        models="results/scores/{cohort}/score_models.tsv",
    output:
        library_png=report(
            "results/plots/{cohort}/qc_library_sizes.png",
            caption="../report/qc_library.rst",
            category="1. Quality control",
            subcategory="{cohort}",
            labels={
                "cohort": "{cohort}",
                "figure": "library sizes and detected genes",
            },
        ),
        library_svg="results/plots/{cohort}/qc_library_sizes.svg",
        sex_png=report(
            "results/plots/{cohort}/qc_sex_check.png",
            caption="../report/qc_sex.rst",
            category="1. Quality control",
            subcategory="{cohort}",
            labels={"cohort": "{cohort}", "figure": "sex check"},
        ),
        sex_svg="results/plots/{cohort}/qc_sex_check.svg",
        pca_png=report(
            "results/plots/{cohort}/qc_pca.png",
            caption="../report/qc_pca.rst",
            category="1. Quality control",
            subcategory="{cohort}",
            labels={"cohort": "{cohort}", "figure": "PCA"},
        ),
        pca_svg="results/plots/{cohort}/qc_pca.svg",
        volcano_png=report(
            "results/plots/{cohort}/volcano.png",
            caption="../report/volcano.rst",
            category="2. Differential expression",
            subcategory="{cohort}",
            labels={"cohort": "{cohort}", "figure": "volcano"},
        ),
        volcano_svg="results/plots/{cohort}/volcano.svg",
        ma_png=report(
            "results/plots/{cohort}/ma.png",
            caption="../report/ma.rst",
            category="2. Differential expression",
            subcategory="{cohort}",
            labels={"cohort": "{cohort}", "figure": "MA plot"},
        ),
        ma_svg="results/plots/{cohort}/ma.svg",
        pvalues_png=report(
            "results/plots/{cohort}/pvalue_histogram.png",
            caption="../report/pvalues.rst",
            category="2. Differential expression",
            subcategory="{cohort}",
            labels={"cohort": "{cohort}", "figure": "p-value histogram"},
        ),
        pvalues_svg="results/plots/{cohort}/pvalue_histogram.svg",
        heatmap_png=report(
            "results/plots/{cohort}/panel_heatmap.png",
            caption="../report/panel_heatmap.rst",
            category="3. IL-6 panel",
            subcategory="{cohort}",
            labels={"cohort": "{cohort}", "figure": "heatmap"},
        ),
        heatmap_svg="results/plots/{cohort}/panel_heatmap.svg",
        genes_png=report(
            "results/plots/{cohort}/panel_genes.png",
            caption="../report/panel_genes.rst",
            category="3. IL-6 panel",
            subcategory="{cohort}",
            labels={"cohort": "{cohort}", "figure": "genes by severity"},
        ),
        genes_svg="results/plots/{cohort}/panel_genes.svg",
        detection_png=report(
            "results/plots/{cohort}/panel_detection.png",
            caption="../report/panel_detection.rst",
            category="3. IL-6 panel",
            subcategory="{cohort}",
            labels={"cohort": "{cohort}", "figure": "detection of IL6 and receptors"},
        ),
        detection_svg="results/plots/{cohort}/panel_detection.svg",
        scores_png=report(
            "results/plots/{cohort}/pathway_scores.png",
            caption="../report/pathway_scores.rst",
            category="4. Pathway scores",
            subcategory="{cohort}",
            labels={"cohort": "{cohort}", "figure": "scores by severity"},
        ),
        scores_svg="results/plots/{cohort}/pathway_scores.svg",
    log:
        "results/logs/plot_cohort/{cohort}.log",
    benchmark:
        "results/benchmarks/plot_cohort/{cohort}.tsv"
    conda:
        "../../envs/plots.yaml"
    resources:
        mem_mb=lambda wc, input, attempt: (2000 + 50 * int(input.size_mb)) * attempt,
        runtime=lambda wc, attempt: 20 * attempt,
    params:
        alpha=config["de"]["alpha"],
    script:
        "../scripts/plot_cohort.py"


rule plot_meta:
    input:
        meta_genes="results/meta/panel_genes.tsv",
        forest_genes="results/meta/forest_panel_genes.tsv",
        meta_scores="results/meta/pathway_scores.tsv",
        forest_scores="results/meta/forest_pathway_scores.tsv",
        panels=expand("results/de/{cohort}/il6_panel.tsv", cohort=enabled_cohorts()),
        summaries=expand("results/de/{cohort}/summary.json", cohort=enabled_cohorts()),
        orientation=expand(
            "results/qc/{cohort}/orientation.json", cohort=enabled_cohorts()
        ),
        orientation_tables=expand(
            "results/qc/{cohort}/orientation.tsv", cohort=enabled_cohorts()
        ),
    output:
        forest_genes_png=report(
            "results/plots/meta/forest_panel_genes.png",
            caption="../report/forest_panel_genes.rst",
            category="5. Across cohorts",
            labels={"figure": "forest plot, IL-6 panel genes"},
        ),
        forest_genes_svg="results/plots/meta/forest_panel_genes.svg",
        forest_scores_png=report(
            "results/plots/meta/forest_pathway_scores.png",
            caption="../report/forest_pathway_scores.rst",
            category="5. Across cohorts",
            labels={"figure": "forest plot, pathway scores"},
        ),
        forest_scores_svg="results/plots/meta/forest_pathway_scores.svg",
        lfc_heatmap_png=report(
            "results/plots/meta/lfc_heatmap.png",
            caption="../report/lfc_heatmap.rst",
            category="5. Across cohorts",
            labels={"figure": "cohort x gene log2FC heatmap"},
        ),
        lfc_heatmap_svg="results/plots/meta/lfc_heatmap.svg",
        orientation_png=report(
            "results/plots/meta/orientation_summary.png",
            caption="../report/orientation_summary.rst",
            category="1. Quality control",
            subcategory="all cohorts",
            labels={"figure": "orientation check"},
        ),
        orientation_svg="results/plots/meta/orientation_summary.svg",
    log:
        "results/logs/plot_meta/plot_meta.log",
    benchmark:
        "results/benchmarks/plot_meta/plot_meta.tsv"
    conda:
        "../../envs/plots.yaml"
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        cohorts=enabled_cohorts(),
        alpha=config["meta"]["alpha"],
    script:
        "../scripts/plot_meta.py"


rule report_summary:
    input:
        meta_genes="results/meta/panel_genes.tsv",
        meta_scores="results/meta/pathway_scores.tsv",
        summaries=expand("results/de/{cohort}/summary.json", cohort=enabled_cohorts()),
        orientation=expand(
            "results/qc/{cohort}/orientation.json", cohort=enabled_cohorts()
        ),
        composition=expand(
            "results/de/{cohort}/composition_sensitivity.json",
            cohort=enabled_cohorts(),
        ),
        composition_tables=expand(
            "results/de/{cohort}/composition_sensitivity.tsv",
            cohort=enabled_cohorts(),
        ),
        panels=expand("results/de/{cohort}/il6_panel.tsv", cohort=enabled_cohorts()),
        unmatched=expand(
            "results/cohorts/{cohort}.unmatched.tsv", cohort=enabled_cohorts()
        ),
        subjects=expand(
            "results/cohorts/{cohort}.subjects.tsv", cohort=enabled_cohorts()
        ),
        stability=expand(
            "results/de/{cohort}/panel_stability.tsv", cohort=enabled_cohorts()
        ),
        forest_genes="results/meta/forest_panel_genes.tsv",
        forest_scores="results/meta/forest_pathway_scores.tsv",
        manifest=lambda wc: [f"{DOWNLOADS}/manifest.tsv"] if downloaded_files() else [],
    output:
        headlines=REPORT_HEADLINES,
        provenance=REPORT_PROVENANCE,
        versions=report(
            "results/report/software_versions.tsv",
            caption="../report/software_versions.rst",
            category="6. Provenance",
            labels={"item": "software versions"},
        ),
        config=report(
            "results/report/config_used.yaml",
            caption="../report/config_used.rst",
            category="6. Provenance",
            labels={"item": "configuration"},
        ),
    log:
        "results/logs/report_summary/report_summary.log",
    localrule: True
    conda:
        "../../envs/plots.yaml"
    params:
        cohorts=enabled_cohorts(),
        alpha=config["meta"]["alpha"],
        config=USER_CONFIG,
    script:
        "../scripts/report_summary.py"
