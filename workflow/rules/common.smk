import functools
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
from il6axis.acquire import geo
from il6axis.reads.fastq_fetch import downloaded_paths, fastq_paths, find_run
from il6axis.reads.runs import runs_by_sample, runs_from_config
from il6axis.errors import InputError

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
GENE_INFO_DOWNLOAD = f"{DOWNLOADS}/ncbi/{geo.GENE_INFO_NAME}"


wildcard_constraints:
    accession=geo.ACCESSION_PATTERN,
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
    if not geo.is_accession(accession):
        raise ValueError(
            f"cohort {name!r} reads from GEO but has no accession: set cohorts.{name}.accession "
            f"(e.g. GSE152418) or name the cohort after its accession"
        )
    return accession


# Downloads keep GEO's file names (geo.py owns them); `accession` may be the "{accession}" wildcard.
def series_matrix_path(accession):
    name = geo.SERIES_MATRIX_NAME.format(accession=accession)
    return f"{DOWNLOADS}/{accession}/{name}"


def ncbi_counts_path(accession):
    name = geo.NCBI_COUNTS_NAME.format(accession=accession)
    return f"{DOWNLOADS}/{accession}/{name}"


def supplementary_path(accession, file):
    return f"{DOWNLOADS}/{accession}/{geo.SUPPLEMENTARY_FOLDER}/{file}"


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
    if counts["source"] == "reads":  # counted from FASTQ by rules/reads.smk
        return reads_gene_counts_path(name)
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


# Count source `reads`: its runs and their FASTQ files (rules/fastq.smk downloads them, rules/reads.smk
# trims and quantifies them). The logic is in il6axis.reads (runs: run tables; fastq_fetch: file names).
FASTQ_DIR = "results/reads/fastq"


def reads_cohorts():
    """Enabled cohorts whose counts are made from reads."""
    cohorts = config["cohorts"]
    return [
        n for n in enabled_cohorts() if cohorts[n]["counts"].get("source") == "reads"
    ]


@functools.cache
def cohort_runs(name):
    """The runs of a reads cohort, read and checked once (InputError on a bad run table)."""
    return runs_from_config(name, config["cohorts"][name]["counts"]["reads"])


def fastq_run(run_id):
    """The run with this ID (DAG time: reads_runs() waits for a run table the workflow writes)."""
    return find_run(run_id, {name: reads_runs(name) for name in reads_cohorts()})


def fastq_files(run_id):
    """The FASTQ files fastp reads for a run: the user's own files, or the downloaded (temp) ones."""
    return fastq_paths(fastq_run(run_id), FASTQ_DIR)


def fastq_download_threads(run_id):
    """fasterq-dump is multi-threaded; an ENA download is one HTTP stream."""
    return config["reads"]["sra"]["threads"] if fastq_run(run_id).source == "sra" else 1


def downloaded_fastq_files():
    """FASTQ files the reads cohorts download (for the manifest).

    Called at parse time: a `download: local` cohort fetches nothing, and a run table the workflow
    writes itself (the reads demo's) is not read before it exists.
    """
    fetching = {
        name: cohort_runs(name)
        for name in reads_cohorts()
        if config["cohorts"][name]["counts"]["reads"]["download"] != "local"
        and Path(config["cohorts"][name]["counts"]["reads"]["runs"]).exists()
    }
    return downloaded_paths(fetching, FASTQ_DIR)


def downloaded_files():
    """Every file the enabled cohorts fetch from GEO / NCBI, ENA or SRA (for the manifest)."""
    files = set(downloaded_fastq_files())  # FASTQ files of reads cohorts
    for name in enabled_cohorts():
        for path in (counts_path(name), metadata_path(name)):
            if path.startswith(f"{DOWNLOADS}/"):
                files.add(path)
        if needs_gene_info(name) and config["gene_info"]["source"] == "ncbi":
            files.add(GENE_INFO_DOWNLOAD)
    return sorted(files)


# Count source `reads`, quantification side (rules/reads.smk): fastp per run, salmon per sample,
# pytximport per cohort. The reads demo's run table is written by checkpoint simulate_reads_demo.
READS = "results/reads"
READS_REFERENCE = f"{READS}/reference"
READS_DEMO = "results/reads_demo"
READS_DEMO_RUNS = f"{READS_DEMO}/runs.tsv"


def check_reads_cohorts():
    """Parse-time checks of the cohorts counted from reads, before any run table is read."""
    for name in enabled_cohorts():
        counts = config["cohorts"][name]["counts"]
        if any(c["source"] == "reads" for c in counts.get("sources", [])):
            raise InputError(
                f"cohorts.{name}.counts.sources: source reads cannot be a fallback (it never misses). "
                f"Fix: use counts: {{source: reads, ...}} on its own."
            )
    for name in reads_cohorts():
        value_type = config["cohorts"][name]["counts"]["value_type"]
        if value_type != "expected_counts":
            raise InputError(
                f"cohorts.{name}.counts.value_type is {value_type}, but counts from reads are tximport "
                "estimates (fractional). Fix: set value_type: expected_counts."
            )
        if not config["reads"]["transcriptome"]:
            raise InputError(
                f"cohort {name} counts reads, but reads.transcriptome is not set. Fix: give the path of "
                "a GENCODE or Ensembl transcript FASTA (e.g. gencode.v44.transcripts.fa.gz)."
            )


check_reads_cohorts()


def reads_runs(name):
    """The cohort's runs (cohort_runs()); a run table that the reads demo simulator writes is waited for
    (checkpoint), so it is read only once it exists."""
    if config["cohorts"][name]["counts"]["reads"]["runs"] == READS_DEMO_RUNS:
        checkpoints.simulate_reads_demo.get()
    return cohort_runs(name)


def reads_samples(name):
    """Sample -> its runs (technical replicates together), in run-table order."""
    return runs_by_sample(reads_runs(name))


def reads_gene_counts_path(name):
    """The gene x sample table a reads cohort is built from (see counts_path())."""
    return f"{READS}/{name}/gene_counts.tsv"


def reads_targets():
    """Per reads cohort: its QC table and MultiQC report (gene counts are reached through build_cohort)."""
    return expand(
        [
            f"{READS}/{{cohort}}/sample_qc.tsv",
            f"{READS}/{{cohort}}/{{cohort}}.multiqc.html",
        ],
        cohort=reads_cohorts(),
    )


def _reads_sample_qc(wildcards):
    """Rule cohort_qc: sample_qc.tsv of a cohort counted from reads (rule tximport); nothing for other cohorts."""
    if wildcards.cohort in reads_cohorts():
        return [f"{READS}/{wildcards.cohort}/sample_qc.tsv"]
    return []


def _reads_qc_params(wildcards):
    """Rule cohort_qc: the reads.qc thresholds and the cohort's metadata.match_keys, for a cohort counted from reads."""
    if wildcards.cohort not in reads_cohorts():
        return None
    match_keys = config["cohorts"][wildcards.cohort]["metadata"].get("match_keys")
    return {**config["reads"]["qc"], "match_keys": match_keys}


def _sample_quant_dirs(wildcards):
    return [
        f"{READS}/quant/{wildcards.cohort}/{s}" for s in reads_samples(wildcards.cohort)
    ]


def _cohort_fastp_json(wildcards):
    return [f"{READS}/fastp/{r.run}.fastp.json" for r in reads_runs(wildcards.cohort)]


def _sample_runs(wildcards):
    runs = reads_samples(wildcards.cohort).get(wildcards.sample)
    if runs is None:
        raise InputError(
            f"cohort {wildcards.cohort} has no sample {wildcards.sample} in its run table"
        )
    return runs


def _dir_size_mb(path):
    """Size of a folder's files in MB (the salmon index; Snakemake sizes a folder input as 0)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 1e6


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


# The report's figures are listed once, in il6axis.figures.registry: rules plot_cohort and plot_meta take
# their inputs and outputs from it, and all_targets its PNGs.
from il6axis.figures.registry import (
    COHORT_FIGURES,
    COHORT_INPUTS,
    META_FIGURES,
    META_INPUTS,
    figure_targets,
    rule_inputs,
)


def figure_outputs(figures):
    """Named outputs of the registry's figures: <name>_png (in the report, with its caption) and <name>_svg."""
    outputs = {}
    for figure in figures:
        outputs[f"{figure.name}_png"] = report(
            figure.png,
            caption=f"../report/{figure.caption}",
            category=figure.category,
            subcategory=figure.subcategory,
            labels=figure.report_labels(),
        )
        outputs[f"{figure.name}_svg"] = figure.svg
    return outputs


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
        *figure_targets(cohorts),
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
    # QC table and MultiQC report per reads cohort (rules/reads.smk)
    targets += reads_targets()
    return targets + singlecell
