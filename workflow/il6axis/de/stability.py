"""Leave-one-sample-out stability of the IL-6 panel calls: robust, borderline, near miss (pre-specified).

A call at ``padj < alpha`` can rest on one or two samples: a headline whose padj sits just under the
threshold, or whose effect comes from one extreme sample, flips with a different sample-set choice. The rule
below was fixed (README.md, "Statistics in brief"; config/README.md, ``de.stability``) before any result was
read, and it is deterministic: no random draws, the same numbers on every run.

**Refits.** Each panel gene that the full fit tested is refitted ``n`` times, each time without one of the
``n`` contrast samples, with the full fit's design:

* NB route (counts): the GLM's coefficients by IRLS from the full-fit coefficients, with the full fit's size
  factors and final dispersions held fixed (after Cook's replacement where DESeq2 replaced counts), and the
  Wald test of the engine that made the full fit (R's: means floored at ``min_mu`` and R's ridge; stock
  pydeseq2's otherwise). Holding size factors and dispersions fixed is the case-deletion view behind
  DESeq2's own Cook's distances: what one sample does to the fitted effect, the nuisance parameters aside.
  Both are genome-wide or prior-dominated quantities (a median over thousands of genes; a MAP estimate
  shrunk to the trend) that one sample of 20+ barely moves, while re-estimating them would take the whole
  dispersion pipeline per refit. Holding the dispersion fixed is also the conservative side for the case
  the rule is built for: a sample that inflates a gene's dispersion *and* carries its effect leaves the
  inflated dispersion behind when removed, so the refit's p-value can only look worse.
* Linear route (normalised values): OLS on the remaining samples and the moderated t with the full fit's
  variance prior (``d0`` and each gene's prior variance ``s0^2`` from the trend), i.e. only the gene's own
  residual variance and its ``d - 1`` residual df change, as in limma's ``eBayes`` with a fixed prior.

A design column that only the left-out sample had (a covariate level of one sample) is all zero in its
refit; the ridge (NB) or dropping the column (linear) keeps the severity estimate, which that column never
informed. A refit that leaves a group empty, or whose IRLS does not converge, has no estimate and counts as
a refit in which the call does not hold.

**Rule.** With ``p*`` the full fit's Benjamini-Hochberg rejection cut-off (the largest raw p-value among the
genes with ``padj < alpha``: every gene with ``p <= p*`` is rejected, so a refit p-value at or below it would
still be called, the other genes' p-values held as they were):

* ``robust``: called in the full fit (``padj < alpha``), and in every refit the log2 fold change keeps its
  sign and the p-value stays ``<= p*``;
* ``borderline``: called, but at least one refit flips the sign or lifts p above ``p*`` (the sample whose
  removal weakens the call most is named);
* ``near_miss``: tested, not called, ``padj < near_miss_factor * alpha`` (default 2: padj < 0.1);
* ``not_called``: tested, not called and no near miss (padj NA included: independently filtered);
* ``not_tested`` (not fitted, a Cook's outlier, or absent) and ``not_assessed`` (``de.stability.enabled``
  false).

The backends hand over what the refits need (``nb.nb_refit_inputs``, ``linear.linear_refit_inputs``;
the containers are the contract's); the refits reuse the backends' own arithmetic (``nb_kernels``'
Wald test, ``linear``'s OLS), and the module needs no pydeseq2.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from il6axis.de.contract import LinearRefitInputs, NbRefitInputs, StabilitySettings
from il6axis.de.linear import fit_linear_models
from il6axis.de.nb_kernels import wald_block
from il6axis.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "BORDERLINE",
    "CLASSES",
    "NEAR_MISS",
    "NOT_ASSESSED",
    "NOT_CALLED",
    "NOT_TESTED",
    "ROBUST",
    "RefitResult",
    "classify",
    "leave_one_out",
    "panel_genes",
    "panel_stability",
    "rejection_cutoff",
    "run_panel_stability",
    "self_check",
]

ROBUST = "robust"
BORDERLINE = "borderline"
NEAR_MISS = "near_miss"
NOT_CALLED = "not_called"
NOT_TESTED = "not_tested"
NOT_ASSESSED = "not_assessed"
CLASSES = (ROBUST, BORDERLINE, NEAR_MISS, NOT_CALLED, NOT_TESTED, NOT_ASSESSED)
# IRLS of the refits: DESeq2's convergence rule (relative deviance change) and divergence guard.
IRLS_TOL = 1e-8
IRLS_MAXIT = 100
MAX_BETA = 30.0
# Refits per block, so that a block's (refits x genes x samples) arrays stay near this many cells.
BLOCK_CELLS = 2_000_000
# A refit with every sample must give back the full fit; a larger log2FC gap is logged as a warning.
# pydeseq2's IRLS stops on a relative deviance change of 1e-8, which leaves its LFCs up to ~1e-4 log2 short
# of the optimum the refits iterate to (6e-5 on the tests' cohorts, 5e-5 on GSE152418).
SELF_CHECK_TOL = 1e-3

COLUMNS = [
    "gene",
    "tested",
    "log2FoldChange",
    "pvalue",
    "padj",
    "called",
    "p_threshold",
    "n_refits",
    "n_refits_holding",
    "refit_log2FoldChange_min",
    "refit_log2FoldChange_max",
    "refit_pvalue_min",
    "refit_pvalue_max",
    "influential_sample",
    "influential_log2FoldChange",
    "influential_pvalue",
    "stability",
    "note",
    "method",
]


@dataclass
class RefitResult:
    """One row per left-out sample, one column per gene (log2 scale)."""

    samples: list[str]  # the left-out sample of each refit
    genes: list[str]
    log2FoldChange: np.ndarray  # noqa: N815 (the DE table's column name)
    stat: np.ndarray
    pvalue: np.ndarray
    seconds: float = 0.0


# -------------------------------------------------------------------------------------------- refits


def leave_one_out(inputs: NbRefitInputs | LinearRefitInputs) -> RefitResult:
    """Every leave-one-sample-out refit of the inputs' genes (rows: left-out sample; columns: genes)."""
    start = time.perf_counter()
    n = len(inputs.samples)
    drop = ~np.eye(n, dtype=bool)  # row r keeps every sample but r
    if isinstance(inputs, NbRefitInputs):
        lfc, stat, p = _nb_refits(inputs, drop)
    else:
        lfc, stat, p = _linear_refits(inputs, drop)
    result = RefitResult(list(inputs.samples), list(inputs.genes), lfc, stat, p)
    result.seconds = time.perf_counter() - start
    return result


def self_check(inputs: NbRefitInputs | LinearRefitInputs, full_lfc: np.ndarray) -> float:
    """Largest |log2FC| gap between a refit on every sample and the full fit (should be ~0)."""
    keep_all = np.ones((1, len(inputs.samples)), dtype=bool)
    fit = (
        _nb_refits(inputs, keep_all)
        if isinstance(inputs, NbRefitInputs)
        else _linear_refits(inputs, keep_all)
    )
    gap = np.abs(fit[0][0] - np.asarray(full_lfc, dtype=float))
    return float(np.nanmax(gap)) if np.isfinite(gap).any() else 0.0


def _nb_refits(inp: NbRefitInputs, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IRLS and Wald test of every (refit, gene) at once; ``keep`` is refits x samples (True = in)."""
    n_refits, n = keep.shape
    n_genes = len(inp.genes)
    per_block = max(1, BLOCK_CELLS // max(1, n_genes * n))
    out = [np.full((n_refits, n_genes), np.nan) for _ in range(3)]
    for lo in range(0, n_refits, per_block):
        hi = min(lo + per_block, n_refits)
        for arr, part in zip(out, _nb_block(inp, keep[lo:hi]), strict=True):
            arr[lo:hi] = part
    return out[0], out[1], out[2]


def _nb_block(inp: NbRefitInputs, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = inp.design
    p = x.shape[1]
    mask = keep.astype(float)[:, None, :]  # refits x 1 x samples
    sf = inp.size_factors
    log_sf = np.log(sf)
    beta = np.broadcast_to(inp.beta, (keep.shape[0], *inp.beta.shape)).copy()  # refits x genes x p
    ridge = inp.irls_ridge * np.eye(p)
    active = np.ones(beta.shape[:2], dtype=bool)
    failed = np.zeros(beta.shape[:2], dtype=bool)
    dev = np.full(beta.shape[:2], np.inf)
    # A refit that leaves a group empty has no estimate: its column of the design is all zero.
    group_col = x[:, inp.coef_index]
    empty = ~(keep & (group_col > 0)).any(axis=1) | ~(keep & (group_col == 0)).any(axis=1)
    failed[empty] = True
    active[empty] = False
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        for _ in range(IRLS_MAXIT):
            if not active.any():
                break
            r, g = np.nonzero(active)
            b = beta[r, g]  # m x p
            mu = np.maximum(sf * np.exp(b @ x.T), inp.min_mu)  # m x samples
            a = inp.dispersions[g][:, None]
            w = mu / (1.0 + mu * a) * keep[r]
            z = np.log(mu) - log_sf + (inp.counts.T[g] - mu) / mu
            gram = np.einsum("si,ms,sj->mij", x, w, x) + ridge
            rhs = np.einsum("si,ms->mi", x, w * z)
            new = np.linalg.solve(gram, rhs[:, :, None])[:, :, 0]
            diverged = ~np.isfinite(new).all(axis=1) | (np.abs(new) > MAX_BETA).any(axis=1)
            beta[r, g] = np.where(diverged[:, None], b, new)
            mu_new = np.maximum(sf * np.exp(new @ x.T), inp.min_mu)
            y_g = inp.counts.T[g]
            # The mean-dependent part of the NB deviance over the kept samples (DESeq2's convergence test).
            d = 2 * (((y_g + 1 / a) * np.log(1 / a + mu_new) - y_g * np.log(mu_new)) * keep[r]).sum(axis=1)
            change = np.abs(d - dev[r, g]) / (np.abs(d) + 0.1)
            dev[r, g] = d
            done = diverged | (change < IRLS_TOL)
            failed[r[diverged], g[diverged]] = True
            active[r[done], g[done]] = False
    failed |= active  # not converged in IRLS_MAXIT iterations
    # The Wald test of every (refit, gene) pair as one block of "genes" of pydeseq2's test. A left-out
    # sample's mean is set to 0, which gives it weight 0 (the mask of the IRLS above).
    eta = np.einsum("sp,rgp->rgs", x, beta)
    mu = sf * np.exp(eta)
    if inp.wald_floor_mu:
        mu = np.maximum(mu, inp.min_mu)
    mu *= mask
    n_pairs = beta.shape[0] * beta.shape[1]
    contrast = np.eye(p)[inp.coef_index]  # the unit contrast on the severity column
    with np.errstate(divide="ignore", invalid="ignore"):
        pvalue, stat, _ = wald_block(
            x,
            np.tile(inp.dispersions, beta.shape[0]),
            beta.reshape(n_pairs, p),
            mu.reshape(n_pairs, -1).T,
            inp.wald_ridge * np.eye(p),
            contrast,
            0.0,
        )
    pvalue, stat = pvalue.reshape(beta.shape[:2]), stat.reshape(beta.shape[:2])
    lfc = beta[..., inp.coef_index] / math.log(2)
    for arr in (lfc, stat, pvalue):
        arr[failed] = np.nan
    return lfc, stat, pvalue


def _linear_refits(inp: LinearRefitInputs, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OLS per refit (all genes in one QR) and the moderated t with the full fit's variance prior."""
    n_refits = keep.shape[0]
    n_genes = len(inp.genes)
    lfc, stat, pvalue = (np.full((n_refits, n_genes), np.nan) for _ in range(3))
    for r in range(n_refits):
        x = inp.design[keep[r]]
        y = inp.values[keep[r]]
        used = np.flatnonzero(np.abs(x).sum(axis=0) > 0)  # a level only the left-out sample had
        if inp.coef_index not in used:
            continue
        j = int(np.flatnonzero(used == inp.coef_index)[0])
        try:
            fit = fit_linear_models(y, x[:, used])
        except InputError:  # rank-deficient or no residual df without this sample: no unique estimate,
            continue  # which counts as a refit without the call
        df = fit.df_residual
        if np.isinf(inp.df_prior):
            post = inp.s2_prior
        else:
            post = (inp.df_prior * inp.s2_prior + df * fit.s2) / (inp.df_prior + df)
        df_total = min(df + inp.df_prior, df * inp.n_genes_fitted)
        lfc[r] = fit.coefficients[j]
        stat[r] = fit.coefficients[j] / (np.sqrt(post) * fit.stdev_unscaled[j])
        pvalue[r] = 2 * stats.t.sf(np.abs(stat[r]), df_total)
    return lfc, stat, pvalue


# ----------------------------------------------------------------------------------------------- rule


def rejection_cutoff(table: pd.DataFrame, alpha: float) -> float:
    """The full fit's BH rejection cut-off: the largest raw p-value among genes with padj < alpha (NaN when
    nothing is called)."""
    called = pd.to_numeric(table["padj"], errors="coerce") < alpha
    if not called.any():
        return float("nan")
    return float(pd.to_numeric(table.loc[called, "pvalue"], errors="coerce").max())


def classify(
    lfc: float,
    padj: float,
    tested: bool,
    refit_lfc: np.ndarray,
    refit_p: np.ndarray,
    p_threshold: float,
    alpha: float,
    near_miss_factor: float,
) -> tuple[str, int]:
    """Stability class of one gene and the number of refits in which it is called in the full fit's
    direction (sign kept and p <= p*); a refit without an estimate never holds the call."""
    holds = (
        np.isfinite(refit_p)
        & (np.sign(refit_lfc) == np.sign(lfc))
        & (refit_p <= p_threshold if np.isfinite(p_threshold) else False)
    )
    n_holding = int(holds.sum())
    if not tested:
        return NOT_TESTED, n_holding
    if np.isfinite(padj) and padj < alpha:
        return (ROBUST if len(refit_p) and holds.all() else BORDERLINE), n_holding
    if np.isfinite(padj) and padj < near_miss_factor * alpha:
        return NEAR_MISS, n_holding
    return NOT_CALLED, n_holding


def panel_stability(
    table: pd.DataFrame,
    genes: Sequence[str],
    refits: RefitResult | None,
    alpha: float,
    settings: StabilitySettings | None,
) -> pd.DataFrame:
    """One row per panel gene (``genes``, in order, duplicates once): the full fit, the refits' range, the
    most influential sample and the stability class (module docstring)."""
    genes = list(dict.fromkeys(str(g) for g in genes))
    full = table.drop_duplicates("gene").set_index("gene")
    p_star = rejection_cutoff(table, alpha)
    assessed = settings is not None and settings.enabled
    factor = settings.near_miss_factor if settings is not None else StabilitySettings().near_miss_factor
    col_of = {g: j for j, g in enumerate(refits.genes)} if refits is not None else {}
    rows = []
    for gene in genes:
        rec = full.loc[gene] if gene in full.index else None
        tested = rec is not None and str(rec.get("tested", False)).lower() in ("true", "1")
        lfc = float(rec["log2FoldChange"]) if rec is not None else float("nan")
        p = float(rec["pvalue"]) if rec is not None else float("nan")
        padj = float(rec["padj"]) if rec is not None else float("nan")
        called = bool(tested and np.isfinite(padj) and padj < alpha)
        row: dict[str, Any] = {
            "gene": gene,
            "tested": tested,
            "log2FoldChange": lfc,
            "pvalue": p,
            "padj": padj,
            "called": called,
            "p_threshold": p_star,
            "n_refits": 0,
            "n_refits_holding": 0,
            "method": settings.method if assessed else "",
        }
        j = col_of.get(gene)
        if not assessed:
            row.update(stability=NOT_ASSESSED, note="not assessed (de.stability.enabled false)")
        elif not tested:
            row.update(stability=NOT_TESTED, note="not tested in the full fit")
        elif j is None:  # tested, but no counts left to refit (all zero after Cook's replacement)
            cls, _ = classify(lfc, padj, tested, np.empty(0), np.empty(0), p_star, alpha, factor)
            row.update(stability=cls, note="no refit: no counts left after outlier replacement")
        else:
            r_lfc, r_p, r_stat = refits.log2FoldChange[:, j], refits.pvalue[:, j], refits.stat[:, j]
            cls, n_holding = classify(lfc, padj, tested, r_lfc, r_p, p_star, alpha, factor)
            pick = _influential(r_stat, r_p, np.sign(lfc), called)
            row.update(
                n_refits=len(r_p),
                n_refits_holding=n_holding,
                refit_log2FoldChange_min=_nanext(np.nanmin, r_lfc),
                refit_log2FoldChange_max=_nanext(np.nanmax, r_lfc),
                refit_pvalue_min=_nanext(np.nanmin, r_p),
                refit_pvalue_max=_nanext(np.nanmax, r_p),
                influential_sample=refits.samples[pick],
                influential_log2FoldChange=r_lfc[pick],
                influential_pvalue=r_p[pick],
                stability=cls,
                note=_note(
                    cls, refits.samples[pick], r_lfc[pick], r_p[pick], lfc, p_star, len(r_p), n_holding
                ),
            )
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def _nanext(fn, values: np.ndarray) -> float:
    return float(fn(values)) if np.isfinite(values).any() else float("nan")


def _influential(stat: np.ndarray, p: np.ndarray, sign: float, called: bool) -> int:
    """The refit that moves the call most: for a called gene the weakest evidence in the call's direction
    (a refit without an estimate first), otherwise the refit closest to a call (smallest p). First sample
    on ties, so the choice is deterministic."""
    if called:
        evidence = np.where(np.isfinite(stat), sign * stat, -np.inf)
        return int(np.argmin(evidence))
    return int(np.argmin(np.where(np.isfinite(p), p, np.inf)))


def _note(
    cls: str, sample: str, r_lfc: float, r_p: float, lfc: float, p_star: float, n: int, n_holding: int
) -> str:
    """One sentence on why the gene got its class (for the table and the report)."""
    if cls == ROBUST:
        return f"called in all {n} leave-one-out refits (p <= {p_star:.3g}, sign kept)"
    if cls == BORDERLINE:
        if not np.isfinite(r_p):
            why = "no estimate"
        elif np.sign(r_lfc) != np.sign(lfc):
            why = f"sign flips (log2FC {r_lfc:+.2f})"
        else:
            why = f"p = {r_p:.2g} > p* = {p_star:.2g}"
        return f"call holds in {n_holding} of {n} refits; without {sample}: {why}"
    if cls == NEAR_MISS:
        return f"not called; called in {n_holding} of {n} refits (smallest p without {sample}: {r_p:.2g})"
    return ""


def panel_genes(panel: pd.DataFrame) -> list[str]:
    """The panel's gene symbols in order, once each."""
    return list(dict.fromkeys(panel["symbol"].astype(str)))


def run_panel_stability(
    table: pd.DataFrame,
    panel: pd.DataFrame,
    refit_inputs: NbRefitInputs | LinearRefitInputs | None,
    alpha: float,
    settings: StabilitySettings | None,
) -> pd.DataFrame:
    """Refits (when enabled and there is something to refit) and the per-gene stability table."""
    refits = None
    if settings is not None and settings.enabled and refit_inputs is not None:
        refits = leave_one_out(refit_inputs)
        full = table.drop_duplicates("gene").set_index("gene").loc[refit_inputs.genes, "log2FoldChange"]
        gap = self_check(refit_inputs, full.to_numpy(dtype=float))
        if gap > SELF_CHECK_TOL:
            log.warning("stability refit with every sample is %.3g log2 off the full fit", gap)
        log.info(
            "stability: %d leave-one-out refits of %d panel genes in %.2f s (self-check gap %.1e log2)",
            len(refits.samples),
            len(refits.genes),
            refits.seconds,
            gap,
        )
    out = panel_stability(table, panel_genes(panel), refits, alpha, settings)
    counts = out["stability"].value_counts().to_dict()
    log.info("stability classes of the panel genes: %s", counts)
    return out
