import re
import sys
from pathlib import Path

from snakemake.utils import validate

# A module imported twice (all its steps, then one of them again with overrides) is parsed twice with
# the same config object: drop the report text attached below before validating again.
config.pop("_report", None)
validate(config, schema="../schemas/config.schema.yaml")

# The config as the user gave it (validated, defaults filled), before the report text is attached below.
USER_CONFIG = {key: value for key, value in config.items() if key != "_report"}

# The report's front page (workflow/report/workflow.rst) can only read `config`: attach the headline
# findings and provenance written by rule report_summary, when they exist.
REPORT_HEADLINES = "results/report/headlines.rst"
REPORT_PROVENANCE = "results/report/provenance.rst"
# The workflow's version has one owner, il6axis.__version__ (the package sits beside this rules folder).
if str(Path(workflow.current_basedir).parent) not in sys.path:
    sys.path.insert(0, str(Path(workflow.current_basedir).parent))
from il6axis import __version__ as WORKFLOW_VERSION

config["_report"] = {
    "version": WORKFLOW_VERSION,
    "headlines": (
        Path(REPORT_HEADLINES).read_text()
        if Path(REPORT_HEADLINES).exists()
        else "*Headline findings appear here once the workflow has run.*"
    ),
    "provenance": (
        Path(REPORT_PROVENANCE).read_text() if Path(REPORT_PROVENANCE).exists() else ""
    ),
}

# Shipped resources are addressed from the workflow's own folder, so a workflow that imports this one as
# a module (with another working directory and a prefix) still finds them.
RESOURCES = Path(workflow.current_basedir).parents[1] / "resources"
PANEL_TSV = config["genesets"]["panel"] or str(RESOURCES / "genesets" / "il6_core.tsv")
MARKERS_TSV = config["genesets"]["markers"] or str(
    RESOURCES / "genesets" / "severity_sanity_markers.tsv"
)
GENESET_FILES = [
    *sorted(str(p) for p in (RESOURCES / "genesets").glob("*.tsv")),
    *config["genesets"]["user_files"],
]
DOWNLOADS = "results/downloads"
GENE_INFO_DOWNLOAD = f"{DOWNLOADS}/ncbi/Homo_sapiens.gene_info.gz"


wildcard_constraints:
    accession=r"GSE[0-9]+",
    file=r"[^/]+",
    cohort=r"[A-Za-z][A-Za-z0-9_-]*",


def enabled_cohorts():
    """Names of the cohorts to analyse, in config order."""
    return [name for name, spec in config["cohorts"].items() if spec["enabled"]]


def enabled_singlecell_cohorts():
    """Names of the single-cell cohorts to analyse, in config order."""
    names = [n for n, spec in config["singlecell_cohorts"].items() if spec["enabled"]]
    clash = sorted(set(names) & set(config["cohorts"]))
    if clash:
        raise ValueError(
            f"cohort names {clash} are used for both bulk and single-cell cohorts; rename one"
        )
    return names


def singlecell_spec(wildcards):
    """The validated config block of one single-cell cohort."""
    return config["singlecell_cohorts"][wildcards.cohort]


def cohort_spec(wildcards):
    """The validated config block of one cohort (passed to scripts as a param, so edits rerun)."""
    return config["cohorts"][wildcards.cohort]


def accession_of(name):
    spec = config["cohorts"][name]
    accession = spec.get("accession", name)
    if not re.fullmatch(r"GSE[0-9]+", accession):
        raise ValueError(
            f"cohort {name!r} reads from GEO but has no accession: set cohorts.{name}.accession "
            f"(e.g. GSE152418) or name the cohort after its accession"
        )
    return accession


def series_matrix_path(accession):
    return f"{DOWNLOADS}/{accession}/{accession}_series_matrix.txt.gz"


def ncbi_counts_path(accession):
    return f"{DOWNLOADS}/{accession}/{accession}_raw_counts_GRCh38.p13_NCBI.tsv.gz"


def supplementary_path(accession, file):
    return f"{DOWNLOADS}/{accession}/suppl/{file}"


def count_sources(name):
    """The cohort's count sources in order of preference (one for the single-source form)."""
    counts = config["cohorts"][name]["counts"]
    return counts.get("sources", [counts])


def has_count_fallback(name):
    """True when the cohort lists `counts.sources` (fetched by rule fetch_count_sources)."""
    return "sources" in config["cohorts"][name]["counts"]


def chosen_counts_path(name):
    """Where rule fetch_count_sources puts the first count source that exists."""
    return f"{DOWNLOADS}/count_sources/{name}.counts"


def count_choice_path(name):
    """Which source rule fetch_count_sources took, and why earlier ones were skipped."""
    return f"{DOWNLOADS}/count_sources/{name}.choice.json"


def counts_path(name):
    counts = config["cohorts"][name]["counts"]
    if has_count_fallback(name):
        return chosen_counts_path(name)
    if counts["source"] == "local":
        return counts["path"]
    if counts["source"] == "geo_ncbi":
        return ncbi_counts_path(accession_of(name))
    return supplementary_path(accession_of(name), counts["file"])


def metadata_path(name):
    metadata = config["cohorts"][name]["metadata"]
    if metadata["source"] == "sample_sheet":
        return metadata["path"]
    if metadata["source"] == "geo_series_matrix":
        return series_matrix_path(accession_of(name))
    return supplementary_path(accession_of(name), metadata["file"])


def needs_gene_info(name):
    """Any count source of the cohort maps gene IDs (which one is taken is known only later)."""
    return any(
        c["gene_id"] != "symbol" or c["map_symbols"] for c in count_sources(name)
    )


def gene_info_path():
    if config["gene_info"]["source"] == "local":
        return config["gene_info"]["path"]
    return GENE_INFO_DOWNLOAD


def record_path(path):
    """Manifest record written beside each downloaded file."""
    return f"{path}.record.tsv"


def counts_input(wildcards):
    return counts_path(wildcards.cohort)


def metadata_input(wildcards):
    return metadata_path(wildcards.cohort)


def count_choice_input(wildcards):
    name = wildcards.cohort
    return [count_choice_path(name)] if has_count_fallback(name) else []


def gene_info_input(wildcards):
    return [gene_info_path()] if needs_gene_info(wildcards.cohort) else []


def downloaded_files():
    """Every file the enabled cohorts fetch from GEO / NCBI (for the manifest)."""
    files = set()
    for name in enabled_cohorts():
        for path in (counts_path(name), metadata_path(name)):
            if path.startswith(f"{DOWNLOADS}/"):
                files.add(path)
        if needs_gene_info(name) and config["gene_info"]["source"] == "ncbi":
            files.add(GENE_INFO_DOWNLOAD)
    return sorted(files)


def config_blocks_of(path):
    """(config key, block) of each enabled cohort's counts / metadata block that reads this file."""
    blocks = []
    for name in enabled_cohorts():
        for key, block_path in (
            ("counts", counts_path(name)),
            ("metadata", metadata_path(name)),
        ):
            if block_path == path:
                blocks.append((f"cohorts.{name}.{key}", config["cohorts"][name][key]))
    return blocks


def expected_sha256(path):
    """Checksum pinned in config for a downloaded file, or None (count sources carry their own)."""
    if path == GENE_INFO_DOWNLOAD:
        return config["gene_info"]["sha256"]
    blocks = config_blocks_of(path)
    return blocks[0][1].get("sha256") if blocks else None


def config_key_of(path):
    """Config key(s) to change when a downloaded file is missing (named in the error)."""
    keys = [
        f"{key}.{'file' if 'file' in block else 'source'}"
        for key, block in config_blocks_of(path)
    ]
    return " / ".join(keys) or None


def all_targets():
    cohorts = enabled_cohorts()
    singlecell = expand(
        "results/singlecell/{cohort}/cell_types_analysed.tsv",
        cohort=enabled_singlecell_cohorts(),
    )
    if not cohorts:
        return singlecell
    targets = [
        *expand("results/de/{cohort}/severe_vs_mild.tsv", cohort=cohorts),
        *expand("results/de/{cohort}/il6_panel.tsv", cohort=cohorts),
        *expand(
            [
                "results/plots/{cohort}/qc_library_sizes.png",
                "results/plots/{cohort}/volcano.png",
                "results/plots/{cohort}/panel_heatmap.png",
                "results/plots/{cohort}/pathway_scores.png",
            ],
            cohort=cohorts,
        ),
        "results/plots/meta/forest_panel_genes.png",
        REPORT_HEADLINES,
    ]
    targets += expand(
        [
            "results/scores/{cohort}/score_models.tsv",
            "results/qc/{cohort}/orientation.tsv",
            "results/de/{cohort}/composition_sensitivity.tsv",
        ],
        cohort=cohorts,
    )
    targets += ["results/meta/panel_genes.tsv", "results/meta/pathway_scores.tsv"]
    if downloaded_files():
        targets.append(f"{DOWNLOADS}/manifest.tsv")
    return targets + singlecell
