"""Many small L-BFGS-B problems through SciPy's compiled optimiser, one state each, evaluated in batches.

pydeseq2 fits each gene's dispersion and apeGLM shrinkage with ``scipy.optimize.minimize(method="L-BFGS-B")``,
one Python call per gene. :func:`lbfgsb_lockstep` drives the same compiled routine through its
reverse-communication entry point ``setulb``: every problem keeps its own optimiser state and follows the
iterates ``minimize`` would, while the objective and gradient of all problems that ask for them are
evaluated in one vectorised call. ``setulb`` is a private SciPy entry point, so :func:`lockstep_available`
checks the driver against ``minimize`` once (a bounded 1-D and an unbounded 3-D problem) before any caller
trusts it; callers fall back to the stock per-gene path when it is missing or disagrees.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize

log = logging.getLogger(__name__)

try:  # The compiled L-BFGS-B that scipy.optimize.minimize(method="L-BFGS-B") drives.
    from scipy.optimize import _lbfgsb as _LBFGSB
except ImportError:  # pragma: no cover - depends on the SciPy build
    _LBFGSB = None

# scipy.optimize.minimize(method="L-BFGS-B") defaults, which pydeseq2 uses unchanged.
LBFGSB_MAXCOR = 10
LBFGSB_FTOL = 2.2204460492503131e-09
LBFGSB_GTOL = 1e-5
LBFGSB_MAXLS = 20
LBFGSB_MAXITER = 15000
LBFGSB_MAXFUN = 15000
# pydeseq2's nbinomGLM (apeGLM LFC shrinkage) passes these to minimize(method="L-BFGS-B"), no bounds.
SHRINK_FTOL = 1e-8
SHRINK_GTOL = 1e-8
# setulb task codes (scipy/optimize/__lbfgsb.c): 1 = new iterate, 3 = evaluate f and g, 4 = converged.
TASK_NEW_X, TASK_FG, TASK_CONVERGENCE = 1, 3, 4


def lbfgsb_lockstep(
    fun_and_grad: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    x0: np.ndarray,
    lower: float | None = None,
    upper: float | None = None,
    ftol: float = LBFGSB_FTOL,
    gtol: float = LBFGSB_GTOL,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise many independent small problems with SciPy's L-BFGS-B, one optimiser state each.

    ``x0`` is ``(problems,)`` for 1-D problems or ``(problems, n)`` for n-D ones; ``lower``/``upper`` bound
    every coordinate (both given) or none (both None). ``fun_and_grad(rows, x)`` returns the objectives
    ``(rows,)`` and gradients (shaped like ``x``) of problems ``rows`` at ``x``. Each problem goes through
    exactly the calls ``scipy.optimize.minimize(method="L-BFGS-B", options={"ftol": ftol, "gtol": gtol})``
    makes; only the evaluations are batched. Returns the solutions (shaped like ``x0``) and a success flag
    per problem.
    """
    x0 = np.asarray(x0, dtype=float)
    one_d = x0.ndim == 1
    n_prob = x0.shape[0]
    x = np.array(x0.reshape(n_prob, -1), dtype=float, order="C")
    n = x.shape[1]
    m = LBFGSB_MAXCOR
    factr = ftol / np.finfo(float).eps
    if (lower is None) != (upper is None):
        raise ValueError("give both bounds or neither")
    if lower is None:
        lo, up = np.zeros(n), np.zeros(n)
        nbd = np.zeros(n, dtype=np.int32)  # unbounded, as minimize() sets it for bounds=None
    else:
        lo, up = np.full(n, lower, dtype=float), np.full(n, upper, dtype=float)
        nbd = np.full(n, 2, dtype=np.int32)  # both bounds finite
        x = np.clip(x, lo, up)  # minimize() clips x0 into the bounds
    g = np.zeros((n_prob, n))
    wa = np.zeros((n_prob, 2 * m * n + 5 * n + 11 * m * m + 8 * m))
    iwa = np.zeros((n_prob, 3 * n), dtype=np.int32)
    task = np.zeros((n_prob, 2), dtype=np.int32)
    ln_task = np.zeros((n_prob, 2), dtype=np.int32)
    lsave = np.zeros((n_prob, 4), dtype=np.int32)
    isave = np.zeros((n_prob, 44), dtype=np.int32)
    dsave = np.zeros((n_prob, 29))
    # Each problem's setulb arguments as row views, built once: setulb updates them in place, and indexing
    # nine arrays on every call cost as much as the call itself. Plain lists for the per-problem scalars.
    head = [(m, x[i], lo, up, nbd) for i in range(n_prob)]
    tail = [
        (g[i], factr, gtol, wa[i], iwa[i], task[i], lsave[i], isave[i], dsave[i], LBFGSB_MAXLS, ln_task[i])
        for i in range(n_prob)
    ]
    f = [0.0] * n_prob
    n_iter = [0] * n_prob
    n_fev = [0] * n_prob

    # minimize() evaluates at x0 first and setulb's first request is x0 again; evaluating at that first
    # request instead gives the same numbers (the objective is deterministic).
    pending = list(range(n_prob))
    setulb = _LBFGSB.setulb
    while pending:
        ask: list[int] = []
        again: list[int] = []
        for i in pending:
            setulb(*head[i], f[i], *tail[i])
            state = tail[i][5]  # this problem's task row
            code = state[0]
            if code == TASK_FG:
                ask.append(i)
            elif code == TASK_NEW_X:
                n_iter[i] += 1
                if n_iter[i] >= LBFGSB_MAXITER or n_fev[i] > LBFGSB_MAXFUN:
                    state[0] = 5  # STOP, as minimize() sets it; counts as not converged
                    continue
                again.append(i)
        if ask:
            rows = np.asarray(ask)
            fx, gx = fun_and_grad(rows, x[rows, 0] if one_d else x[rows])
            for i, value in zip(ask, np.asarray(fx, dtype=float).tolist(), strict=True):
                f[i] = value
                n_fev[i] += 1
            g[rows] = np.reshape(gx, (len(rows), n))
        pending = sorted(ask + again)
    return (x[:, 0] if one_d else x), task[:, 0] == TASK_CONVERGENCE


def _check_against_minimize(
    fun_and_grad: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    x0: np.ndarray,
    bounds: tuple[float, float] | None,
    options: dict[str, float],
) -> bool:
    """True when ``lbfgsb_lockstep`` ends exactly where ``scipy.optimize.minimize`` does on one problem."""
    lower, upper = bounds if bounds is not None else (None, None)
    got, ok = lbfgsb_lockstep(fun_and_grad, x0[None, :], lower, upper, options["ftol"], options["gtol"])
    row = np.zeros(1, dtype=int)
    ref = minimize(
        lambda v: fun_and_grad(row, v[None, :])[0][0],
        x0=x0,
        jac=lambda v: fun_and_grad(row, v[None, :])[1][0],
        method="L-BFGS-B",
        bounds=None if bounds is None else [bounds] * len(x0),
        options=options,
    )
    return bool(np.array_equal(got[0], ref.x)) and bool(ok[0]) == bool(ref.success)


@functools.cache
def lockstep_available() -> bool:
    """True when SciPy's ``setulb`` is there and the lock-step driver reproduces ``minimize`` exactly,
    on a bounded 1-D problem (as the dispersion fits) and an unbounded 3-D one (as the LFC shrinkage)."""
    if _LBFGSB is None:
        log.warning("scipy.optimize._lbfgsb is unavailable: stock per-gene optimiser fits")
        return False

    def fun_and_grad(rows: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # A non-quadratic, coupled test function: (x - c)^4 terms plus a cosine of the sum.
        centre = np.array([0.3, -1.2, 2.0])[: x.shape[1]]
        d = x - centre
        s = x.sum(axis=1)
        return (d**4).sum(axis=1) + np.cos(s), 4 * d**3 - np.sin(s)[:, None]

    try:
        bounded = _check_against_minimize(
            fun_and_grad, np.array([2.0]), (-3.0, 3.0), {"ftol": LBFGSB_FTOL, "gtol": LBFGSB_GTOL}
        )
        free = _check_against_minimize(
            fun_and_grad, np.array([0.1, -0.1, 0.1]), None, {"ftol": SHRINK_FTOL, "gtol": SHRINK_GTOL}
        )
    except (TypeError, ValueError, AttributeError) as exc:  # setulb's private signature changed
        log.warning("SciPy setulb unusable (%s): stock per-gene optimiser fits", exc)
        return False
    if not (bounded and free):
        log.warning(
            "lock-step L-BFGS-B disagrees with scipy.optimize.minimize: stock per-gene optimiser fits"
        )
        return False
    return True
