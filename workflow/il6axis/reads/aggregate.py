"""Gene-level counts of a cohort from salmon's transcript estimates, with pytximport, plus per-sample QC.

Why this tximport mode: the tximport authors give two valid routes into DESeq2 — the summed estimated
counts *with* an offset built from the abundance-weighted average transcript length ("original counts
and offset", DESeq2's DESeqDataSetFromTximport), or counts computed from abundance
(``countsFromAbundance = "lengthScaledTPM"`` / ``"scaledTPM"``) used as an ordinary count matrix
*without* an offset. Summed counts without the offset are not a valid input: a change of isoform usage
towards a shorter isoform then looks like a fall in expression. pydeseq2 (this workflow's NB engine)
takes no offset matrix, so the default is ``length_scaled_tpm``; DESeqDataSetFromTximport rounds the
values to integers, and so does the cohort builder here (``value_type: expected_counts``, rounding
logged). ``summed`` (tximport's "no": summed counts, no length correction) is offered only for
3'-tag libraries, where
counts carry no length bias (config/README.md, "Counts from reads").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from il6axis.errors import InputError

logger = logging.getLogger(__name__)

# Config value -> pytximport's counts_from_abundance (None = tximport's "no", here "summed": a bare `no`
# in YAML reads as false).
COUNTS_FROM_ABUNDANCE = {
    "length_scaled_tpm": "length_scaled_tpm",
    "scaled_tpm": "scaled_tpm",
    "summed": None,
}
GENE_KEYS = ("gene_id", "gene_name")


def _quant_names(path: str | Path) -> pd.Index:
    return pd.Index(pd.read_csv(path, sep="\t", usecols=["Name"])["Name"])


def check_quant_transcripts(quant_files: Mapping[str, str | Path], tx2gene: pd.DataFrame) -> None:
    """Every transcript salmon quantified must be in the map (they come from the same FASTA)."""
    known = pd.Index(tx2gene["transcript_id"])
    for sample, path in quant_files.items():
        names = _quant_names(path)
        missing = names.difference(known)
        if len(missing):
            raise InputError(
                f"{path} (sample {sample}): {len(missing)} of {len(names)} quantified transcripts are not in "
                f"the transcript->gene map (e.g. {', '.join(missing[:3])}). The index and the map were built "
                "from different FASTAs. Fix: delete the salmon index and quant folders so both are rebuilt "
                "from reads.transcriptome."
            )


def gene_counts(
    quant_files: Mapping[str, str | Path],
    tx2gene: pd.DataFrame,
    counts_from_abundance: str = "length_scaled_tpm",
    gene_key: str = "gene_id",
) -> pd.DataFrame:
    """Genes x samples (columns in the order of ``quant_files``), fractional count-scale values.

    ``gene_key`` names the rows: ``gene_id`` (e.g. versioned Ensembl IDs, mapped to symbols later by the
    cohort builder) or ``gene_name``; gene IDs sharing a name are summed (logged).
    """
    from pytximport import tximport  # heavy import (xarray, anndata): only where it is used

    if counts_from_abundance not in COUNTS_FROM_ABUNDANCE:
        raise InputError(
            f"reads.counts_from_abundance: {counts_from_abundance!r} is not one of "
            f"{', '.join(COUNTS_FROM_ABUNDANCE)}"
        )
    if gene_key not in GENE_KEYS:
        raise InputError(f"reads.gene_key: {gene_key!r} is not one of {', '.join(GENE_KEYS)}")
    check_quant_transcripts(quant_files, tx2gene)
    samples = list(quant_files)
    txi = tximport(
        [str(quant_files[s]) for s in samples],
        data_type="salmon",
        transcript_gene_map=tx2gene[["transcript_id", "gene_id"]],
        counts_from_abundance=COUNTS_FROM_ABUNDANCE[counts_from_abundance],
        ignore_transcript_version=False,
        ignore_after_bar=True,
        output_type="anndata",
    )
    values = np.asarray(txi.X.toarray() if hasattr(txi.X, "toarray") else txi.X, dtype=float)
    table = pd.DataFrame(values.T, index=pd.Index(txi.var_names, name="gene_id"), columns=samples)
    if gene_key == "gene_name":
        names = tx2gene.drop_duplicates("gene_id").set_index("gene_id")["gene_name"]
        table.index = pd.Index(names.reindex(table.index).fillna(pd.Series(table.index, index=table.index)))
        n_shared = int(table.index.duplicated().sum())
        if n_shared:
            logger.info("%d gene ID(s) share a gene name with another: their counts are summed", n_shared)
        table = table.groupby(level=0, sort=False).sum()
    table.index.name = gene_key
    return table


def raw_summed_counts(quant_files: Mapping[str, str | Path], tx2gene: pd.DataFrame) -> pd.DataFrame:
    """Estimated fragments summed per gene ID without length correction (tximport's "no", for QC)."""
    gene_of = tx2gene.set_index("transcript_id")["gene_id"]
    columns = {}
    for sample, path in quant_files.items():
        quant = pd.read_csv(path, sep="\t", usecols=["Name", "NumReads"]).set_index("Name")["NumReads"]
        columns[sample] = quant.groupby(gene_of.reindex(quant.index).to_numpy()).sum()
    return pd.DataFrame(columns).fillna(0.0)


def sample_qc(
    samples: Sequence[str],
    quant_qc: Mapping[str, dict],
    fastp_by_sample: Mapping[str, Sequence[dict]],
    min_mapping_rate: float,
    min_read_pairs: int,
) -> pd.DataFrame:
    """One row per sample: runs, reads in / kept by fastp, salmon's fragments, mapping rate, detected
    library type, and the flags ``low_mapping_rate`` / ``low_library_size`` (flags, not exclusions)."""
    rows = []
    for sample in samples:
        runs = fastp_by_sample[sample]
        quant = quant_qc[sample]
        rows.append(
            {
                "sample": sample,
                "runs": ",".join(r["run"] for r in runs),
                "n_runs": len(runs),
                "reads_before_filtering": sum(r["reads_before_filtering"] for r in runs),
                "reads_after_filtering": sum(r["reads_after_filtering"] for r in runs),
                **quant,
            }
        )
    table = pd.DataFrame(rows)
    table["low_mapping_rate"] = table["mapping_rate"] < min_mapping_rate
    table["low_library_size"] = table["fragments_processed"] < min_read_pairs
    for flag, what in (("low_mapping_rate", "mapping rate"), ("low_library_size", "library size")):
        flagged = table.loc[table[flag], "sample"].tolist()
        if flagged:
            logger.warning("%d sample(s) flagged for low %s: %s", len(flagged), what, ", ".join(flagged))
    return table
