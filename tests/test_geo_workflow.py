"""Real cohorts through a local fake GEO (127.0.0.1): download, parse, harmonise, DE; and failure paths."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest
import yaml
from geo_server import FakeGeo
from real_cohorts import GSE155454_CONTRAST, gse155454_from_geo
from workflow_runner import PROJECT_ROOT, run_snakemake

from il6axis.acquire.download import DownloadError, DownloadSettings
from il6axis.acquire.geo_metadata import read_series_matrix
from il6axis.acquire.sources import retrieve, source_url
from il6axis.cohort.samples import assign_severity, define_contrast, filter_mask

DEFAULT_CONFIG = yaml.safe_load((PROJECT_ROOT / "config" / "config.yaml").read_text())


def _settings(base_url: str) -> dict:
    return {
        "geo_base": base_url,
        "geo_download_base": base_url,
        "ncbi_gene_base": base_url,
        "local_dir": None,
        "retries": 3,
        "backoff_s": 0.01,
        "timeout_s": 10,
    }


def _download_settings(base_url: str, local_dir: str | None = None) -> DownloadSettings:
    return DownloadSettings.from_config({**_settings(base_url), "local_dir": local_dir})


def _test_config(base_url: str, shared_data) -> dict:
    """GSE152418 (NCBI counts + GEOquery sheet), GSE155454 (symbol counts + sheet), GSE293708 (normalised)."""
    gse152418 = dict(DEFAULT_CONFIG["cohorts"]["GSE152418"])
    gse152418["metadata"] = {
        "source": "sample_sheet",
        "path": str(shared_data / "GSE152418" / "GSE152418_sample_metadata_GEOquery_pData.csv.gz"),
        "sample_column": "geo_accession",
    }
    gse155454 = gse155454_from_geo()
    # Published as DESeq2-normalised values only: the log2 linear-model route, off the pooled scale.
    gse293708 = {
        "tissue": "other",
        "counts": {
            "source": "geo_supplementary",
            "file": "GSE293708_DESeq2_normalized_counts.csv.gz",
            "id_column": "Symbol",
            "value_type": "normalised",
        },
        "metadata": {
            "source": "geo_supplementary",
            "file": "GSE293708_sample_sheet_from_colnames.csv.gz",
            "sample_column": "sample",
        },
        "severity": {
            "field": "severity",
            "severe": ["Severe", "Critical"],
            "mild": ["Mild"],
            "exclude": ["Normal"],
        },
    }
    settings = _settings(base_url)
    del settings["local_dir"]
    return {
        "cohorts": {"GSE152418": gse152418, "GSE155454": gse155454, "GSE293708": gse293708},
        "download": settings,
        "de": {"lfc_shrink": False},
    }


@pytest.fixture(scope="module")
def fake_geo(shared_data):
    with FakeGeo(shared_data) as server:
        yield server


@pytest.fixture(scope="module")
def geo_run(fake_geo, shared_data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("geo_run")
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(_test_config(fake_geo.base_url, shared_data)))
    proc = run_snakemake(workdir, configfile)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return workdir


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.e2e
def test_manifest_records_every_download_with_its_checksum(geo_run, shared_data):
    manifest = pd.read_csv(geo_run / "results/downloads/manifest.tsv", sep="\t").set_index("file")
    expected = {
        "results/downloads/GSE152418/GSE152418_raw_counts_GRCh38.p13_NCBI.tsv.gz": shared_data
        / "GSE152418/GSE152418_raw_counts_GRCh38.p13_NCBI.tsv.gz",
        "results/downloads/GSE155454/suppl/GSE155454_counts_kuanrongchan_v1.csv.gz": shared_data
        / "GSE155454/GSE155454_counts_kuanrongchan_v1.csv.gz",
        "results/downloads/GSE155454/suppl/GSE155454_sample_sheet_from_colnames.csv.gz": shared_data
        / "GSE155454/GSE155454_sample_sheet_from_colnames.csv.gz",
        "results/downloads/GSE293708/suppl/GSE293708_DESeq2_normalized_counts.csv.gz": shared_data
        / "GSE293708/GSE293708_DESeq2_normalized_counts.csv.gz",
        "results/downloads/GSE293708/suppl/GSE293708_sample_sheet_from_colnames.csv.gz": shared_data
        / "GSE293708/GSE293708_sample_sheet_from_colnames.csv.gz",
        "results/downloads/ncbi/Homo_sapiens.gene_info.gz": shared_data
        / "NCBI_gene_info/Homo_sapiens.gene_info.gz",
    }
    assert set(manifest.index) == set(expected)
    for rel, source in expected.items():
        assert manifest.loc[rel, "sha256"] == _sha256(source) == _sha256(geo_run / rel)
    assert manifest.loc[list(expected)[0], "url"].startswith("http://127.0.0.1:")


@pytest.mark.e2e
def test_gse152418_contrast_and_one_draw_per_patient(geo_run):
    samples = pd.read_csv(geo_run / "results/cohorts/GSE152418.samples.tsv", sep="\t").set_index("sample_id")
    assert samples["severity"].value_counts().to_dict() == {"excluded": 20, "severe": 10, "mild": 4}
    # nCoV024 and nCoV025 were drawn twice: the Draw-1 samples represent them.
    for draw1, draw2 in [("GSM4614994", "GSM4614996"), ("GSM4614997", "GSM4614998")]:
        assert samples.loc[draw1, "severity"] == "severe"
        assert samples.loc[draw2, "severity"] == "excluded"
        assert samples.loc[draw2, "exclusion_reason"] == "not the first sample of its patient"
    assert samples.loc["GSM4614985", "exclusion_reason"] == "severity label 'Convalescent' excluded"
    summary = json.loads((geo_run / "results/de/GSE152418/summary.json").read_text())
    assert summary["design"] == "~ sex + severity" and summary["n_per_group"] == {"mild": 4, "severe": 10}


@pytest.mark.e2e
def test_gse152418_gene_mapping_and_panel(geo_run):
    mapping = pd.read_csv(geo_run / "results/cohorts/GSE152418.gene_mapping.tsv", sep="\t").iloc[0]
    assert mapping["n_input"] == 39376 and mapping["n_unmapped"] == 8
    panel = pd.read_csv(geo_run / "results/de/GSE152418/il6_panel.tsv", sep="\t").set_index("symbol")
    for gene in ["IL6", "IL6R", "IL6ST", "JAK1", "JAK2", "JAK3", "TYK2", "STAT3", "SOCS3"]:
        assert panel.loc[gene, "present"], gene
    # IL6 mRNA is low in PBMC but detected; IL6ST / JAK1 / STAT3 are tested with finite effects.
    assert panel.loc["IL6", "detection_severe"] > 0.5
    for gene in ["IL6ST", "JAK1", "STAT3"]:
        assert panel.loc[gene, "tested"] and abs(panel.loc[gene, "log2FoldChange"]) < 3


@pytest.mark.e2e
def test_gse155454_contrast_and_absent_il6(geo_run):
    samples = pd.read_csv(geo_run / "results/cohorts/GSE155454.samples.tsv", sep="\t")
    assert samples["severity"].value_counts().to_dict() == {"excluded": 16, "mild": 9, "severe": 7}
    panel = pd.read_csv(geo_run / "results/de/GSE155454/il6_panel.tsv", sep="\t").set_index("symbol")
    assert not panel.loc["IL6", "present"]  # filtered out upstream by the curators
    assert panel.loc["IL6", "not_tested_reason"] == "gene absent from the count matrix"
    assert panel.loc["SOCS3", "tested"]
    results = pd.read_csv(geo_run / "results/de/GSE155454/severe_vs_mild.tsv", sep="\t")
    assert results["gene"].is_unique and results["pvalue"].notna().sum() > 5000
    assert (geo_run / "results/plots/GSE155454/volcano.png").stat().st_size > 10_000


@pytest.mark.e2e
def test_unknown_accession_fails_cleanly(fake_geo, tmp_path):
    config = {
        "cohorts": {
            "GSE999999999": {
                "counts": {"source": "geo_ncbi", "gene_id": "entrez"},
                "metadata": {"source": "geo_series_matrix"},
                "severity": {"field": "x", "severe": ["a"], "mild": ["b"]},
            }
        },
        "download": {**_settings(fake_geo.base_url), "local_dir": None},
    }
    del config["download"]["local_dir"]
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    proc = run_snakemake(tmp_path, configfile, "--keep-going")
    assert proc.returncode != 0
    assert "404" in proc.stderr and "check the accession" in proc.stderr
    accession_dir = tmp_path / "results/downloads/GSE999999999"
    assert not accession_dir.exists() or list(accession_dir.iterdir()) == []
    assert not list((tmp_path / "results/downloads").rglob(".partial-*"))


@pytest.mark.e2e
def test_checksum_in_config_is_enforced(fake_geo, shared_data, tmp_path):
    config = _test_config(fake_geo.base_url, shared_data)
    config["cohorts"]["GSE155454"]["metadata"]["sha256"] = "0" * 64
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    target = "results/downloads/GSE155454/suppl/GSE155454_sample_sheet_from_colnames.csv.gz"
    proc = run_snakemake(tmp_path, configfile, target)
    assert proc.returncode != 0
    assert "checksum mismatch" in proc.stderr
    assert not (tmp_path / target).exists()


def test_gse157103_series_matrix_severity_via_server(fake_geo, tmp_path):
    """The real GSE157103 series matrix: 50 ICU vs 50 non-ICU among COVID-19 with the default config."""
    dest = tmp_path / "GSE157103_series_matrix.txt.gz"
    result = retrieve("series_matrix", dest, _download_settings(fake_geo.base_url), accession="GSE157103")
    assert result.attempts == 1 and dest.is_file()
    meta = read_series_matrix(dest)
    spec = DEFAULT_CONFIG["cohorts"]["GSE157103"]
    passes = filter_mask(meta, spec["filters"], "GSE157103")
    groups = assign_severity(meta, spec["severity"], "GSE157103", considered=passes)
    in_covid = groups.loc[passes, "severity"].value_counts().to_dict()
    assert in_covid == {"severe": 50, "mild": 50}
    obs = define_contrast(meta, {**spec, "derived_fields": {}}, "GSE157103")
    missing_age = obs[obs["exclusion_reason"] == "missing covariate age"]
    assert missing_age["title"].str.startswith("COVID_06").all() and len(missing_age) == 1
    assert obs.loc[obs["title"].str.startswith("COVID_89"), "age"].iloc[0] == 90.0


def test_severity_field_missing_from_metadata(fake_geo, tmp_path):
    dest = tmp_path / "GSE157103_series_matrix.txt.gz"
    retrieve("series_matrix", dest, _download_settings(fake_geo.base_url), accession="GSE157103")
    spec = {
        **DEFAULT_CONFIG["cohorts"]["GSE157103"],
        "severity": {"field": "who_score", "severe": ["7"], "mild": ["3"]},
    }
    with pytest.raises(ValueError, match=r"GSE157103: severity field 'who_score' is not a column.*'icu'"):
        define_contrast(read_series_matrix(dest), spec, "GSE157103")


def test_local_directory_instead_of_download(shared_data, tmp_path):
    settings = _download_settings("http://127.0.0.1:9", local_dir=str(shared_data))
    dest = tmp_path / "counts.csv.gz"
    result = retrieve(
        "supplementary",
        dest,
        settings,
        accession="GSE155454",
        filename="GSE155454_counts_kuanrongchan_v1.csv.gz",
    )
    assert result.url.startswith("file://") and _sha256(dest) == result.sha256
    with pytest.raises(DownloadError, match="download.local_dir"):
        retrieve("series_matrix", tmp_path / "sm.txt.gz", settings, accession="GSE155454")


def test_wrong_file_for_its_kind_is_rejected(fake_geo, tmp_path):
    """gene_info served where a series matrix is expected fails the header check, leaving nothing."""
    fake_geo.add_file(
        "/geo/series/GSE1nnn/GSE1000/matrix/GSE1000_series_matrix.txt.gz",
        fake_geo.resolve("/gene/DATA/GENE_INFO/Mammalia/Homo_sapiens.gene_info.gz"),
    )
    dest = tmp_path / "sm.txt.gz"
    with pytest.raises(DownloadError, match="!Series_title"):
        retrieve("series_matrix", dest, _download_settings(fake_geo.base_url), accession="GSE1000")
    assert not dest.exists()


def test_source_urls_follow_geo_layout():
    settings = _download_settings("https://mirror.example")
    assert source_url("series_matrix", "GSE152418", None, settings) == (
        "https://mirror.example/geo/series/GSE152nnn/GSE152418/matrix/GSE152418_series_matrix.txt.gz"
    )
    assert source_url("ncbi_counts", "GSE152418", None, settings).endswith(
        "acc=GSE152418&format=file&file=GSE152418_raw_counts_GRCh38.p13_NCBI.tsv.gz"
    )
    assert source_url("gene_info", None, None, settings) == (
        "https://mirror.example/gene/DATA/GENE_INFO/Mammalia/Homo_sapiens.gene_info.gz"
    )


@pytest.mark.e2e
def test_meta_analysis_across_the_two_cohorts(geo_run):
    meta = pd.read_csv(geo_run / "results/meta/panel_genes.tsv", sep="\t")
    socs3 = meta[meta["feature"] == "SOCS3"].set_index("stratum")
    assert socs3.loc["all", "k"] == 2 and socs3.loc["all", "cohorts"] == "GSE152418,GSE155454"
    assert "k=2" in socs3.loc["all", "note"]
    assert (
        socs3.loc["all", "ci_low"] <= socs3.loc["all", "pooled_log2FoldChange"] <= socs3.loc["all", "ci_high"]
    )
    # One cohort per material: the strata cannot pool and say why.
    assert socs3.loc["pbmc", "k"] == 1 and socs3.loc["pbmc", "reason"] == "fewer than 2 cohorts"
    il6 = meta[(meta["feature"] == "IL6") & (meta["stratum"] == "all")].iloc[0]
    assert il6["k"] <= 1  # absent from GSE155454's matrix


@pytest.mark.e2e
def test_normalised_cohort_takes_the_linear_route_and_stays_out_of_pooling(geo_run):
    """GSE293708 publishes DESeq2-normalised values: moderated log2 linear model, shown but not pooled."""
    summary = json.loads((geo_run / "results/de/GSE293708/summary.json").read_text())
    assert summary["scale"] == "log2_normalised" and "moderated" in summary["model"]
    assert summary["n_per_group"] == {"mild": 4, "severe": 8}
    results = pd.read_csv(geo_run / "results/de/GSE293708/severe_vs_mild.tsv", sep="\t")
    assert (results["scale"] == "log2_normalised").all() and "log2FoldChange_shrunk" not in results
    tested = results[results["tested"]]
    assert len(tested) > 5000 and tested["pvalue"].between(0, 1).all()
    assert (tested["ci_low"] < tested["log2FoldChange"]).all()
    expression = pd.read_csv(geo_run / "results/expression/GSE293708/panel_expression.tsv", sep="\t")
    assert expression.set_index("symbol").loc["IL6R", "present"]

    meta = pd.read_csv(geo_run / "results/meta/panel_genes.tsv", sep="\t")
    assert not meta["cohorts"].fillna("").str.contains("GSE293708").any()
    sensitivity = pd.read_csv(geo_run / "results/meta/panel_genes_sensitivity.tsv", sep="\t")
    pooled_all = sensitivity[
        (sensitivity["analysis"] == "all scales pooled") & (sensitivity["stratum"] == "all")
    ].set_index("feature")
    assert pooled_all.loc["SOCS3", "k"] == 3 and "GSE293708" in pooled_all.loc["SOCS3", "cohorts"]
    forest = pd.read_csv(geo_run / "results/meta/forest_panel_genes.tsv", sep="\t")
    rows = forest[forest["cohort"] == "GSE293708"]
    assert len(rows) and not rows["pooled"].any()
    for name in ("volcano.png", "panel_genes.png", "qc_pca.png", "pathway_scores.png"):
        assert (geo_run / "results/plots/GSE293708" / name).stat().st_size > 10_000


def _gse155454_with_counts(counts: dict, base_url: str) -> dict:
    settings = _settings(base_url)
    del settings["local_dir"]
    cohort = {
        **GSE155454_CONTRAST,
        "counts": counts,
        "metadata": {
            "source": "geo_supplementary",
            "file": "GSE155454_sample_sheet_from_colnames.csv.gz",
            "sample_column": "sample",
        },
    }
    return {"cohorts": {"GSE155454": cohort}, "download": settings}


@pytest.mark.e2e
def test_count_sources_fall_back_when_geo_has_no_ncbi_counts(fake_geo, shared_data, tmp_path):
    """GEO has no NCBI counts for GSE155454 (404): the author file is taken, recorded and built."""
    sources = [
        {"source": "geo_ncbi", "gene_id": "entrez"},
        {"source": "geo_supplementary", "file": "GSE155454_counts_kuanrongchan_v1.csv.gz"},
    ]
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(_gse155454_with_counts({"sources": sources}, fake_geo.base_url)))
    targets = ["results/cohorts/GSE155454.samples.tsv", "results/downloads/manifest.tsv"]
    proc = run_snakemake(tmp_path, configfile, *targets)
    assert proc.returncode == 0, proc.stderr[-5000:]

    choice = json.loads((tmp_path / "results/downloads/count_sources/GSE155454.choice.json").read_text())
    assert choice["chosen"]["index"] == 1
    assert choice["chosen"]["settings"]["file"] == "GSE155454_counts_kuanrongchan_v1.csv.gz"
    [skipped] = choice["skipped"]
    assert skipped["index"] == 0 and "HTTP 404" in skipped["reason"] and "acc=GSE155454" in skipped["url"]
    log = (tmp_path / "results/logs/download/GSE155454_count_sources.log").read_text()
    assert "cohorts.GSE155454.counts.sources[0] (geo_ncbi): file missing, trying the next source" in log

    manifest = pd.read_csv(tmp_path / "results/downloads/manifest.tsv", sep="\t").set_index("file")
    row = manifest.loc["results/downloads/count_sources/GSE155454.counts"]
    assert row["url"].endswith(
        "/geo/series/GSE155nnn/GSE155454/suppl/GSE155454_counts_kuanrongchan_v1.csv.gz"
    )
    assert row["sha256"] == _sha256(shared_data / "GSE155454/GSE155454_counts_kuanrongchan_v1.csv.gz")
    # Built with the chosen source's settings (symbol IDs): the known contrast of this cohort.
    samples = pd.read_csv(tmp_path / "results/cohorts/GSE155454.samples.tsv", sep="\t")
    assert samples["severity"].value_counts().to_dict() == {"excluded": 16, "mild": 9, "severe": 7}


@pytest.mark.e2e
def test_misspelled_supplementary_file_names_what_geo_has(fake_geo, tmp_path):
    """The GSE172114 mistake (file named without '.gz'): the error lists suppl/ and names the key."""
    counts = {"source": "geo_supplementary", "file": "GSE155454_counts_kuanrongchan_v1.csv"}
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(_gse155454_with_counts(counts, fake_geo.base_url)))
    target = "results/downloads/GSE155454/suppl/GSE155454_counts_kuanrongchan_v1.csv"
    proc = run_snakemake(tmp_path, configfile, target)
    assert proc.returncode != 0
    assert "HTTP 404" in proc.stderr
    assert "GSE155454_sample_sheet_from_colnames.csv.gz" in proc.stderr  # the listing, in full
    assert "Did you mean 'GSE155454_counts_kuanrongchan_v1.csv.gz'?" in proc.stderr
    assert "Fix: set `cohorts.GSE155454.counts.file` to one of these." in proc.stderr
    assert not (tmp_path / target).exists()
    assert not list((tmp_path / "results/downloads").rglob(".partial-*"))
