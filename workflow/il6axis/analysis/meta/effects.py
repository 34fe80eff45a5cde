"""The meta-analysis input: one long table, one row per (cohort, feature), read from each cohort's DE
or score table and its DE summary.

A row carries the cohort's unshrunk log2 fold change, its SE, Wald statistic and padj, the cohort's
sample count ``n`` (mild + severe), its ``tissue`` (hence its material stratum), the ``scale`` of the
effect and the cohort's declared ``contrast`` kind. A NaN effect or SE (gene not tested in that cohort)
means the cohort does not contribute to that feature.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from il6axis.cohort.contrast import DEFAULT_KIND, KINDS, contrast_from_summary
from il6axis.de.contract import SCALE_COUNTS
from il6axis.errors import InputError
from il6axis.jsonio import read_json
from il6axis.vocabulary import MILD, SEVERE, stratum_of

REQUIRED_COLUMNS = ("cohort", "feature", "log2FoldChange", "lfcSE", "stat", "padj", "n", "tissue")
DEFAULT_SCALE = SCALE_COUNTS  # log2 fold changes of counts (the NB model)


def validated_effects(effects: pd.DataFrame) -> pd.DataFrame:
    """Copy of the long input with typed columns, a default scale and the stratum of each row."""
    missing = [c for c in REQUIRED_COLUMNS if c not in effects.columns]
    if missing:
        raise InputError(
            f"per-cohort effects table lacks column(s) {missing}; it needs {list(REQUIRED_COLUMNS)} "
            f"(build it with read_cohort_effects)."
        )
    df = effects.copy()
    df["cohort"] = df["cohort"].astype(str)
    df["feature"] = df["feature"].astype(str)
    with_comma = sorted(set(df.loc[df["cohort"].str.contains(","), "cohort"]))
    if with_comma:
        raise InputError(f"cohort names {with_comma} contain a comma; rename the cohorts in the config.")
    for col in ("log2FoldChange", "lfcSE", "stat", "padj", "n"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    dup = df.duplicated(["cohort", "feature"])
    if dup.any():
        first = df.loc[dup, ["cohort", "feature"]].iloc[0].tolist()
        raise InputError(
            f"effects table has {int(dup.sum())} duplicate (cohort, feature) rows, e.g. {first}."
        )
    n_per = df.groupby("cohort")["n"].agg(["min", "max"])
    bad_n = n_per.index[~((n_per["min"] > 0) & (n_per["min"] == n_per["max"]))].tolist()
    if bad_n:
        raise InputError(
            f"cohort(s) {bad_n}: column `n` must be one positive sample count per cohort (mild + severe "
            f"from summary.json n_per_group)."
        )
    df["stratum"] = df["tissue"].map(stratum_of)
    mixed = df.groupby("cohort")["stratum"].nunique()
    if (mixed > 1).any():
        raise InputError(f"cohort(s) {mixed.index[mixed > 1].tolist()} have more than one `tissue` value.")
    if "scale" not in df.columns:
        df["scale"] = DEFAULT_SCALE
    df["scale"] = df["scale"].fillna(DEFAULT_SCALE).astype(str).replace("", DEFAULT_SCALE)
    if "contrast" not in df.columns:
        df["contrast"] = DEFAULT_KIND
    df["contrast"] = df["contrast"].fillna(DEFAULT_KIND).astype(str).replace("", DEFAULT_KIND)
    unknown = sorted(set(df["contrast"]) - set(KINDS))
    if unknown:
        raise InputError(f"contrast kind(s) {unknown} are not among {list(KINDS)}; rerun the DE rule.")
    mixed_kind = df.groupby("cohort")["contrast"].nunique()
    if (mixed_kind > 1).any():
        bad = mixed_kind.index[mixed_kind > 1].tolist()
        raise InputError(f"cohort(s) {bad} have more than one contrast kind; one per cohort is needed.")
    return df


def contributes(df: pd.DataFrame) -> pd.Series:
    """Rows that enter the pooling: finite effect and a finite, positive SE."""
    se = df["lfcSE"]
    return np.isfinite(df["log2FoldChange"]) & np.isfinite(se) & (se > 0)


def _load_summary(cohort: str, summary: str | Path | Mapping[str, Any]) -> tuple[int, str, str | None, str]:
    """(n in the contrast, tissue, scale or None, contrast kind) from a summary.json path or a loaded dict.

    A summary without a ``contrast`` object (written before contrasts were declared) is severe vs mild."""
    where = f"summary for cohort {cohort!r}"
    if not isinstance(summary, Mapping):
        where = str(summary)
        summary = read_json(summary, what="DE summary", rule="deseq2")
    groups = summary.get("n_per_group")
    if not isinstance(groups, Mapping) or MILD not in groups or SEVERE not in groups:
        raise InputError(
            f"{where}: `n_per_group` must be a mapping with `{MILD}` and `{SEVERE}` sample counts; "
            f"rerun the DE rule to rewrite summary.json."
        )
    tissue = summary.get("tissue")
    if not tissue:
        raise InputError(f"{where}: `tissue` is missing or empty; set `tissue` for the cohort in the config.")
    stratum_of(tissue)  # fail here, naming the file, rather than later
    kind = contrast_from_summary(summary, source=where).kind
    return int(groups[MILD]) + int(groups[SEVERE]), str(tissue), summary.get("scale"), kind


def _read_table(cohort: str, path: str | Path) -> pd.DataFrame:
    """One cohort's DE / score table, with untested and Cook's-outlier rows blanked out."""
    table = pd.read_csv(path, sep="\t")
    key = "feature" if "feature" in table.columns else "gene"
    need = [key, "log2FoldChange", "lfcSE", "stat", "padj"]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {missing}; a DE/score table for the meta-analysis needs a `gene` or "
            f"`feature` column and log2FoldChange, lfcSE, stat, padj."
        )
    table = table.rename(columns={key: "feature"})
    table["feature"] = table["feature"].astype(str)
    if table["feature"].duplicated().any():
        dup = table.loc[table["feature"].duplicated(), "feature"].iloc[0]
        raise InputError(f"{path}: feature {dup!r} appears more than once; one row per gene/score is needed.")
    blank = pd.Series(False, index=table.index)
    if "tested" in table.columns:
        blank |= ~table["tested"].astype(str).str.lower().isin(["true", "1"])
    if "pvalue" in table.columns:
        # DESeq2 sets p to NA for Cook's-distance outliers but keeps the outlier-driven estimate.
        blank |= table["pvalue"].isna() & table["log2FoldChange"].notna()
    table.loc[blank, ["log2FoldChange", "lfcSE", "stat", "padj"]] = np.nan
    table["cohort"] = cohort
    keep = ["cohort", "feature", "log2FoldChange", "lfcSE", "stat", "padj"]
    return table[keep + (["scale"] if "scale" in table.columns else [])]


def read_cohort_effects(
    de_tables: Mapping[str, str | Path],
    summaries: Mapping[str, str | Path | Mapping[str, Any]],
    features: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Long (cohort, feature) effects table from per-cohort DE TSVs and their summary.json files.

    ``n`` is mild + severe from ``n_per_group``; ``tissue``, the ``contrast`` kind and an optional
    ``scale`` come from the summary (a ``scale`` column in the table wins; default "log2_counts"). Rows
    not tested in a cohort (``tested`` false, or a Cook's outlier with p = NA) keep NaN effects so that
    the cohort does not contribute. With ``features`` (e.g. the IL-6 panel) only those are kept, and a
    feature absent from a cohort's table appears as a NaN row, so every cohort lists every requested
    feature.
    """
    if set(de_tables) != set(summaries):
        raise InputError(
            f"cohorts with a DE table {sorted(de_tables)} and with a summary {sorted(summaries)} differ; "
            f"give both for every cohort."
        )
    parts = []
    for cohort, path in de_tables.items():
        n, tissue, scale, kind = _load_summary(cohort, summaries[cohort])
        table = _read_table(cohort, path)
        if features is not None:
            wanted = pd.DataFrame({"feature": [str(f) for f in pd.unique(pd.Series(list(features)))]})
            table = wanted.merge(table, on="feature", how="left").assign(cohort=cohort)
        table["n"] = n
        table["tissue"] = tissue
        if "scale" not in table.columns:
            table["scale"] = scale or DEFAULT_SCALE
        table["scale"] = table["scale"].fillna(scale or DEFAULT_SCALE)
        table["contrast"] = kind
        parts.append(table)
    columns = [*REQUIRED_COLUMNS, "scale", "contrast"]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]
