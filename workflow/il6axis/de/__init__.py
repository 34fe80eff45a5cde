"""Severe-vs-mild differential expression (rule ``deseq2``, workflow/rules/de.smk).

Modules, each importing only the ones listed before it:

- ``contract``: what every backend shares: settings, result, design, table columns, BH.
- ``r_compatible``: R DESeq2's numerical procedures where pydeseq2's differ (no pydeseq2).
- ``nb_kernels``, ``lbfgsb_lockstep``, ``fast_fits``, ``fast_shrink``, ``fast_inference``: pydeseq2's
  per-gene algorithms vectorised over genes (``FastInference``), same numbers.
- ``nb_engines``: the two ``de.engine`` implementations as pydeseq2 subclasses.
- ``nb``: the negative-binomial GLM for count cohorts (``run_deseq2``).
- ``linear``: the moderated log2 linear model for normalised-only cohorts (``run_log_linear``).
- ``stability``: leave-one-sample-out refits of the panel genes and their robust/borderline rule.
- ``routing``: which backend a cohort gets, from its value type (``fit_severity``).
- ``outputs``: one cohort's tables and summary (``run_and_write``, called by workflow/scripts/run_deseq2.py).
"""
