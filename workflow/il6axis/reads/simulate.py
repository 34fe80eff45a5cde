"""Seeded simulator of the reads demo: a small synthetic transcriptome and paired-end FASTQs with
planted truth.

Why: the reads path (fastp, salmon, tximport, DESeq2) can only be tested end to end on reads whose truth
is known. The transcriptome has genes named after the IL-6 panel and orientation markers plus simulated
``SIMG`` genes; several genes have isoforms that share exons (so salmon must resolve multi-mapping reads).
Gene-level severe-vs-mild fold changes are planted on the number of *molecules* of a gene, and one gene
(IL6ST, whose short isoform encodes soluble gp130) switches from its long to its short isoform with no
change in molecules: raw summed fragment counts fall in severe samples (a short isoform yields fewer
fragments per molecule), which tximport's length-scaled counts must correct, so the gene is not DE.

Reads are simulated like a dUTP stranded library (salmon library type ISR): read 1 is the reverse
complement of the fragment's 3' end, read 2 the fragment's 5' end, with random substitutions.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
# Complement lookup over byte values (only A, C, G, T occur in simulated sequence).
_COMPLEMENT = np.zeros(256, dtype=np.uint8)
for _base, _comp in zip(b"ACGT", b"TGCA", strict=True):
    _COMPLEMENT[_base] = _comp

# Planted gene-level log2 fold changes (severe vs mild) for named genes, in the direction published for
# severe COVID-19 blood: IL-6 axis feedback and receptor genes up, neutrophil markers up, MHC-II down.
NAMED_EFFECTS: dict[str, float] = {
    "SOCS3": 1.5,
    "STAT3": 1.0,
    "IL6R": 1.2,
    "JAK2": 1.0,
    "CD177": 2.5,
    "ARG1": 2.0,
    "OLFM4": 1.8,
    "MMP8": 1.6,
    "HLA-DRA": -1.5,
    "CD74": -1.2,
}
# The isoform-switch gene: its molecules do not change, its isoform mix does.
SWITCH_GENE = "IL6ST"


@dataclass(frozen=True)
class ReadsDemoSpec:
    """Size and noise of the reads demo (defaults run the whole demo in about a minute on 2 cores)."""

    seed: int = 15
    n_simulated_genes: int = 100
    read_pairs: int = 60_000  # mean fragments per sample
    read_length: int = 75
    fragment_mean: int = 220
    fragment_sd: int = 25
    error_rate: float = 0.002
    dispersion: float = 0.02  # biological NB dispersion of gene molecules between samples
    n_random_de: int = 10  # simulated genes with a planted fold change besides the named ones
    depth_sd: float = 0.2  # log-normal scatter of sequencing depth between samples


@dataclass
class Transcriptome:
    """Transcripts (ID, gene, sequence) of the synthetic annotation."""

    transcripts: pd.DataFrame  # transcript_id, gene_id, gene_name, isoform, length
    sequences: dict[str, bytes] = field(repr=False)


def _random_seq(rng: np.random.Generator, n: int) -> np.ndarray:
    return BASES[rng.integers(0, 4, size=n)]


def build_transcriptome(gene_names: Sequence[str], rng: np.random.Generator) -> Transcriptome:
    """Genes of 3-7 random exons; extra isoforms skip internal exons (sharing the rest of the sequence).

    About half the genes get 2-4 isoforms. The switch gene gets exactly two: the full-length transcript
    and a short one made of the first two exons plus an exon of its own (as sgp130 for IL6ST).
    """
    rows, sequences = [], {}
    for g, name in enumerate(gene_names, start=1):
        gene_id = f"DEMOG{g:05d}.1"
        n_exons = int(rng.integers(3, 8))
        exons = [_random_seq(rng, int(rng.integers(120, 450))) for _ in range(n_exons)]
        structures: list[list[np.ndarray]] = [exons]
        if name == SWITCH_GENE:
            # Long isoform: many exons, so it is ~3x the short one and the length effect is large.
            exons = [_random_seq(rng, int(rng.integers(350, 450))) for _ in range(8)]
            structures = [exons, [exons[0], exons[1], _random_seq(rng, 250)]]
        elif rng.random() < 0.5:
            n_extra = int(rng.integers(1, 4))
            seen = {tuple(range(n_exons))}
            for _ in range(20):
                if len(structures) > n_extra:
                    break
                internal = [i for i in range(1, n_exons - 1) if rng.random() < 0.6]
                keep = tuple([0, *internal, n_exons - 1])
                if keep not in seen:
                    seen.add(keep)
                    structures.append([exons[i] for i in keep])
        for iso, parts in enumerate(structures, start=1):
            seq = np.concatenate(parts)
            if len(seq) < 400:  # every transcript must hold the longest fragments
                seq = np.concatenate([seq, _random_seq(rng, 400 - len(seq))])
            tx_id = f"DEMOT{g:05d}{iso:02d}.1"
            sequences[tx_id] = seq.tobytes()
            rows.append(
                {
                    "transcript_id": tx_id,
                    "gene_id": gene_id,
                    "gene_name": name,
                    "isoform": iso,
                    "length": len(seq),
                }
            )
    return Transcriptome(pd.DataFrame(rows), sequences)


def write_transcriptome_fasta(transcriptome: Transcriptome, path: str | Path) -> None:
    """GENCODE-style headers (``tx|gene|-|-|name-201|name|length|protein_coding|``), gzipped."""
    with gzip.open(path, "wt", compresslevel=6) as handle:
        for row in transcriptome.transcripts.itertuples(index=False):
            seq = transcriptome.sequences[row.transcript_id].decode()
            header = (
                f">{row.transcript_id}|{row.gene_id}|-|-|{row.gene_name}-{200 + row.isoform}|"
                f"{row.gene_name}|{row.length}|protein_coding|"
            )
            handle.write(header + "\n")
            for start in range(0, len(seq), 60):
                handle.write(seq[start : start + 60] + "\n")


@dataclass
class PlantedTruth:
    """What the demo plants: per gene (truth table), per transcript and per sample (true fragments)."""

    genes: pd.DataFrame  # gene, gene_id, true_log2FoldChange, is_de, isoform_switch, ...
    transcripts: pd.DataFrame  # transcript_id, gene, length, share_mild, share_severe
    fragments: pd.DataFrame  # transcripts x samples, simulated fragments


def plant_truth(
    transcriptome: Transcriptome,
    groups: Mapping[str, str],
    spec: ReadsDemoSpec,
    rng: np.random.Generator,
) -> PlantedTruth:
    """Draw molecules per gene and sample (NB around the planted means), split them among isoforms and
    turn them into fragment counts in proportion to each transcript's effective length."""
    tx = transcriptome.transcripts
    genes = tx[["gene_name", "gene_id"]].drop_duplicates().set_index("gene_name")
    lfc = pd.Series(0.0, index=genes.index)
    for name, effect in NAMED_EFFECTS.items():
        if name in lfc.index:
            lfc[name] = effect
    simulated = [g for g in genes.index if g.startswith("SIMG")]
    for name in rng.choice(simulated, size=min(spec.n_random_de, len(simulated)), replace=False):
        lfc[name] = float(rng.choice([-1, 1]) * rng.uniform(1.0, 2.0))
    # Baseline molecules: log-normal over genes; planted genes get enough to be detectable.
    base = pd.Series(np.exp(rng.normal(3.0, 1.0, size=len(genes))), index=genes.index)
    base[lfc != 0] = np.maximum(base[lfc != 0], 20.0)
    base[SWITCH_GENE] = max(base.get(SWITCH_GENE, 0.0), 40.0)

    share_mild = np.zeros(len(tx))
    share_severe = np.zeros(len(tx))
    for _, idx in tx.groupby("gene_name").indices.items():
        names = tx["gene_name"].iloc[idx]
        if names.iloc[0] == SWITCH_GENE:  # long -> short isoform in severe
            share_mild[idx], share_severe[idx] = [0.8, 0.2], [0.2, 0.8]
        else:
            share = rng.dirichlet(np.full(len(idx), 2.0))
            share_mild[idx] = share_severe[idx] = share
    efflen = np.maximum(tx["length"].to_numpy() - spec.fragment_mean + 1, 1)

    samples = list(groups)
    severe = np.array([groups[s] == "severe" for s in samples])
    gene_of_tx = genes.index.get_indexer(tx["gene_name"])
    mean_molecules = base.to_numpy()[:, None] * np.where(severe, 2.0 ** lfc.to_numpy()[:, None], 1.0)
    shape = 1.0 / spec.dispersion
    molecules = rng.gamma(shape, mean_molecules / shape)  # NB = Poisson-gamma; Poisson step below
    tx_molecules = molecules[gene_of_tx, :] * np.where(severe, share_severe[:, None], share_mild[:, None])
    weight = tx_molecules * efflen[:, None]
    depth = spec.read_pairs * np.exp(rng.normal(0.0, spec.depth_sd, size=len(samples)))
    fragments = rng.poisson(weight / weight.sum(axis=0) * depth)

    truth = pd.DataFrame(
        {
            "gene": genes.index,
            "gene_id": genes["gene_id"].to_numpy(),
            "true_log2FoldChange": lfc.to_numpy(),
            "is_de": (lfc != 0).to_numpy(),
            "isoform_switch": (genes.index == SWITCH_GENE),
            "n_isoforms": tx.groupby("gene_name").size().reindex(genes.index).to_numpy(),
            "base_molecules": base.to_numpy(),
        }
    )
    transcripts = pd.DataFrame(
        {
            "transcript_id": tx["transcript_id"],
            "gene": tx["gene_name"],
            "length": tx["length"],
            "share_mild": share_mild,
            "share_severe": share_severe,
        }
    )
    frag = pd.DataFrame(fragments, index=tx["transcript_id"], columns=samples)
    return PlantedTruth(truth, transcripts, frag)


def _fragment_reads(
    seqs: np.ndarray,
    offsets: np.ndarray,
    lengths: np.ndarray,
    tx_index: np.ndarray,
    spec: ReadsDemoSpec,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Read 1 and read 2 (uint8 arrays, one row per fragment) of fragments of the given transcripts."""
    n = len(tx_index)
    tx_len = lengths[tx_index]
    frag_len = np.clip(
        np.rint(rng.normal(spec.fragment_mean, spec.fragment_sd, size=n)).astype(int),
        spec.read_length,
        tx_len,
    )
    start = offsets[tx_index] + (rng.random(n) * (tx_len - frag_len + 1)).astype(int)
    cols = np.arange(spec.read_length)
    read2 = seqs[start[:, None] + cols]  # sense strand, fragment 5' end
    end = start + frag_len
    read1 = _COMPLEMENT[seqs[end[:, None] - 1 - cols]]  # antisense, from the fragment's 3' end
    for read in (read1, read2):
        hit = rng.random(read.shape) < spec.error_rate
        # A substitution never yields the same base: shift by 1-3 positions in ACGT.
        codes = np.searchsorted(BASES, read[hit])
        read[hit] = BASES[(codes + rng.integers(1, 4, size=codes.size)) % 4]
    return read1, read2


def _fastq_bytes(names: Sequence[str], reads: np.ndarray, mate: int) -> bytes:
    qual = b"F" * reads.shape[1]
    lines = [
        b"@%s/%d\n%s\n+\n%s\n" % (name.encode(), mate, row.tobytes(), qual)
        for name, row in zip(names, reads, strict=True)
    ]
    return b"".join(lines)


def write_run_fastqs(
    transcriptome: Transcriptome,
    truth: PlantedTruth,
    runs: Mapping[str, Sequence[str]],
    run_paths: Mapping[str, tuple[str, str]],
    spec: ReadsDemoSpec,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Write each sample's fragments as paired FASTQ.gz, split evenly over the sample's runs.

    ``runs`` maps sample -> its run IDs; ``run_paths`` maps run -> (read 1 path, read 2 path). Returns the
    number of read pairs written per run.
    """
    tx = transcriptome.transcripts
    seqs = np.frombuffer(b"".join(transcriptome.sequences[t] for t in tx["transcript_id"]), dtype=np.uint8)
    lengths = tx["length"].to_numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    written = []
    for sample, sample_runs in runs.items():
        counts = truth.fragments[sample].to_numpy()
        tx_index = rng.permutation(np.repeat(np.arange(len(tx)), counts))  # random read order
        read1, read2 = _fragment_reads(seqs, offsets, lengths, tx_index, spec, rng)
        parts = np.array_split(np.arange(len(tx_index)), len(sample_runs))
        for part, run in zip(parts, sample_runs, strict=True):
            names = [f"{run}.{i + 1}" for i in range(len(part))]
            for mate, reads, path in ((1, read1, run_paths[run][0]), (2, read2, run_paths[run][1])):
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                with gzip.open(path, "wb", compresslevel=1) as handle:
                    handle.write(_fastq_bytes(names, reads[part], mate))
            written.append({"run": run, "sample": sample, "read_pairs": len(part)})
    return pd.DataFrame(written)


def gene_fragment_truth(truth: PlantedTruth) -> pd.DataFrame:
    """True fragments per gene and sample (sum over isoforms): what a perfect quantifier would count."""
    by_gene = truth.fragments.groupby(truth.transcripts.set_index("transcript_id")["gene"]).sum()
    by_gene.index.name = "gene"
    return by_gene


def simulate_reads_demo(
    gene_names: Sequence[str],
    groups: Mapping[str, str],
    runs: Mapping[str, Sequence[str]],
    run_paths: Mapping[str, tuple[str, str]],
    spec: ReadsDemoSpec,
) -> tuple[Transcriptome, PlantedTruth, pd.DataFrame]:
    """Build the transcriptome, plant the truth and write the FASTQs of every run (seeded)."""
    unknown = sorted(set(runs) - set(groups))
    if unknown:
        raise ValueError(f"runs of samples without a group: {unknown}")
    rng = np.random.default_rng(spec.seed)
    simulated = [f"SIMG{i:04d}" for i in range(1, spec.n_simulated_genes + 1)]
    names = list(dict.fromkeys([*gene_names, SWITCH_GENE, *simulated]))
    transcriptome = build_transcriptome(names, rng)
    truth = plant_truth(transcriptome, groups, spec, rng)
    written = write_run_fastqs(transcriptome, truth, runs, run_paths, spec, rng)
    logger.info(
        "reads demo: %d genes, %d transcripts, %d samples, %d runs, %d read pairs in all (seed %d)",
        len(truth.genes),
        len(transcriptome.transcripts),
        len(groups),
        len(written),
        int(written["read_pairs"].sum()),
        spec.seed,
    )
    return transcriptome, truth, written


@dataclass(frozen=True)
class DemoDesign:
    """Samples with their group, and the runs of each sample (a few samples sequenced on two lanes)."""

    groups: dict[str, str]
    runs: dict[str, list[str]]


def demo_design(n_per_group: int, replicate_runs: int) -> DemoDesign:
    """``n_per_group`` severe then mild samples (S01, S02, …); the first ``replicate_runs`` samples of
    each group have two runs (``S01_L1``, ``S01_L2``), the others one (``S03``)."""
    groups, runs = {}, {}
    for offset, group in ((0, "severe"), (n_per_group, "mild")):
        for i in range(n_per_group):
            sample = f"S{offset + i + 1:02d}"
            groups[sample] = group
            runs[sample] = [f"{sample}_L1", f"{sample}_L2"] if i < replicate_runs else [sample]
    return DemoDesign(groups, runs)


def simulate_and_write(
    gene_names: Sequence[str], design: DemoDesign, settings: Mapping, outputs: Mapping[str, str]
) -> None:
    """Simulate the demo and write every output: ``runs`` (run table with fastq_1/fastq_2 relative to
    its folder), ``samples``, ``truth`` (genes), ``truth_counts`` (true fragments per gene and sample),
    ``transcripts`` (isoform shares), ``transcriptome`` (FASTA) and the ``fastq`` folder."""
    spec = ReadsDemoSpec(
        seed=settings["seed"],
        read_pairs=settings["read_pairs"],
        n_simulated_genes=settings["n_simulated_genes"],
    )
    fastq_dir = Path(outputs["fastq"])
    run_table_dir = Path(outputs["runs"]).parent
    run_paths = {
        run: (str(fastq_dir / f"{run}_1.fastq.gz"), str(fastq_dir / f"{run}_2.fastq.gz"))
        for runs in design.runs.values()
        for run in runs
    }
    transcriptome, truth, _ = simulate_reads_demo(gene_names, design.groups, design.runs, run_paths, spec)
    write_transcriptome_fasta(transcriptome, outputs["transcriptome"])
    rows = [
        {
            "sample": sample,
            "run": run,
            "layout": "PAIRED",
            "fastq_1": str(Path(run_paths[run][0]).relative_to(run_table_dir)),
            "fastq_2": str(Path(run_paths[run][1]).relative_to(run_table_dir)),
        }
        for sample, runs in design.runs.items()
        for run in runs
    ]
    pd.DataFrame(rows).to_csv(outputs["runs"], sep="\t", index=False)
    samples = pd.DataFrame({"sample_id": list(design.groups), "group": list(design.groups.values())})
    samples.to_csv(outputs["samples"], sep="\t", index=False)
    truth.genes.to_csv(outputs["truth"], sep="\t", index=False)
    gene_fragment_truth(truth).to_csv(outputs["truth_counts"], sep="\t")
    truth.transcripts.to_csv(outputs["transcripts"], sep="\t", index=False)
