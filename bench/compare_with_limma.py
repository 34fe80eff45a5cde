"""Validate the log2 linear-model DE route (il6axis.de.linear) against R limma-trend on the same data.

Run by hand (needs Rscript with limma and jsonlite; Debian: r-bioc-limma r-cran-jsonlite):

    /tmp/probe/bin/python bench/compare_with_limma.py --gse293708 /work/shared/data --json gse293708.json
    /tmp/probe/bin/python bench/compare_with_limma.py --synthetic 20000 100 --repeats 3 --json synth.json
    /tmp/probe/bin/python bench/compare_with_limma.py --equal-variance 500 8
    /tmp/probe/bin/python bench/compare_with_limma.py COHORT.h5ad --layer normalised

Our side is ``il6axis.de.linear.run_log_linear`` as the workflow would run it, timed in this process
around the call (import and data building excluded). R gets the log2(normalised + 1) values of the genes
that passed our expression filter, our model frame (``contrast_design_frame``: numeric covariates
standardised, severity mild/severe) and our design formula, and runs ``lmFit`` + ``eBayes(trend = TRUE)`` +
``topTable`` (``bench/limma_reference.R``, timed inside R around those calls).

Cohorts:
- GSE293708: the author's DESeq2-normalised counts; Severe + Critical (8) vs Mild (4), no covariates.
- synthetic: ``il6axis.acquire.demo.simulate`` NB counts (age, sex; planted effects), no healthy samples,
turned into
  DESeq2-style normalised counts (median-of-ratios size factors), so the mean-variance trend is realistic.
- equal-variance: every gene has the same log2 variance, so the prior df is infinite (limma's Inf branch).

Targets: log2FC identical to ~1e-10 (both are OLS), moderated t Pearson >= 0.999, Jaccard of
adj.P.Val < 0.05 calls >= 0.98.
"""

from __future__ import annotations

import argparse
import json
import os
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
from _paths import ROOT  # also puts tests/ and workflow/ on sys.path (bench/ is sys.path[0])

from il6axis.acquire.demo import DemoSpec, simulate
from il6axis.de.contract import DeSettings, contrast_design_frame, design_formula, expression_filter
from il6axis.de.linear import log2_expression, run_log_linear
from il6axis.vocabulary import EXCLUDED, MILD, SEVERE

R_SCRIPT = ROOT / "bench" / "limma_reference.R"
TARGET_LFC_ABS = 1e-10
TARGET_T_PEARSON = 0.999
TARGET_JACCARD = 0.98


# ------------------------------------------------------------------------------------------ cohorts


def gse293708_cohort(data_dir: Path) -> ad.AnnData:
    """GSE293708 DESeq2-normalised counts; Severe + Critical = severe, Mild = mild, Normal excluded."""
    folder = data_dir / "GSE293708"
    norm = pd.read_csv(folder / "GSE293708_DESeq2_normalized_counts.csv.gz", index_col=0)
    norm = norm.drop(columns=["geneID", "Symbol"])
    sheet = pd.read_csv(folder / "GSE293708_sample_sheet_from_colnames.csv.gz").set_index("sample")
    label = {"Severe": SEVERE, "Critical": SEVERE, "Mild": MILD, "Normal": EXCLUDED}
    obs = pd.DataFrame(index=pd.Index(norm.columns, name="sample"))
    obs["sample_id"] = obs.index
    obs["severity"] = pd.Categorical(sheet.loc[obs.index, "severity"].map(label), [MILD, SEVERE, EXCLUDED])
    adata = ad.AnnData(X=norm.T.to_numpy(dtype=float), obs=obs, var=pd.DataFrame(index=norm.index))
    adata.uns["covariates"] = []
    adata.uns["cohort"] = "GSE293708"
    return adata


def median_of_ratios(counts: np.ndarray) -> np.ndarray:
    """DESeq2 size factors (samples x genes): median ratio to the genes' geometric means (all > 0 genes)."""
    positive = (counts > 0).all(axis=0)
    logs = np.log(counts[:, positive])
    return np.exp(np.median(logs - logs.mean(axis=0), axis=1))


def synthetic_cohort(n_genes: int, n_samples: int, seed: int = 7) -> ad.AnnData:
    """Demo-simulated NB counts -> median-of-ratios normalised counts; half severe, half mild; age + sex."""
    n_mild = n_samples // 2
    spec = DemoSpec(n_genes=n_genes, n_severe=n_samples - n_mild, n_mild=n_mild, n_healthy=0, seed=seed)
    sim = simulate([], spec)
    counts = sim.counts.T.to_numpy(dtype=float)  # samples x genes
    normalised = counts / median_of_ratios(counts)[:, None]
    obs = sim.samples.set_index("sample_id", drop=False)
    obs = obs.assign(
        severity=pd.Categorical(obs["group"], [MILD, SEVERE, EXCLUDED]), age=obs["age"].astype(float)
    )
    adata = ad.AnnData(
        X=normalised,
        obs=obs[["sample_id", "severity", "age", "sex"]],
        var=pd.DataFrame(index=sim.counts.index),
    )
    adata.uns["covariates"] = ["age", "sex"]
    return adata


def equal_variance_cohort(n_genes: int, n_samples: int, seed: int = 0) -> ad.AnnData:
    """log2(x + 1) ~ N(gene mean, 0.5^2) for every gene: no variance beyond sampling, so the prior df is
    estimated as (near) infinite; exercises limma's d0 = Inf branch (seed 0 with 500 genes x 8 samples)."""
    rng = np.random.default_rng(seed)
    n_mild = n_samples // 2
    severity = [MILD] * n_mild + [SEVERE] * (n_samples - n_mild)
    z = rng.uniform(5.0, 12.0, n_genes)[None, :] + rng.normal(0.0, 0.5, (n_samples, n_genes))
    obs = pd.DataFrame({"sample_id": [f"S{i:03d}" for i in range(n_samples)]})
    obs.index = obs["sample_id"].to_numpy()
    obs["severity"] = pd.Categorical(severity, [MILD, SEVERE, EXCLUDED])
    adata = ad.AnnData(X=np.exp2(z) - 1.0, obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(n_genes)]))
    adata.uns["covariates"] = []
    return adata


# ------------------------------------------------------------------------------------- export for R


def export_for_r(
    adata: ad.AnnData, covariates: Sequence[str], min_count: int, outdir: Path
) -> dict[str, Any]:
    """Write log2(normalised + 1) of the genes passing our filter (genes x samples) and the model frame."""
    in_contrast = adata.obs["severity"].astype(str).isin([SEVERE, MILD]).to_numpy()
    sub = adata[in_contrast]
    values = pd.DataFrame(np.asarray(sub.X, dtype=float), index=sub.obs_names, columns=sub.var_names)
    meta = contrast_design_frame(sub.obs, covariates)
    keep = expression_filter(values, meta["severity"], min_count)
    logged = log2_expression(values.loc[:, keep])
    values_path, coldata_path = outdir / "log2_for_r.tsv", outdir / "coldata_for_r.tsv"
    logged.T.rename_axis("gene").to_csv(values_path, sep="\t", float_format="%.17g")
    coldata = meta.copy()
    coldata["severity"] = coldata["severity"].astype(str)
    coldata.rename_axis("sample").to_csv(coldata_path, sep="\t", float_format="%.17g")
    return {
        "values": values_path,
        "coldata": coldata_path,
        "design": design_formula(covariates),
        "n_per_group": {g: int((meta["severity"] == g).sum()) for g in (MILD, SEVERE)},
        "n_genes_total": int(values.shape[1]),
        "n_genes_filtered": int(keep.sum()),
    }


def run_r(export: dict[str, Any], outdir: Path, tag: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    out_tsv, out_json = outdir / f"limma_{tag}.tsv", outdir / f"limma_{tag}.json"
    cmd = [
        "Rscript",
        str(R_SCRIPT),
        str(export["values"]),
        str(export["coldata"]),
        export["design"],
        str(out_tsv),
        str(out_json),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"R limma failed:\n{proc.stderr[-3000:]}")
    info = json.loads(out_json.read_text())
    info["df_prior"] = float(info["df_prior"])  # "Inf" -> inf
    return pd.read_csv(out_tsv, sep="\t", na_values=["NA"]), info


def run_ours(adata: ad.AnnData, covariates: Sequence[str], min_count: int) -> tuple[pd.DataFrame, float]:
    settings = DeSettings(min_count=min_count, lfc_shrink=False)
    start = time.perf_counter()
    result = run_log_linear(adata, covariates, settings)
    return result.table, time.perf_counter() - start


# ---------------------------------------------------------------------------------------- comparison


def _neglog10(p: np.ndarray) -> np.ndarray:
    return -np.log10(np.clip(p, 1e-300, None))


def agreement(ours: pd.DataFrame, ref: pd.DataFrame, alpha: float = 0.05) -> dict[str, Any]:
    """Per-gene agreement of our tested genes with limma's topTable (same genes by construction)."""
    a = ours[ours["tested"]].set_index("gene")
    b = ref.set_index("gene")
    if set(a.index) != set(b.index):
        raise AssertionError(f"gene sets differ: ours {len(a)}, limma {len(b)}")
    b = b.loc[a.index]
    lfc_a, lfc_b = a["log2FoldChange"].to_numpy(), b["logFC"].to_numpy()
    t_a, t_b = a["stat"].to_numpy(), b["t"].to_numpy()
    lp_a, lp_b = _neglog10(a["pvalue"].to_numpy()), _neglog10(b["P.Value"].to_numpy())
    calls_a = set(a.index[(a["padj"] < alpha).to_numpy()])
    calls_b = set(b.index[(b["adj.P.Val"] < alpha).to_numpy()])
    union = calls_a | calls_b
    return {
        "n_genes": int(len(a)),
        "log2fc_pearson": float(np.corrcoef(lfc_a, lfc_b)[0, 1]),
        "log2fc_max_abs_diff": float(np.max(np.abs(lfc_a - lfc_b))),
        "t_pearson": float(np.corrcoef(t_a, t_b)[0, 1]),
        "t_max_abs_diff": float(np.max(np.abs(t_a - t_b))),
        "t_max_rel_diff": float(np.max(np.abs(t_a - t_b) / np.maximum(np.abs(t_b), 1e-12))),
        "neglog10p_max_abs_diff": float(np.max(np.abs(lp_a - lp_b))),
        "ave_expr_max_abs_diff": float(np.max(np.abs(a["AveExpr"].to_numpy() - b["AveExpr"].to_numpy()))),
        "ci_low_max_abs_diff": float(np.max(np.abs(a["ci_low"].to_numpy() - b["CI.L"].to_numpy()))),
        "df_total_max_abs_diff": float(np.max(np.abs(a["df_total"].to_numpy() - b["df.total"].to_numpy()))),
        "calls_ours": len(calls_a),
        "calls_limma": len(calls_b),
        "calls_both": len(calls_a & calls_b),
        "jaccard": len(calls_a & calls_b) / len(union) if union else 1.0,
    }


def prior_agreement(
    adata: ad.AnnData, covariates: Sequence[str], min_count: int, ref: pd.DataFrame, info: dict[str, Any]
) -> dict[str, Any]:
    """Our d0 and per-gene s0^2 (trend) against limma's df.prior and s2.prior."""
    from il6axis.de.contract import design_matrix
    from il6axis.de.linear import fit_linear_models, moderated_t

    in_contrast = adata.obs["severity"].astype(str).isin([SEVERE, MILD]).to_numpy()
    sub = adata[in_contrast]
    values = pd.DataFrame(np.asarray(sub.X, dtype=float), index=sub.obs_names, columns=sub.var_names)
    meta = contrast_design_frame(sub.obs, covariates)
    keep = expression_filter(values, meta["severity"], min_count)
    design = design_matrix(meta, design_formula(covariates))
    fit = fit_linear_models(
        log2_expression(values.loc[:, keep]).to_numpy(), design.to_numpy(), list(design.columns)
    )
    test = moderated_t(fit, "severity[T.severe]", trend=True)
    s2p_ref = ref.set_index("gene").loc[values.columns[keep.to_numpy()], "s2.prior"].to_numpy()
    return {
        "df_prior_ours": test.df_prior,
        "df_prior_limma": info["df_prior"],
        "s2_prior_median_ours": float(np.median(test.s2_prior)),
        "s2_prior_median_limma": float(np.median(s2p_ref)),
        "s2_prior_max_rel_diff": float(np.max(np.abs(test.s2_prior - s2p_ref) / s2p_ref)),
        "s2_prior_range_ours": [float(test.s2_prior.min()), float(test.s2_prior.max())],
    }


def compare(
    adata: ad.AnnData, covariates: Sequence[str], workdir: Path, min_count: int, repeats: int
) -> dict[str, Any]:
    export = export_for_r(adata, covariates, min_count, workdir)
    report: dict[str, Any] = {k: v for k, v in export.items() if k not in ("values", "coldata")}
    ours_times, r_times = [], []
    ours_table = ref = info = None
    for rep in range(repeats):
        # interleave the two so that load on the shared machine hits them alike
        table, elapsed = run_ours(adata, covariates, min_count)
        ours_times.append(elapsed)
        r_table, r_info = run_r(export, workdir, str(rep))
        r_times.append(r_info["elapsed_s"])
        if rep == 0:
            ours_table, ref, info = table, r_table, r_info
    report["agreement"] = agreement(ours_table, ref)
    report["prior"] = prior_agreement(adata, covariates, min_count, ref, info)
    report["timings"] = {
        "ours_s": ours_times,
        "limma_s": r_times,
        "ratio_ours_over_limma_median": float(np.median(ours_times) / np.median(r_times)),
        "loadavg_end": list(os.getloadavg()),
    }
    report["versions"] = {"R": info["r_version"], "limma": info["limma_version"], "numpy": np.__version__}
    report["design_columns_limma"] = info["design_columns"]
    return report


def print_report(label: str, report: dict[str, Any]) -> None:
    a, p, t = report["agreement"], report["prior"], report["timings"]
    ok = (
        a["log2fc_max_abs_diff"] <= TARGET_LFC_ABS
        and a["t_pearson"] >= TARGET_T_PEARSON
        and a["jaccard"] >= TARGET_JACCARD
    )
    lines = [
        f"\n== {label}: {report['design']}; n={report['n_per_group']}; "
        f"{report['n_genes_filtered']}/{report['n_genes_total']} genes tested; {report['versions']}",
        f"log2FC   r {a['log2fc_pearson']:.12f}  max|d| {a['log2fc_max_abs_diff']:.2e}",
        f"mod. t   r {a['t_pearson']:.12f}  max|d| {a['t_max_abs_diff']:.2e}  "
        f"max rel {a['t_max_rel_diff']:.2e}",
        f"-log10 p max|d| {a['neglog10p_max_abs_diff']:.2e}; CI.L max|d| {a['ci_low_max_abs_diff']:.2e}; "
        f"df.total max|d| {a['df_total_max_abs_diff']:.2e}; AveExpr max|d| {a['ave_expr_max_abs_diff']:.2e}",
        f"d0 ours {p['df_prior_ours']:.6g} vs limma df.prior {p['df_prior_limma']:.6g}; s0^2 median "
        f"{p['s2_prior_median_ours']:.6g} vs {p['s2_prior_median_limma']:.6g}, max rel diff "
        f"{p['s2_prior_max_rel_diff']:.2e}",
        f"calls (adj.P < 0.05) ours/limma/both {a['calls_ours']}/{a['calls_limma']}/{a['calls_both']}  "
        f"Jaccard {a['jaccard']:.4f}",
        f"time ours {np.median(t['ours_s']):.3f} s, limma {np.median(t['limma_s']):.3f} s, "
        f"ratio {t['ratio_ours_over_limma_median']:.2f}; {'MEETS' if ok else 'MISSES'} targets",
    ]
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("h5ad", nargs="?", help="an AnnData of normalised values (X, or --layer)")
    source.add_argument("--gse293708", type=Path, metavar="DATA_DIR", help="the shared data folder")
    source.add_argument("--synthetic", nargs=2, type=int, metavar=("GENES", "SAMPLES"))
    source.add_argument("--equal-variance", nargs=2, type=int, metavar=("GENES", "SAMPLES"))
    parser.add_argument("--seed", type=int, default=None, help="synthetic / equal-variance seed")
    parser.add_argument("--layer", help="with h5ad: the layer holding the normalised values")
    parser.add_argument("--covariates", nargs="*", help="default: the cohort's uns['covariates']")
    parser.add_argument("--min-count", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (agreement uses the first)")
    parser.add_argument("--keep", type=Path, help="keep exported files and tables in this directory")
    parser.add_argument("--json", type=Path, help="write all figures here")
    args = parser.parse_args()
    if shutil.which("Rscript") is None:
        sys.exit("Rscript not found: apt-get install r-bioc-limma r-cran-jsonlite")

    if args.gse293708:
        label, adata = "GSE293708", gse293708_cohort(args.gse293708)
    elif args.synthetic:
        seed = 7 if args.seed is None else args.seed
        label = f"synthetic {args.synthetic[0]}x{args.synthetic[1]}"
        adata = synthetic_cohort(*args.synthetic, seed=seed)
    elif args.equal_variance:
        seed = 0 if args.seed is None else args.seed
        label = f"equal-variance {args.equal_variance[0]}x{args.equal_variance[1]}"
        adata = equal_variance_cohort(*args.equal_variance, seed=seed)
    else:
        label, adata = Path(args.h5ad).stem, ad.read_h5ad(args.h5ad)
        if args.layer:
            adata = ad.AnnData(X=adata.layers[args.layer], obs=adata.obs, var=adata.var, uns=adata.uns)
    covariates = args.covariates if args.covariates is not None else list(adata.uns.get("covariates", []))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        report = compare(adata, covariates, workdir, args.min_count, args.repeats)
    report["cohort"] = label
    print_report(label, report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
