"""Regenerate tests/fixtures/deseq2_r/: two small fixed cohorts and R DESeq2's results on them.

Run by hand after a change of R/DESeq2 version (needs Rscript with DESeq2 + jsonlite); CI has no R and the
tests read the committed files:

    .venv/bin/python bench/make_r_fixtures.py

Each case is a seeded simulation (il6axis.acquire.demo) with planted severity effects, plus planted
single-sample
outliers (one extreme count in a gene), and the sex genes the simulator makes (XIST ~0 in males, RPS4Y1 ~0
in females), so that the cases exercise every step where pydeseq2 0.5.4 and R DESeq2 1.38 differ
(r_compatible.py): gene-wise and MAP dispersion fits, dispersion outliers, the trend, Cook's replacement
and refit (``severity_refit``: 8 vs 8, so every sample is replaceable) or Cook's filtering without refit
(``sex_severity``: no design cell with 7 samples), a coefficient running off to -infinity (RPS4Y1 with sex
in the design) and independent filtering. Files per case: ``{case}.counts.tsv`` (genes x samples, every
simulated gene), ``{case}.samples.tsv`` (sample, severity, sex), ``{case}.r_results.tsv`` (R's results and
per-gene intermediates for the genes passing the expression filter, from bench/deseq2_reference.R, 10
significant digits) and ``{case}.r_info.json`` (R's size factors, trend, prior, filter grid and versions).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import anndata as ad
import pandas as pd
from _paths import ROOT  # also puts tests/ and workflow/ on sys.path (bench/ is sys.path[0])
from compare_with_r import R_SCRIPT, export_for_r

from il6axis.acquire.demo import DemoSpec, simulate

OUT = ROOT / "tests" / "fixtures" / "deseq2_r"
NAMED = ["IL6", "SOCS3", "STAT3", "XIST", "RPS4Y1"]
# R's columns kept (10 significant digits: the tests compare to 1e-6 or looser).
KEEP_COLUMNS = [
    "gene", "baseMean", "log2FoldChange", "lfcSE", "stat", "pvalue", "padj", "dispGeneEst", "dispFit",
    "dispMAP", "dispersion", "dispOutlier", "maxCooks", "replace",
]  # fmt: skip
# case -> simulation, covariates, planted outliers (gene index, sample index, multiple of the gene's max)
CASES = {
    "sex_severity": {
        "spec": DemoSpec(n_genes=400, n_severe=8, n_mild=6, n_healthy=0, seed=31),
        "covariates": ["sex"],
        "outliers": [(40, 2, 30), (41, 9, 12), (42, 0, 6), (43, 12, 60)],
    },
    "severity_refit": {
        "spec": DemoSpec(n_genes=400, n_severe=8, n_mild=8, n_healthy=0, seed=47),
        "covariates": [],
        "outliers": [(40, 2, 30), (41, 10, 12), (42, 0, 6), (43, 15, 60)],
    },
}


def cohort_of(case: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(counts genes x samples, samples table) of a case, outliers planted."""
    cfg = CASES[case]
    cohort = simulate(NAMED, cfg["spec"])
    counts = cohort.counts.copy()
    for gene, sample, factor in cfg["outliers"]:
        counts.iloc[gene + len(NAMED), sample] = int(counts.iloc[gene + len(NAMED)].max() * factor) + 1
    samples = cohort.samples.set_index("sample_id")[["group", "sex"]].rename(columns={"group": "severity"})
    return counts, samples


def main() -> None:
    if shutil.which("Rscript") is None:
        sys.exit("Rscript not found (apt-get install r-bioc-deseq2 r-cran-jsonlite)")
    OUT.mkdir(parents=True, exist_ok=True)
    for case, cfg in CASES.items():
        counts, samples = cohort_of(case)
        obs = samples.copy()
        obs["severity"] = pd.Categorical(obs["severity"], categories=["mild", "severe"])
        adata = ad.AnnData(X=counts.T.to_numpy(), obs=obs, var=pd.DataFrame(index=counts.index))
        with tempfile.TemporaryDirectory() as tmp:
            export = export_for_r(adata, cfg["covariates"], 10, Path(tmp))
            cmd = [
                "Rscript", str(R_SCRIPT), str(export["counts"]), str(export["coldata"]), export["design"],
                "0.05", str(OUT / f"{case}.r_results.tsv"), str(Path(tmp) / "info.json"), "1",
            ]  # fmt: skip
            subprocess.run(cmd, check=True)
            info = json.loads((Path(tmp) / "info.json").read_text())
        for key in ("elapsed_s", "loadavg", "workers"):  # machine-dependent, not expectations
            info.pop(key, None)
        info["design"] = export["design"]
        (OUT / f"{case}.r_info.json").write_text(json.dumps(info, indent=1) + "\n")
        counts.rename_axis("gene").to_csv(OUT / f"{case}.counts.tsv", sep="\t")
        samples.rename_axis("sample").to_csv(OUT / f"{case}.samples.tsv", sep="\t")
        r = pd.read_csv(OUT / f"{case}.r_results.tsv", sep="\t")[KEEP_COLUMNS]
        r.to_csv(OUT / f"{case}.r_results.tsv", sep="\t", index=False, float_format="%.10g", na_rep="NA")
        print(
            f"{case}: {export['design']}, {len(r)} genes, {int((r['padj'] < 0.05).sum())} calls, "
            f"filter threshold {info['filter_threshold']:.4g}, {info['n_cooks_replaced_genes']} genes "
            f"replaced, {int(r['dispOutlier'].sum())} dispersion outliers"
        )


if __name__ == "__main__":
    main()
