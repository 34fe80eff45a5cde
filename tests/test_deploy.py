"""Release conventions: one version owner, and deployment with snakedeploy from a local clone at a tag.

The deployment test follows the README's "Deploying with snakedeploy" steps offline. It builds a git
repository from the project's files, tags it with the current version, and commits a later change on
top. Then it clones the tag, runs ``snakedeploy deploy-workflow``, points the module at the clone, and runs
the deployed workflow on the demo config. The project's own git history is never touched. The repository
is built from the working tree (tracked files plus untracked files that are not ignored), so the test
checks the files as they are: in CI that is a fresh clone of main, and locally it includes uncommitted work.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.version import Version
from workflow_runner import PROJECT_ROOT

from il6axis import __version__

GIT = ["git", "-c", "user.name=il6axis tests", "-c", "user.email=tests@invalid", "-c", "commit.gpgsign=false"]
GIT += ["-c", "tag.gpgsign=false", "-c", "init.defaultBranch=main", "-c", "advice.detachedHead=false"]
# snakedeploy 0.17.1 writes this module path for a local source. Snakemake resolves it relative to the
# deployed workflow/Snakefile, so the README's second step replaces it with the clone's Snakefile.
SNAKEDEPLOY_LOCAL_MODULE_PATH = '"workflow/Snakefile"'


def _git(*args: str, cwd: Path) -> str:
    proc = subprocess.run([*GIT, *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def _project_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files that exist (a deleted tracked file is left out)."""
    listed = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=PROJECT_ROOT)
    return sorted({name for name in listed.split("\0") if name and (PROJECT_ROOT / name).is_file()})


def _origin_with_release(root: Path, tag: str) -> Path:
    """A repository holding the project's files, with ``tag`` on one commit and a later change on top."""
    origin = root / "origin"
    for name in _project_files():
        (origin / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / name, origin / name)
    _git("init", "-q", cwd=origin)
    _git("add", "-A", cwd=origin)
    _git("commit", "-q", "-m", "release", cwd=origin)
    _git("tag", tag, cwd=origin)
    # Work after the release: a deployment of the tag must not pick it up.
    init = origin / "workflow" / "il6axis" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{__version__}"', '"999.0.0.dev0"'))
    _git("commit", "-q", "-am", "work after the release", cwd=origin)
    return origin


def _snakemake(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_version_has_one_owner():
    """pyproject.toml reads the version from il6axis.__version__ (under workflow/) and has none of its own."""
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    setuptools = pyproject["tool"]["setuptools"]
    assert setuptools["dynamic"]["version"] == {"attr": "il6axis.__version__"}
    assert setuptools["packages"]["find"]["where"] == ["workflow"]
    assert Version(__version__)  # a valid PEP 440 version


def test_changelog_covers_the_version():
    """A development version has an Unreleased section; a released one has its own heading."""
    changelog = (PROJECT_ROOT / "CHANGELOG.md").read_text()
    version = Version(__version__)
    if version.is_devrelease or version.is_prerelease:
        assert "## [Unreleased]" in changelog
    else:
        assert re.search(rf"(?m)^## \[{re.escape(__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog)


def test_front_page_shows_the_version():
    """workflow.rst renders config["_report"]["version"], which common.smk sets from il6axis."""
    from jinja2 import Environment

    class Snakemake:
        config = {
            "cohorts": {},
            "de": {"alpha": 0.05},
            "meta": {"alpha": 0.05},
            "_report": {"version": "7.7.7"},
        }

    template = (PROJECT_ROOT / "workflow" / "report" / "workflow.rst").read_text()
    text = Environment(trim_blocks=True, lstrip_blocks=True).from_string(template).render(snakemake=Snakemake)
    assert "Workflow version: **7.7.7**" in text
    common = (PROJECT_ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert re.search(r'"version": WORKFLOW_VERSION', common)


@pytest.mark.e2e
def test_snakedeploy_from_a_local_clone_at_a_tag(tmp_path):
    tag = f"v{__version__}"
    origin = _origin_with_release(tmp_path, tag)
    # Step 1 of the README: a clone of the release tag (here from a file:// URL instead of GitHub).
    clone = tmp_path / "il6axis"
    _git("clone", "-q", "--branch", tag, f"file://{origin}", str(clone), cwd=tmp_path)
    assert f'__version__ = "{__version__}"' in (clone / "workflow/il6axis/__init__.py").read_text()

    # Step 2: snakedeploy copies config/, profiles/ and LICENSE and writes a module Snakefile.
    dest = tmp_path / "my-analysis"
    snakedeploy = Path(sys.executable).with_name("snakedeploy")
    proc = subprocess.run(
        [str(snakedeploy), "deploy-workflow", str(clone), str(dest), "--tag", tag],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for rel in ["config/config.yaml", "config/demo.yaml", "config/README.md", "profiles/slurm/config.yaml"]:
        assert (dest / rel).is_file(), rel
    assert (dest / "LICENSE").read_text() == (PROJECT_ROOT / "LICENSE").read_text()
    deployed = dest / "workflow" / "Snakefile"
    text = deployed.read_text()
    assert "use rule * from il6axis" in text
    # If this fails, snakedeploy changed how it writes a local module: update the README's step 2.
    assert text.count(SNAKEDEPLOY_LOCAL_MODULE_PATH) == 1, text
    deployed.write_text(text.replace(SNAKEDEPLOY_LOCAL_MODULE_PATH, f'"{clone}/workflow/Snakefile"'))

    # Step 3: configure. The deployed Snakefile always loads config/config.yaml: the demo goes there.
    shutil.copy(dest / "config" / "demo.yaml", dest / "config" / "config.yaml")
    dry = _snakemake("--dry-run", cwd=dest)
    assert dry.returncode == 0, dry.stderr[-4000:]
    jobs = dry.stdout + dry.stderr
    for rule in ["simulate_demo_cohort", "build_cohort", "deseq2", "plot_cohort", "report_summary"]:
        assert re.search(rf"(?m)^{rule}\s+1$", jobs), rule

    # Step 4: run (here one cheap target: the demo's DE, which reads the clone's gene-set resources).
    run = _snakemake("results/de/demo/summary.json", cwd=dest)
    assert run.returncode == 0, run.stderr[-4000:]
    summary = json.loads((dest / "results/de/demo/summary.json").read_text())
    assert summary["workflow_version"] == __version__  # the tagged release, not the later commit
    assert summary["n_per_group"] == {"mild": 16, "severe": 16}
    panel_genes = (clone / "resources/genesets/il6_core.tsv").read_text().splitlines()[1:]
    panel_rows = (dest / "results/de/demo/il6_panel.tsv").read_text().splitlines()[1:]
    assert len(panel_rows) == len(panel_genes)  # the panel came from the clone's resources
    assert not (clone / "results").exists()  # outputs land in the deployment, not in the clone
