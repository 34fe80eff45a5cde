"""The statistics of one pooled feature: a random-effects estimate, a signed Stouffer Z and a count of
cohorts per direction.

The random-effects fit (Paule-Mandel tau2 through statsmodels ``combine_effects``, a t interval on k - 1
df) is the headline. Few cohorts are the norm here, so two simpler summaries stand beside it: Stouffer's
Z keeps the direction and weights by sample size, and the sign counts say how many cohorts agree
whatever the model. Everything here works on plain arrays for one feature; which cohorts enter is decided
elsewhere (:mod:`il6axis.analysis.meta.plan`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize, stats
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.tools.sm_exceptions import InvalidTestWarning

from il6axis.errors import InputError
from il6axis.vocabulary import ALL_STRATA, STRATUM_UNIT

log = logging.getLogger(__name__)

REASON_FEW = "fewer than 2 cohorts"
CI_RE = "random_effect"
CI_HKSJ = "hksj"
# PM iteration settings. statsmodels' default atol (1e-5 on Q_gen - (k-1)) leaves tau2 off by up to ~0.3%
# (relative) when tau2 is small; 1e-7 brings that to ~4e-6. Tighter is a trap in 0.15: once Q_gen sits at
# rounding level a step can leave it at -1e-16, and the iteration then resets tau2 to 0 (about 1 fit in 15 at
# atol 1e-9; none in ~4,700 simulated fits at 1e-7). random_effects repairs such a reset anyway.
_PM_KWDS: dict[str, float] = {"atol": 1e-7, "maxiter": 100}
# Tolerance on the HKSJ scale Q_gen/(k-1): with PM and tau2 > 0 it is 1 up to the iteration tolerance;
# only a clearly different scale counts, so ci_method does not flip on rounding noise.
_SCALE_TOL = 1e-4


def _na_result(k: int, cohorts: Sequence[str], reason: str) -> dict[str, Any]:
    nan = float("nan")
    return {
        "k": k,
        "cohorts": list(cohorts),
        "estimate": nan,
        "se": nan,
        "ci_low": nan,
        "ci_high": nan,
        "ci_method": "",
        "p": nan,
        "tau2": nan,
        "i2": nan,
        "Q": nan,
        "fixed_estimate": nan,
        "fixed_se": nan,
        "weights": {},
        "converged": True,
        "reason": reason,
    }


def random_effects(
    effects: Sequence[float] | np.ndarray,
    ses: Sequence[float] | np.ndarray,
    cohorts: Sequence[str],
    alpha: float = 0.05,
    method_re: str = "iterated",
) -> dict[str, Any]:
    """Random-effects pooled effect with a t interval on k - 1 df (statsmodels ``combine_effects``).

    ``method_re="iterated"`` is Paule-Mandel (tau2 truncated at 0 by statsmodels); ``"dl"`` is
    DerSimonian-Laird, whose negative tau2 is truncated here (statsmodels would weight with it).
    The reported interval is the wider of the plain random-effects t interval and the Hartung-Knapp
    (HKSJ, ``"random effect wls"``) interval: the modified Knapp-Hartung rule, because with tau2 = 0 the
    HKSJ scale Q/(k-1) falls below 1 and would give an interval narrower than the fixed-effect one.
    With Paule-Mandel the HKSJ scale is 1 (to the iteration tolerance) whenever tau2 > 0 and below 1 when
    tau2 = 0, so under PM the rule always keeps the plain interval; it changes the result only for DL.

    Returns a dict: k, cohorts, estimate, se, ci_low, ci_high, ci_method ("random_effect" or "hksj"),
    p (two-sided t, k - 1 df), tau2, i2 (both >= 0), Q (Cochran's, fixed-effect weights),
    fixed_estimate, fixed_se, weights (cohort -> relative random-effects weight), converged, reason.
    With k < 2 every statistic is NaN and ``reason`` says why; nothing raises.
    """
    eff = np.asarray(effects, dtype=float)
    se = np.asarray(ses, dtype=float)
    names = [str(c) for c in cohorts]
    if not (len(eff) == len(se) == len(names)):
        raise ValueError(f"effects ({len(eff)}), ses ({len(se)}) and cohorts ({len(names)}) differ in length")
    bad = ~(np.isfinite(eff) & np.isfinite(se) & (se > 0))
    if bad.any():
        raise InputError(
            f"cohort(s) {[n for n, b in zip(names, bad, strict=True) if b]} have a non-finite effect or a "
            f"non-positive / non-finite SE; drop them before pooling (meta_analyse does this per feature)."
        )
    k = len(eff)
    if k < 2:
        return _na_result(k, names, REASON_FEW)
    method = method_re.lower()
    if method not in ("iterated", "pm", "dl", "chi2"):
        raise ValueError(f"method_re must be iterated/pm/dl/chi2, got {method_re!r}")
    res = _combine(eff, se**2, names, method, alpha)
    if method in ("iterated", "pm") and res.tau2 == 0 and res.q > (k - 1) * (1 + _SCALE_TOL):
        # Q > k - 1 means the PM root is positive: tau2 = 0 here is statsmodels' reset after a step
        # overshot to a (rounding-level) negative estimating equation. Restart just left of the root.
        root = _pm_root(eff, se**2)
        log.warning("Paule-Mandel reset tau2 to 0 for cohorts %s; restarting at %.6g", names, root)
        res = _combine(eff, se**2, names, method, alpha, tau2_start=root * (1 - 1e-6))
    if res.tau2 < 0:
        # DL's moment estimate went negative (Q < k - 1): the truncated estimate is tau2 = 0, which is
        # exactly what the PM iteration returns when its estimating equation is negative at 0.
        res = _combine(eff, se**2, names, "iterated", alpha)
    df = k - 1
    tau2 = max(float(res.tau2), 0.0)
    q_stat = float(res.q)
    # statsmodels divides by Q for I2 (-inf when all effects are identical); I2 = max(0, (Q - df) / Q).
    i2 = max(0.0, (q_stat - df) / q_stat) if q_stat > 0 else 0.0
    _, ci_re, _, ci_hksj = res.conf_int(alpha=alpha, use_t=True)
    sd_re, sd_hksj = float(res.sd_eff_w_re), float(res.sd_eff_w_re_hksj)
    if sd_hksj > sd_re * (1 + _SCALE_TOL):
        ci_method, sd, ci = CI_HKSJ, sd_hksj, ci_hksj
    else:
        ci_method, sd, ci = CI_RE, sd_re, ci_re
    estimate = float(res.mean_effect_re)
    p = float(2 * stats.t.sf(abs(estimate / sd), df))
    # Generalised Q at the PM solution must equal k - 1 when tau2 > 0; otherwise the iteration stopped early.
    pm = method in ("iterated", "pm")
    converged = not pm or abs(res.scale_hksj_re - 1) <= _SCALE_TOL or (tau2 == 0 and q_stat <= df)
    if not converged:
        log.warning(
            "Paule-Mandel tau2 did not converge for cohorts %s (HKSJ scale %.6g)", names, res.scale_hksj_re
        )
    return {
        "k": k,
        "cohorts": names,
        "estimate": estimate,
        "se": sd,
        "ci_low": float(ci[0]),
        "ci_high": float(ci[1]),
        "ci_method": ci_method,
        "p": p,
        "tau2": tau2,
        "i2": i2,
        "Q": q_stat,
        "fixed_estimate": float(res.mean_effect_fe),
        "fixed_se": float(res.sd_eff_w_fe),
        "weights": dict(zip(names, np.asarray(res.weights_rel_re, dtype=float).tolist(), strict=True)),
        "converged": bool(converged),
        "reason": "",
    }


def _pm_root(eff: np.ndarray, var: np.ndarray) -> float:
    """Paule-Mandel tau2 by bracketed root finding, used only to restart a collapsed iteration.

    Q_gen(t) <= SS/(min(var) + t) with SS the unweighted sum of squares, so Q_gen(SS/(k-1)) < k - 1
    brackets the root; the caller ensures Q_gen(0) = Q > k - 1.
    """
    df = len(eff) - 1

    def excess(tau2: float) -> float:
        w = 1 / (var + tau2)
        return float(w @ (eff - w @ eff / w.sum()) ** 2 - df)

    return float(optimize.brentq(excess, 0.0, float(((eff - eff.mean()) ** 2).sum()) / df, xtol=1e-14))


def _combine(
    eff: np.ndarray, var: np.ndarray, names: list[str], method: str, alpha: float, **pm_kwds: float
) -> Any:
    """``combine_effects`` with its harmless warnings silenced locally (not process-wide)."""
    kwds = {**_PM_KWDS, **pm_kwds} if method in ("iterated", "pm") else {}
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # InvalidTestWarning concerns the per-cohort t intervals, which are not used; the divide warning
        # is statsmodels' own I2 when Q == 0, recomputed by the caller.
        warnings.simplefilter("ignore", InvalidTestWarning)
        return combine_effects(eff, var, method_re=method, use_t=True, row_names=names, alpha=alpha, **kwds)


def stouffer(stats_: Sequence[float] | np.ndarray, n: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Signed weighted Stouffer Z = sum(w z) / sqrt(sum w^2), w = sqrt(n); two-sided normal p.

    Unlike Fisher's method it keeps the direction: cohorts pulling in opposite directions cancel.
    OLS t statistics of small cohorts enter as if they were z (slightly anti-conservative).
    """
    z = np.asarray(stats_, dtype=float)
    w = np.sqrt(np.asarray(n, dtype=float))
    if z.shape != w.shape:
        raise ValueError(f"stats ({z.shape}) and n ({w.shape}) differ in shape")
    if not (np.isfinite(z).all() and np.isfinite(w).all() and (w > 0).all()):
        raise InputError("Stouffer inputs must be finite statistics and positive sample sizes `n`")
    if z.size == 0:
        return float("nan"), float("nan")
    z_comb = float((w * z).sum() / np.sqrt((w**2).sum()))
    return z_comb, float(2 * stats.norm.sf(abs(z_comb)))


def sign_consistency(
    lfc: Sequence[float] | np.ndarray,
    padj: Sequence[float] | np.ndarray,
    alpha: float = 0.05,
    unit: str = STRATUM_UNIT[ALL_STRATA],
) -> dict[str, Any]:
    """Count cohorts per direction, and per direction with padj < alpha (NaN padj = not significant).

    The text leads with the majority direction, e.g. "up in 3/3 cohorts (2 with padj < 0.05)".
    """
    x = np.asarray(lfc, dtype=float)
    q = np.asarray(padj, dtype=float)
    k = len(x)
    sig = np.nan_to_num(q, nan=np.inf) < alpha
    n_up, n_down = int((x > 0).sum()), int((x < 0).sum())
    n_up_sig, n_down_sig = int(((x > 0) & sig).sum()), int(((x < 0) & sig).sum())
    parts = [("up", n_up, n_up_sig), ("down", n_down, n_down_sig)]
    if n_down > n_up:
        parts.reverse()
    texts = [f"{d} in {n}/{k} {unit} ({s} with padj < {alpha:g})" for d, n, s in parts if n > 0]
    text = "; ".join(texts) if texts else (f"no {unit}" if k == 0 else f"no direction in {k} {unit}")
    return {"n_up": n_up, "n_down": n_down, "n_up_sig": n_up_sig, "n_down_sig": n_down_sig, "text": text}
