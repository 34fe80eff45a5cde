"""Validate the workflow's DE against R DESeq2 on exactly the data and design the workflow uses.

Run by hand (needs Rscript with DESeq2 and jsonlite, e.g. Debian's r-bioc-deseq2 r-cran-jsonlite):

    .venv/bin/python bench/compare_with_r.py                      # --all: demo + every real count cohort
    .venv/bin/python bench/compare_with_r.py --cohorts demo GSE152418 --json out.json
    .venv/bin/python bench/compare_with_r.py --synthetic 20000 100 --repeats 2
    .venv/bin/python bench/compare_with_r.py results/cohorts/GSE152418.h5ad --fast

Cohorts (``--all``, the default): the demo (config/demo.yaml's simulator) and the real count cohorts in
``--data-dir`` (/work/shared/data): GSE152418 (NCBI counts; ICU + Severe vs Moderate, sex), GSE155454
(symbol counts; severe vs mild, day of illness), GSE293708 (counts reconstructed from the DESeq2-normalised
file; Severe + Critical vs Mild) and GSE198256 (NCBI counts, CD14+ monocytes; acute COVID-19 vs healthy
donors; not a severity contrast, but a valid two-group NB fit). Cohorts without counts are left out
(bench/README.md says why).

Our side is ``il6axis.de.nb.run_deseq2`` as the workflow runs it (lfc_shrink off, ``--n-cpus`` workers,
FastInference), once per ``--engines`` value (``r_compatible``, the default engine, and ``pydeseq2``, stock
pydeseq2's procedures), timed in a fresh process around the call (imports and h5ad reading excluded).
With ``--fast`` the pydeseq2 engine also runs on pydeseq2's own ``DefaultInference`` and the two are
compared (the vectorised inference must reproduce stock pydeseq2). R gets the counts after our expression
filter, our model frame (numeric covariates standardised, severity mild/severe) and our design formula,
built by the workflow's own helpers (``il6axis.de.contract``); R's ``DESeq()`` / ``results()`` keep their
defaults (Cook's replacement and filtering, independent filtering). R is timed single-threaded and with
``BiocParallel::MulticoreParam(2)``.

Reported per cohort and engine: log2FC Pearson r and max |diff| (baseMean >= 10), padj < alpha calls and
their Jaccard, the share of genes with baseMean >= 10 whose |lfcSE difference| / R's lfcSE is <= 1%, the
independent-filtering thresholds, wall times and their ratio to R; then every gene that disagrees (SE
beyond 1% at baseMean >= 10, or a different call) with both sides' dispersions, so each can be explained.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import yaml
from _paths import ROOT  # also puts tests/ and workflow/ on sys.path (bench/ is sys.path[0])

from il6axis.acquire.demo import DemoSpec, simulate, write_demo
from il6axis.cohort.build import build_cohort
from il6axis.de.contract import DeSettings, contrast_design_frame, design_formula, expression_filter
from il6axis.vocabulary import MILD, SEVERE

R_SCRIPT = ROOT / "bench" / "deseq2_reference.R"
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_DATA_DIR = Path("/work/shared/data")
# Targets (issue 13): on every cohort, for the default (R-compatible) engine.
TARGET_PEARSON = 0.9999
TARGET_JACCARD = 0.99
TARGET_SE_SHARE = 0.999  # of genes with baseMean >= 10 ...
SE_REL_TOL = 0.01  # ... within 1% of R's lfcSE
MIN_BASE_MEAN = 10.0
# Stock pydeseq2 vs FastInference: the tolerance we hold the vectorised path to.
FAST_LFC_TOL = 1e-6
ENGINES = ("r_compatible", "pydeseq2")
# Per-gene intermediates the child run keeps beside the results (DeseqDataSet.var columns).
OUR_GENE_COLUMNS = [
    "genewise_dispersions", "fitted_dispersions", "MAP_dispersions", "_MAP_converged", "dispersions",
    "_outlier_genes", "replaced", "refitted", "_pvalue_cooks_outlier",
]  # fmt: skip


# ------------------------------------------------------------------------------------------ cohorts


def _with_defaults(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The cohort spec with the schema's defaults filled in, as the workflow sees it."""
    from snakemake.utils import validate

    config = {"cohorts": {name: spec}}
    validate(config, str(SCHEMA))
    return config["cohorts"][name]


def _build_simulated(workdir: Path, spec: DemoSpec, named: list[str]) -> ad.AnnData:
    """Simulate, write and build a cohort exactly as the demo workflow does (config/demo.yaml)."""
    cohort = simulate(named, spec)
    counts_path, samples_path = workdir / "counts.tsv.gz", workdir / "samples.tsv"
    write_demo(cohort, counts_path, samples_path, workdir / "truth.tsv")
    block = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())["cohorts"]["demo"]
    block["counts"]["path"] = str(counts_path)
    block["metadata"]["path"] = str(samples_path)
    return build_cohort("demo", _with_defaults("demo", block), counts_path, samples_path).adata


def demo_cohort(workdir: Path, data_dir: Path | None = None) -> ad.AnnData:
    """The default demo cohort (config/demo.yaml: 3,000 genes, 16 severe, 16 mild, 8 healthy)."""
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())["demo"]
    named = [
        *pd.read_csv(ROOT / "resources/genesets/il6_core.tsv", sep="\t")["symbol"],
        *pd.read_csv(ROOT / "resources/genesets/severity_sanity_markers.tsv", sep="\t")["symbol"],
    ]
    n = demo["n_per_group"]
    spec = DemoSpec(
        n_genes=demo["n_genes"], n_severe=n, n_mild=n, n_healthy=max(2, n // 2), seed=demo["seed"]
    )
    return _build_simulated(workdir, spec, named)


def synthetic_cohort(workdir: Path, n_genes: int, n_samples: int, seed: int = 7) -> ad.AnnData:
    """A demo-like cohort of any size: half severe, half mild, no healthy; design ~ age + sex + severity."""
    n_mild = n_samples // 2
    spec = DemoSpec(n_genes=n_genes, n_severe=n_samples - n_mild, n_mild=n_mild, n_healthy=0, seed=seed)
    return _build_simulated(workdir, spec, [])


def _real(
    name: str, spec: dict[str, Any], counts: Path, sheet: Path, sample_column: str, data_dir: Path
) -> ad.AnnData:
    spec = {
        **spec,
        "counts": {"source": "local", "path": str(counts), **spec.get("counts", {})},
        "metadata": {"source": "sample_sheet", "path": str(sheet), "sample_column": sample_column},
    }
    gene_info = data_dir / "NCBI_gene_info" / "Homo_sapiens.gene_info.gz"
    return build_cohort(name, _with_defaults(name, spec), counts, sheet, gene_info).adata


def gse152418_cohort(workdir: Path, data_dir: Path) -> ad.AnnData:
    """GSE152418 as the workflow builds it (config/config.yaml): ICU + Severe vs Moderate, ~ sex."""
    spec = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["cohorts"]["GSE152418"]
    spec = {k: v for k, v in spec.items() if k not in ("counts", "metadata")}
    spec["counts"] = {"gene_id": "entrez"}
    folder = data_dir / "GSE152418"
    return _real(
        "GSE152418", spec, folder / "GSE152418_raw_counts_GRCh38.p13_NCBI.tsv.gz",
        folder / "GSE152418_sample_metadata_GEOquery_pData.csv.gz", "geo_accession", data_dir,
    )  # fmt: skip


def gse155454_cohort(workdir: Path, data_dir: Path) -> ad.AnnData:
    """GSE155454 with the tests' contrast (severe_ vs mild_ prefixes, ~ day_of_illness + severity)."""
    from real_cohorts import GSE155454_CONTRAST

    folder = data_dir / "GSE155454"
    return _real(
        "GSE155454", dict(GSE155454_CONTRAST), folder / "GSE155454_counts_kuanrongchan_v1.csv.gz",
        folder / "GSE155454_sample_sheet_from_colnames.csv.gz", "sample", data_dir,
    )  # fmt: skip


def gse293708_cohort(workdir: Path, data_dir: Path) -> ad.AnnData:
    """GSE293708's reconstructed integer counts: Severe + Critical (8) vs Mild (4), Normal excluded."""
    spec = {
        "tissue": "other",
        "severity": {
            "field": "severity", "severe": ["Severe", "Critical"], "mild": ["Mild"], "exclude": ["Normal"],
        },
    }  # fmt: skip
    folder = data_dir / "GSE293708"
    return _real(
        "GSE293708", spec, folder / "GSE293708_reconstructed_raw_counts.csv.gz",
        folder / "GSE293708_sample_sheet_from_colnames.csv.gz", "sample", data_dir,
    )  # fmt: skip


def gse198256_cohort(workdir: Path, data_dir: Path) -> ad.AnnData:
    """GSE198256 NCBI counts (CD14+ monocytes): acute COVID-19 (7) in the 'severe' slot vs healthy
    donors (11) in the 'mild' slot; recovery samples (repeat samples of the same patients) excluded."""
    spec = {
        "tissue": "other",  # CD14+ monocytes
        "counts": {"gene_id": "entrez"},
        "severity": {
            "field": "disease_state",
            "severe": ["Covid19: Acute infection"],
            "mild": ["Healthy"],
            "exclude": ["Covid19: Recovery 3Mo", "Covid19: Recovery 6Mo"],
        },
    }
    folder = data_dir / "GSE198256"
    # The SRA run table has one row per run; the count columns are the GSM "Sample Name"s.
    runs = pd.read_csv(folder / "GSE198256_SraRunTable.csv.gz")
    sheet = workdir / "GSE198256_samples.csv"
    runs.drop_duplicates("Sample Name").to_csv(sheet, index=False)
    return _real(
        "GSE198256", spec, folder / "GSE198256_NCBI_raw_counts_filtered.tsv.gz", sheet, "Sample Name",
        data_dir,
    )  # fmt: skip


COHORTS: dict[str, Callable[[Path, Path], ad.AnnData]] = {
    "demo": demo_cohort,
    "GSE152418": gse152418_cohort,
    "GSE155454": gse155454_cohort,
    "GSE293708": gse293708_cohort,
    "GSE198256": gse198256_cohort,
}


# ------------------------------------------------------------------------------------- export for R


def export_for_r(
    adata: ad.AnnData, covariates: Sequence[str], min_count: int, outdir: Path
) -> dict[str, Any]:
    """Write the counts (genes x samples, after our expression filter) and the model frame for R."""
    in_contrast = adata.obs["severity"].isin([SEVERE, MILD]).to_numpy()
    sub = adata[in_contrast]
    counts = pd.DataFrame(np.asarray(sub.X), index=sub.obs_names, columns=sub.var_names)
    meta = contrast_design_frame(sub.obs, covariates)
    keep = expression_filter(counts, meta["severity"], min_count)
    counts_path, coldata_path = outdir / "counts_for_r.tsv", outdir / "coldata_for_r.tsv"
    counts.loc[:, keep].T.rename_axis("gene").to_csv(counts_path, sep="\t")
    coldata = meta.copy()
    coldata["severity"] = coldata["severity"].astype(str)
    coldata.rename_axis("sample").to_csv(coldata_path, sep="\t", float_format="%.17g")
    return {
        "counts": counts_path,
        "coldata": coldata_path,
        "design": design_formula(covariates),
        "n_samples": int(in_contrast.sum()),
        "n_per_group": {g: int((meta["severity"] == g).sum()) for g in (MILD, SEVERE)},
        "n_genes_total": int(counts.shape[1]),
        "n_genes_filtered": int(keep.sum()),
    }


# ------------------------------------------------------------------------------------------ runners


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _run_measured(cmd: list[str], what: str) -> float:
    """Run ``cmd``; exit with its stderr on failure; return the peak RSS (MiB) of it and its children."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            sys.exit(f"{what} failed:\n{err.read()[-3000:]}")
    return usage.ru_maxrss / 1024


def child_run(
    h5ad: str, covariates: list[str], engine: str, inference: str, n_cpus: int, out_tsv: str, out_json: str
) -> None:
    """In a fresh process: run_deseq2 as the workflow does, timed; keeps the per-gene dispersions."""
    from unittest import mock

    from il6axis.de import nb

    adata = ad.read_h5ad(h5ad)
    settings = DeSettings(lfc_shrink=False, n_cpus=n_cpus, engine=engine)
    kept: dict[str, pd.DataFrame] = {}
    fit_dataset = nb._fit_dataset

    def fit_and_keep(dds) -> None:  # the fit itself is untouched; only its per-gene table is copied
        fit_dataset(dds)
        kept["var"] = dds.var[[c for c in OUR_GENE_COLUMNS if c in dds.var]].copy()

    load_before = _loadavg()
    patches = [mock.patch.object(nb, "_fit_dataset", fit_and_keep)]
    if inference == "stock":
        from pydeseq2.default_inference import DefaultInference

        # Stock pydeseq2: its own per-gene inference in place of the workflow's FastInference.
        patches.append(mock.patch.object(nb, "FastInference", DefaultInference))
    for p in patches:
        p.start()
    start = time.perf_counter()
    result = nb.run_deseq2(adata, covariates, settings)
    elapsed = time.perf_counter() - start
    for p in patches:
        p.stop()
    table = result.table.set_index("gene").join(kept["var"]).reset_index()
    table.to_csv(out_tsv, sep="\t", index=False, float_format="%.17g")
    threshold = result.filter_threshold
    if threshold is None:  # stock DeseqStats keeps no threshold: redo its choice on its own numbers
        fitted = table["log2FoldChange"].notna() | table["pvalue"].notna()
        threshold = pydeseq2_filter_threshold(
            table.loc[fitted, "baseMean"].to_numpy(), table.loc[fitted, "pvalue"].to_numpy(), settings.alpha
        )
    info = {
        "elapsed_s": elapsed,
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_before": load_before,
        "load_after": _loadavg(),
        "filter_threshold": threshold,
    }
    Path(out_json).write_text(json.dumps(info))


def pydeseq2_filter_threshold(base_mean: np.ndarray, pvalues: np.ndarray, alpha: float) -> float:
    """The baseMean cutoff pydeseq2 0.5.4's ``DeseqStats._independent_filtering`` picks (its theta grid,
    BH counts and its own lowess), for reporting beside R's."""
    from pydeseq2.utils import lowess
    from scipy.stats import false_discovery_control

    lower = float(np.mean(base_mean == 0))
    theta = np.linspace(lower, 0.95 if lower < 0.95 else 1.0, 50)
    cutoffs = np.quantile(base_mean, theta)
    rejections = np.array(
        [
            int((false_discovery_control(pvalues[use], method="bh") < alpha).sum()) if use.any() else 0
            for use in ((base_mean >= c) & ~np.isnan(pvalues) for c in cutoffs)
        ]
    )
    fit = lowess(theta, rejections, frac=1 / 5)
    if rejections.max() <= 10:
        return float(cutoffs[0])
    residual = rejections[rejections > 0] - fit[rejections > 0]
    above = np.flatnonzero(rejections > fit.max() - np.sqrt(np.mean(residual**2)))
    return float(cutoffs[above[0] if len(above) else 0])


def run_ours(
    h5ad: Path, covariates: Sequence[str], engine: str, inference: str, n_cpus: int, outdir: Path, tag: str
):
    """Run ``child_run`` in a fresh interpreter; returns (table, timing info)."""
    out_tsv, out_json = outdir / f"ours_{tag}.tsv", outdir / f"ours_{tag}.json"
    cmd = [
        sys.executable, __file__, "--child-run", str(h5ad), json.dumps(list(covariates)), engine, inference,
        str(n_cpus), str(out_tsv), str(out_json),
    ]  # fmt: skip
    peak = _run_measured(cmd, f"our DE ({engine}, {inference})")
    info = json.loads(out_json.read_text())
    info["maxrss_mib"] = peak  # the whole process, workers included (largest one)
    return pd.read_csv(out_tsv, sep="\t", keep_default_na=False, na_values=["", "NA", "NaN", "nan"]), info


def run_r(export: dict[str, Any], alpha: float, workers: int, outdir: Path, tag: str):
    """Run bench/deseq2_reference.R; returns (table, timing info)."""
    out_tsv, out_json = outdir / f"r_{tag}.tsv", outdir / f"r_{tag}.json"
    cmd = [
        "Rscript", str(R_SCRIPT), str(export["counts"]), str(export["coldata"]), export["design"], str(alpha),
        str(out_tsv), str(out_json), str(workers),
    ]  # fmt: skip
    load_before = _loadavg()
    peak = _run_measured(cmd, "R DESeq2")
    info = json.loads(out_json.read_text())
    info["load_before"] = load_before
    info["load_after"] = _loadavg()
    info["maxrss_mib"] = peak
    return pd.read_csv(out_tsv, sep="\t", na_values=["NA"]), info


# ---------------------------------------------------------------------------------------- comparison


def _aligned(ours: pd.DataFrame, ref: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables on the genes R fitted (our expression-filtered genes), in R's order."""
    a = ours.set_index("gene")
    b = ref.set_index("gene")
    genes = b.index.intersection(a.index)
    return a.loc[genes], b.loc[genes]


def agreement(
    ours: pd.DataFrame, ref: pd.DataFrame, alpha: float, min_base_mean: float = MIN_BASE_MEAN
) -> dict[str, Any]:
    """log2FC Pearson r and max |diff|, SE agreement, and overlap of padj < alpha calls."""
    a, b = _aligned(ours, ref)
    genes = a.index
    both = np.isfinite(a["log2FoldChange"]) & np.isfinite(b["log2FoldChange"])
    lfc_a, lfc_b = a.loc[both, "log2FoldChange"], b.loc[both, "log2FoldChange"]
    expressed = both & (b["baseMean"] >= min_base_mean)
    diff = (a.loc[expressed, "log2FoldChange"] - b.loc[expressed, "log2FoldChange"]).abs()
    se_rel = ((a["lfcSE"] - b["lfcSE"]).abs() / b["lfcSE"])[expressed & (b["lfcSE"] > 0)]
    calls_a = set(genes[(a["padj"] < alpha).to_numpy()])
    calls_b = set(genes[(b["padj"] < alpha).to_numpy()])
    union = calls_a | calls_b
    return {
        "n_genes_ours": int(len(ours)),
        "n_genes_ref": int(len(ref)),
        "n_genes_common": int(len(genes)),
        "n_lfc_compared": int(both.sum()),
        "log2fc_pearson": float(np.corrcoef(lfc_a, lfc_b)[0, 1]),
        "n_base_mean_ge_10": int(expressed.sum()),
        "log2fc_max_abs_diff_bm10": float(diff.max()) if len(diff) else float("nan"),
        "log2fc_median_abs_diff_bm10": float(diff.median()) if len(diff) else float("nan"),
        "gene_max_abs_diff_bm10": str(diff.idxmax()) if len(diff) else "",
        "se_share_within_1pct_bm10": float((se_rel <= SE_REL_TOL).mean()) if len(se_rel) else 1.0,
        "se_n_beyond_1pct_bm10": int((se_rel > SE_REL_TOL).sum()),
        "se_max_rel_diff_bm10": float(se_rel.max()) if len(se_rel) else 0.0,
        "calls_ours": len(calls_a),
        "calls_ref": len(calls_b),
        "calls_both": len(calls_a & calls_b),
        "calls_only_ours": sorted(calls_a - calls_b),
        "calls_only_ref": sorted(calls_b - calls_a),
        "jaccard": len(calls_a & calls_b) / len(union) if union else 1.0,
    }


def meets_targets(a: dict[str, Any]) -> bool:
    return (
        a["log2fc_pearson"] >= TARGET_PEARSON
        and a["jaccard"] >= TARGET_JACCARD
        and a["se_share_within_1pct_bm10"] >= TARGET_SE_SHARE
    )


def disagreements(
    ours: pd.DataFrame, ref: pd.DataFrame, alpha: float, min_base_mean: float = MIN_BASE_MEAN
) -> pd.DataFrame:
    """Every gene whose SE differs by > 1% (baseMean >= 10) or whose call differs, with both sides'
    dispersions (gene-wise, trend, MAP, final, outlier flag) and Cook's flags, to explain it."""
    a, b = _aligned(ours, ref)
    se_rel = (a["lfcSE"] - b["lfcSE"]).abs() / b["lfcSE"]
    call_a, call_b = (a["padj"] < alpha).to_numpy(), (b["padj"] < alpha).to_numpy()
    flagged = ((se_rel > SE_REL_TOL) & (b["baseMean"] >= min_base_mean)).to_numpy() | (call_a != call_b)
    genes = a.index[flagged]
    out = pd.DataFrame(
        {
            "baseMean": b.loc[genes, "baseMean"],
            "lfc_ours": a.loc[genes, "log2FoldChange"],
            "lfc_R": b.loc[genes, "log2FoldChange"],
            "se_ours": a.loc[genes, "lfcSE"],
            "se_R": b.loc[genes, "lfcSE"],
            "padj_ours": a.loc[genes, "padj"],
            "padj_R": b.loc[genes, "padj"],
        }
    )
    pairs = [
        ("genewise", "genewise_dispersions", "dispGeneEst"),
        ("trend", "fitted_dispersions", "dispFit"),
        ("map", "MAP_dispersions", "dispMAP"),
        ("disp", "dispersions", "dispersion"),
        ("disp_outlier", "_outlier_genes", "dispOutlier"),
        ("cooks_replaced", "replaced", "replace"),
    ]
    for label, our_col, r_col in pairs:
        if our_col in a:
            out[f"{label}_ours"] = a.loc[genes, our_col]
        if r_col in b:
            out[f"{label}_R"] = b.loc[genes, r_col]
    if "cooks_outlier" in a:
        out["cooks_pvalue_na_ours"] = a.loc[genes, "cooks_outlier"]
    out["maxCooks_R"] = b.loc[genes, "maxCooks"] if "maxCooks" in b else np.nan
    if "_MAP_converged" in a:
        out["map_converged_ours"] = a.loc[genes, "_MAP_converged"]
    out.insert(0, "cause", [_cause(row) for _, row in out.iterrows()])
    return out.sort_values("baseMean", ascending=False)


def _cause(row: pd.Series) -> str:
    """The first step, in pipeline order, at which our gene differs from R's (disagreements())."""

    def differs(label: str, tol: float = 1e-3) -> bool:
        ours, theirs = row.get(f"{label}_ours"), row.get(f"{label}_R")
        if ours is None or theirs is None or pd.isna(ours) or pd.isna(theirs):
            return False
        return abs(float(ours) / float(theirs) - 1) > tol

    def flag(value: Any) -> bool:
        return str(value).strip().lower() in {"true", "1", "1.0"}

    if flag(row.get("cooks_replaced_ours")) != flag(row.get("cooks_replaced_R")):
        return "Cook's replacement"
    se_ours, se_r = row.get("se_ours"), row.get("se_R")
    se_differs = pd.notna(se_ours) and pd.notna(se_r) and abs(se_ours / se_r - 1) > SE_REL_TOL
    if not differs("disp", 0.01):  # the same dispersion: the difference is after it
        if se_differs:
            return "Wald SE: means not floored at 0.5 (a coefficient running off to -infinity)"
        if pd.isna(row.get("padj_ours")) != pd.isna(row.get("padj_R")):
            return "padj NA on one side (Cook's filter or independent filtering)"
        return "padj near alpha: the independent-filtering threshold changes the BH set"
    if differs("trend", 0.01):
        return "dispersion trend (pydeseq2's L-BFGS-B gamma fit / its mean fallback)"
    if flag(row.get("disp_outlier_ours")) != flag(row.get("disp_outlier_R")):
        return "dispersion-outlier flag (gene-wise estimate on the other side of the 2-SD line)"
    if flag(row.get("disp_outlier_R")):
        return "gene-wise estimate (L-BFGS-B vs R's line search), used as final for a dispersion outlier"
    if str(row.get("map_converged_ours")).lower() == "false":
        return "MAP: pydeseq2's L-BFGS-B failed, its grid fallback ignores the prior"
    return "MAP: L-BFGS-B from the trend vs R's line search from the gene-wise estimate"


def fast_vs_stock(stock: pd.DataFrame, fast: pd.DataFrame, alpha: float) -> dict[str, Any]:
    """How far the vectorised inference is from stock pydeseq2, column by column."""
    a, b = stock.set_index("gene"), fast.set_index("gene").loc[stock["gene"]]
    out: dict[str, Any] = {}
    for col in ["baseMean", "log2FoldChange", "lfcSE", "stat", "pvalue", "padj"]:
        x, y = a[col].to_numpy(float), b[col].to_numpy(float)
        same_nan = bool((np.isnan(x) == np.isnan(y)).all())
        ok = ~np.isnan(x) & ~np.isnan(y)
        out[f"{col}_same_na"] = same_nan
        out[f"{col}_max_abs_diff"] = float(np.max(np.abs(x[ok] - y[ok]))) if ok.any() else 0.0
    expressed = (a["baseMean"] >= 10).to_numpy() & a["log2FoldChange"].notna().to_numpy()
    out["log2FoldChange_max_abs_diff_bm10"] = float(
        np.max(np.abs(a["log2FoldChange"].to_numpy()[expressed] - b["log2FoldChange"].to_numpy()[expressed]))
    )
    out["same_calls"] = bool(((a["padj"] < alpha).to_numpy() == (b["padj"] < alpha).to_numpy()).all())
    flags = ["tested", "not_tested_reason", "cooks_outlier", "independently_filtered"]
    out["same_flags"] = bool(all((a[f].astype(str) == b[f].astype(str)).all() for f in flags if f in a))
    return out


def _summarise_times(runs: list[dict[str, Any]]) -> dict[str, Any]:
    times = [r["elapsed_s"] for r in runs]
    return {
        "elapsed_s": times,
        "min_s": min(times),
        "median_s": float(np.median(times)),
        "maxrss_mib": max(r.get("maxrss_mib", float("nan")) for r in runs),
        "load": [r.get("load_before") for r in runs],
    }


def _versions() -> dict[str, str]:
    import pydeseq2
    import scipy
    import statsmodels

    out = {"pydeseq2": pydeseq2.__version__, "numpy": np.__version__, "scipy": scipy.__version__}
    out["statsmodels"] = statsmodels.__version__
    out["python"] = sys.version.split()[0]
    return out


def compare(
    adata: ad.AnnData,
    covariates: Sequence[str],
    workdir: Path,
    alpha: float,
    min_count: int,
    n_cpus: int,
    repeats: int,
    engines: Sequence[str],
    with_fast: bool,
    with_r: bool,
    r_workers: Sequence[int],
) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Run our engines and R on one cohort; agreement and timing figures, and the gene tables."""
    h5ad = workdir / "cohort.h5ad"
    adata.write_h5ad(h5ad)
    export = export_for_r(adata, covariates, min_count, workdir)
    report: dict[str, Any] = {
        "design": export["design"],
        "n_samples": export["n_samples"],
        "n_per_group": export["n_per_group"],
        "n_genes_total": export["n_genes_total"],
        "n_genes_filtered": export["n_genes_filtered"],
        "n_cpus": n_cpus,
        "alpha": alpha,
        "versions": _versions(),
        "machine": {"cpus": os.cpu_count()},
    }
    tables: dict[str, pd.DataFrame] = {}
    timings: dict[str, list[dict[str, Any]]] = {}
    variants = [(engine, engine, "fast") for engine in engines]
    if with_fast:
        variants.append(("pydeseq2_stock_inference", "pydeseq2", "stock"))
    r_variants = [(f"R_{w}", w) for w in r_workers] if with_r else []
    for rep in range(repeats):
        # Interleave the variants so that load on the shared machine hits them alike.
        for name, engine, inference in variants:
            table, info = run_ours(h5ad, covariates, engine, inference, n_cpus, workdir, f"{name}_{rep}")
            tables.setdefault(name, table)
            timings.setdefault(name, []).append(info)
        for name, workers in r_variants:
            table, info = run_r(export, alpha, workers, workdir, f"{name}_{rep}")
            tables.setdefault(name, table)
            timings.setdefault(name, []).append(info)
            report["versions"].update({"R": info["r_version"], "DESeq2": info["deseq2_version"]})
    report["timings"] = {k: _summarise_times(v) for k, v in timings.items()}
    report["filter_threshold"] = {k: v[0].get("filter_threshold") for k, v in timings.items()}
    if with_r:
        ref_name = r_variants[0][0]
        ref = tables[ref_name]
        for name, _, _ in variants:
            report[f"{name}_vs_R"] = agreement(tables[name], ref, alpha)
            report[f"{name}_disagreements"] = disagreements(tables[name], ref, alpha).reset_index()
        if len(r_variants) > 1:
            report["R_parallel_vs_R_serial"] = agreement(tables[r_variants[1][0]], ref, alpha)
        for name, _, _ in variants:
            for r_name, _ in r_variants:
                ratio = report["timings"][name]["median_s"] / report["timings"][r_name]["median_s"]
                report[f"time_ratio_{name}_over_{r_name}"] = ratio
    if with_fast:
        report["fast_vs_stock"] = fast_vs_stock(tables["pydeseq2_stock_inference"], tables["pydeseq2"], alpha)
    return report, tables


# ------------------------------------------------------------------------------------------- report


def print_report(label: str, report: dict[str, Any], explain: int) -> None:
    """A readable table of the figures (the JSON has all of them)."""
    print(f"\n== {label}: {report['design']}; n={report['n_per_group']}; "
          f"{report['n_genes_filtered']}/{report['n_genes_total']} genes pass the filter; "
          f"n_cpus={report['n_cpus']}")  # fmt: skip
    print(f"{'run':<26}{'median s':>9}{'min s':>8}{'peak MiB':>9}  filter threshold  load (1 min) at start")
    for name, t in report["timings"].items():
        loads = ", ".join(f"{x[0]:.1f}" for x in t["load"] if x)
        thr = report["filter_threshold"].get(name)
        thr_text = f"{thr:.4f}" if isinstance(thr, int | float) and thr == thr else "-"
        print(
            f"{name:<26}{t['median_s']:>9.2f}{t['min_s']:>8.2f}{t['maxrss_mib']:>9.0f}"
            f"  {thr_text:>16}  {loads}"
        )
    for key in [k for k in report if k.endswith("_vs_R")]:
        a = report[key]
        verdict = "MEETS" if meets_targets(a) else "MISSES"
        print(
            f"{key:<26} genes {a['n_genes_common']:>6}  log2FC r {a['log2fc_pearson']:.6f}  "
            f"max|d| (bM>=10) {a['log2fc_max_abs_diff_bm10']:.2g}  SE within 1% "
            f"{100 * a['se_share_within_1pct_bm10']:.2f}% of {a['n_base_mean_ge_10']} "
            f"({a['se_n_beyond_1pct_bm10']} beyond)  calls ours/R/both "
            f"{a['calls_ours']}/{a['calls_ref']}/{a['calls_both']}  Jaccard {a['jaccard']:.4f}  {verdict}"
        )
    for key in [k for k in report if k.startswith("time_ratio")]:
        print(f"{key:<40} {report[key]:.2f}")
    if "fast_vs_stock" in report:
        f = report["fast_vs_stock"]
        ok = f["log2FoldChange_max_abs_diff_bm10"] < FAST_LFC_TOL and f["same_calls"]
        print(
            f"FastInference vs stock pydeseq2: max|d log2FC| {f['log2FoldChange_max_abs_diff']:.2e}; "
            f"max|d lfcSE| {f['lfcSE_max_abs_diff']:.2e}; max|d padj| {f['padj_max_abs_diff']:.2e}; "
            f"same calls {f['same_calls']}; same flags {f['same_flags']}; "
            f"{'WITHIN' if ok else 'OUTSIDE'} tolerance {FAST_LFC_TOL:g}"
        )
    for key in [k for k in report if k.endswith("_disagreements")]:
        table = report[key]
        print(f"{key}: {len(table)} gene(s)")
        for cause, n in table["cause"].value_counts().items() if len(table) else []:
            print(f"  {n:>4}  {cause}")
        if len(table) and explain:
            with pd.option_context("display.width", 250, "display.max_columns", 40, "display.precision", 4):
                print(table.head(explain).to_string(index=False))


def summary_table(reports: dict[str, dict[str, Any]], engine: str = "r_compatible") -> str:
    """One markdown row per cohort for bench/README.md."""
    lines = [
        "| cohort | design | genes | log2FC r | SE within 1% (bM >= 10) | calls ours / R / both | Jaccard "
        "| filter threshold ours / R | s ours / R 1 / R 2 cores | targets |",
        "|---|---|---:|---:|---:|---|---:|---|---|:---:|",
    ]
    for label, rep in reports.items():
        a = rep.get(f"{engine}_vs_R")
        if a is None:
            continue
        thr = rep["filter_threshold"]
        t = rep["timings"]
        r_times = " / ".join(f"{t[k]['median_s']:.1f}" for k in t if k.startswith("R_"))
        ours_thr = thr.get(engine)
        lines.append(
            f"| {label} | `{rep['design']}` | {a['n_genes_common']:,} | {a['log2fc_pearson']:.6f} | "
            f"{100 * a['se_share_within_1pct_bm10']:.2f}% of {a['n_base_mean_ge_10']:,} | "
            f"{a['calls_ours']} / {a['calls_ref']} / {a['calls_both']} | {a['jaccard']:.4f} | "
            f"{'-' if ours_thr is None else f'{ours_thr:.2f}'} / {_r_threshold(rep):s} | "
            f"{t[engine]['median_s']:.1f} / {r_times} | {'yes' if meets_targets(a) else 'no'} |"
        )
    return "\n".join(lines)


def _r_threshold(rep: dict[str, Any]) -> str:
    values = [v for k, v in rep["filter_threshold"].items() if k.startswith("R_")]
    return "-" if not values or not isinstance(values[0], int | float) else f"{values[0]:.2f}"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-run":
        h5ad, covs, engine, inference, n_cpus, out_tsv, out_json = sys.argv[2:9]
        child_run(h5ad, json.loads(covs), engine, inference, int(n_cpus), out_tsv, out_json)
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("h5ad", nargs="?", help="cohort AnnData (results/cohorts/{cohort}.h5ad)")
    source.add_argument("--all", action="store_true", help="every cohort in COHORTS (the default)")
    source.add_argument("--cohorts", nargs="+", choices=list(COHORTS), help="some of them")
    source.add_argument("--demo", action="store_true", help="= --cohorts demo")
    source.add_argument("--synthetic", nargs=2, type=int, metavar=("GENES", "SAMPLES"))
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the shared real data")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--covariates", nargs="*", help="default: the cohort's uns['covariates']")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--min-count", type=int, default=10)
    parser.add_argument("--n-cpus", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timing repeats (agreement uses the first)")
    parser.add_argument("--fast", action="store_true", help="also run stock pydeseq2's DefaultInference")
    parser.add_argument("--no-r", action="store_true", help="skip R (e.g. stock vs fast only)")
    parser.add_argument("--r-workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--explain", type=int, default=25, help="disagreeing genes printed per run")
    parser.add_argument("--keep", type=Path, help="keep exported files and tables in this directory")
    parser.add_argument("--json", type=Path, help="write all figures here")
    args = parser.parse_args()

    with_r = not args.no_r
    if with_r and shutil.which("Rscript") is None:
        sys.exit("Rscript not found: apt-get install r-bioc-deseq2 r-cran-jsonlite, or pass --no-r")
    tmp = tempfile.TemporaryDirectory()
    base = args.keep or Path(tmp.name)
    jobs: list[tuple[str, Callable[[Path], ad.AnnData]]] = []
    if args.h5ad:
        jobs.append((Path(args.h5ad).stem, lambda _: ad.read_h5ad(args.h5ad)))
    elif args.synthetic:
        g, s = args.synthetic
        jobs.append((f"synthetic {g}x{s}", lambda w: synthetic_cohort(w, g, s)))
    else:
        names = ["demo"] if args.demo else (args.cohorts or list(COHORTS))
        jobs += [(n, lambda w, n=n: COHORTS[n](w, args.data_dir)) for n in names]
    reports: dict[str, dict[str, Any]] = {}
    for label, make in jobs:
        workdir = base / label.replace(" ", "_")
        workdir.mkdir(parents=True, exist_ok=True)
        adata = make(workdir)
        covariates = args.covariates if args.covariates is not None else list(adata.uns.get("covariates", []))
        report, tables = compare(
            adata, covariates, workdir, args.alpha, args.min_count, args.n_cpus, args.repeats, args.engines,
            args.fast, with_r, args.r_workers,
        )  # fmt: skip
        report["cohort"] = label
        print_report(label, report, args.explain)
        reports[label] = report
    if with_r:
        print("\nR-compatible engine (default), every cohort:")
        print(summary_table(reports))
        if "pydeseq2" in args.engines:
            print("\nStock pydeseq2 procedures (de.engine: pydeseq2), every cohort:")
            print(summary_table(reports, "pydeseq2"))
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2, default=_json_default))
    tmp.cleanup()


def _json_default(value: Any) -> Any:
    if isinstance(value, pd.DataFrame):
        return value.to_dict(orient="records")
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


if __name__ == "__main__":
    main()
