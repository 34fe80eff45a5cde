"""Front-page section "Reads QC" for cohorts the workflow counted from FASTQ (count source ``reads``).

Per cohort: how many samples, the reads fastp saw and kept, salmon's mapping rate, the library type salmon
detected against the one stated in config, and the flagged samples with the reason for each; then where
the cohort's MultiQC report is in the HTML report. Everything is read from ``library_sizes.tsv`` of rule
cohort_qc, which carries the reads QC of rule tximport (:func:`il6axis.analysis.qc.with_reads_qc`) with
the thresholds the flags were set with, so the text and the QC figure cannot disagree.

Flags mark samples to look at; they stay in the analysis (the workflow sets aside and lists, it never
drops on a threshold by itself). config/README.md, "Reads QC flags", shows how to leave a flagged sample
out through the cohort's filters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from il6axis.analysis.qc import count_text
from il6axis.errors import InputError
from il6axis.report.rst import MAX_NAMES, cohort_literals, heading, list_table, rst_escape

# Category and label of the MultiQC report in the Snakemake report (rule reads_multiqc, reads.smk).
MULTIQC_CATEGORY = "1. Quality control"
MULTIQC_LABEL = "MultiQC: reads QC (fastp, salmon)"
# Columns of library_sizes.tsv this section reads (a reads cohort's table: analysis.qc.with_reads_qc).
NEEDED = (
    "sample_id",
    "severity",
    "total_millions",
    "low_library",
    "reads_before_filtering",
    "reads_after_filtering",
    "fragments_processed",
    "mapping_rate",
    "libtype_detected",
    "min_mapping_rate",
    "min_read_pairs",
    "min_library_fraction",
    "low_mapping_rate",
    "low_read_pairs",
    "reads_flags",
)

TEXT_COLUMNS = ("sample_id", "severity", "libtype_detected", "reads_flags")
# Sample names and flag texts stay text ("NA" is a name, an empty flag text means "not flagged"); only the
# numeric columns read "NA" as missing.
LIBRARY_TSV = {
    "sep": "\t",
    "dtype": dict.fromkeys(TEXT_COLUMNS, str),
    "keep_default_na": False,
    "na_values": {c: ["NA", ""] for c in NEEDED if c not in TEXT_COLUMNS},
}


@dataclass(frozen=True)
class ReadsCohortQc:
    """What the section shows of one reads cohort: its library_sizes.tsv (with the reads columns), the
    path of its MultiQC report and the strandedness stated in config (``counts.reads.strandedness``)."""

    library: pd.DataFrame
    multiqc: str
    strandedness: str = "auto"


def reads_cohorts(cohorts: Sequence[str], config: Mapping) -> list[str]:
    """The ``cohorts`` whose counts the workflow makes from reads (``counts.source: reads``)."""
    specs = config.get("cohorts", {})
    return [c for c in cohorts if specs.get(c, {}).get("counts", {}).get("source") == "reads"]


def stated_strandedness(cohort: str, config: Mapping) -> str:
    """``counts.reads.strandedness`` of the cohort (``auto`` when not stated)."""
    reads = config["cohorts"][cohort]["counts"].get("reads") or {}
    return str(reads.get("strandedness") or "auto")


def read_reads_qc(
    cohorts: Sequence[str],
    library_paths: Sequence[str | Path],
    multiqc_paths: Sequence[str | Path],
    config: Mapping,
) -> dict[str, ReadsCohortQc]:
    """cohort -> its reads QC, from one library_sizes.tsv and one MultiQC report per reads cohort (in the
    order of ``cohorts``)."""
    if not (len(library_paths) == len(multiqc_paths) == len(cohorts)):
        raise InputError(
            f"{len(library_paths)} library_sizes.tsv and {len(multiqc_paths)} MultiQC files for "
            f"{len(cohorts)} reads cohorts {list(cohorts)}; give one of each per cohort."
        )
    out = {}
    for cohort, path, multiqc in zip(cohorts, library_paths, multiqc_paths, strict=True):
        library = pd.read_csv(path, **LIBRARY_TSV)
        missing = [c for c in NEEDED if c not in library.columns]
        if missing:
            raise InputError(
                f"{path}: library sizes of reads cohort {cohort} lack column(s) {missing}; "
                "rerun rule cohort_qc."
            )
        out[cohort] = ReadsCohortQc(library, str(multiqc), stated_strandedness(cohort, config))
    return out


def _millions(values: pd.Series) -> str:
    """'12.3 M (10.1–14.0)': median and range, in millions."""
    v = values.astype(float) / 1e6
    return f"{v.median():.3g} M ({v.min():.3g}–{v.max():.3g})"


def _percent_range(values: pd.Series) -> str:
    v = 100 * values.astype(float)
    return f"{v.median():.1f}% ({v.min():.1f}–{v.max():.1f})"


def _flag_reasons(row: pd.Series) -> str:
    """Every flag of one sample in words: the reads flags and a library below the cohort fraction."""
    reasons = [str(row["reads_flags"])] if row["reads_flags"] else []
    if str(row["low_library"]).lower() in ("true", "1"):
        reasons.append(
            f"library {float(row['total_millions']):.3g} M counts < "
            f"{float(row['min_library_fraction']):g} × cohort median"
        )
    return "; ".join(reasons)


def _multiqc_pointer(reads: Mapping[str, ReadsCohortQc]) -> list[str]:
    """Where each cohort's MultiQC report is. Snakemake's report defines a link target per result file
    name, so a file name shared by several cohorts links to the category instead."""
    names = [Path(r.multiqc).name for r in reads.values()]
    unique = len(set(names)) == len(names)
    lines = [
        f"**MultiQC.** fastp (read quality, adapters, duplication, reads kept) and salmon (mapping rate, "
        f"library type, fragment lengths) of every sample are summarised per cohort by MultiQC, in this "
        f'report under "{MULTIQC_CATEGORY}", subcategory the cohort, "{MULTIQC_LABEL}":',
        "",
    ]
    for cohort, r in reads.items():
        link = f"`{Path(r.multiqc).name}`_" if unique else f"`{MULTIQC_CATEGORY}`_"
        lines.append(f"- ``{cohort}``: {link} (``{r.multiqc}``)")
    return [*lines, ""]


def reads_qc_section(reads: Mapping[str, ReadsCohortQc] | None) -> list[str]:
    """Section "Reads QC": one table row per reads cohort, the flagged samples with their reasons, and the
    MultiQC reports. Nothing when no cohort was counted from reads."""
    if not reads:
        return []
    lines = heading("Reads QC")
    first = next(iter(reads.values())).library
    lines += [
        f"{len(reads)} cohort{'s' if len(reads) != 1 else ''} counted by the workflow from FASTQ (fastp, "
        "salmon selective alignment, tximport length-scaled counts). A sample is flagged when salmon maps "
        f"less than {100 * float(first['min_mapping_rate'].iloc[0]):g}% of its fragments "
        f"(``reads.qc.min_mapping_rate``), when salmon saw fewer than "
        f"{count_text(float(first['min_read_pairs'].iloc[0]))} fragments (``reads.qc.min_read_pairs``), or "
        f"when its library is below {float(first['min_library_fraction'].iloc[0]):g} × the cohort median "
        "(``qc.min_library_fraction``). Flagged samples stay in the analysis: check them in the QC figure "
        "and MultiQC before trusting the contrast (per-sample values: "
        "``results/qc/<cohort>/library_sizes.tsv``).",
        "",
    ]
    rows, bullets, quiet = [], [], []
    for cohort, r in reads.items():
        table = r.library
        groups = table["severity"].astype(str).value_counts()
        in_contrast = int(groups.drop("excluded", errors="ignore").sum())
        kept = table["reads_after_filtering"].astype(float) / table["reads_before_filtering"].astype(float)
        libtypes = table["libtype_detected"].astype(str).value_counts()
        detected = ", ".join(f"``{rst_escape(t)}`` ({n})" for t, n in libtypes.items())
        reasons = table.apply(_flag_reasons, axis=1)
        flagged = table.loc[reasons != "", "sample_id"].tolist()
        rows.append(
            [
                f"``{cohort}``",
                f"{len(table)} ({in_contrast} in the contrast)",
                _millions(table["reads_before_filtering"]),
                f"{100 * float(np.median(kept)):.1f}%",
                _percent_range(table["mapping_rate"]),
                f"{detected}; stated: {rst_escape(r.strandedness)}",
                str(len(flagged)),
            ]
        )
        if not flagged:
            quiet.append(cohort)
        listed = [(s, why) for s, why in zip(table["sample_id"], reasons, strict=True) if why]
        bullets += [f"- ``{cohort}``: ``{s}``: {rst_escape(why)}" for s, why in listed[:MAX_NAMES]]
        if len(listed) > MAX_NAMES:
            bullets.append(f"- ``{cohort}``: and {len(listed) - MAX_NAMES} more flagged sample(s)")
    header = [
        "cohort",
        "samples",
        "reads in (fastp, both mates): median (range)",
        "kept after trimming (median)",
        "salmon mapping rate: median (range)",
        "library type detected (samples)",
        "flagged",
    ]
    lines += list_table(header, rows)
    lines += bullets
    if quiet:
        lines.append(f"- No sample flagged in {cohort_literals(quiet)}.")
    lines.append("")
    lines += _multiqc_pointer(reads)
    return lines
