"""The single-cell path through Snakemake on the real COMBAT subset (2 donors per group: code exercise)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from workflow_runner import PROJECT_ROOT, run_snakemake

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def combat_run(shared_data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("combat_run")
    config = yaml.safe_load((PROJECT_ROOT / "config" / "singlecell_combat.yaml").read_text())
    block = config["singlecell_cohorts"]["COMBAT_subset"]["single_cell"]
    block["h5ad"] = str(shared_data / "COMBAT_scRNA" / "COMBAT_scDAPP_subset_6donors.h5ad")
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    proc = run_snakemake(workdir, configfile)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir / "results"


def test_donors_qc_and_pseudobulk(combat_run):
    out = combat_run / "singlecell/COMBAT_subset"
    donors = pd.read_csv(out / "donors.tsv", sep="\t", index_col=0)
    assert donors["severity"].value_counts().to_dict() == {"excluded": 2, "severe": 2, "mild": 2}
    qc = pd.read_csv(out / "qc_summary.tsv", sep="\t")
    assert len(qc) > 0
    samples = pd.read_csv(out / "pseudobulk_samples.tsv", sep="\t")
    assert len(samples) == 6 and samples["n_cells"].sum() > 4500  # 4,591 cells, a few removed by QC


def test_celltype_de_runs_and_says_underpowered(combat_run):
    out = combat_run / "singlecell/COMBAT_subset"
    analysed = pd.read_csv(out / "cell_types_analysed.tsv", sep="\t")
    assert analysed["cell_type"].tolist() == ["all_cells"]
    assert "underpowered" in analysed.loc[0, "power_note"]
    summary = json.loads((out / "de/all_cells/summary.json").read_text())
    assert summary["n_per_group"] == {"mild": 2, "severe": 2} and "underpowered" in summary["power_note"]
    panel = pd.read_csv(out / "de/all_cells/il6_panel.tsv", sep="\t").set_index("symbol")
    assert panel.loc[["IL6", "IL6R", "IL6ST", "JAK1", "STAT3"], "present"].all()
    plots = combat_run / "plots/COMBAT_subset/singlecell"
    for name in ("panel_dotplot.png", "panel_matrixplot.png", "pathway_scores.png", "volcano_all_cells.png"):
        assert (plots / name).stat().st_size > 10_000, name
