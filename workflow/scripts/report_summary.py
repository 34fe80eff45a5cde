"""Front-page text of the report (headline findings, provenance), software versions and the config used."""

import _workflow_path  # noqa: F401  (puts workflow/ on sys.path for the il6axis imports below)

from il6axis.report.summary import ReportSettings, write_report_summary
from il6axis.runlog import logged

smk = snakemake  # noqa: F821 (injected by Snakemake)


def optional_input(name):
    """Files of an optional named input (absent or empty list -> []); a single file becomes [file]."""
    if name not in smk.input.keys():
        return []
    value = getattr(smk.input, name)
    return [value] if isinstance(value, str) else list(value)


with logged(smk.log[0]):
    settings = ReportSettings.from_params(smk.params)
    write_report_summary(
        cohorts=settings.cohorts,
        meta_genes_path=smk.input.meta_genes,
        meta_scores_path=smk.input.meta_scores,
        summary_paths=list(smk.input.summaries),
        orientation_paths=list(smk.input.orientation),
        composition_paths=list(smk.input.composition),
        manifest_paths=optional_input("manifest"),
        alpha=settings.alpha,
        config=settings.config,
        headlines_path=smk.output.headlines,
        provenance_path=smk.output.provenance,
        versions_path=smk.output.versions,
        config_path=smk.output.config,
        panel_paths=optional_input("panels"),
        composition_table_paths=optional_input("composition_tables"),
        forest_genes_path=(optional_input("forest_genes") or [None])[0],
        forest_scores_path=(optional_input("forest_scores") or [None])[0],
        unmatched_paths=optional_input("unmatched"),
        subjects_paths=optional_input("subjects"),
        stability_paths=optional_input("stability"),
        reads_qc_paths=optional_input("reads_qc"),
        multiqc_paths=optional_input("multiqc"),
    )
