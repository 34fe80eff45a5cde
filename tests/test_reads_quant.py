"""Units of the reads path: transcript -> gene maps, the FASTQ input check, salmon's QC files and the
strandedness check, and pytximport's length-scaled counts against tximport's formula."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from il6axis.errors import InputError
from il6axis.reads import aggregate, annotation, fastp, salmon, simulate

GENCODE_HEADERS = [
    "ENST00000001.2|ENSG00000010.5|OTTHUMG1|OTTHUMT1|IL6-201|IL6|1200|protein_coding|",
    "ENST00000002.1|ENSG00000020.3|OTTHUMG2|OTTHUMT2|IL6ST-201|IL6ST|3000|protein_coding|",
    "ENST00000003.1|ENSG00000020.3|OTTHUMG2|OTTHUMT3|IL6ST-202|IL6ST|900|protein_coding|",
]


def _fasta(path: Path, headers: list[str], gz: bool = True) -> Path:
    text = "".join(f">{h}\nACGTACGTAC\n" for h in headers)
    if gz:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def _fastq(path: Path, n: int, length: int = 20) -> Path:
    records = "".join(f"@r{i}\n{'ACGT' * (length // 4)}\n+\n{'F' * length}\n" for i in range(n))
    with gzip.open(path, "wt") as handle:
        handle.write(records)
    return path


# --- transcript -> gene maps ---------------------------------------------------------------------


def test_gencode_headers_give_gene_ids_and_names(tmp_path):
    fasta = _fasta(tmp_path / "tx.fa.gz", GENCODE_HEADERS)
    assert annotation.is_gencode_fasta(fasta)
    table = annotation.build_tx2gene(fasta, None)
    assert table["transcript_id"].tolist() == ["ENST00000001.2", "ENST00000002.1", "ENST00000003.1"]
    assert table["gene_id"].tolist() == ["ENSG00000010.5", "ENSG00000020.3", "ENSG00000020.3"]
    assert table["gene_name"].tolist() == ["IL6", "IL6ST", "IL6ST"]


def test_ensembl_headers_and_gtf_and_tsv_maps(tmp_path):
    fasta = _fasta(
        tmp_path / "cdna.fa",
        [
            "ENST00000001.2 cdna chromosome:GRCh38:7:1:2:1 gene:ENSG00000010.5 gene_symbol:IL6",
            "ENST00000002.1 cdna chromosome:GRCh38:5:1:2:1 gene:ENSG00000020.3 gene_symbol:IL6ST",
        ],
        gz=False,
    )
    from_headers = annotation.build_tx2gene(fasta, None)
    assert from_headers["gene_name"].tolist() == ["IL6", "IL6ST"]
    gtf = tmp_path / "genes.gtf"
    gtf.write_text(
        "#!genome-build GRCh38\n"
        '7\tHAVANA\tgene\t1\t2\t.\t+\t.\tgene_id "ENSG00000010.5"; gene_name "IL6";\n'
        '7\tHAVANA\ttranscript\t1\t2\t.\t+\t.\tgene_id "ENSG00000010.5"; transcript_id "ENST00000001"; '
        'gene_name "IL6";\n'
        '5\tHAVANA\ttranscript\t1\t2\t.\t+\t.\tgene_id "ENSG00000020.3"; transcript_id "ENST00000002"; '
        'gene_name "IL6ST";\n'
    )
    # The GTF lacks versions: matched after stripping them, reported under the FASTA's names.
    from_gtf = annotation.build_tx2gene(fasta, gtf)
    assert from_gtf["transcript_id"].tolist() == ["ENST00000001.2", "ENST00000002.1"]
    assert from_gtf["gene_id"].tolist() == ["ENSG00000010.5", "ENSG00000020.3"]
    tsv = tmp_path / "tx2gene.tsv"
    pd.DataFrame({"transcript_id": ["ENST00000001.2", "ENST00000002.1"], "gene_id": ["G1", "G2"]}).to_csv(
        tsv, sep="\t", index=False
    )
    assert annotation.build_tx2gene(fasta, tsv)["gene_name"].tolist() == ["G1", "G2"]


def test_fasta_ids_not_in_map_are_a_clear_error(tmp_path):
    fasta = _fasta(tmp_path / "tx.fa.gz", GENCODE_HEADERS)
    tsv = tmp_path / "other_release.tsv"
    pd.DataFrame({"transcript_id": ["ENST99999999.1", "ENST00000002.1"], "gene_id": ["G9", "G2"]}).to_csv(
        tsv, sep="\t", index=False
    )
    with pytest.raises(InputError) as err:
        annotation.build_tx2gene(fasta, tsv)
    message = str(err.value)
    assert "2 of 3 transcripts" in message and "ENST00000001.2" in message
    assert "reads.tx2gene" in message and "same annotation release" in message


def test_map_without_gene_column_and_headers_without_genes(tmp_path):
    fasta = _fasta(tmp_path / "plain.fa", ["tx1 some description"], gz=False)
    with pytest.raises(InputError, match="names no gene"):
        annotation.build_tx2gene(fasta, None)
    bad = tmp_path / "map.tsv"
    bad.write_text("tx\tgene\ntx1\tg1\n")
    with pytest.raises(InputError, match="transcript_id and gene_id"):
        annotation.build_tx2gene(fasta, bad)


# --- FASTQ input check (fastp itself accepts these silently) --------------------------------------


def test_fastq_records_counted_and_truncation_detected(tmp_path):
    good = _fastq(tmp_path / "r_1.fastq.gz", 1000)
    assert fastp.count_fastq_records(good) == 1000
    truncated = tmp_path / "cut_1.fastq.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        fastp.count_fastq_records(truncated)
    partial = tmp_path / "partial.fastq"
    partial.write_text("@r1\nACGT\n+\nFFFF\n@r2\nACGT\n")
    with pytest.raises(InputError, match="not a multiple of 4"):
        fastp.count_fastq_records(partial)
    not_fastq = tmp_path / "x.fastq"
    not_fastq.write_text(">seq\nACGT\n>seq2\nACGT\n")
    with pytest.raises(InputError, match="not FASTQ"):
        fastp.count_fastq_records(not_fastq)


def test_mismatched_mates_are_an_error():
    assert fastp.check_pairs("R1", ["a", "b"], [10, 10]) == 10
    with pytest.raises(InputError, match="different numbers of reads") as err:
        fastp.check_pairs("R1", ["a_1.fq.gz", "a_2.fq.gz"], [10, 9])
    assert "a_1.fq.gz: 10" in str(err.value) and "a_2.fq.gz: 9" in str(err.value)


def test_fastp_command_paired_and_single():
    paired = fastp.fastp_command(["a1", "a2"], ["o1", "o2"], "j", "h", 3)
    assert paired[:5] == ["fastp", "--in1", "a1", "--out1", "o1"]
    assert "--detect_adapter_for_pe" in paired and paired[paired.index("--thread") + 1] == "3"
    single = fastp.fastp_command(["a1"], ["o1"], "j", "h", 1, ["--length_required", "30"])
    assert "--in2" not in single and single[-2:] == ["--length_required", "30"]


# --- salmon ---------------------------------------------------------------------------------------


def _quant_dir(path: Path, libtype: str, processed: int, mapped: int) -> Path:
    (path / "aux_info").mkdir(parents=True)
    (path / "aux_info" / "meta_info.json").write_text(
        json.dumps({"salmon_version": "1.10.1", "num_processed": processed, "num_mapped": mapped})
    )
    (path / "lib_format_counts.json").write_text(
        json.dumps({"expected_format": libtype, "compatible_fragment_ratio": 0.99})
    )
    return path


def test_quant_qc_and_strandedness_check(tmp_path):
    qc = salmon.read_quant_qc(_quant_dir(tmp_path / "S1", "ISR", 1000, 850))
    assert qc["mapping_rate"] == pytest.approx(0.85)
    assert qc["libtype_detected"] == "ISR" and qc["strandedness_detected"] == "reverse"
    salmon.check_strandedness("S1", "ISR", "reverse", "k")
    salmon.check_strandedness("S1", "IU", None, "k")
    salmon.check_strandedness("S1", "IU", "auto", "k")
    with pytest.raises(InputError) as err:
        salmon.check_strandedness("S1", "IU", "reverse", "cohorts.c.counts.reads.strandedness")
    assert "unstranded" in str(err.value) and "cohorts.c.counts.reads.strandedness" in str(err.value)


def test_quant_command_passes_all_runs_of_a_sample_together():
    cmd = salmon.quant_command("idx", [["a_1", "b_1"], ["a_2", "b_2"]], "out", 4)
    assert cmd[cmd.index("--mates1") + 1 : cmd.index("--mates2")] == ["a_1", "b_1"]
    assert cmd[cmd.index("--libType") + 1] == "A"
    single = salmon.quant_command("idx", [["a", "b"]], "out", 1)
    assert single[single.index("--unmatedReads") + 1 : single.index("--threads")] == ["a", "b"]
    with pytest.raises(ValueError):
        salmon.quant_command("idx", [["a_1", "b_1"], ["a_2"]], "out", 1)


def test_index_command_with_decoys_and_gentrome(tmp_path):
    tx = _fasta(tmp_path / "tx.fa.gz", GENCODE_HEADERS)
    genome = _fasta(tmp_path / "genome.fa.gz", ["chr1 AC:CM000663.2", "chr2"])
    gentrome, decoys = salmon.write_gentrome(tx, genome, tmp_path / "work")
    assert decoys.read_text() == "chr1\nchr2\n"
    with gzip.open(gentrome, "rt") as handle:  # two gzip members read as one stream
        assert [line for line in handle if line.startswith(">")][-1] == ">chr2\n"
    cmd = salmon.index_command(str(gentrome), "idx", 2, 31, True, str(decoys))
    assert "--gencode" in cmd and cmd[cmd.index("--decoys") + 1] == str(decoys)


# --- gene-level counts ----------------------------------------------------------------------------


def _write_quant(path: Path, names, lengths, efflen, tpm, reads) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {"Name": names, "Length": lengths, "EffectiveLength": efflen, "TPM": tpm, "NumReads": reads}
    ).to_csv(path, sep="\t", index=False)
    return path


def test_length_scaled_tpm_matches_tximport_formula(tmp_path):
    """tximport's lengthScaledTPM: gene TPM x the gene's length averaged over samples, rescaled so each
    sample keeps its library size; the gene length is the TPM-weighted mean effective length."""
    rng = np.random.default_rng(1)
    names = ["t1", "t2", "t3", "t4"]
    tx2gene = pd.DataFrame(
        {"transcript_id": names, "gene_id": ["g1", "g1", "g2", "g2"], "gene_name": ["A", "A", "B", "B"]}
    )
    efflen = np.array([[2800.0, 700.0, 1500.0, 1200.0], [2810.0, 690.0, 1490.0, 1210.0]])
    reads = rng.uniform(200, 2000, size=(2, 4))
    files = {}
    for i, sample in enumerate(["S1", "S2"]):
        rate = reads[i] / efflen[i]
        tpm = rate / rate.sum() * 1e6
        files[sample] = _write_quant(
            tmp_path / sample / "quant.sf", names, efflen[i] + 200, efflen[i], tpm, reads[i]
        )
    got = aggregate.gene_counts(files, tx2gene, "length_scaled_tpm", "gene_id")

    expected = {}
    abund, length, counts = {}, {}, {}
    for i, sample in enumerate(["S1", "S2"]):
        rate = reads[i] / efflen[i]
        tpm = rate / rate.sum() * 1e6
        abund[sample] = np.array([tpm[:2].sum(), tpm[2:].sum()])
        length[sample] = np.array(
            [(tpm[:2] * efflen[i, :2]).sum() / tpm[:2].sum(), (tpm[2:] * efflen[i, 2:]).sum() / tpm[2:].sum()]
        )
        counts[sample] = np.array([reads[i, :2].sum(), reads[i, 2:].sum()])
    mean_length = (length["S1"] + length["S2"]) / 2
    for sample in ["S1", "S2"]:
        raw = abund[sample] * mean_length
        expected[sample] = raw / raw.sum() * counts[sample].sum()
    expected = pd.DataFrame(expected, index=["g1", "g2"])
    np.testing.assert_allclose(got.loc[["g1", "g2"], ["S1", "S2"]].to_numpy(), expected.to_numpy(), rtol=1e-6)

    by_name = aggregate.gene_counts(files, tx2gene, "length_scaled_tpm", "gene_name")
    assert list(by_name.index) == ["A", "B"] and by_name.index.name == "gene_name"
    summed = aggregate.gene_counts(files, tx2gene, "summed", "gene_id")
    np.testing.assert_allclose(summed.loc["g1", "S1"], reads[0, :2].sum(), rtol=1e-6)


def test_quantified_transcripts_missing_from_map_are_an_error(tmp_path):
    quant = _write_quant(
        tmp_path / "S1" / "quant.sf", ["t1", "tX"], [900, 900], [700, 700], [5e5, 5e5], [10, 10]
    )
    tx2gene = pd.DataFrame({"transcript_id": ["t1"], "gene_id": ["g1"], "gene_name": ["A"]})
    with pytest.raises(InputError, match="not in the transcript->gene map"):
        aggregate.gene_counts({"S1": quant}, tx2gene)


def test_sample_qc_flags_low_mapping_and_small_libraries():
    quant = {
        "S1": {"fragments_processed": 100, "mapping_rate": 0.9},
        "S2": {"fragments_processed": 10, "mapping_rate": 0.2},
    }
    fastp_runs = {
        "S1": [{"run": "R1", "reads_before_filtering": 120, "reads_after_filtering": 110}],
        "S2": [
            {"run": "R2", "reads_before_filtering": 8, "reads_after_filtering": 6},
            {"run": "R3", "reads_before_filtering": 4, "reads_after_filtering": 4},
        ],
    }
    table = aggregate.sample_qc(["S1", "S2"], quant, fastp_runs, 0.5, 50).set_index("sample")
    assert table.loc["S2", "runs"] == "R2,R3" and table.loc["S2", "reads_before_filtering"] == 12
    assert table["low_mapping_rate"].tolist() == [False, True]
    assert table["low_library_size"].tolist() == [False, True]


# --- the demo simulator ---------------------------------------------------------------------------


def test_simulator_plants_an_isoform_switch_that_changes_raw_counts_only(tmp_path):
    design = simulate.demo_design(3, 1)
    assert design.runs["S01"] == ["S01_L1", "S01_L2"] and design.runs["S02"] == ["S02"]
    spec = simulate.ReadsDemoSpec(seed=3, read_pairs=20_000, n_simulated_genes=20)
    rng = np.random.default_rng(spec.seed)
    transcriptome = simulate.build_transcriptome(["IL6", "SOCS3", simulate.SWITCH_GENE, "SIMG0001"], rng)
    truth = simulate.plant_truth(transcriptome, design.groups, spec, rng)
    genes = truth.genes.set_index("gene")
    assert genes.loc[simulate.SWITCH_GENE, "true_log2FoldChange"] == 0
    assert genes.loc["SOCS3", "true_log2FoldChange"] == simulate.NAMED_EFFECTS["SOCS3"]
    switch = truth.transcripts[truth.transcripts["gene"] == simulate.SWITCH_GENE]
    assert switch["length"].iloc[0] > 2.5 * switch["length"].iloc[1]
    # Same molecules, shorter isoform in severe: fewer fragments per molecule (what tximport corrects).
    frags = simulate.gene_fragment_truth(truth).loc[simulate.SWITCH_GENE]
    severe = [s for s, g in design.groups.items() if g == "severe"]
    mild = [s for s, g in design.groups.items() if g == "mild"]
    assert np.log2(frags[severe].mean() / frags[mild].mean()) < -0.5
