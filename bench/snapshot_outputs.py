"""Fingerprint every result table of two reference runs, or compare them with an earlier fingerprint.

Used to show that a refactoring leaves behaviour unchanged: take a manifest before, compare after.

    .venv/bin/python bench/snapshot_outputs.py --out bench/out/outputs_before.tsv
    .venv/bin/python bench/snapshot_outputs.py --compare bench/out/outputs_before.tsv

Runs (each the workflow's default targets, in a fresh working directory):
- ``demo``: config/demo.yaml as shipped (simulated cohort, seed 20201);
- ``GSE152418``: the real cohort served by the tests' fake GEO (tests/geo_server.py) from
  ../shared/data, configured as in tests/test_geo_workflow.py (the default config's GSE152418 block, with
  the GEOquery sample sheet as metadata and the download hosts on 127.0.0.1), DE settings left at their
  defaults (so the shrunk LFC column is covered too).

Fingerprinted: every ``*.tsv``, ``*.json``, ``*.rst`` and ``*.yaml`` under results/, every ``*.tsv.gz`` /
``*.csv.gz`` written by a rule (hashed decompressed: a gzip header carries a time stamp), and the
``*.h5ad`` files as they are (they hold no paths or times, and two runs write the same bytes; an .h5ad
that differs while every table is identical means the container changed, e.g. the order of ``uns``
keys: compare it with anndata). Left out: results/benchmarks/ and results/logs/ (timings,
machine-dependent), files a download rule copied from GEO (inputs, not results; the download manifest
is kept) and figures. Text is normalised before hashing: the working directory,
the repository root, the shared-data root and the fake GEO's URL (its port changes per run) become
``{WORKDIR}``, ``{ROOT}``, ``{SHARED}`` and ``{GEO}``, so two checkouts in different folders compare
equal. With ``--out`` the normalised files are also copied beside the manifest (``<manifest>.files/``),
so that ``--compare`` can print the first differing lines of each changed file.

Exit status of ``--compare``: 0 when every file is identical, 1 otherwise (every difference is printed).
"""

from __future__ import annotations

import argparse
import copy
import difflib
import gzip
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from workflow_cmd import ROOT, snakemake_cmd  # sibling module: bench/ is sys.path[0]

RUNS = ("demo", "GSE152418")
GEO_COHORT = "GSE152418"
DEFAULT_SHARED = ROOT.parent / "shared" / "data"
TEXT_SUFFIXES = (".tsv", ".json", ".rst", ".yaml")
GZIP_SUFFIXES = (".tsv.gz", ".csv.gz")
BINARY_SUFFIXES = (".h5ad",)  # hashed as written, not copied
SKIPPED_DIRS = ("results/benchmarks/", "results/logs/")
DOWNLOADED = "results/downloads/"  # copies of GEO files; only the manifest there is a result
KEPT_IN_DOWNLOADS = ("results/downloads/manifest.tsv",)
DIFF_LINES = 6  # differing lines printed per changed file


@dataclass(frozen=True)
class Entry:
    """One fingerprinted file: run name, path relative to the working directory, sha256 and size."""

    run: str
    path: str
    sha256: str
    size: int


def geo_config(base_url: str, shared: Path) -> dict:
    """GSE152418 through the fake GEO, as tests/test_geo_workflow.py configures it (DE defaults kept)."""
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cohort = copy.deepcopy(default["cohorts"][GEO_COHORT])
    cohort["metadata"] = {
        "source": "sample_sheet",
        "path": str(shared / GEO_COHORT / "GSE152418_sample_metadata_GEOquery_pData.csv.gz"),
        "sample_column": "geo_accession",
    }
    hosts = {"geo_base": base_url, "geo_download_base": base_url, "ncbi_gene_base": base_url}
    return {
        "cohorts": {GEO_COHORT: cohort},
        "download": {**hosts, "retries": 3, "backoff_s": 0.01, "timeout_s": 10},
    }


def _snakemake(workdir: Path, configfile: Path, cores: int) -> subprocess.CompletedProcess[str]:
    cmd = snakemake_cmd(workdir, configfile, cores, "--quiet")
    return subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)


def run_workflow(run: str, workdir: Path, cores: int, shared: Path) -> dict[str, str]:
    """Run one reference run in ``workdir``; return the placeholders for text normalisation."""
    workdir.mkdir(parents=True, exist_ok=True)
    replacements = {str(workdir.resolve()): "{WORKDIR}", str(ROOT): "{ROOT}", str(shared): "{SHARED}"}
    start = time.perf_counter()
    if run == "demo":
        proc = _snakemake(workdir, ROOT / "config" / "demo.yaml", cores)
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from geo_server import FakeGeo

        with FakeGeo(shared) as geo:
            configfile = workdir / "config.yaml"
            configfile.write_text(yaml.safe_dump(geo_config(geo.base_url, shared)))
            proc = _snakemake(workdir, configfile, cores)
            replacements[geo.base_url] = "{GEO}"
    if proc.returncode:
        sys.exit(f"{run}: snakemake failed in {workdir}\n{proc.stderr[-4000:]}")
    print(f"{run}: workflow finished in {time.perf_counter() - start:.0f} s ({workdir})", flush=True)
    return replacements


def fingerprinted(path: str) -> bool:
    """Whether a results/ file (path relative to the working directory) is part of the fingerprint."""
    if path.startswith(SKIPPED_DIRS):
        return False
    if path.startswith(DOWNLOADED) and path not in KEPT_IN_DOWNLOADS:
        return False
    return path.endswith(TEXT_SUFFIXES + GZIP_SUFFIXES + BINARY_SUFFIXES)


def normalised_bytes(file: Path, replacements: dict[str, str]) -> bytes:
    """The file's content as hashed: binary as written; text decompressed if gzip, machine-specific
    strings replaced."""
    if file.name.endswith(BINARY_SUFFIXES):
        return file.read_bytes()
    data = gzip.decompress(file.read_bytes()) if file.name.endswith(GZIP_SUFFIXES) else file.read_bytes()
    # Longest first, so that a path inside another (the workdir inside ROOT) is replaced whole.
    for old, new in sorted(replacements.items(), key=lambda item: -len(item[0])):
        data = data.replace(old.encode(), new.encode())
    return data


def fingerprint(run: str, workdir: Path, replacements: dict[str, str], copy_to: Path | None) -> list[Entry]:
    """Entries for every fingerprinted file of one run; optionally keep the normalised copies."""
    entries = []
    for file in sorted((workdir / "results").rglob("*")):
        rel = file.relative_to(workdir).as_posix()
        if not file.is_file() or not fingerprinted(rel):
            continue
        data = normalised_bytes(file, replacements)
        entries.append(Entry(run, rel, hashlib.sha256(data).hexdigest(), len(data)))
        if copy_to is not None and not rel.endswith(BINARY_SUFFIXES):
            target = copy_to / run / rel.removesuffix(".gz")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return entries


def write_manifest(entries: list[Entry], path: Path, header: str) -> None:
    lines = [f"# {header}", "run\tpath\tsha256\tbytes"]
    lines += [f"{e.run}\t{e.path}\t{e.sha256}\t{e.size}" for e in entries]
    path.write_text("\n".join(lines) + "\n")


def read_manifest(path: Path) -> list[Entry]:
    rows = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    if not rows or rows[0] != "run\tpath\tsha256\tbytes":
        sys.exit(f"{path}: not a manifest written by bench/snapshot_outputs.py (header row missing)")
    out = []
    for row in rows[1:]:
        run, rel, sha, size = row.split("\t")
        out.append(Entry(run, rel, sha, int(size)))
    return out


def files_dir(manifest: Path) -> Path:
    return manifest.with_name(manifest.name + ".files")


def first_differences(old: Path, new_text: list[str]) -> list[str]:
    """The first differing lines (unified diff without context) between a kept copy and new content."""
    old_text = old.read_text(errors="replace").splitlines()
    diff = difflib.unified_diff(old_text, new_text, "before", "after", n=0, lineterm="")
    changed = [line for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    shown = [f"      {line[:200]}" for line in changed[:DIFF_LINES]]
    if len(changed) > DIFF_LINES:
        shown.append(f"      ... {len(changed) - DIFF_LINES} more changed line(s)")
    return shown


def compare(before: list[Entry], after: list[Entry], kept_before: Path, kept_after: Path) -> int:
    """Print every difference between two manifests; return the number of differing files."""
    old = {(e.run, e.path): e for e in before}
    new = {(e.run, e.path): e for e in after}
    problems = 0
    for key in sorted(old.keys() - new.keys()):
        print(f"MISSING now   {key[0]}: {key[1]}")
        problems += 1
    for key in sorted(new.keys() - old.keys()):
        print(f"NEW now       {key[0]}: {key[1]}")
        problems += 1
    for key in sorted(old.keys() & new.keys()):
        if old[key].sha256 == new[key].sha256:
            continue
        problems += 1
        print(f"DIFFERS       {key[0]}: {key[1]} ({old[key].size} -> {new[key].size} bytes)")
        kept = kept_before / key[0] / key[1].removesuffix(".gz")
        current = kept_after / key[0] / key[1].removesuffix(".gz")
        if kept.is_file() and current.is_file():
            print("\n".join(first_differences(kept, current.read_text(errors="replace").splitlines())))
    same = sum(old[key].sha256 == new[key].sha256 for key in old.keys() & new.keys())
    print(f"{same} identical, {problems} different (of {len(old)} before, {len(new)} now)")
    return problems


def git_describe() -> str:
    proc = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--tags"], capture_output=True, text=True, cwd=ROOT
    )
    return proc.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", type=Path, help="write the manifest here (and the files to <out>.files/)")
    mode.add_argument("--compare", type=Path, help="compare with this manifest; exit 1 on any difference")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--shared-data", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    if GEO_COHORT in args.runs and not args.shared_data.is_dir():
        sys.exit(f"{args.shared_data} not found: the GSE152418 run needs the shared data (--shared-data)")

    before = read_manifest(args.compare) if args.compare else None
    with tempfile.TemporaryDirectory(prefix="snapshot_") as tmp:
        base = args.workdir.resolve() if args.workdir else Path(tmp)
        copy_to = files_dir(args.out) if args.out else base / "files"
        if copy_to.exists():
            shutil.rmtree(copy_to)
        entries = []
        for run in args.runs:
            workdir = base / run
            if workdir.exists():
                sys.exit(f"{workdir} exists: give an empty --workdir")
            replacements = run_workflow(run, workdir, args.cores, args.shared_data.resolve())
            entries += fingerprint(run, workdir, replacements, copy_to)
        header = f"bench/snapshot_outputs.py at {git_describe()}, runs {' '.join(args.runs)}"
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            write_manifest(entries, args.out, header)
            print(f"{len(entries)} files fingerprinted -> {args.out} (copies in {copy_to})")
            return
        compared = [e for e in before if e.run in args.runs]
        problems = compare(compared, entries, files_dir(args.compare), copy_to)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
