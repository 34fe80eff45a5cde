"""End to end: the demo workflow, its Snakemake HTML report, and a look at that report in headless Chromium.

The report must be one self-contained file (every figure embedded as a data URI, no external host), it
must reference every figure the run produced, and a real browser must render a non-blank front page and
figure view. Snakemake's report is a single-page React app without URL routes for results, so the figure
view is opened by a copy of the report that calls the app's own ``app.setView`` once loaded.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from workflow_runner import PROJECT_ROOT, run_snakemake

from il6axis.errors import InputError
from il6axis.report.summary import SUMMARY_JSON, ReportSettings, json_by_cohort, tables_by_cohort

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CONFIG = PROJECT_ROOT / "config" / "demo.yaml"
REPORT = "results/report.html"
FIGURE_SHOWN = "forest_panel_genes.png"
# Snakemake embeds files as data:<mime>;charset=...;filename=...;base64,<data>
PNG_URI = re.compile(r"data:image/png;[^,\"']*base64,")
# Tags that would make the browser fetch something: src / href on script, img, link, iframe, source.
EXTERNAL_REF = re.compile(
    r"<(?:script|img|link|iframe|source|embed)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", re.I
)


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("report_run")
    proc = run_snakemake(workdir, CONFIG)
    assert proc.returncode == 0, proc.stderr[-4000:]
    proc = run_snakemake(workdir, CONFIG, "--report", REPORT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir


def _chromium(*args: str, user_dir: Path, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with everything that would reach the network or a GPU switched off."""
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={user_dir}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{CHROMIUM} is missing but CI=true: install Debian's chromium for the report test")
        pytest.skip(f"{CHROMIUM} not installed")
    return CHROMIUM


def _screenshot(html: Path, png: Path, user_dir: Path) -> np.ndarray:
    proc = _chromium(
        "--window-size=1400,2000",
        # Let the React app and its timers run before the picture is taken.
        "--virtual-time-budget=15000",
        f"--screenshot={png}",
        html.as_uri(),
        user_dir=user_dir,
    )
    assert png.is_file(), proc.stderr[-3000:]
    return np.asarray(Image.open(png).convert("L"), dtype=float)


def _dump_dom(html: Path, user_dir: Path) -> str:
    proc = _chromium("--virtual-time-budget=15000", "--dump-dom", html.as_uri(), user_dir=user_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _not_blank(pixels: np.ndarray) -> None:
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000, pixels.shape
    assert pixels.std() > 20, pixels.std()  # text, tables and figure, not an empty page
    assert len(np.unique(pixels)) > 50


def _figure_view(report: Path, out: Path, name: str) -> Path:
    """Copy of the report that opens the result ``name`` in the app's image view once loaded."""
    script = (
        "<script>window.addEventListener('load', function () { setTimeout(function () {"
        f" var path = Object.keys(results).find(function (k) {{ return k.endsWith('{name}'); }});"
        " app.setView({content: 'img', contentPath: results[path].data_uri, resultPath: path,"
        " navbarMode: 'resultinfo'}); }, 200); });</script>"
    )
    # The last </body> closes the page; earlier ones sit inside the embedded JavaScript libraries.
    head, tail = report.read_text(encoding="utf-8").rsplit("</body>", 1)
    out.write_text(head + script + "</body>" + tail, encoding="utf-8")
    return out


def test_report_is_self_contained_and_lists_every_figure(report_run):
    report = report_run / REPORT
    html = report.read_text(encoding="utf-8")
    assert len(html) > 100_000
    assert not EXTERNAL_REF.search(html), EXTERNAL_REF.search(html).group(0)
    plots = (report_run / "results" / "plots").rglob("*.png")
    figures = sorted(p.relative_to(report_run).as_posix() for p in plots)
    across = [f for f in figures if f.startswith("results/plots/meta/")]
    assert len(across) == 4, figures
    for figure in figures:
        assert figure in html, f"{figure} is not in the report"
    assert len(PNG_URI.findall(html)) >= len(figures)


def test_front_page_shows_computed_headlines(report_run):
    headlines = (report_run / "results/report/headlines.rst").read_text()
    # The single demo cohort cannot be pooled: the front page says so and shows the cohort's own estimate,
    # the very number in the DE table.
    assert "Only one cohort was analysed" in headlines
    de = pd.read_csv(report_run / "results/de/demo/severe_vs_mild.tsv", sep="\t").set_index("gene")
    socs3 = next(line for line in headlines.splitlines() if line.startswith("- **SOCS3**"))
    value = f"{de.loc['SOCS3', 'log2FoldChange']:+.2f}"
    assert socs3.startswith(f"- **SOCS3**: {value} [")
    html = (report_run / REPORT).read_text(encoding="utf-8")
    assert f"<strong>SOCS3</strong>: {value} [" in html  # rendered into the report's front page
    for section in ("The question", "Cohorts and their definitions", "Headline findings", "Provenance"):
        assert section in html
    assert "severity field" in html and "appear here once the workflow has run" not in html


def test_report_renders_in_headless_chromium(report_run, chromium, tmp_path):
    report = report_run / REPORT
    shots = report_run / "screenshots"  # kept beside the run for a person to look at
    shots.mkdir(exist_ok=True)
    front = _screenshot(report, shots / "report_front.png", tmp_path / "profile1")
    _not_blank(front)
    dom = _dump_dom(report, tmp_path / "profile2")
    # After the app ran, the front page is rendered as elements (in the page source it is only a JSON string
    # with escaped quotes, so these unescaped attributes prove the rendering).
    assert 'id="headline-findings"' in dom and 'id="cohorts-and-their-definitions"' in dom
    srcs = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", dom)
    assert all(s.startswith("data:") for s in srcs), [s[:60] for s in srcs if not s.startswith("data:")]

    view = _figure_view(report, tmp_path / "report_figure.html", FIGURE_SHOWN)
    figure = _screenshot(view, shots / "report_forest.png", tmp_path / "profile3")
    _not_blank(figure)
    dom = _dump_dom(view, tmp_path / "profile4")
    images = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", dom)
    assert any(PNG_URI.match(s) and len(s) > 10_000 for s in images), [s[:40] for s in images]
    assert all(s.startswith("data:") for s in images)
    frames = re.findall(r"<iframe\b[^>]*\bsrc=\"([^\"]*)\"", dom)
    assert all(s.startswith("data:") for s in frames)
    # The figure view differs from the front page (the image replaced the description and rule graph).
    assert front.shape != figure.shape or np.abs(front - figure).mean() > 5


def test_report_inputs_name_the_bad_file_and_the_rule_that_rewrites_it(tmp_path):
    good, cut, listed = tmp_path / "A.json", tmp_path / "B.json", tmp_path / "C.json"
    good.write_text('{"tissue": "pbmc"}')
    cut.write_text('{"tissue": ')  # a truncated write
    listed.write_text("[1, 2]")
    assert json_by_cohort(["A"], [good], *SUMMARY_JSON) == {"A": {"tissue": "pbmc"}}
    with pytest.raises(
        InputError, match=r"B\.json: DE summary \(summary\.json\) is not valid JSON.*rule deseq2"
    ):
        json_by_cohort(["A", "B"], [good, cut], *SUMMARY_JSON)
    with pytest.raises(InputError, match=r"C\.json: .* must hold a JSON object, found list"):
        json_by_cohort(["C"], [listed], *SUMMARY_JSON)
    with pytest.raises(InputError, match=r"missing\.json: .* not found; rerun rule deseq2"):
        json_by_cohort(["D"], [tmp_path / "missing.json"], *SUMMARY_JSON)
    with pytest.raises(InputError, match="1 panel files for 2 cohorts; give one per cohort"):
        tables_by_cohort(["A", "B"], [good], "panel")
    assert tables_by_cohort(["A", "B"], [], "panel") is None


def test_report_settings_from_the_rule_params():
    class Params:  # the attributes rule report_summary declares
        cohorts = ["GSE1", "demo"]
        alpha = 0.1
        config = {"meta": {"alpha": 0.1}}

    settings = ReportSettings.from_params(Params)
    assert settings == ReportSettings(("GSE1", "demo"), 0.1, {"meta": {"alpha": 0.1}})


# --- Reads QC section (cohorts counted from reads) -------------------------------------------------------


def _reads_library(path, samples, rates, fragments, low_library=()) -> None:
    """library_sizes.tsv of a reads cohort as rule cohort_qc writes it (analysis.qc.with_reads_qc)."""
    from il6axis.analysis.qc import ReadsQcInput, reads_flag_text

    reads = ReadsQcInput(path, 0.5, 5_000_000)
    table = pd.DataFrame(
        {
            "severity": ["severe", "mild"] * (len(samples) // 2),
            "total_millions": np.asarray(fragments) * 0.9 / 1e6,
            "detected_genes": 15000,
            "genes_in_matrix": 20000,
            "low_library": [s in low_library for s in samples],
            "reads_sample": samples,
            "reads_before_filtering": np.asarray(fragments) * 2,
            "reads_after_filtering": np.asarray(fragments) * 2 * 0.98,
            "fragments_processed": fragments,
            "mapping_rate": rates,
            "libtype_detected": "ISR",
            "strandedness_detected": "reverse",
            "min_mapping_rate": 0.5,
            "min_read_pairs": 5_000_000,
            "min_library_fraction": 0.3,
        },
        index=pd.Index(samples, name="sample_id"),
    )
    table["low_mapping_rate"] = table["mapping_rate"] < 0.5
    table["low_read_pairs"] = table["fragments_processed"] < 5_000_000
    table["reads_flags"] = [reads_flag_text(r, reads) for _, r in table.iterrows()]
    table.to_csv(path, sep="\t", na_rep="NA")


def _render(text: str) -> str:
    """Render with docutils, failing on any warning, with the link targets Snakemake's report defines."""
    from docutils.core import publish_parts

    targets = "\n\n.. _multiqc_report.html: #m\n.. _a_multiqc.html: #a\n.. _1. Quality control: #qc\n"
    settings = {"halt_level": 2, "report_level": 2}
    return publish_parts(text + targets, writer="html", settings_overrides=settings)["body"]


def test_reads_qc_section_lists_flags_and_links_multiqc(tmp_path):
    from il6axis.report.reads import read_reads_qc, reads_cohorts, reads_qc_section

    samples = ["S1", "S2", "S3", "S4", "NA", "S6"]  # "NA" is a sample name, not a missing value
    rates = [0.91, 0.88, 0.31, 0.93, 0.90, 0.89]
    fragments = [20e6, 22e6, 21e6, 3.1e6, 19e6, 1e6]
    _reads_library(tmp_path / "lib.tsv", samples, rates, fragments, low_library=["S6"])
    config = {
        "cohorts": {
            "rc": {"counts": {"source": "reads", "reads": {"strandedness": "reverse"}}},
            "geo": {"counts": {"source": "geo_ncbi"}},
        }
    }
    assert reads_cohorts(["geo", "rc"], config) == ["rc"]
    reads = read_reads_qc(["rc"], [tmp_path / "lib.tsv"], ["results/reads/rc/multiqc_report.html"], config)
    text = "\n".join(reads_qc_section(reads))
    html = _render(text)
    assert text.startswith("Reads QC\n") and 'href="#m"' in html  # the MultiQC file link resolves
    assert "- ``rc``: ``S3``: mapping rate 31% < 50%" in text
    assert "- ``rc``: ``S4``: 3.1 M fragments < 5 M" in text
    assert "- ``rc``: ``S6``: 1 M fragments < 5 M; library 0.9 M counts < 0.3 × cohort median" in text
    assert "``NA``" not in text  # a sample that is fine is not listed
    row = text.split("* - ``rc``")[1]
    assert "6 (6 in the contrast)" in row and "89.5% (31.0–93.0)" in row and "98.0%" in row
    assert "``ISR`` (6); stated: reverse" in row and row.split("\n")[6].strip() == "- 3"
    # Two reads cohorts whose MultiQC files share a name: link to the category instead.
    _reads_library(tmp_path / "lib2.tsv", ["T1", "T2"], [0.9, 0.9], [9e6, 9e6])
    config["cohorts"]["rc2"] = config["cohorts"]["rc"]
    paths = ["results/reads/rc/multiqc_report.html", "results/reads/rc2/multiqc_report.html"]
    two = read_reads_qc(["rc", "rc2"], [tmp_path / "lib.tsv", tmp_path / "lib2.tsv"], paths, config)
    text = "\n".join(reads_qc_section(two))
    assert text.count("`1. Quality control`_") == 2 and "No sample flagged in ``rc2``" in text
    _render(text)
    assert reads_qc_section(None) == [] and reads_qc_section({}) == []
    with pytest.raises(InputError, match="lack column"):
        pd.DataFrame({"sample_id": ["x"]}).to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
        read_reads_qc(["rc"], [tmp_path / "bad.tsv"], ["m.html"], config)
