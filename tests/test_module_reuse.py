"""The workflow as a Snakemake module: own config, prefix, `use rule *`, one rule overridden."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml
from workflow_runner import PROJECT_ROOT

pytestmark = pytest.mark.e2e
MODULE_DIR = PROJECT_ROOT / "tests" / "module_workflow"


@pytest.fixture(scope="module")
def module_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("module_run")
    shutil.copy(MODULE_DIR / "Snakefile", workdir / "Snakefile")
    config = yaml.safe_load((MODULE_DIR / "config.yaml").read_text())
    # The importing workflow lives elsewhere: point it at this checkout's workflow by absolute path.
    config["il6axis_snakefile"] = str(PROJECT_ROOT / "workflow" / "Snakefile")
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir, proc


def test_outputs_land_under_the_prefix(module_run):
    workdir, _ = module_run
    for rel in [
        "cyto/results/demo/counts.tsv.gz",
        "cyto/results/cohorts/demo.h5ad",
        "cyto/results/de/demo/severe_vs_mild.tsv",
        "cyto/results/de/demo/il6_panel.tsv",
        "cyto/results/plots/demo/volcano.png",
        "cyto/results/logs/deseq2/demo.log",
    ]:
        assert (workdir / rel).is_file(), rel
    assert not (workdir / "results").exists()


def test_rules_are_namespaced_and_override_applies(module_run):
    workdir, proc = module_run
    log = proc.stdout + proc.stderr
    for rule in ["cyto_simulate_demo_cohort", "cyto_build_cohort", "cyto_deseq2", "cyto_plot_cohort"]:
        assert f"rule {rule}:" in log, rule
    summary = json.loads((workdir / "cyto/results/de/demo/summary.json").read_text())
    assert summary["alpha"] == 0.01  # overridden param
    assert summary["n_cpus"] == 1  # overridden threads
    assert summary["n_per_group"] == {"mild": 6, "severe": 6}  # the importing workflow's config
