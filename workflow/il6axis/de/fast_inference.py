"""Gene-vectorised drop-in for pydeseq2's ``DefaultInference``: same algorithms, same answers, less overhead.

pydeseq2 0.5.4 fits every gene separately in Python (a joblib task per gene): one IRLS loop, two scipy
L-BFGS-B dispersion fits and one Wald test each, plus the Cook's refit and, on request, one L-BFGS-B
apeGLM shrinkage fit. On 20,000 genes almost all of the time goes to Python call overhead around tiny
(100-sample) numpy operations, not to arithmetic.

This module keeps each gene's algorithm and numbers and only changes how they are driven; each job has
its own module:

* IRLS (``irls``) and the dispersion MLE (``alpha_mle``): fast_fits.py. Every gene follows its stock
  iteration, all genes at once; the dispersions use SciPy's compiled L-BFGS-B (the routine
  ``scipy.optimize.minimize`` drives) through its reverse-communication entry point ``setulb``, one
  optimiser state per gene advanced in lock step (lbfgsb_lockstep.py). Genes that diverge or do not
  converge are handed to pydeseq2's own per-gene code, which re-runs them as stock does.
* apeGLM LFC shrinkage (``lfc_shrink_nbinom_glm``, pydeseq2's ``nbinomGLM``): fast_shrink.py, the same
  lock-step L-BFGS-B on all coefficients at once, spot-checked against stock on a few genes per call.
* Wald tests and the linear-model start (``wald_test``, ``lin_reg_mu``) are closed forms, vectorised
  (nb_kernels.py).

Results are bit-for-bit those of stock pydeseq2 0.5.4 on this stack (NumPy 2.4, SciPy 1.17): every
batched operation calls, per gene, the same BLAS/LAPACK routine stock calls (SciPy's batched
``solve(assume_a="pos")`` / ``lstsq``, ``np.matmul`` matrix-vector products, NumPy's batched ``inv`` and
``slogdet``) and the element-wise maths is the same, down to squaring NumPy scalars with libm ``pow`` as
stock does. This matters: for ~1% of genes stock's L-BFGS-B ends at rounding level, so a 1e-14 relative
change in its input flips its convergence flag, and pydeseq2's grid fallback for a failed MAP fit ignores
the dispersion prior; an earlier version that was "only" 1e-14 close moved a few genes' dispersions by up
to 0.17 (log) and padj by 0.05. ``bench/compare_with_r.py --fast`` reports the differences (0 on the
demo, GSE152418 and 20,000 x 100 synthetic cohorts; the shrunk LFCs are identical too, there and on
20,000 x 500 / 2,000, bench/README.md); the tolerance we hold to is max |log2FC difference| < 1e-6 on
genes with baseMean >= 10, with identical padj < alpha calls. On another BLAS build the agreement may
drop to rounding level, with those same few genes as the exceptions.

Genes are processed in chunks (at most ``CHUNK_CELLS`` cells and ``MAX_CHUNK_GENES`` genes), each written
straight into the preallocated outputs, so the extra memory is bounded whatever the cohort size (the
outputs pydeseq2 asks for plus O(chunk) work arrays), and chunks run on ``n_cpus`` threads (NumPy/SciPy
release the GIL in the batched kernels) with one BLAS thread each: stock's per-gene L-BFGS-B calls BLAS
on length-1 vectors, and with OpenBLAS's own threads on a loaded 2-core machine each such call costs ~1-2
ms (measured: 37 ms vs 1.2 ms per ``minimize`` call), which is why stock is slowest with ``n_cpus=1``.
``backend="loky"`` runs chunks in processes instead (measured slower here). ``setulb`` is a private SciPy
entry point: it is checked against ``scipy.optimize.minimize`` on first use (a bounded 1-D and an
unbounded 3-D problem), and if it is missing or disagrees, ``alpha_mle`` and ``lfc_shrink_nbinom_glm``
fall back to the stock per-gene path.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from joblib import Parallel, delayed, parallel_backend
from pydeseq2.default_inference import DefaultInference
from threadpoolctl import threadpool_limits

from il6axis.de.fast_fits import alpha_mle_block, irls_block
from il6axis.de.fast_shrink import ShrinkPrior, shrink_agrees_with_stock, shrink_block
from il6axis.de.lbfgsb_lockstep import lockstep_available
from il6axis.de.nb_kernels import lin_mu_block, wald_block

# Target number of float64 cells (genes x samples) in one chunk: ~4 MB per work array, ~25 MB for the
# (genes, design columns, samples) products; bounds the extra memory whatever the cohort size.
CHUNK_CELLS = 500_000
# At most this many genes per chunk: each gene's L-BFGS-B state (``lbfgsb_lockstep``) takes ~10 KB
# whatever the number of samples, so on small cohorts the cell bound alone would allow chunks whose optimiser
# work arrays (~50 MB at 5,000 genes) outweigh the data.
MAX_CHUNK_GENES = 1_000
# Below this many genes per worker, a second worker costs more (start-up, GIL hand-offs) than it saves.
MIN_GENES_PER_WORKER = 500


def _chunks(
    n_genes: int, n_samples: int, n_workers: int, cells: int = CHUNK_CELLS, max_genes: int = MAX_CHUNK_GENES
) -> list[slice]:
    """Gene slices small enough for bounded memory, and at least one per worker."""
    size = max(1, min(cells // max(n_samples, 1), max_genes, -(-n_genes // max(n_workers, 1))))
    return [slice(start, min(start + size, n_genes)) for start in range(0, n_genes, size)]


# ------------------------------------------------------------------------------------------ interface


class FastInference(DefaultInference):
    """``DefaultInference`` with gene-vectorised IRLS, dispersion fits, Wald tests, linear starts and
    apeGLM LFC shrinkage.

    Drop-in: ``DeseqDataSet(..., inference=FastInference(n_cpus=2))`` and the same object for
    ``DeseqStats``. Methods not listed above (trend GLM, moments, Wald tests with an alternative
    hypothesis) are inherited unchanged and run as in stock. Each method writes its chunks' results
    straight into its preallocated outputs, so its memory is the outputs plus O(chunk) work arrays.
    """

    def __init__(
        self, n_cpus: int | None = 1, backend: str = "threading", chunk_cells: int = CHUNK_CELLS
    ) -> None:
        # The inherited per-gene methods (one-sided Wald tests, and any stock fallback) keep stock's loky
        # workers; ``backend`` ("threading" or a joblib process backend) only runs this class's chunks.
        super().__init__(n_cpus=n_cpus, backend="loky")
        self._chunk_backend = backend
        self._chunk_cells = chunk_cells

    def map_chunks(
        self,
        func: Callable,
        n_genes: int,
        n_samples: int,
        make_args: Callable[[slice], tuple],
        store: Callable[[slice, Any], None],
    ) -> None:
        """Run ``func(*make_args(slice))`` over gene chunks, in parallel when it pays, handing each result
        to ``store(slice, result)`` as it arrives (so finished chunks are not all held at once)."""
        workers = self.n_cpus if n_genes >= MIN_GENES_PER_WORKER * self.n_cpus else 1
        chunks = _chunks(n_genes, n_samples, workers, self._chunk_cells)
        if workers == 1 or self._chunk_backend == "threading":
            # One BLAS thread, as stock gives its joblib workers: SciPy's L-BFGS-B calls BLAS on tiny
            # vectors, and with OpenBLAS threads on a busy machine each of those calls costs milliseconds.
            with threadpool_limits(limits=1, user_api="blas"):
                if workers == 1:
                    for s in chunks:
                        store(s, func(*make_args(s)))
                    return
                # NumPy/SciPy release the GIL inside the batched kernels, so threads overlap there.
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    for s, result in zip(
                        chunks, pool.map(lambda s: func(*make_args(s)), chunks), strict=True
                    ):
                        store(s, result)
                return
        with parallel_backend(self._chunk_backend, inner_max_num_threads=1):
            results = Parallel(n_jobs=workers, verbose=self._joblib_verbosity, return_as="generator")(
                delayed(func)(*make_args(s)) for s in chunks
            )
            for s, result in zip(chunks, results, strict=True):
                store(s, result)

    def lin_reg_mu(  # noqa: D102
        self,
        counts: np.ndarray,
        size_factors: np.ndarray,
        design_matrix: np.ndarray,
        min_mu: float,
    ) -> np.ndarray:
        mu = np.empty(counts.shape)

        def store(s: slice, part: np.ndarray) -> None:
            mu[:, s] = part

        self.map_chunks(
            lin_mu_block,
            counts.shape[1],
            counts.shape[0],
            lambda s: (counts[:, s], size_factors, design_matrix, min_mu),
            store,
        )
        return mu

    def irls(  # noqa: D102
        self,
        counts: np.ndarray,
        size_factors: np.ndarray,
        design_matrix: np.ndarray,
        disp: np.ndarray,
        min_mu: float,
        beta_tol: float,
        min_beta: float = -30,
        max_beta: float = 30,
        optimizer: Literal["BFGS", "L-BFGS-B"] = "L-BFGS-B",
        maxiter: int = 250,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n_samples, n_genes = counts.shape
        beta = np.empty((n_genes, np.shape(design_matrix)[1]))
        mu = np.empty((n_samples, n_genes))
        hat = np.empty((n_samples, n_genes))
        converged = np.empty(n_genes, dtype=bool)

        def store(s: slice, part: tuple) -> None:
            beta[s], mu[:, s], hat[:, s], converged[s] = part

        self.map_chunks(
            irls_block,
            n_genes,
            n_samples,
            lambda s: (
                counts[:, s],
                size_factors,
                design_matrix,
                disp[s],
                min_mu,
                beta_tol,
                min_beta,
                max_beta,
                optimizer,
                maxiter,
            ),  # fmt: skip
            store,
        )
        return beta, mu, hat, converged

    def alpha_mle(  # noqa: D102
        self,
        counts: np.ndarray,
        design_matrix: np.ndarray,
        mu: np.ndarray,
        alpha_hat: np.ndarray,
        min_disp: float,
        max_disp: float,
        prior_disp_var: float | None = None,
        cr_reg: bool = True,
        prior_reg: bool = False,
        optimizer: Literal["BFGS", "L-BFGS-B"] = "L-BFGS-B",
    ) -> tuple[np.ndarray, np.ndarray]:
        if optimizer != "L-BFGS-B" or not lockstep_available() or (prior_reg and prior_disp_var is None):
            return super().alpha_mle(
                counts, design_matrix, mu, alpha_hat, min_disp, max_disp, prior_disp_var, cr_reg,
                prior_reg, optimizer,
            )  # fmt: skip
        alpha_hat = np.asarray(alpha_hat, dtype=float)
        n_genes = counts.shape[1]
        alpha = np.empty(n_genes)
        success = np.empty(n_genes, dtype=bool)

        def store(s: slice, part: tuple) -> None:
            alpha[s], success[s] = part

        self.map_chunks(
            alpha_mle_block,
            n_genes,
            counts.shape[0],
            lambda s: (
                counts[:, s],
                design_matrix,
                mu[:, s],
                alpha_hat[s],
                min_disp,
                max_disp,
                prior_disp_var,
                cr_reg,
                prior_reg,
            ),  # fmt: skip
            store,
        )
        return alpha, success

    def wald_test(  # noqa: D102
        self,
        design_matrix: np.ndarray,
        disp: np.ndarray,
        lfc: np.ndarray,
        mu: np.ndarray,
        ridge_factor: np.ndarray,
        contrast: np.ndarray,
        lfc_null: np.ndarray,
        alt_hypothesis: Literal["greaterAbs", "lessAbs", "greater", "less"] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if alt_hypothesis is not None:
            return super().wald_test(
                design_matrix, disp, lfc, mu, ridge_factor, contrast, lfc_null, alt_hypothesis
            )
        disp = np.asarray(disp, dtype=float)
        lfc = np.asarray(lfc, dtype=float)
        contrast = np.asarray(contrast, dtype=float)
        n_genes = mu.shape[1]
        pvals, stats, se = np.empty(n_genes), np.empty(n_genes), np.empty(n_genes)

        def store(s: slice, part: tuple) -> None:
            pvals[s], stats[s], se[s] = part

        self.map_chunks(
            wald_block,
            n_genes,
            mu.shape[0],
            lambda s: (design_matrix, disp[s], lfc[s], mu[:, s], ridge_factor, contrast, lfc_null),
            store,
        )
        return pvals, stats, se

    def lfc_shrink_nbinom_glm(  # noqa: D102
        self,
        design_matrix: np.ndarray,
        counts: np.ndarray,
        size: np.ndarray,
        offset: np.ndarray,
        prior_no_shrink_scale: float,
        prior_scale: float,
        optimizer: str,
        shrink_index: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        stock_args = (design_matrix, counts, size, offset, prior_no_shrink_scale, prior_scale, optimizer,
                      shrink_index)  # fmt: skip
        if optimizer != "L-BFGS-B" or not lockstep_available():
            return super().lfc_shrink_nbinom_glm(*stock_args)
        size = np.asarray(size, dtype=float)
        prior = ShrinkPrior(
            design_matrix, np.asarray(offset, dtype=float), prior_no_shrink_scale, prior_scale, shrink_index
        )
        if not shrink_agrees_with_stock(counts, size, prior):
            return super().lfc_shrink_nbinom_glm(*stock_args)
        n_genes, num_vars = counts.shape[1], np.shape(design_matrix)[1]
        beta = np.empty((n_genes, num_vars))
        inv_hessian = np.empty((n_genes, num_vars, num_vars))
        converged = np.empty(n_genes, dtype=bool)

        def store(s: slice, part: tuple) -> None:
            beta[s], inv_hessian[s], converged[s] = part

        self.map_chunks(
            shrink_block,
            n_genes,
            counts.shape[0],
            lambda s: (counts[:, s], size[s], prior),
            store,
        )
        return beta, inv_hessian, converged
