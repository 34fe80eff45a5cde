from pathlib import Path

from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.yaml")

# Shipped resources are addressed from the workflow's own folder, so a workflow that imports this one as
# a module (with another working directory and a prefix) still finds them.
RESOURCES = Path(workflow.current_basedir).parents[1] / "resources"
PANEL_TSV = config["genesets"]["panel"] or str(RESOURCES / "genesets" / "il6_core.tsv")
MARKERS_TSV = config["genesets"]["markers"] or str(
    RESOURCES / "genesets" / "severity_sanity_markers.tsv"
)


def enabled_cohorts():
    """Names of the cohorts to analyse, in config order."""
    return [name for name, spec in config["cohorts"].items() if spec["enabled"]]


def cohort_spec(wildcards):
    """The validated config block of one cohort (passed to scripts as a param, so edits rerun)."""
    return config["cohorts"][wildcards.cohort]


def counts_input(wildcards):
    counts = config["cohorts"][wildcards.cohort]["counts"]
    if counts["source"] == "local":
        return counts["path"]
    raise ValueError(
        f"counts source {counts['source']!r} is not available in this version"
    )


def metadata_input(wildcards):
    metadata = config["cohorts"][wildcards.cohort]["metadata"]
    if metadata["source"] == "sample_sheet":
        return metadata["path"]
    raise ValueError(
        f"metadata source {metadata['source']!r} is not available in this version"
    )


def all_targets():
    cohorts = enabled_cohorts()
    return [
        *expand("results/de/{cohort}/severe_vs_mild.tsv", cohort=cohorts),
        *expand("results/de/{cohort}/il6_panel.tsv", cohort=cohorts),
        *expand("results/plots/{cohort}/volcano.png", cohort=cohorts),
    ]
