"""Benchmark: peak memory of rules expression_scores and deseq2 on GSE152418; identical outputs. By hand:

    .venv/bin/python bench/bench_expression_memory.py [--repeats 3] [--stages] [--keep DIR]

1. Runs the workflow up to GSE152418's scores in a temporary directory, against the real NCBI counts and
   sample sheet in ../shared/data/GSE152418 served by the tests' fake GEO (tests/geo_server.py), configured
   as tests/test_geo_workflow.py configures the cohort; prints Snakemake's benchmark files of both rules
   (max_rss there is the sum over the job's process tree, sampled every 0.5 s).
2. Re-runs each rule's job script (kept with --skip-script-cleanup, so it is what Snakemake ran) in a fresh
   process, ``--repeats`` times, sampling the process tree's RSS every 10 ms: the peak of the sum over the
   tree (what Snakemake's max_rss approximates) and the largest single process (``ru_maxrss``).
3. Runs expression_scores as it ran before the memory change ("before": gseapy's ``prerank``, scanpy's
   ``score_genes``, the VST's per-gene fits in 2 joblib process workers, the whole cohort and DE table read)
   on the same inputs, and checks that every output file (the six tables and the h5ad) is byte-identical to
   the current step's.

``--stages`` adds the per-stage peak RSS of both expression_scores variants (imports, inputs, VST, panel
table, the two scores, their models, GSEA, h5ad) from a sampler thread inside the job process.
"""

from __future__ import annotations

import argparse
import copy
import filecmp
import functools
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from workflow_cmd import ROOT, snakemake_cmd  # sibling module: bench/ is sys.path[0]

SHARED = ROOT.parent / "shared" / "data"
COHORT = "GSE152418"
OUTPUTS = [
    f"results/expression/{COHORT}.h5ad",
    f"results/expression/{COHORT}/panel_expression.tsv",
    f"results/scores/{COHORT}/pathway_scores.tsv",
    f"results/scores/{COHORT}/coverage.tsv",
    f"results/scores/{COHORT}/score_models.tsv",
    f"results/scores/{COHORT}/score_effects.tsv",
    f"results/scores/{COHORT}/gsea.tsv",
]
INPUTS = [f"results/cohorts/{COHORT}.h5ad", f"results/de/{COHORT}/severe_vs_mild.tsv"]
MIB = 2**20


def cohort_config(base_url: str) -> dict:
    """GSE152418 from GEO's NCBI counts and the GEOquery sample sheet (as tests/test_geo_workflow.py)."""
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cohort = copy.deepcopy(default["cohorts"][COHORT])
    cohort["metadata"] = {
        "source": "sample_sheet",
        "path": str(SHARED / COHORT / "GSE152418_sample_metadata_GEOquery_pData.csv.gz"),
        "sample_column": "geo_accession",
    }
    download = {"geo_base": base_url, "geo_download_base": base_url, "ncbi_gene_base": base_url}
    return {"cohorts": {COHORT: cohort}, "download": {**download, "retries": 3, "backoff_s": 0.01}}


def run_workflow(workdir: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from geo_server import FakeGeo

    with FakeGeo(SHARED) as geo:
        configfile = workdir / "config.yaml"
        configfile.write_text(yaml.safe_dump(cohort_config(geo.base_url)))
        target = f"results/scores/{COHORT}/gsea.tsv"
        cmd = snakemake_cmd(workdir, configfile, 2, "--quiet", "--skip-script-cleanup", target)
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])


def benchmark_file(workdir: Path, rule: str) -> dict:
    lines = (workdir / "results" / "benchmarks" / rule / f"{COHORT}.tsv").read_text().splitlines()
    return dict(zip(lines[0].split("\t"), lines[1].split("\t"), strict=True))


def job_script(workdir: Path, script_name: str) -> Path:
    found = sorted((workdir / ".snakemake" / "scripts").glob(f"tmp*.{script_name}.py"))
    if len(found) != 1:
        sys.exit(f"expected one kept job script for {script_name}, found {found}")
    return found[0]


def measure(script: Path, cwd: Path, mode: str, stages: Path | None = None) -> dict:
    """Run one job script in a fresh process; peak RSS of its process tree (10 ms samples) and ru_maxrss."""
    import psutil

    cmd = [sys.executable, __file__, "--job", str(script), "--mode", mode]
    if stages is not None:
        cmd += ["--stages-out", str(stages)]
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr)
        root, tree_peak, most_children = psutil.Process(proc.pid), 0, 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # reaps the child with its rusage
            if pid:
                break
            try:
                members = [root, *root.children(recursive=True)]
                tree_peak = max(tree_peak, sum(p.memory_info().rss for p in members))
                most_children = max(most_children, len(members) - 1)
            except psutil.Error:
                pass
            time.sleep(0.01)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            stderr.seek(0)
            sys.exit(f"{script} ({mode}) failed:\n{stderr.read().decode()[-3000:]}")
    # ru_maxrss: the largest single process among the child and the descendants it waited for (KiB).
    return {
        "tree_mib": tree_peak / MIB,
        "largest_mib": usage.ru_maxrss / 1024,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,  # the child and the descendants it waited for
        "children": most_children,
    }


def copy_inputs(workdir: Path, target: Path) -> None:
    """A working directory with the step's inputs and empty output folders (as Snakemake prepares it)."""
    for rel in INPUTS:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(workdir / rel, target / rel)
    for rel in [*OUTPUTS, f"results/logs/expression_scores/{COHORT}.log"]:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)


# ---- inside the job process -------------------------------------------------------------------------------


def _before(threads: int = 2) -> None:
    """Make the current code run expression_scores as it ran before the memory change."""
    import anndata
    import numpy as np
    import pandas as pd

    from il6axis.analysis import expression, prerank, scores

    read_h5ad, read_csv = anndata.read_h5ad, pd.read_csv
    anndata.read_h5ad = lambda path, **kw: read_h5ad(path, **{k: v for k, v in kw.items() if k != "backed"})
    pd.read_csv = lambda path, **kw: read_csv(path, **{k: v for k, v in kw.items() if k != "usecols"})
    prerank.prerank = lambda *args, **kwargs: None  # competitive_test then calls gseapy.prerank
    gseapy_prerank = scores._gseapy_prerank
    scores._gseapy_prerank = lambda *args: gseapy_prerank(*args[:-1], threads)
    expression.VST_WORKER_MIN_GENES = 0  # pydeseq2's joblib process workers for every fit
    vst = expression.vst
    expression.vst = lambda counts, *args, **kw: vst(counts, *args, **{**kw, "n_cpus": threads})

    def scanpy_score_genes_scores(vst, gene_sets, ctrl_size=50, n_bins=25, random_state=0, min_genes=3):
        import scanpy as sc

        sd = vst.std(axis=0, ddof=1)
        adata = anndata.AnnData(
            X=vst.to_numpy(dtype=np.float64),
            obs=pd.DataFrame(index=vst.index.astype(str)),
            var=pd.DataFrame(index=vst.columns.astype(str)),
        )
        usable, coverage = scores._usable_genes(vst, gene_sets, sd, min_genes)
        out = pd.DataFrame(index=vst.index)
        for name, present in usable.items():
            if not present:
                out[name] = np.nan
                continue
            sc.tl.score_genes(
                adata,
                present,
                ctrl_as_ref=False,
                ctrl_size=ctrl_size,
                n_bins=n_bins,
                random_state=random_state,
                use_raw=False,
                score_name="_score",
            )
            out[name] = adata.obs["_score"].to_numpy()
        return out, coverage

    scores.score_genes_scores = scanpy_score_genes_scores


def _stage_sampler(out: Path) -> None:
    """Peak RSS (this process, and its tree) per stage; stages start when a wrapped function is called."""
    import anndata
    import psutil

    from il6axis.analysis import expression, expression_scores, genesets, scores

    me, current, peaks, order = psutil.Process(), ["imports"], {}, []

    def sample() -> None:
        while True:
            try:
                own = me.memory_info().rss
                tree = own + sum(c.memory_info().rss for c in me.children(recursive=True))
            except psutil.Error:
                continue
            stage = current[-1]
            if stage not in peaks:
                peaks[stage] = [0, 0]
                order.append(stage)
            peaks[stage] = [max(peaks[stage][0], own), max(peaks[stage][1], tree)]
            time.sleep(0.01)

    def wrap(owner: object, name: str, label: str) -> None:
        func = getattr(owner, name)

        @functools.wraps(func)
        def staged(*args, **kwargs):
            current.append(label)
            return func(*args, **kwargs)

        setattr(owner, name, staged)

    for owner, name, label in [
        (genesets, "load_gene_sets", "read inputs"),
        (anndata, "read_h5ad", "read inputs"),
        (expression_scores, "_expression_scales", "counts, normalised, VST"),
        (expression, "panel_expression", "panel table"),
        (scores, "mean_z_scores", "mean z scores"),
        (scores, "score_genes_scores", "score_genes scores"),
        (scores, "score_model", "score models (OLS)"),
        (scores, "competitive_test", "GSEA (1,000 permutations)"),
        (anndata.AnnData, "write_h5ad", "write h5ad + tables"),
    ]:
        wrap(owner, name, label)
    threading.Thread(target=sample, daemon=True).start()

    import atexit

    def dump() -> None:
        time.sleep(0.03)
        rows = [{"stage": s, "own_mib": peaks[s][0] / MIB, "tree_mib": peaks[s][1] / MIB} for s in order]
        out.write_text(json.dumps(rows))

    atexit.register(dump)


def run_job(script: Path, mode: str, stages_out: Path | None) -> None:
    import runpy

    sys.path.insert(0, str(ROOT / "workflow"))
    if mode == "before":
        _before()
    if stages_out is not None:
        _stage_sampler(stages_out)
    runpy.run_path(str(script), run_name="__main__")


# ---- report -----------------------------------------------------------------------------------------------


def summarise(runs: list[dict]) -> str:
    tree = [r["tree_mib"] for r in runs]
    largest = [r["largest_mib"] for r in runs]
    wall = [r["wall_s"] for r in runs]
    cpu = [r["cpu_s"] for r in runs]
    return (
        f"tree peak {statistics.median(tree):6.0f} MiB ({min(tree):.0f}-{max(tree):.0f}), largest process "
        f"{statistics.median(largest):5.0f} MiB, {max(r['children'] for r in runs)} child process(es), "
        f"wall {statistics.median(wall):5.1f} s, CPU {statistics.median(cpu):5.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stages", action="store_true", help="per-stage peak RSS of expression_scores")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="after", help=argparse.SUPPRESS)
    parser.add_argument("--stages-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        run_job(args.job, args.mode, args.stages_out)
        return
    if not (SHARED / COHORT).is_dir():
        sys.exit(f"{SHARED / COHORT} is missing: the benchmark needs the real GSE152418 files")

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        run_workflow(workdir)
        print(
            f"GSE152418 workflow to the scores: {time.perf_counter() - start:.0f} s; {os.cpu_count()} cores, "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, "
            f"{platform.python_version()}, load {os.getloadavg()[0]:.1f}"
        )
        print("\nSnakemake benchmark files (max_rss = sum over the job's processes, sampled every 0.5 s):")
        for rule in ("deseq2", "expression_scores"):
            b = benchmark_file(workdir, rule)
            print(f"  {rule:18s} max_rss {float(b['max_rss']):6.0f} MB  wall {float(b['s']):5.1f} s")

        scripts = {
            "deseq2": job_script(workdir, "run_deseq2"),
            "expr": job_script(workdir, "expression_scores"),
        }
        runs: dict[str, list[dict]] = {"deseq2": [], "after": [], "before": []}
        dirs = {mode: workdir / f"rerun_{mode}" for mode in ("after", "before")}
        for target in dirs.values():
            copy_inputs(workdir, target)
        for _ in range(args.repeats):
            runs["deseq2"].append(measure(scripts["deseq2"], workdir, "after"))
            for mode, target in dirs.items():
                runs[mode].append(measure(scripts["expr"], target, mode))
        print(f"\nFresh process per run, {args.repeats} run(s), median (range):")
        print(f"  deseq2                   {summarise(runs['deseq2'])}")
        print(f"  expression_scores        {summarise(runs['after'])}")
        print(f"  expression_scores before {summarise(runs['before'])}")

        print("\nOutputs, current step vs before (same inputs), byte for byte:")
        same = 0
        for rel in OUTPUTS:
            identical = filecmp.cmp(dirs["after"] / rel, dirs["before"] / rel, shallow=False)
            workflow_identical = filecmp.cmp(workdir / rel, dirs["after"] / rel, shallow=False)
            same += identical and workflow_identical
            print(f"  {rel:48s} {'identical' if identical and workflow_identical else 'DIFFERENT'}")
        print(f"  {same}/{len(OUTPUTS)} identical (the workflow's own outputs included)")

        if args.stages:
            for mode, target in dirs.items():
                out = workdir / f"stages_{mode}.json"
                measure(scripts["expr"], target, mode, stages=out)
                print(f"\nexpression_scores {mode}, peak RSS per stage (MiB; this process / its tree):")
                for row in json.loads(out.read_text()):
                    print(f"  {row['stage']:28s} {row['own_mib']:6.0f} {row['tree_mib']:7.0f}")
        peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\n(benchmark driver itself: {peak_self:.0f} MiB)")
        if same != len(OUTPUTS):
            sys.exit("outputs differ from the step before the memory change")


if __name__ == "__main__":
    main()
