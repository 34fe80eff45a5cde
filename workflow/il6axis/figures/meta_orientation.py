"""The orientation check across cohorts: per cohort, the severity markers' log2 fold changes coloured
by whether they go the expected way, with the cohort's verdict in its panel title (il6axis.analysis
orientation check)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from il6axis.cohort.contrast import DEFAULT_KIND, KIND_LABEL, Contrast
from il6axis.errors import InputError
from il6axis.figures.common import read_tsv, require_columns
from il6axis.figures.meta_heatmap import tested_rows
from il6axis.figures.style import save
from il6axis.jsonio import read_json
from il6axis.vocabulary import TISSUE_LABEL

log = logging.getLogger(__name__)

VERDICT_COLOUR = {"consistent": "#1b7837", "reversed": "#b2182b", "inconclusive": "#b35806"}
AGREE_COLOUR = {True: "#1b7837", False: "#d95f02"}
ISG_COLOUR = "#8c8c8c"
ORIENTATION_COLUMNS = ("symbol", "role", "expected_in_severe", "log2FoldChange", "padj", "tested")
_ARROW = {"up": "↑", "down": "↓"}


def _marker_order(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Markers shown: orientation markers expected up, then down, then interferon genes (report only)."""
    rows = pd.concat([t[["symbol", "role", "expected_in_severe"]] for t in tables.values()])
    rows = rows[rows["role"].isin(["orientation", "interferon_report_only"])].drop_duplicates("symbol")
    rows["expected_in_severe"] = rows["expected_in_severe"].fillna("").astype(str).str.lower()
    key = {"up": 0, "down": 1}
    rows["_k"] = [
        key.get(e, 2) if r == "orientation" else 3
        for r, e in zip(rows["role"], rows["expected_in_severe"], strict=True)
    ]
    rows["_pos"] = range(len(rows))
    return rows.sort_values(["_k", "_pos"]).drop(columns=["_k", "_pos"]).reset_index(drop=True)


def _verdict_title(cohort: str, verdict: Mapping[str, Any], contrast: Contrast | None = None) -> str:
    status = str(verdict.get("status", "unknown"))
    tissue = TISSUE_LABEL.get(str(verdict.get("tissue", "")), str(verdict.get("tissue", "")))
    if contrast is not None:
        tissue = f"{tissue}; {contrast.label}"
    n_t, n_a, n_d = verdict.get("n_tested", 0), verdict.get("n_agree", 0), verdict.get("n_disagree", 0)
    alpha = float(verdict.get("alpha", 0.05))
    return (
        f"{cohort} ({tissue}): {status.upper()}. {n_a}/{n_t} tested markers agree "
        f"({verdict.get('n_sig_agree', 0)} with padj < {alpha:g}), {n_d} disagree "
        f"({verdict.get('n_sig_disagree', 0)} significant)"
    )


def orientation_summary(
    tables: Mapping[str, pd.DataFrame],
    verdicts: Mapping[str, Mapping[str, Any]],
    alpha: float,
    contrasts: Mapping[str, Contrast] | None = None,
) -> plt.Figure:
    """Per cohort, the orientation markers' log2FC as bars: green = expected direction, orange = against.

    The expected direction is that of the case group against the reference (severe vs mild; acute COVID-19
    vs healthy donors goes the same way); each panel title names the cohort's declared contrast.

    Solid bars have padj < alpha; pale bars do not. Interferon genes are shown in grey for information
    only (never used for the verdict). The cohort's verdict (consistent / reversed / inconclusive) and
    its counts are in the panel title, coloured by verdict.
    """
    if not tables:
        raise InputError("orientation_summary: no orientation tables given.")
    for cohort, table in tables.items():
        require_columns(table, ORIENTATION_COLUMNS, f"orientation.tsv of cohort {cohort}")
    markers = _marker_order(tables)
    x = np.arange(len(markers))
    cohorts = list(tables)
    fig, axes = plt.subplots(
        len(cohorts),
        1,
        figsize=(max(8.0, 0.42 * len(markers) + 2.0), 2.3 * len(cohorts) + 1.3),
        sharex=True,
        squeeze=False,
    )
    for ax, cohort in zip(axes[:, 0], cohorts, strict=True):
        table = tables[cohort].drop_duplicates("symbol").set_index("symbol")
        tested = tested_rows(table.reset_index()).to_numpy()
        tested_of = dict(zip(table.index, tested, strict=True))
        for xi, rec in zip(x, markers.itertuples(), strict=True):
            if rec.symbol not in table.index or not tested_of[rec.symbol]:
                ax.text(xi, 0, "n/t", ha="center", va="bottom", fontsize=6.5, color="0.45", rotation=90)
                continue
            lfc = float(table.at[rec.symbol, "log2FoldChange"])
            if not np.isfinite(lfc):
                ax.text(xi, 0, "n/t", ha="center", va="bottom", fontsize=6.5, color="0.45", rotation=90)
                continue
            q = table.at[rec.symbol, "padj"]
            sig = bool(np.isfinite(q) and q < alpha)
            if rec.role == "orientation":
                expected = 1 if rec.expected_in_severe == "up" else -1
                colour = AGREE_COLOUR[bool(np.sign(lfc) == expected)]
            else:
                colour = ISG_COLOUR
            ax.bar(xi, lfc, width=0.72, color=colour, alpha=1.0 if sig else 0.38, edgecolor=colour, lw=0.8)
        ax.axhline(0, color="0.3", lw=0.7)
        n_orient = int((markers["role"] == "orientation").sum())
        if n_orient < len(markers):
            ax.axvspan(n_orient - 0.5, len(markers) - 0.5, color="0.95", zorder=0)
        verdict = verdicts.get(cohort, {})
        ax.set_title(
            _verdict_title(cohort, verdict, (contrasts or {}).get(cohort)),
            fontsize=9,
            loc="left",
            color=VERDICT_COLOUR.get(str(verdict.get("status")), "black"),
        )
        ax.set_ylabel("log2FC", fontsize=8)
        ax.tick_params(axis="y", labelsize=7.5)
        ymin, ymax = ax.get_ylim()
        span = max(ymax - ymin, 1.0)
        ax.set_ylim(min(ymin, -0.25 * span), max(ymax, 0.25 * span))
        for spine in ("top", "right"):
            ax.spines[spine].set_visible(False)
    bottom = axes[-1, 0]
    bottom.set_xticks(x)
    bottom.set_xticklabels(
        [
            f"{s} {_ARROW.get(e, '')}" if r == "orientation" else f"{s} (IFN)"
            for s, r, e in zip(markers["symbol"], markers["role"], markers["expected_in_severe"], strict=True)
        ],
        rotation=90,
        fontsize=8,
    )
    bottom.set_xlim(-0.6, len(markers) - 0.4)
    handles = [
        Patch(color=AGREE_COLOUR[True], label="in the expected direction (arrow)"),
        Patch(color=AGREE_COLOUR[False], label="against the expected direction"),
        Patch(color=ISG_COLOUR, label="interferon gene: reported, never used"),
        Patch(facecolor="0.6", alpha=0.38, label=f"pale: padj >= {alpha:g}; n/t: not tested"),
    ]
    kinds = {c.kind for c in (contrasts or {}).values()} or {DEFAULT_KIND}
    what = (
        KIND_LABEL[next(iter(kinds))]
        if len(kinds) == 1
        else "case vs reference of each cohort (panel titles)"
    )
    fig.suptitle(f"Orientation check: severity markers, {what}", fontsize=10.5)
    fig.tight_layout(rect=(0, 0.05, 1, 0.98))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    return fig


def orientation_summary_from_files(
    table_paths: Sequence[str | Path],
    verdict_paths: Sequence[str | Path],
    cohorts: Sequence[str],
    alpha: float,
    out_paths: Sequence[str | Path],
    contrasts: Mapping[str, Contrast] | None = None,
) -> None:
    """Orientation summary from per-cohort ``orientation.tsv`` / ``.json`` files (in ``cohorts`` order)."""
    if not (len(table_paths) == len(verdict_paths) == len(cohorts)):
        raise InputError(
            f"{len(table_paths)} orientation tables and {len(verdict_paths)} verdicts for {len(cohorts)} "
            f"cohorts; give one of each per cohort."
        )
    tables = {c: read_tsv(p) for c, p in zip(cohorts, table_paths, strict=True)}
    verdicts = {
        c: read_json(p, what="orientation verdict", rule="orientation_check")
        for c, p in zip(cohorts, verdict_paths, strict=True)
    }
    save(orientation_summary(tables, verdicts, alpha, contrasts), out_paths)
    log.info("orientation summary of %d cohorts written to %s", len(tables), list(map(str, out_paths)))
