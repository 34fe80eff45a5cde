"""Validate the workflow's DE against R DESeq2 on exactly the data and design the workflow uses.

Run by hand (needs Rscript with DESeq2 and jsonlite, e.g. Debian's r-bioc-deseq2 r-cran-jsonlite):

    /tmp/probe/bin/python bench/compare_with_r.py --demo --json demo.json
    /tmp/probe/bin/python bench/compare_with_r.py --gse152418 /work/shared/data --json gse152418.json
    /tmp/probe/bin/python bench/compare_with_r.py --synthetic 20000 100 --fast --repeats 2
    /tmp/probe/bin/python bench/compare_with_r.py results/cohorts/GSE152418.h5ad

Our side is ``il6axis.de.run_deseq2`` as the workflow runs it (lfc_shrink off, ``--n-cpus`` joblib
workers, FastInference), timed in a fresh process around the call (imports and h5ad reading
excluded); "ours_stock" swaps pydeseq2's own ``DefaultInference`` back in. With ``--fast`` both are run
and compared. R gets the counts after our expression filter, our
model frame (numeric covariates standardised, severity mild/severe) and our design formula, all built
by de.py's own helpers; R's ``DESeq()`` / ``results()`` keep their Cook's and independent-filtering
defaults. R is timed single-threaded and with ``BiocParallel::MulticoreParam(2)``.
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from il6axis.build import build_cohort  # noqa: E402
from il6axis.de import contrast_design_frame, design_formula, expression_filter  # noqa: E402
from il6axis.demo import DemoSpec, simulate, write_demo  # noqa: E402
from il6axis.groups import MILD, SEVERE  # noqa: E402

R_SCRIPT = ROOT / "bench" / "deseq2_reference.R"
TARGET_PEARSON = 0.999
TARGET_JACCARD = 0.98
# Stock pydeseq2 vs FastInference: the tolerance we hold the vectorised path to.
FAST_LFC_TOL = 1e-6


# ------------------------------------------------------------------------------------------ cohorts


def _demo_spec_block() -> dict[str, Any]:
    block = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    return block


def _build_simulated(workdir: Path, spec: DemoSpec, named: list[str]) -> ad.AnnData:
    """Simulate, write and build a cohort exactly as the demo workflow does (config/demo.yaml)."""
    cohort = simulate(named, spec)
    counts_path, samples_path = workdir / "counts.tsv.gz", workdir / "samples.tsv"
    write_demo(cohort, counts_path, samples_path, workdir / "truth.tsv")
    cohort_spec = _demo_spec_block()["cohorts"]["demo"]
    cohort_spec["counts"].setdefault("value_type", "counts")
    return build_cohort("demo", cohort_spec, counts_path, samples_path).adata


def demo_cohort(workdir: Path) -> ad.AnnData:
    """The default demo cohort (config/demo.yaml: 3,000 genes, 16 severe, 16 mild, 8 healthy)."""
    demo = _demo_spec_block()["demo"]
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


def gse152418_cohort(data_dir: Path) -> ad.AnnData:
    """GSE152418 as the workflow builds it: NCBI counts + GEOquery pData; ICU+Severe vs Moderate."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    spec = dict(config["cohorts"]["GSE152418"])
    spec["counts"] = {"value_type": "counts", **spec["counts"]}
    spec["metadata"] = {"source": "sample_sheet", "sample_column": "geo_accession"}
    return build_cohort(
        "GSE152418",
        spec,
        data_dir / "GSE152418" / "GSE152418_raw_counts_GRCh38.p13_NCBI.tsv.gz",
        data_dir / "GSE152418" / "GSE152418_sample_metadata_GEOquery_pData.csv.gz",
        data_dir / "NCBI_gene_info" / "Homo_sapiens.gene_info.gz",
    ).adata


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
    h5ad: str, covariates: list[str], inference: str, n_cpus: int, out_tsv: str, out_json: str
) -> None:
    """In a fresh process: run_deseq2 as the workflow does (optionally with FastInference), timed."""
    from unittest import mock

    from il6axis import de

    adata = ad.read_h5ad(h5ad)
    settings = de.DeSettings(lfc_shrink=False, n_cpus=n_cpus)
    load_before = _loadavg()
    start = time.perf_counter()
    if inference == "fast":
        result = de.run_deseq2(adata, covariates, settings)  # what the workflow runs
    else:
        from pydeseq2.default_inference import DefaultInference

        # Stock pydeseq2: its own per-gene inference in place of the workflow's FastInference.
        with mock.patch.object(de, "FastInference", DefaultInference):
            result = de.run_deseq2(adata, covariates, settings)
    elapsed = time.perf_counter() - start
    result.table.to_csv(out_tsv, sep="\t", index=False, float_format="%.17g")
    info = {
        "elapsed_s": elapsed,
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_before": load_before,
        "load_after": _loadavg(),
    }
    Path(out_json).write_text(json.dumps(info))


def run_ours(h5ad: Path, covariates: Sequence[str], inference: str, n_cpus: int, outdir: Path, tag: str):
    """Run ``child_run`` in a fresh interpreter; returns (table, timing info)."""
    out_tsv, out_json = outdir / f"ours_{tag}.tsv", outdir / f"ours_{tag}.json"
    cmd = [
        sys.executable,
        __file__,
        "--child-run",
        str(h5ad),
        json.dumps(list(covariates)),
        inference,
        str(n_cpus),
        str(out_tsv),
        str(out_json),
    ]
    peak = _run_measured(cmd, f"our DE ({inference})")
    info = json.loads(out_json.read_text())
    info["maxrss_mib"] = peak  # the whole process, joblib workers included (largest one)
    return pd.read_csv(out_tsv, sep="\t"), info


def run_r(export: dict[str, Any], alpha: float, workers: int, outdir: Path, tag: str):
    """Run bench/deseq2_reference.R; returns (table, timing info)."""
    out_tsv, out_json = outdir / f"r_{tag}.tsv", outdir / f"r_{tag}.json"
    cmd = [
        "Rscript",
        str(R_SCRIPT),
        str(export["counts"]),
        str(export["coldata"]),
        export["design"],
        str(alpha),
        str(out_tsv),
        str(out_json),
        str(workers),
    ]
    load_before = _loadavg()
    peak = _run_measured(cmd, "R DESeq2")
    info = json.loads(out_json.read_text())
    info["load_before"] = load_before
    info["load_after"] = _loadavg()
    info["maxrss_mib"] = peak
    return pd.read_csv(out_tsv, sep="\t", na_values=["NA"]), info


# ---------------------------------------------------------------------------------------- comparison


def agreement(
    ours: pd.DataFrame, ref: pd.DataFrame, alpha: float, min_base_mean: float = 10.0
) -> dict[str, Any]:
    """log2FC Pearson r and max |diff|, and overlap of padj < alpha calls, between two DE tables."""
    a = ours.set_index("gene")
    a = a[a["tested"]] if "tested" in a else a
    b = ref.set_index("gene")
    genes = a.index.intersection(b.index)
    a, b = a.loc[genes], b.loc[genes]
    both = np.isfinite(a["log2FoldChange"]) & np.isfinite(b["log2FoldChange"])
    lfc_a, lfc_b = a.loc[both, "log2FoldChange"], b.loc[both, "log2FoldChange"]
    expressed = both & (b["baseMean"] >= min_base_mean)
    diff = (a.loc[expressed, "log2FoldChange"] - b.loc[expressed, "log2FoldChange"]).abs()
    calls_a = set(genes[(a["padj"] < alpha).to_numpy()])
    calls_b = set(genes[(b["padj"] < alpha).to_numpy()])
    union = calls_a | calls_b
    return {
        "n_genes_ours": int(len(a)),
        "n_genes_ref": int(len(b)),
        "n_genes_common": int(len(genes)),
        "n_lfc_compared": int(both.sum()),
        "log2fc_pearson": float(np.corrcoef(lfc_a, lfc_b)[0, 1]),
        "n_base_mean_ge_10": int(expressed.sum()),
        "log2fc_max_abs_diff_bm10": float(diff.max()) if len(diff) else float("nan"),
        "log2fc_median_abs_diff_bm10": float(diff.median()) if len(diff) else float("nan"),
        "gene_max_abs_diff_bm10": str(diff.idxmax()) if len(diff) else "",
        "calls_ours": len(calls_a),
        "calls_ref": len(calls_b),
        "calls_both": len(calls_a & calls_b),
        "jaccard": len(calls_a & calls_b) / len(union) if union else 1.0,
    }


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
    out["same_not_tested_reason"] = bool(
        (a["not_tested_reason"].fillna("") == b["not_tested_reason"].fillna("")).all()
    )
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

    out = {"pydeseq2": pydeseq2.__version__, "numpy": np.__version__, "scipy": scipy.__version__}
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
    with_fast: bool,
    with_r: bool,
    r_workers: Sequence[int],
) -> dict[str, Any]:
    """Run ours (stock, optionally fast) and R on one cohort; agreement and timing figures."""
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
    # The workflow's own path always; stock pydeseq2 beside it with --fast (the "fast vs stock" check).
    variants = [("ours_fast", "fast")] + ([("ours_stock", "stock")] if with_fast else [])
    r_variants = [(f"r_{w}", w) for w in r_workers] if with_r else []
    for rep in range(repeats):
        # Interleave the variants so that load on the shared machine hits them alike.
        for name, inference in variants:
            table, info = run_ours(h5ad, covariates, inference, n_cpus, workdir, f"{name}_{rep}")
            tables.setdefault(name, table)
            timings.setdefault(name, []).append(info)
        for name, workers in r_variants:
            table, info = run_r(export, alpha, workers, workdir, f"{name}_{rep}")
            tables.setdefault(name, table)
            timings.setdefault(name, []).append(info)
            report.setdefault("versions", {}).update(
                {"R": info["r_version"], "DESeq2": info["deseq2_version"]}
            )
    report["timings"] = {k: _summarise_times(v) for k, v in timings.items()}
    if with_r:
        ref = tables[r_variants[0][0]]
        for name, _ in variants:
            report[f"{name}_vs_r"] = agreement(tables[name], ref, alpha)
        if len(r_variants) > 1:
            report["r_parallel_vs_r_serial"] = agreement(tables[r_variants[1][0]], ref, alpha)
        r1 = report["timings"][r_variants[0][0]]["median_s"]
        for name, _ in variants:
            report[f"time_ratio_{name}_over_r1"] = report["timings"][name]["median_s"] / r1
            if len(r_variants) > 1:
                r2 = report["timings"][r_variants[1][0]]["median_s"]
                report[f"time_ratio_{name}_over_r{r_variants[1][1]}"] = (
                    report["timings"][name]["median_s"] / r2
                )
    if with_fast:
        report["fast_vs_stock"] = fast_vs_stock(tables["ours_stock"], tables["ours_fast"], alpha)
    return report


def print_report(label: str, report: dict[str, Any]) -> None:
    """A readable table of the figures (the JSON has all of them)."""
    print(f"\n== {label}: {report['design']}; n={report['n_per_group']}; "
          f"{report['n_genes_filtered']}/{report['n_genes_total']} genes pass the filter; "
          f"n_cpus={report['n_cpus']}")  # fmt: skip
    print(f"versions: {report['versions']}")
    print(f"{'run':<14}{'median s':>10}{'min s':>10}{'peak MiB':>10}  load (1 min) at start")
    for name, t in report["timings"].items():
        loads = ", ".join(f"{x[0]:.1f}" for x in t["load"] if x)
        print(f"{name:<14}{t['median_s']:>10.1f}{t['min_s']:>10.1f}{t['maxrss_mib']:>10.0f}  {loads}")
    for key in [k for k in report if k.endswith("_vs_r")]:
        a = report[key]
        ok = a["log2fc_pearson"] >= TARGET_PEARSON and a["jaccard"] >= TARGET_JACCARD
        print(
            f"{key:<26} genes {a['n_genes_common']:>6}  log2FC r {a['log2fc_pearson']:.5f}  "
            f"max|d| (bM>=10) {a['log2fc_max_abs_diff_bm10']:.3g} ({a['gene_max_abs_diff_bm10']})  "
            f"calls ours/R/both {a['calls_ours']}/{a['calls_ref']}/{a['calls_both']}  "
            f"Jaccard {a['jaccard']:.4f}  {'MEETS' if ok else 'MISSES'} targets"
        )
    for key in [k for k in report if k.startswith("time_ratio")]:
        print(f"{key:<34} {report[key]:.2f}")
    if "fast_vs_stock" in report:
        f = report["fast_vs_stock"]
        ok = f["log2FoldChange_max_abs_diff_bm10"] < FAST_LFC_TOL and f["same_calls"]
        print(
            f"fast vs stock: max|d log2FC| all {f['log2FoldChange_max_abs_diff']:.2e}, bM>=10 "
            f"{f['log2FoldChange_max_abs_diff_bm10']:.2e}; max|d lfcSE| {f['lfcSE_max_abs_diff']:.2e}; "
            f"max|d padj| {f['padj_max_abs_diff']:.2e}; same calls {f['same_calls']}; same NA "
            f"{f['padj_same_na']}; {'WITHIN' if ok else 'OUTSIDE'} tolerance {FAST_LFC_TOL:g}"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-run":
        h5ad, covs, inference, n_cpus, out_tsv, out_json = sys.argv[2:8]
        child_run(h5ad, json.loads(covs), inference, int(n_cpus), out_tsv, out_json)
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("h5ad", nargs="?", help="cohort AnnData (results/cohorts/{cohort}.h5ad)")
    source.add_argument("--demo", action="store_true", help="the default demo cohort (config/demo.yaml)")
    source.add_argument("--synthetic", nargs=2, type=int, metavar=("GENES", "SAMPLES"))
    source.add_argument("--gse152418", type=Path, metavar="DATA_DIR", help="build GSE152418 from shared data")
    parser.add_argument("--covariates", nargs="*", help="default: the cohort's uns['covariates']")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--min-count", type=int, default=10)
    parser.add_argument("--n-cpus", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timing repeats (agreement uses the first)")
    parser.add_argument("--fast", action="store_true", help="also run FastInference and compare with stock")
    parser.add_argument("--no-r", action="store_true", help="skip R (e.g. stock vs fast only)")
    parser.add_argument("--r-workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--keep", type=Path, help="keep exported files and tables in this directory")
    parser.add_argument("--json", type=Path, help="write all figures here")
    args = parser.parse_args()

    with_r = not args.no_r
    if with_r and shutil.which("Rscript") is None:
        sys.exit("Rscript not found: apt-get install r-bioc-deseq2 r-cran-jsonlite, or pass --no-r")
    tmp = tempfile.TemporaryDirectory()
    workdir = args.keep or Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.demo:
        label, adata = "demo", demo_cohort(workdir)
    elif args.synthetic:
        label, adata = (
            f"synthetic {args.synthetic[0]}x{args.synthetic[1]}",
            synthetic_cohort(workdir, *args.synthetic),
        )
    elif args.gse152418:
        label, adata = "GSE152418", gse152418_cohort(args.gse152418)
    else:
        label, adata = Path(args.h5ad).stem, ad.read_h5ad(args.h5ad)
    covariates = args.covariates if args.covariates is not None else list(adata.uns.get("covariates", []))
    report = compare(
        adata, covariates, workdir, args.alpha, args.min_count, args.n_cpus, args.repeats, args.fast, with_r,
        args.r_workers,
    )  # fmt: skip
    report["cohort"] = label
    print_report(label, report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    tmp.cleanup()


if __name__ == "__main__":
    main()
