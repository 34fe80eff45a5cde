"""Random-effects meta-analysis of per-cohort effects (each cohort's declared contrast) across cohorts.

Per feature (an IL-6 panel gene or a pathway score) the per-cohort unshrunk log2 fold changes and their
standard errors are pooled with a Paule-Mandel random-effects model and a t interval with k - 1 degrees
of freedom, beside a signed, sample-size-weighted Stouffer Z and a count of cohorts per direction. Material
strata are analysed separately: whole blood / leukocytes is the primary stratum, PBMC is reported on its
own, and "all" (pooling across materials) is a sensitivity analysis only.

One module per job, in the order the rules ``meta_panel_genes`` / ``meta_pathway_scores`` use them:

- :mod:`~il6axis.analysis.meta.effects`: the long (cohort, feature) input table, read from the DE or
  score tables and the DE summaries;
- :mod:`~il6axis.analysis.meta.plan`: which cohorts pool together (one fit per contrast kind, one scale
  within it) and why the others are only shown;
- :mod:`~il6axis.analysis.meta.estimators`: the statistics of one pooled feature;
- :mod:`~il6axis.analysis.meta.fit`: one fit's pooled table and forest rows;
- :mod:`~il6axis.analysis.meta.stability`: leave-one-cohort-out stability of each pooled call;
- :mod:`~il6axis.analysis.meta.sensitivity`: the labelled fits that relax the pooling rules;
- :mod:`~il6axis.analysis.meta.run`: the rules' entry point, its settings, and the written tables.
"""
