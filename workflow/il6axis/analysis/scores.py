"""Gene-set level analysis per cohort: per-sample pathway scores, their severity model, a competitive test.

Two complementary questions are asked of each gene set (``dict`` set name -> gene symbols):

- **Self-contained** (:func:`score_model`): is the set's per-sample score higher in severe than in mild
  patients, adjusting for the cohort's covariates? Scores are the mean z-score of the set's genes
  (:func:`mean_z_scores`) or scanpy's ``score_genes`` (set mean minus an expression-matched random
  control set, :func:`score_genes_scores`), both computed on severity-blind VST expression. The severity
  coefficient and its SE go into the same cross-cohort meta-analysis as single genes.
- **Competitive** (:func:`competitive_test`): are the set's genes more changed than the other genes?
  Preranked GSEA (gseapy) on the per-gene Wald statistic. Gene-label permutation ignores inter-gene
  correlation, so with co-regulated set genes (the norm for a pathway) its p-values are anti-conservative:
  it is a complement to the self-contained test, never the headline.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf

from il6axis.analysis import prerank
from il6axis.de.contract import benjamini_hochberg
from il6axis.errors import InputError
from il6axis.vocabulary import MILD, SEVERE

log = logging.getLogger(__name__)

MODEL_COLUMNS = [
    "set",
    "method",
    "effect",
    "se",
    "ci_low",
    "ci_high",
    "t",
    "p",
    "padj",
    "n_mild",
    "n_severe",
    "df_resid",
    "n_dropped",
    "note",
]
GSEA_COLUMNS = ["set", "n_genes", "n_genes_in_ranking", "es", "nes", "pval", "fdr", "leading_edge", "note"]


def _unique(genes: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(str(g) for g in genes))


def _coverage_row(
    name: str, genes: list[str], present: list[str], constant: list[str], min_genes: int
) -> dict:
    missing = [g for g in genes if g not in present and g not in constant]
    scored = len(present) >= min_genes
    reason = "" if scored else f"only {len(present)} usable gene(s) present, fewer than min_genes={min_genes}"
    return {
        "set": name,
        "n_genes": len(genes),
        "n_present": len(present),
        "present": ";".join(present),
        "missing": ";".join(missing),
        "constant": ";".join(constant),
        "scored": scored,
        "reason": reason,
    }


def _split_genes(vst: pd.DataFrame, genes: list[str], sd: pd.Series) -> tuple[list[str], list[str]]:
    """Set genes in the matrix with some variation, and those in it but constant (all-zero genes)."""
    in_matrix = [g for g in genes if g in vst.columns]
    present = [g for g in in_matrix if sd[g] > 0]
    constant = [g for g in in_matrix if not sd[g] > 0]
    return present, constant


def mean_z_scores(
    vst: pd.DataFrame, gene_sets: Mapping[str, Sequence[str]], min_genes: int = 3
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-sample mean z-score of each set (samples x sets) and a coverage table (one row per set).

    Each gene is standardised across the samples given (pass the contrast samples of one cohort), so every
    gene weighs the same whatever its expression level; the score is the mean over the set genes present.
    Constant genes (e.g. all-zero counts) carry no information and are listed under ``constant``. A set
    with fewer than ``min_genes`` usable genes gets an all-NaN column and its reason in ``coverage``.
    """
    sd = vst.std(axis=0, ddof=1)
    z = (vst - vst.mean(axis=0)) / sd.where(sd > 0)
    usable, coverage = _usable_genes(vst, gene_sets, sd, min_genes)
    scores = pd.DataFrame(index=vst.index)
    for name, present in usable.items():
        scores[name] = z[present].mean(axis=1) if present else np.nan
    return scores, coverage


def _usable_genes(
    vst: pd.DataFrame, gene_sets: Mapping[str, Sequence[str]], sd: pd.Series, min_genes: int
) -> tuple[dict[str, list[str]], pd.DataFrame]:
    """Per set, the present non-constant genes to score (empty when the set is not scored), and coverage."""
    usable, coverage = {}, []
    for name, genes in gene_sets.items():
        genes = _unique(genes)
        present, constant = _split_genes(vst, genes, sd)
        row = _coverage_row(name, genes, present, constant, min_genes)
        coverage.append(row)
        usable[name] = list(present) if row["scored"] else []
    return usable, pd.DataFrame(coverage)


def score_genes_scores(
    vst: pd.DataFrame,
    gene_sets: Mapping[str, Sequence[str]],
    ctrl_size: int = 50,
    n_bins: int = 25,
    random_state: int = 0,
    min_genes: int = 3,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-sample ``scanpy.tl.score_genes`` scores (samples x sets) and the coverage table.

    scanpy 1.11's method (Seurat's): the mean of the set's genes minus the mean of control genes drawn,
    ``ctrl_size`` per expression bin of the set's genes, from the genes of the same bin (genes ranked by
    their mean over the samples and cut into bins of ``round(n_genes / (n_bins - 1))``). With
    ``ctrl_as_ref=False`` (scanpy 1.11 defaults to True, 2.0 to False) set genes are removed from each bin
    before the controls are drawn, so the reference never contains set genes. scanpy reseeds NumPy's global
    RNG with ``random_state`` on every call; here each set draws from its own ``RandomState(random_state)``,
    the same draws, so scores are deterministic for a given matrix and seed.

    The steps are scanpy 1.11.5's, with the same pandas/NumPy calls in the same order (bit-identical scores;
    tests/test_expression_memory.py compares with scanpy), but scanpy is not imported: its import alone
    (numba, llvmlite) costs ~50 MB in the expression_scores step, a sixth of that step's peak memory.
    """
    if vst.shape[1] < 2 * n_bins:
        raise InputError(
            f"score_genes needs many more genes than n_bins={n_bins} to build expression-matched controls; "
            f"the matrix has {vst.shape[1]} genes. Pass the genome-wide VST matrix."
        )
    sd = vst.std(axis=0, ddof=1)
    x = vst.to_numpy(dtype=np.float64)
    var_names = pd.Index(vst.columns.astype(str))
    bins = _expression_bins(x, var_names, n_bins)
    usable, coverage = _usable_genes(vst, gene_sets, sd, min_genes)
    scores = pd.DataFrame(index=vst.index)
    for name, present in usable.items():
        if not present:
            scores[name] = np.nan
            continue
        scores[name] = _score_genes(x, var_names, bins, present, ctrl_size, random_state, name)
    return scores, coverage


def _expression_bins(x: np.ndarray, var_names: pd.Index, n_bins: int) -> pd.Series:
    """Expression bin of every gene with a finite mean (score_genes' ``obs_cut``)."""
    means = pd.Series(np.nanmean(x, axis=0), index=var_names.astype("string"))
    means = means[np.isfinite(means)]
    per_bin = int(np.round(len(means) / (n_bins - 1)))
    return means.rank(method="min") // per_bin


def _score_genes(
    x: np.ndarray,
    var_names: pd.Index,
    bins: pd.Series,
    genes: list[str],
    ctrl_size: int,
    random_state: int,
    name: str,
) -> np.ndarray:
    """One set's score_genes score per sample: set mean minus the mean of its expression-matched controls."""
    rng = np.random.RandomState(random_state)
    set_genes = pd.Index(genes).intersection(var_names)
    in_set = bins.index.isin(set_genes)
    controls = pd.Index([], dtype="string")
    for level in np.unique(bins.loc[set_genes]):
        pool = bins[(bins == level) & ~in_set].index
        if len(pool) == 0:
            log.warning("score_genes %s: no control genes in expression bin %s", name, level)
        if ctrl_size < len(pool):
            pool = pool.to_series().sample(ctrl_size, random_state=rng).index
        controls = controls.union(pool)
    if len(controls) == 0:
        raise InputError(
            f"score_genes {name}: no control genes in any expression bin of the set's genes; the VST matrix "
            f"has too few genes outside the set ({len(var_names)} in all)."
        )
    set_mean = np.nanmean(x[:, var_names.get_indexer(set_genes)], axis=1, dtype="float64")
    control_mean = np.nanmean(x[:, var_names.get_indexer(controls)], axis=1, dtype="float64")
    return np.asarray(set_mean - control_mean).ravel()


def _term(name: str) -> str:
    """A formula term that survives any column name (spaces, brackets, quotes): patsy ``Q('...')``."""
    return f"Q({name!r})"


def _model_frame(obs: pd.DataFrame, covariates: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """Contrast samples with covariates typed for the formula; numeric as is, everything else as C()."""
    missing = [c for c in covariates if c not in obs.columns]
    if missing:
        raise InputError(
            f"score_model: covariate(s) {missing} are not columns of obs (available: {list(obs.columns)}); "
            f"use the names in adata.uns['covariates']."
        )
    if "severity" not in obs.columns:
        raise InputError("score_model: obs has no 'severity' column")
    severity = obs["severity"].astype(str)
    frame = pd.DataFrame(index=obs.index)
    terms = []
    for name in covariates:
        col = obs[name]
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        frame[name] = col.astype(float) if numeric else col.astype("object").where(col.notna())
        terms.append(_term(name) if numeric else f"C({_term(name)})")
    frame["_severity"] = severity
    return frame[severity.isin([MILD, SEVERE])], terms


def _empty_row(name: str, method: str, note: str, n_dropped: int = 0) -> dict:
    row = dict.fromkeys(MODEL_COLUMNS, np.nan)
    row.update(
        {"set": name, "method": method, "n_mild": 0, "n_severe": 0, "n_dropped": n_dropped, "note": note}
    )
    return row


def _fit_one(
    data: pd.DataFrame,
    covariates: Sequence[str],
    terms: list[str],
    name: str,
    method: str,
    alpha: float,
    n_dropped: int,
) -> dict:
    """OLS of one set's score; the severity row of the fit, or NA statistics with the reason."""
    counts = data["_severity"].value_counts()
    n_mild, n_severe = int(counts.get(MILD, 0)), int(counts.get(SEVERE, 0))
    if min(n_mild, n_severe) < 2:
        return {
            **_empty_row(name, method, "fewer than 2 samples in a group", n_dropped),
            "n_mild": n_mild,
            "n_severe": n_severe,
        }
    single = [
        c for c, t in zip(covariates, terms, strict=True) if t.startswith("C(") and data[c].nunique() < 2
    ]
    if single:
        raise InputError(
            f"score_model: categorical covariate(s) {single} have a single level among the samples of set "
            f"{name!r}; remove them from the cohort's covariates."
        )
    formula = " ~ ".join(["_score", " + ".join([*terms, f'C(_severity, Treatment("{MILD}"))'])])
    fit = smf.ols(formula, data=data).fit()
    coef = [c for c in fit.params.index if c.startswith("C(_severity") and c.endswith(f"[T.{SEVERE}]")]
    if len(coef) != 1:
        raise RuntimeError(f"severity coefficient not found in {list(fit.params.index)}")
    c = coef[0]
    if fit.df_resid < 1:
        return {
            **_empty_row(name, method, "no residual degrees of freedom", n_dropped),
            "n_mild": n_mild,
            "n_severe": n_severe,
            "df_resid": float(fit.df_resid),
        }
    ci = fit.conf_int(alpha=alpha).loc[c]
    return {
        "set": name,
        "method": method,
        "effect": float(fit.params[c]),
        "se": float(fit.bse[c]),
        "ci_low": float(ci.iloc[0]),
        "ci_high": float(ci.iloc[1]),
        "t": float(fit.tvalues[c]),
        "p": float(fit.pvalues[c]),
        "padj": np.nan,
        "n_mild": n_mild,
        "n_severe": n_severe,
        "df_resid": float(fit.df_resid),
        "n_dropped": n_dropped,
        "note": "",
    }


def score_model(
    scores: pd.DataFrame,
    obs: pd.DataFrame,
    covariates: Sequence[str],
    alpha: float = 0.05,
    method: str = "mean_z",
) -> pd.DataFrame:
    """Per set, OLS ``score ~ covariates + C(severity, Treatment("mild"))``; one row per set.

    ``effect`` is the severe-minus-mild difference in score (same scale as the score), with its SE, the
    ``1 - alpha`` t-interval, t, p and ``padj`` (BH across the sets of this call, i.e. within ``method``).
    The reference level is fixed to ``mild`` in the formula, so the order of severity categories in
    ``obs`` cannot flip the sign. Samples with a NaN score or covariate are dropped and counted
    (``n_dropped``); ``excluded`` samples are ignored.
    """
    frame, terms = _model_frame(obs, covariates)
    if not scores.index.isin(frame.index).any():
        raise InputError(
            "score_model: no sample of the scores table is a mild/severe sample of obs; pass scores and obs "
            "of the same cohort (index = sample IDs)."
        )
    rows = []
    for name in scores.columns:
        data = frame.copy()
        data["_score"] = scores[name].reindex(frame.index).astype(float)
        complete = data.notna().all(axis=1)
        n_dropped = int((~complete).sum())
        data = data[complete]
        if data.empty:
            rows.append(_empty_row(str(name), method, "no score (see coverage)", n_dropped))
            continue
        cols = [*covariates, "_severity", "_score"]
        rows.append(_fit_one(data[cols], covariates, terms, str(name), method, alpha, n_dropped))
    out = pd.DataFrame(rows, columns=MODEL_COLUMNS)
    out["padj"] = benjamini_hochberg(out["p"])
    return out


def _ranking(de_table: pd.DataFrame) -> pd.Series:
    """Wald stat of tested genes, sorted decreasing; ties broken by gene name so the order is fixed."""
    needed = {"gene", "stat"}
    if not needed <= set(de_table.columns):
        raise InputError(
            f"DE table lacks column(s) {sorted(needed - set(de_table.columns))}; expected the "
            f"severe_vs_mild.tsv layout (gene, ..., stat, ..., tested)."
        )
    table = de_table
    if "tested" in table.columns:
        # "True"/"False" may arrive as text when the table was read without type inference.
        table = table[table["tested"].astype(str).str.strip().str.lower().isin(["true", "1", "1.0"])]
    table = table[np.isfinite(table["stat"].astype(float))]
    if table["gene"].duplicated().any():
        dups = list(table.loc[table["gene"].duplicated(), "gene"][:5])
        raise InputError(f"DE table has duplicated genes {dups}; one row per gene is required.")
    order = np.lexsort((table["gene"].astype(str).to_numpy(), -table["stat"].astype(float).to_numpy()))
    ranked = table.iloc[order]
    return pd.Series(ranked["stat"].astype(float).to_numpy(), index=ranked["gene"].astype(str).to_numpy())


def competitive_test(
    de_table: pd.DataFrame,
    gene_sets: Mapping[str, Sequence[str]],
    permutations: int = 1000,
    seed: int = 0,
    min_size: int = 3,
    max_size: int = 500,
    threads: int = 1,
) -> pd.DataFrame:
    """Preranked GSEA (gseapy ``prerank``, gene-label permutations) on the Wald ``stat`` of tested genes.

    Competitive: asks whether a set's genes sit higher (positive NES: up in severe) or lower in the ranking
    than random gene sets of the same size. Gene permutation treats genes as independent, so correlated
    set genes make p-values and FDR anti-conservative; read it beside the self-contained
    :func:`score_model` test. The FDR is computed across the sets of this call. Sets with fewer than
    ``min_size`` or more than ``max_size`` ranked genes keep a row with NA statistics and a note.
    Deterministic for a fixed ``seed``: the ranking is fully ordered before gseapy sees it and gseapy is
    told not to re-sort it (its "duplicated values ... order will be arbitrary" warning does not apply).
    ``pval``/``fdr`` of 0 mean below ``1 / permutations``; ``leading_edge`` is ";"-joined in ranking order.

    The permutations are drawn by :func:`il6axis.analysis.prerank.prerank`, which gives gseapy 1.3.1's
    results bit
    for bit while holding a block of permutations at a time (gseapy holds all of them: ~0.8 GB for 1,000
    permutations of 17,600 genes); gseapy itself runs (with ``threads``) only in the cases that port leaves
    to it.
    """
    ranking = _ranking(de_table)
    position = {g: i for i, g in enumerate(ranking.index)}
    rows: dict[str, dict] = {}
    run_sets: dict[str, list[str]] = {}
    for name, genes in gene_sets.items():
        genes = _unique(genes)
        hits = [g for g in genes if g in position]
        row = dict.fromkeys(GSEA_COLUMNS, np.nan)
        row.update(
            {
                "set": name,
                "n_genes": len(genes),
                "n_genes_in_ranking": len(hits),
                "leading_edge": "",
                "note": "",
            }
        )
        if len(hits) < min_size or len(hits) > max_size:
            row["note"] = f"{len(hits)} genes in the ranking, outside [{min_size}, {max_size}]"
        else:
            run_sets[name] = hits
        rows[name] = row
    if run_sets:
        found = prerank.prerank(ranking, run_sets, permutations, seed)
        if found is None:
            found = _gseapy_prerank(ranking, run_sets, permutations, seed, min_size, max_size, threads)
        for name in run_sets:
            if name not in found:
                rows[name]["note"] = "dropped by gseapy"
                continue
            r = found[name]
            lead = [g for g in r.lead_genes.split(";") if g]
            rows[name].update(
                {
                    "es": r.es,
                    "nes": r.nes,
                    "pval": r.pval,
                    "fdr": r.fdr,
                    "leading_edge": ";".join(sorted(lead, key=lambda g: position.get(g, len(position)))),
                }
            )
    return pd.DataFrame([rows[n] for n in gene_sets], columns=GSEA_COLUMNS)


def _gseapy_prerank(
    ranking: pd.Series,
    run_sets: Mapping[str, list[str]],
    permutations: int,
    seed: int,
    min_size: int,
    max_size: int,
    threads: int,
) -> dict[str, prerank.SetResult]:
    """gseapy ``prerank`` itself, for what :func:`il6axis.analysis.prerank.prerank` leaves to it."""
    import gseapy

    log.info("competitive_test: gseapy prerank (a case il6axis.analysis.prerank leaves to gseapy)")
    result = gseapy.prerank(
        rnk=ranking.rename("stat").rename_axis("gene").reset_index(),
        gene_sets=dict(run_sets),
        outdir=None,
        min_size=min_size,
        max_size=max_size,
        permutation_num=permutations,
        ascending=None,  # keep our tie-broken order
        threads=threads,
        seed=seed,
        no_plot=True,
        verbose=False,
    )
    res = result.res2d.set_index("Term")
    return {
        name: prerank.SetResult(
            es=float(r["ES"]),
            nes=float(r["NES"]),
            pval=float(r["NOM p-val"]),
            fdr=float(r["FDR q-val"]),
            lead_genes=str(r["Lead_genes"]),
        )
        for name, r in ((name, res.loc[name]) for name in run_sets if name in res.index)
    }
