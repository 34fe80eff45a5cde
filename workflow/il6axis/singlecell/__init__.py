"""Single-cell cohorts: streamed QC and donor x cell-type pseudobulk from an .h5ad, then the bulk machinery.

A single-cell cohort is one .h5ad file (cells x genes, raw UMI counts in ``X`` or a layer; ``obs`` with a
donor column, optionally a cell-type column, and the donor-level fields the cohort's config maps to
severity and covariates). Modules, in the order of the two rules (workflow/rules/singlecell.smk):

- rule ``singlecell_pseudobulk`` (:mod:`~il6axis.singlecell.build`): :mod:`~il6axis.singlecell.settings`
  (the config block), :mod:`~il6axis.singlecell.h5` (streaming reads), :mod:`~il6axis.singlecell.qc`,
  :mod:`~il6axis.singlecell.donors` (the donor table), :mod:`~il6axis.singlecell.pseudobulk` (sums, filter,
  bulk-layout AnnData per cell type), :mod:`~il6axis.singlecell.subsample` (cells for the plots);
- rule ``singlecell_analysis`` (:mod:`~il6axis.singlecell.analysis`): per-cell-type DE and pathway scores
  with the bulk code, and :mod:`~il6axis.singlecell.figures`.
"""
