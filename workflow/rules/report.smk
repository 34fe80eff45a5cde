# The report's front page (headline findings per contrast and stratum, reads QC, provenance) and the files
# it documents; `snakemake --report` renders it with every figure and table marked report() in the rules.


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
        # Cohorts counted from reads: their reads QC (in library_sizes.tsv) and MultiQC report.
        reads_qc=expand("results/qc/{cohort}/library_sizes.tsv", cohort=reads_cohorts()),
        multiqc=expand(
            f"{READS}/{{cohort}}/{{cohort}}.multiqc.html", cohort=reads_cohorts()
        ),
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
