"""Rule ``report_summary``: read the result files and write the text of the report's front page.

Writes ``headlines.rst`` (:func:`il6axis.report.headlines.headlines_rst`), ``provenance.rst``
(:func:`il6axis.report.provenance.provenance_rst`), ``software_versions.tsv`` and ``config_used.yaml``.
The text is reStructuredText, because Snakemake renders the report's front page (``workflow.rst``) with
docutils; the workflow reads the generated text into ``config["_report"]`` at parse time, and
``workflow.rst`` includes it with Jinja.

Every file is checked on reading: one JSON file (read by :func:`il6axis.jsonio.read_json`, whose errors
name the file and the rule that rewrites it) and one table per cohort, in the order of ``cohorts``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from il6axis.errors import InputError
from il6axis.jsonio import read_json
from il6axis.report.headlines import headlines_rst
from il6axis.report.provenance import config_yaml, provenance_rst, software_versions
from il6axis.report.reads import read_reads_qc, reads_cohorts

log = logging.getLogger(__name__)

TSV = {"sep": "\t"}
TEXT_TSV = {"sep": "\t", "dtype": str, "keep_default_na": False}  # sample names stay text ("NA" too)
# Per-cohort JSON inputs: what the file is called in messages, and the rule that writes it.
SUMMARY_JSON = ("DE summary (summary.json)", "deseq2")
ORIENTATION_JSON = ("orientation verdict (orientation.json)", "orientation_check")
COMPOSITION_JSON = (
    "composition sensitivity verdict (composition_sensitivity.json)",
    "composition_sensitivity",
)


@dataclass(frozen=True)
class ReportSettings:
    """What the front page takes from the configuration: the cohorts in report order, the meta-analysis
    significance level (``meta.alpha``) and the configuration itself (shown under provenance)."""

    cohorts: tuple[str, ...]
    alpha: float
    config: Mapping[str, Any]

    @classmethod
    def from_params(cls, params: Any) -> ReportSettings:
        """From rule ``report_summary``'s params ``cohorts``, ``alpha`` and ``config``."""
        return cls(cohorts=tuple(params.cohorts), alpha=float(params.alpha), config=dict(params.config))


def _check_count(cohorts: Sequence[str], paths: Sequence[str | Path], what: str) -> None:
    if len(paths) != len(cohorts):
        raise InputError(f"{len(paths)} {what} files for {len(cohorts)} cohorts; give one per cohort.")


def json_by_cohort(
    cohorts: Sequence[str], paths: Sequence[str | Path], what: str, rule: str
) -> dict[str, dict[str, Any]]:
    """cohort -> the JSON object of its file (one file per cohort, in cohort order)."""
    _check_count(cohorts, paths, what)
    return {c: read_json(p, what=what, rule=rule) for c, p in zip(cohorts, paths, strict=True)}


def tables_by_cohort(
    cohorts: Sequence[str], paths: Sequence[str | Path], what: str, text: bool = False
) -> dict[str, pd.DataFrame] | None:
    """cohort -> its table (``text``: every value read as a string), or None when no file was given."""
    if not paths:
        return None
    _check_count(cohorts, paths, what)
    read = TEXT_TSV if text else TSV
    return {c: pd.read_csv(p, **read) for c, p in zip(cohorts, paths, strict=True)}


def write_report_summary(
    cohorts: Sequence[str],
    meta_genes_path: str | Path,
    meta_scores_path: str | Path,
    summary_paths: Sequence[str | Path],
    orientation_paths: Sequence[str | Path],
    composition_paths: Sequence[str | Path],
    manifest_paths: Sequence[str | Path],
    alpha: float,
    config: Mapping[str, Any],
    headlines_path: str | Path,
    provenance_path: str | Path,
    versions_path: str | Path,
    config_path: str | Path,
    panel_paths: Sequence[str | Path] = (),
    composition_table_paths: Sequence[str | Path] = (),
    forest_genes_path: str | Path | None = None,
    forest_scores_path: str | Path | None = None,
    unmatched_paths: Sequence[str | Path] = (),
    subjects_paths: Sequence[str | Path] = (),
    stability_paths: Sequence[str | Path] = (),
    reads_qc_paths: Sequence[str | Path] = (),
    multiqc_paths: Sequence[str | Path] = (),
) -> str:
    """Read the result files, write headlines.rst, provenance.rst, software_versions.tsv, config_used.yaml.

    The optional inputs (panel tables, composition tables, forest tables, the samples set aside and the
    subjects decided per cohort) only add detail to the text. ``reads_qc_paths`` / ``multiqc_paths``
    hold library_sizes.tsv and the MultiQC report of each cohort counted from reads (``counts.source:
    reads`` in ``config``), in cohort order. Returns the headline text.
    """
    from_reads = reads_cohorts(cohorts, config)
    text = headlines_rst(
        pd.read_csv(meta_genes_path, **TSV),
        pd.read_csv(meta_scores_path, **TSV),
        json_by_cohort(cohorts, summary_paths, *SUMMARY_JSON),
        json_by_cohort(cohorts, orientation_paths, *ORIENTATION_JSON),
        json_by_cohort(cohorts, composition_paths, *COMPOSITION_JSON),
        alpha,
        panels=tables_by_cohort(cohorts, panel_paths, "il6_panel.tsv"),
        composition_tables=tables_by_cohort(cohorts, composition_table_paths, "composition_sensitivity.tsv"),
        forest_genes=pd.read_csv(forest_genes_path, **TSV) if forest_genes_path else None,
        forest_scores=pd.read_csv(forest_scores_path, **TSV) if forest_scores_path else None,
        unmatched=tables_by_cohort(cohorts, unmatched_paths, "unmatched.tsv", text=True),
        subjects=tables_by_cohort(cohorts, subjects_paths, "subjects.tsv", text=True),
        stabilities=tables_by_cohort(cohorts, stability_paths, "panel_stability.tsv"),
        reads_qc=read_reads_qc(from_reads, reads_qc_paths, multiqc_paths, config) if from_reads else None,
    )
    versions = software_versions()
    config_text = config_yaml(config)
    manifest = pd.concat([pd.read_csv(p, **TSV) for p in manifest_paths]) if manifest_paths else None
    for path in (headlines_path, provenance_path, versions_path, config_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(headlines_path).write_text(text, encoding="utf-8")
    Path(provenance_path).write_text(provenance_rst(versions, config_text, manifest), encoding="utf-8")
    versions.to_csv(versions_path, sep="\t", index=False)
    Path(config_path).write_text(config_text, encoding="utf-8")
    log.info("report text for %d cohorts written to %s and %s", len(cohorts), headlines_path, provenance_path)
    return text
