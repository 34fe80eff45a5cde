"""Across-cohort figures and the computed front-page text, on synthetic meta-analysis tables.

Three cohorts in two material strata (two whole blood / leukocytes, one PBMC) with a planted SOCS3 rise;
the meta-analysis and forest tables are made by il6axis.analysis.meta itself, so the figures read the real
layout.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from docutils.core import publish_parts
from PIL import Image
from workflow_runner import PROJECT_ROOT

from il6axis.analysis.meta.fit import forest_table, meta_analyse
from il6axis.analysis.meta.run import run_meta
from il6axis.cohort.contrast import contrast_from_config
from il6axis.errors import InputError
from il6axis.figures import meta as fm
from il6axis.figures import meta_forest as ff
from il6axis.figures import meta_heatmap as fh
from il6axis.figures import meta_orientation as fo
from il6axis.figures.registry import META_FIGURES, META_INPUTS, input_names
from il6axis.report.headlines import headlines_rst
from il6axis.report.provenance import config_yaml, provenance_rst, software_versions
from il6axis.report.rst import rst_escape
from il6axis.report.summary import write_report_summary

COHORTS = {"WB1": ("whole_blood", 60), "LEUK2": ("leukocytes", 100), "PBMC3": ("pbmc", 14)}
GENES = ["IL6", "IL6R", "IL6ST", "JAK1", "JAK2", "TYK2", "STAT3", "SOCS3", "CEBPD", "HP", "MYC", "JAK3"]
TIERS = dict.fromkeys(GENES[:8], "core") | {
    "CEBPD": "STAT3-target",
    "MYC": "STAT3-target",
    "HP": "acute-phase",
}
TIERS["JAK3"] = "control"
SETS = ["IL6_core_signalling", "STAT3_targets", "neutrophil_score"]
PLANTED = {"SOCS3": 1.2, "CEBPD": 0.7, "MYC": -0.6}


def _effects(cohorts: dict[str, tuple[str, int]], features: list[str], seed: int = 7) -> pd.DataFrame:
    """Long per-cohort effects with planted shifts; IL6 untested outside PBMC (as in real blood data)."""
    rng = np.random.default_rng(seed)
    rows = []
    for cohort, (tissue, n) in cohorts.items():
        se = 0.4 if tissue == "pbmc" else 0.12
        for feature in features:
            lfc = PLANTED.get(feature, 0.0) + rng.normal(0, se)
            if feature == "IL6" and tissue != "pbmc":
                lfc = np.nan
            z = lfc / se
            rows.append(
                {
                    "cohort": cohort,
                    "feature": feature,
                    "log2FoldChange": lfc,
                    "lfcSE": se if np.isfinite(lfc) else np.nan,
                    "stat": z,
                    "padj": float(min(1.0, 4 * np.exp(-abs(z)))) if np.isfinite(z) else np.nan,
                    "n": n,
                    "tissue": tissue,
                }
            )
    return pd.DataFrame(rows)


def _write_meta(tmp_path, cohorts, prefix: str, features: list[str]):
    effects = _effects(cohorts, features)
    meta = meta_analyse(effects)
    forest = forest_table(effects, meta)
    meta_path, forest_path = tmp_path / f"{prefix}_meta.tsv", tmp_path / f"{prefix}_forest.tsv"
    meta.to_csv(meta_path, sep="\t", index=False)
    forest.to_csv(forest_path, sep="\t", index=False)
    return effects, meta, meta_path, forest_path


def _panels(effects: pd.DataFrame) -> dict[str, pd.DataFrame]:
    out = {}
    for cohort, part in effects[effects["feature"].isin(GENES)].groupby("cohort", sort=False):
        table = pd.DataFrame(
            {
                "symbol": part["feature"].to_numpy(),
                "tier": part["feature"].map(TIERS).to_numpy(),
                "log2FoldChange": part["log2FoldChange"].to_numpy(),
                "padj": part["padj"].to_numpy(),
                "tested": part["log2FoldChange"].notna().to_numpy(),
                # IL6 absent from WB1's matrix, present but untested in LEUK2.
                "present": ~((part["feature"] == "IL6") & (cohort == "WB1")).to_numpy(),
                "not_tested_reason": np.where(part["log2FoldChange"].isna(), "low counts", ""),
            }
        )
        out[cohort] = table
    return out


def _orientation(cohort: str, flip: float, seed: int) -> tuple[pd.DataFrame, dict]:
    rng = np.random.default_rng(seed)
    markers = {"IL1R2": "up", "ARG1": "up", "S100A12": "up", "HLA-DRA": "down", "CD74": "down"}
    rows = [
        {
            "symbol": s,
            "role": "orientation",
            "expected_in_severe": e,
            "log2FoldChange": flip * (1.0 if e == "up" else -1.0) + rng.normal(0, 0.2),
            "padj": 0.01,
            "tested": s != "ARG1" or cohort != "PBMC3",
        }
        for s, e in markers.items()
    ]
    rows.append(
        {
            "symbol": "IFI27",
            "role": "interferon_report_only",
            "expected_in_severe": "",
            "log2FoldChange": 0.5,
            "padj": 0.5,
            "tested": True,
        }
    )
    status = "consistent" if flip > 0 else "reversed"
    verdict = {
        "cohort": cohort,
        "status": status,
        "n_tested": 5,
        "n_agree": 5 if flip > 0 else 0,
        "n_disagree": 0 if flip > 0 else 5,
        "n_sig_agree": 5 if flip > 0 else 0,
        "n_sig_disagree": 0 if flip > 0 else 5,
        "tissue": COHORTS.get(cohort, ("whole_blood", 0))[0],
        "alpha": 0.05,
        "message": f"{cohort} planted {status} verdict",
    }
    return pd.DataFrame(rows), verdict


def _check_png(path, min_side: int = 400) -> None:
    image = Image.open(path)
    assert min(image.size) > min_side, image.size
    pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 10, pixels.std()


def _check_svg(path) -> None:
    text = path.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and len(text) > 5000


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("meta_tables")
    genes = _write_meta(tmp, COHORTS, "genes", GENES)
    scores = _write_meta(
        tmp, COHORTS, "scores", [f"{s} ({m})" for s in SETS for m in ("mean_z", "score_genes")]
    )
    return {"tmp": tmp, "genes": genes, "scores": scores}


def test_forest_genes_core_first_then_top_effects(tables, tmp_path):
    _, _, meta_path, forest_path = tables["genes"]
    outs = [tmp_path / "forest.png", tmp_path / "forest.svg"]
    genes = ff.forest_genes_from_files(meta_path, forest_path, outs, n_extra=2)
    # The planted non-core shifts are the largest pooled effects in the primary stratum.
    assert genes[:8] == list(ff.CORE_GENES) and set(genes[8:]) == {"CEBPD", "MYC"}
    _check_png(outs[0])
    _check_svg(outs[1])


def test_forest_scores_only_mean_z(tables, tmp_path):
    _, meta, meta_path, forest_path = tables["scores"]
    outs = [tmp_path / "scores.png", tmp_path / "scores.svg"]
    features = ff.forest_scores_from_files(meta_path, forest_path, outs)
    assert sorted(features) == sorted(f"{s} (mean_z)" for s in SETS)
    _check_png(outs[0])
    _check_svg(outs[1])
    # The wrong method fails with a message naming the table.
    with pytest.raises(InputError, match="ssgsea"):
        ff.forest_scores_from_files(meta_path, forest_path, outs, method="ssgsea")


def test_forest_layout_pools_only_where_two_cohorts(tables):
    _, meta, _, forest = (*tables["genes"][:3], pd.read_csv(tables["genes"][3], sep="\t"))
    rows = ff._cohort_rows(forest, None)
    layout = ff._layout(rows, list(pd.unique(meta["stratum"])))
    kinds = [(kind, key) for kind, key, _ in layout]
    # Whole-blood cohorts first, their pooled row, then the lone PBMC cohort (no pooled row), then 'all'.
    assert kinds == [
        ("cohort", "WB1"),
        ("cohort", "LEUK2"),
        ("pooled", ("severe_vs_mild", "whole_blood")),
        ("cohort", "PBMC3"),
        ("pooled", ("severe_vs_mild", "all")),
    ]


def test_forest_marks_a_normalised_scale_cohort_as_not_pooled(tmp_path):
    """A log2(normalised + 1) cohort: own row with a hollow marker and 'not pooled', no effect on pooling."""
    cohorts = {**COHORTS, "TMM4": ("whole_blood", 69)}
    effects = _effects(cohorts, GENES)
    effects["scale"] = np.where(effects["cohort"] == "TMM4", "log2_normalised", "log2_counts")
    paths = {}
    for cohort, part in effects.groupby("cohort"):
        paths[cohort] = (tmp_path / f"{cohort}.tsv", tmp_path / f"{cohort}.json")
        part.rename(columns={"feature": "gene"}).assign(tested=True, pvalue=0.5).to_csv(
            paths[cohort][0], sep="\t", index=False
        )
        paths[cohort][1].write_text(
            json.dumps(
                {
                    "n_per_group": {"mild": 7, "severe": int(part["n"].iloc[0]) - 7},
                    "tissue": cohorts[cohort][0],
                    "scale": part["scale"].iloc[0],
                }
            )
        )
    names = list(cohorts)
    meta = run_meta(
        names,
        [paths[c][0] for c in names],
        [paths[c][1] for c in names],
        GENES,
        0.05,
        ["all", "whole_blood", "pbmc"],
        "iterated",
        [],
        tmp_path / "meta.tsv",
        tmp_path / "forest.tsv",
        tmp_path / "sens.tsv",
    )
    assert "TMM4" not in ",".join(meta["cohorts"].dropna())
    forest = pd.read_csv(tmp_path / "forest.tsv", sep="\t")
    rows = ff._cohort_rows(forest, names)
    assert rows.set_index("cohort")["pooled"].to_dict() == {
        "WB1": True,
        "LEUK2": True,
        "TMM4": False,
        "PBMC3": True,
    }
    labels = [label for _, _, label in ff._layout(rows, list(pd.unique(meta["stratum"])))]
    assert "TMM4 (whole blood, not pooled: other effect scale)" in labels
    fig = ff.forest_grid(
        forest, meta, ["SOCS3", "IL6R"], "log2FC severe vs mild", "four cohorts", cohorts=names
    )
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert any("not pooled" in t for t in legend)
    hollow = [
        c
        for c in fig.axes[0].collections
        if len(c.get_facecolors()) and (c.get_facecolors()[0][:3] == 1).all()
    ]
    assert len(hollow) == 1  # only the TMM4 marker is white-filled
    fig.savefig(tmp_path / "forest_tmm.png", dpi=110)
    _check_png(tmp_path / "forest_tmm.png")


def test_single_cohort_degrades_gracefully(tmp_path):
    _, meta, meta_path, forest_path = _write_meta(tmp_path, {"demo": ("whole_blood", 32)}, "one", GENES)
    assert meta["pooled_log2FoldChange"].isna().all() and (meta["reason"] == "fewer than 2 cohorts").all()
    forest = pd.read_csv(forest_path, sep="\t")
    assert set(forest["row_type"]) == {"cohort"}
    fig = ff.forest_grid(forest, meta, ["SOCS3", "IL6"], "log2FC", "one cohort")
    texts = [fig._suptitle.get_text()] + [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any(ff.NO_POOL_TEXT in t for t in texts)
    assert any(t == "not tested" for t in texts)  # IL6 untested outside PBMC
    outs = [tmp_path / "one.png", tmp_path / "one.svg"]
    ff.forest_genes_from_files(meta_path, forest_path, outs)
    _check_png(outs[0])


def test_lfc_heatmap_marks_significance_and_missing(tables, tmp_path):
    effects = tables["genes"][0]
    panels = _panels(effects)
    fig = fh.lfc_heatmap(panels, alpha=0.05, tissues={c: t for c, (t, _) in COHORTS.items()})
    ax = fig.axes[0]
    stars = sum(t.get_text() == "*" for t in ax.texts)
    expected = int(sum((p["padj"] < 0.05).sum() for p in panels.values()))
    assert stars == expected > 0
    assert sum(t.get_text() == "·" for t in ax.texts) == 1  # IL6 in LEUK2: present, untested
    assert sum(p.get_hatch() == "////" for p in ax.patches) == 1  # IL6 absent from WB1
    # Tier blocks in TIER_ORDER: core genes first, control last.
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[:8] == list(ff.CORE_GENES) and labels[-1] == "JAK3"
    paths = []
    for cohort, table in panels.items():
        paths.append(tmp_path / f"{cohort}.tsv")
        table.to_csv(paths[-1], sep="\t", index=False)
    outs = [tmp_path / "heat.png", tmp_path / "heat.svg"]
    fh.lfc_heatmap_from_files(paths, list(panels), 0.05, outs)
    _check_png(outs[0], min_side=300)
    _check_svg(outs[1])


def test_orientation_summary_colours_by_agreement(tmp_path):
    good, v_good = _orientation("WB1", 1.0, 1)
    bad, v_bad = _orientation("PBMC3", -1.0, 2)
    fig = fo.orientation_summary({"WB1": good, "PBMC3": bad}, {"WB1": v_good, "PBMC3": v_bad}, 0.05)
    top, bottom = fig.axes[0], fig.axes[1]
    assert "CONSISTENT" in top.get_title(loc="left") and "REVERSED" in bottom.get_title(loc="left")
    agree = matplotlib_colour(fo.AGREE_COLOUR[True])
    against = matplotlib_colour(fo.AGREE_COLOUR[False])
    top_colours = {bar.get_facecolor()[:3] for bar in top.patches if bar.get_height() != 0}
    assert agree in top_colours and against not in top_colours
    bottom_colours = {bar.get_facecolor()[:3] for bar in bottom.patches if bar.get_height() != 0}
    assert against in bottom_colours and agree not in bottom_colours
    assert any(t.get_text() == "n/t" for t in bottom.texts)  # ARG1 untested in PBMC3
    paths = {}
    for name, table, verdict in [("WB1", good, v_good), ("PBMC3", bad, v_bad)]:
        table.to_csv(tmp_path / f"{name}.tsv", sep="\t", index=False)
        (tmp_path / f"{name}.json").write_text(json.dumps(verdict))
        paths[name] = (tmp_path / f"{name}.tsv", tmp_path / f"{name}.json")
    outs = [tmp_path / "orient.png", tmp_path / "orient.svg"]
    fo.orientation_summary_from_files(
        [p[0] for p in paths.values()], [p[1] for p in paths.values()], list(paths), 0.05, outs
    )
    _check_png(outs[0])
    _check_svg(outs[1])


def test_every_meta_figure_of_the_registry_is_written(tables, tmp_path):
    """Rule plot_meta's pass: each registry figure from the inputs its entry lists, one PNG + SVG each."""
    assert set(input_names(META_FIGURES)) == set(META_INPUTS) and list(fm.WRITERS) == [
        f.name for f in META_FIGURES
    ]
    cohorts = list(COHORTS)
    panels = _panels(tables["genes"][0])
    inputs = {
        "meta_genes": tables["genes"][2],
        "forest_genes": tables["genes"][3],
        "meta_scores": tables["scores"][2],
        "forest_scores": tables["scores"][3],
        "summaries": [],
        "panels": [],
        "orientation": [],
        "orientation_tables": [],
    }
    for i, cohort in enumerate(cohorts):
        table, verdict = _orientation(cohort, 1.0 if i else -1.0, i)
        files = {
            name: tmp_path / f"{cohort}.{name}" for name in ("summary", "panel", "verdict", "orientation")
        }
        files["summary"].write_text(json.dumps({"cohort": cohort, "n_per_group": {"mild": 5, "severe": 5}}))
        panels[cohort].to_csv(files["panel"], sep="\t", index=False)
        files["verdict"].write_text(json.dumps(verdict))
        table.to_csv(files["orientation"], sep="\t", index=False)
        for name, key in (("summaries", "summary"), ("panels", "panel"), ("orientation", "verdict"),
                          ("orientation_tables", "orientation")):  # fmt: skip
            inputs[name].append(files[key])
    outputs = {f.name: [tmp_path / f"{f.stem}.png", tmp_path / f"{f.stem}.svg"] for f in META_FIGURES}
    fm.write_meta_figures(inputs, outputs, cohorts, 0.05)
    for png, svg in outputs.values():
        _check_png(png, min_side=300)
        _check_svg(svg)
    with pytest.raises(ValueError, match="expected"):
        fm.write_meta_figures(inputs, {"forest_genes": outputs["forest_genes"]}, cohorts, 0.05)


def matplotlib_colour(hex_colour: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(hex_colour)


# ------------------------------------------------------------------------------------------------------
# Front-page text
# ------------------------------------------------------------------------------------------------------


def _summaries() -> dict[str, dict]:
    return {
        c: {
            "cohort": c,
            "design": "~ age + sex + severity",
            "n_per_group": {"mild": n // 2, "severe": n - n // 2},
            "alpha": 0.05,
            "tissue": t,
            "n_tested": 15000,
            "n_up": 300,
            "n_down": 250,
        }
        for c, (t, n) in COHORTS.items()
    }


def _composition() -> dict[str, dict]:
    return {
        "WB1": {"adjusted": True, "reason": "whole blood", "n_composition_driven": 17},
        "LEUK2": {"adjusted": True, "reason": "leukocytes", "n_composition_driven": 1},
        "PBMC3": {"adjusted": False, "reason": "skipped: PBMC lack neutrophils"},
    }


def _rst_html(text: str) -> str:
    """Render with docutils, failing on any warning (halt_level 2), as Snakemake's report would show it."""
    return publish_parts(text, writer="html", settings_overrides={"halt_level": 2, "report_level": 2})["body"]


@pytest.fixture()
def headline_inputs(tables):
    effects, meta_genes = tables["genes"][0], tables["genes"][1]
    meta_scores = tables["scores"][1]
    orientation = {c: _orientation(c, 1.0 if c != "PBMC3" else -1.0, i)[1] for i, c in enumerate(COHORTS)}
    return {
        "meta_genes": meta_genes.copy(),
        "meta_scores": meta_scores.copy(),
        "summaries": _summaries(),
        "orientation": orientation,
        "composition": _composition(),
        "alpha": 0.05,
        "panels": _panels(effects),
    }


def test_headlines_are_computed_from_the_tables(headline_inputs):
    text = headlines_rst(**headline_inputs)
    meta = headline_inputs["meta_genes"].set_index(["stratum", "feature"])
    socs3 = meta.loc[("whole_blood", "SOCS3")]
    expected = (
        f"**SOCS3**: {socs3['pooled_log2FoldChange']:+.2f} [{socs3['ci_low']:+.2f}, {socs3['ci_high']:+.2f}]"
    )
    assert expected in text
    assert "up in 2/2 whole-blood cohorts" in text
    # Cohort table, orientation warning for the reversed cohort, composition counts, caveats.
    assert "``PBMC3``" in text and "``~ age + sex + severity``" in text
    assert ".. warning::" in text and "PBMC3 planted reversed verdict" in text
    assert "17 genes" in text and "not adjusted (skipped: PBMC lack neutrophils)" in text
    assert "No pooled estimate for PBMC: one cohort (``PBMC3``)" in text
    assert "IL6 mRNA entered the test in 1 of 3 cohorts" in text and "absent from the ``WB1`` matrix" in text

    # Change one number in the tables and the text follows (nothing is hard-coded).
    changed = dict(headline_inputs)
    genes = headline_inputs["meta_genes"].copy()
    mask = (genes["stratum"] == "whole_blood") & (genes["feature"] == "SOCS3")
    genes.loc[mask, "pooled_log2FoldChange"] = -3.21
    genes.loc[mask, "sign_summary"] = "down in 2/2 whole-blood cohorts (2 with padj < 0.05)"
    changed["meta_genes"] = genes
    changed["composition"] = {
        **_composition(),
        "WB1": {"adjusted": True, "reason": "", "n_composition_driven": 4},
    }
    new = headlines_rst(**changed)
    assert "**SOCS3**: -3.21 [" in new and "down in 2/2 whole-blood cohorts" in new
    assert "4 genes" in new and "17 genes" not in new and new != text


def test_headlines_single_cohort_say_no_pooled_estimate(tmp_path):
    one = {"demo": ("whole_blood", 32)}
    effects, meta, _, forest_path = _write_meta(tmp_path, one, "one", GENES)
    _, scores, _, _ = _write_meta(tmp_path, one, "s", [f"{s} (mean_z)" for s in SETS])
    summary = {**_summaries()["WB1"], "cohort": "demo"}
    orientation = {"demo": _orientation("demo", 1.0, 3)[1]}
    text = headlines_rst(
        meta,
        scores,
        {"demo": summary},
        orientation,
        {"demo": {"adjusted": False, "reason": "skipped"}},
        0.05,
        panels=_panels(effects),
        forest_genes=pd.read_csv(forest_path, sep="\t"),
    )
    assert "Only one cohort was analysed: no estimate is pooled anywhere (k < 2)." in text
    assert "one cohort (``demo``), its own estimates (nothing to pool)" in text
    socs3 = effects[(effects["feature"] == "SOCS3")].iloc[0]
    low = socs3["log2FoldChange"] - 1.959964 * socs3["lfcSE"]
    assert f"- **SOCS3**: {socs3['log2FoldChange']:+.2f} [{low:+.2f}, " in text
    assert "- **IL6**: not tested" in text  # untested outside PBMC
    assert "All cohorts pooled" not in text  # 'all' adds nothing with one cohort
    assert ".. warning::" not in text
    _rst_html(text)


def test_headlines_and_provenance_are_valid_rst(headline_inputs):
    html = _rst_html(headlines_rst(**headline_inputs))
    assert "<table" in html and "SOCS3" in html and 'class="admonition warning"' in html
    versions = software_versions()
    assert versions.iloc[0]["package"] == "python"
    assert versions.set_index("package").loc["pandas", "version"] == pd.__version__
    manifest = pd.DataFrame(
        {"file": ["results/downloads/GSE1/x.gz"], "url": ["https://example.org/x.gz"], "sha256": ["ab" * 32]}
    )
    config = {"cohorts": {"GSE1": {"tissue": "pbmc"}}, "_report": {"headlines": "x"}, "de": {"alpha": 0.05}}
    text = config_yaml(config)
    assert "_report" not in text and "tissue: pbmc" in text
    html = _rst_html(provenance_rst(versions, text, manifest))
    assert "ab" * 32 in html and "tissue: pbmc" in html and pd.__version__ in html
    assert "No file was downloaded" in _rst_html(provenance_rst(versions, text, None))


def test_rst_escape_neutralises_markup():
    assert _rst_html(f"cohort {rst_escape('GSE1_')} and {rst_escape('*x*')}").count("<em>") == 0


def test_write_report_summary_files(headline_inputs, tables, tmp_path):
    cohorts = list(COHORTS)
    paths: dict[str, list] = {"summary": [], "orientation": [], "composition": []}
    for c in cohorts:
        for key, data in [
            ("summary", headline_inputs["summaries"][c]),
            ("orientation", headline_inputs["orientation"][c]),
            ("composition", headline_inputs["composition"][c]),
        ]:
            paths[key].append(tmp_path / f"{c}.{key}.json")
            paths[key][-1].write_text(json.dumps(data))
    out = {k: tmp_path / "report" / f"{k}.out" for k in ("headlines", "provenance", "versions", "config")}
    text = write_report_summary(
        cohorts,
        tables["genes"][2],
        tables["scores"][2],
        paths["summary"],
        paths["orientation"],
        paths["composition"],
        [],
        0.05,
        {"cohorts": {c: {"tissue": t} for c, (t, _) in COHORTS.items()}},
        out["headlines"],
        out["provenance"],
        out["versions"],
        out["config"],
    )
    assert out["headlines"].read_text() == text
    assert pd.read_csv(out["versions"], sep="\t")["package"].tolist()[:2] == ["python", "snakemake"]
    assert "PBMC3:" in out["config"].read_text()
    _rst_html(out["provenance"].read_text())


def _render_front_page(config: dict) -> str:
    """workflow.rst as Snakemake renders it: Jinja (trim_blocks, lstrip_blocks) with snakemake.config."""
    from jinja2 import Environment

    class Snakemake:
        pass

    Snakemake.config = config
    template = (PROJECT_ROOT / "workflow" / "report" / "workflow.rst").read_text()
    env = Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(snakemake=Snakemake)


@pytest.mark.parametrize("config_name", ["config.yaml", "demo.yaml"])
def test_front_page_renders_cohort_definitions_and_headlines(config_name, headline_inputs):
    config = yaml.safe_load((PROJECT_ROOT / "config" / config_name).read_text())
    config.setdefault("meta", {}).setdefault("alpha", 0.05)
    placeholder = _rst_html(_render_front_page(config))
    assert "appear here once the workflow has run" in placeholder
    headlines = headlines_rst(**headline_inputs)
    provenance = provenance_rst(software_versions(), config_yaml(config), None)
    config["_report"] = {"headlines": headlines, "provenance": provenance}
    html = _rst_html(_render_front_page(config))
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))
    for name, spec in config["cohorts"].items():
        assert f"<strong>{name}</strong>" in html
        severity = spec["severity"]
        severe = ", ".join(map(str, severity["severe"]))
        mild = ", ".join(map(str, severity["mild"]))
        declared = contrast_from_config(spec)
        case, reference = declared.case, declared.reference
        assert (
            f"severity field {severity['field']}; {case} (case): {severe}; {reference} (reference): {mild}"
            in text
        )
        assert f"contrast: {case} vs {reference} ({declared.kind_label})" in text
        design = " + ".join([*spec.get("covariates", {}), "severity"])
        assert f"design ~ {design}" in text
    if "GSE152418" in config["cohorts"]:
        assert "one sample per patient: yes, by patient, keeping the first by draw" in text
        assert "sample filters: disease state in COVID-19" in text  # GSE157103
    else:
        assert "one sample per patient: no (all samples kept)" in text
    assert "SOCS3" in html and "Software" in html and "appear here" not in html


def test_headlines_name_a_normalised_cohort_and_keep_it_out_of_the_strata(headline_inputs):
    """A log2-normalised cohort is explained on the front page and not counted among pooled cohorts."""
    inputs = dict(headline_inputs)
    tmm = {**_summaries()["WB1"], "cohort": "TMM4", "scale": "log2_normalised"}
    inputs["summaries"] = {**inputs["summaries"], "TMM4": tmm}
    inputs["orientation"] = {**inputs["orientation"], "TMM4": _orientation("TMM4", 1.0, 9)[1]}
    text = headlines_rst(**inputs)
    assert "``TMM4``: only normalised values are published" in text
    assert "all scales pooled" in text
    assert "up in 2/2 whole-blood cohorts" in text  # still the two pooled whole-blood cohorts
    _rst_html(text)


def test_a_healthy_reference_cohort_is_reported_and_drawn_as_its_own_contrast(tmp_path):
    """PBMC3 compares acute COVID-19 with healthy donors (its `mild` slot): the front page names its groups,
    warns, never calls the donors mild, and the forest plot keeps it apart from the severity cohorts."""
    from il6axis.cohort.contrast import Contrast

    healthy = Contrast("disease_vs_healthy", "acute COVID-19", "healthy donors")
    effects = _effects(COHORTS, GENES)
    summaries, paths = _summaries(), {}
    summaries["PBMC3"]["contrast"] = healthy.to_dict(summaries["PBMC3"]["n_per_group"])
    for cohort, part in effects.groupby("cohort"):
        paths[cohort] = (tmp_path / f"{cohort}.tsv", tmp_path / f"{cohort}.json")
        part.rename(columns={"feature": "gene"}).assign(tested=True, pvalue=0.5).to_csv(
            paths[cohort][0], sep="\t", index=False
        )
        paths[cohort][1].write_text(json.dumps(summaries[cohort]))
    names = list(COHORTS)
    meta = run_meta(
        names, [paths[c][0] for c in names], [paths[c][1] for c in names], GENES, 0.05,
        ["all", "whole_blood", "pbmc"], "iterated", [], tmp_path / "meta.tsv", tmp_path / "forest.tsv",
        tmp_path / "sens.tsv",
    )  # fmt: skip
    forest = pd.read_csv(tmp_path / "forest.tsv", sep="\t")
    panels = _panels(effects)
    panels["PBMC3"]["detection_severe"] = 0.8
    text = headlines_rst(meta, meta.iloc[0:0], summaries, {}, {}, 0.05, panels=panels, forest_genes=forest)
    _rst_html(text)
    row = text[text.index("   * - ``PBMC3``") :].split("\n\n")[0]
    n = summaries["PBMC3"]["n_per_group"]
    assert f"acute COVID-19 (n={n['severe']}) vs healthy donors (n={n['mild']})" in row and "mild" not in row
    warning = text[text.index(".. warning::") :].split("\n\n")[1]
    assert "``PBMC3``" in warning and "**not a severity contrast**" in warning
    assert "*Contrast disease vs healthy* (``PBMC3``; not pooled with cohorts of other kinds" in text
    assert "*Contrast severe vs mild* (``WB1``, ``LEUK2``; pooled with each other only)" in text
    assert "up in 2/2 whole-blood cohorts" in text  # the severe-vs-mild pooled lines are unchanged
    assert "detected in 80% of acute COVID-19 samples of ``PBMC3``" in text  # IL6, tested in PBMC only

    rows = ff._cohort_rows(forest, names)
    contrasts = {"PBMC3": healthy}
    meta_keys = list(zip(meta["contrast"], meta["stratum"], strict=True))
    layout = [(kind, key) for kind, key, _ in ff._layout(rows, meta_keys, contrasts)]
    assert layout == [
        ("header", "severe_vs_mild"),
        ("cohort", "WB1"),
        ("cohort", "LEUK2"),
        ("pooled", ("severe_vs_mild", "whole_blood")),
        ("header", "disease_vs_healthy"),
        ("cohort", "PBMC3"),  # alone in its kind: no diamond, and no cross-material 'all' diamond
    ]
    labels = [label for _, _, label in ff._layout(rows, meta_keys, contrasts)]
    assert "PBMC3 (PBMC): acute COVID-19 vs healthy donors" in labels
    assert "disease vs healthy (not a severity contrast)" in labels
    fig = ff.forest_grid(forest, meta, ["SOCS3"], "x", "t", cohorts=names, contrasts=contrasts)
    assert "never pooled together" in fig._suptitle.get_text()
