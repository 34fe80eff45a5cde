# Reference run of limma-trend on exactly the log2 values, sample table and design our linear route used.
#
# Usage (called by bench/compare_with_limma.py; run by hand, not in CI):
#   Rscript bench/limma_reference.R LOG2.tsv COLDATA.tsv "~ age + sex + severity" OUT.tsv INFO.json
#
# LOG2.tsv: genes x samples, first column the gene, log2(normalised + 1) values (already expression-filtered).
# COLDATA.tsv: one row per sample (first column the sample id, same order as the LOG2 columns); `severity` is
#   mild/severe; character columns become factors with alphabetical levels (as formulaic does); numeric
#   covariates arrive already standardised by Python and are used as is.
# Runs lmFit + eBayes(trend = TRUE) and writes topTable for the severity coefficient (unsorted, all genes)
# with the per-gene prior and posterior variances and total df. INFO.json: elapsed seconds of
# model.matrix + lmFit + eBayes + topTable (library loading and file reading excluded), df.prior, versions.

suppressPackageStartupMessages({
  library(limma)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 5) {
  stop("usage: limma_reference.R LOG2.tsv COLDATA.tsv DESIGN OUT.tsv INFO.json")
}
values_path <- args[[1]]
coldata_path <- args[[2]]
design_formula <- as.formula(args[[3]])
out_path <- args[[4]]
info_path <- args[[5]]

y <- as.matrix(read.delim(values_path, row.names = 1, check.names = FALSE))
coldata <- read.delim(coldata_path, row.names = 1, check.names = FALSE, stringsAsFactors = FALSE)
if (!identical(colnames(y), rownames(coldata))) {
  stop("sample order of the value columns and the coldata rows differ")
}
for (name in colnames(coldata)) {
  if (is.character(coldata[[name]]) || is.logical(coldata[[name]])) {
    coldata[[name]] <- factor(as.character(coldata[[name]]))
  }
}
# The reference level is mild, as in the Python workflow.
coldata$severity <- factor(as.character(coldata$severity), levels = c("mild", "severe"))

start <- proc.time()[["elapsed"]]
design <- model.matrix(design_formula, data = coldata)
fit <- lmFit(y, design)
fit <- eBayes(fit, trend = TRUE)
tt <- topTable(fit, coef = "severitysevere", number = Inf, sort.by = "none", confint = TRUE)
elapsed <- proc.time()[["elapsed"]] - start

table <- data.frame(
  gene = rownames(tt),
  logFC = tt$logFC,
  CI.L = tt$CI.L,
  CI.R = tt$CI.R,
  AveExpr = tt$AveExpr,
  t = tt$t,
  P.Value = tt$P.Value,
  adj.P.Val = tt$adj.P.Val,
  s2.prior = rep_len(fit$s2.prior, nrow(tt)),
  s2.post = fit$s2.post,
  sigma = fit$sigma,
  df.total = fit$df.total,
  check.names = FALSE
)
write.table(table, out_path, sep = "\t", quote = FALSE, row.names = FALSE, na = "NA")
info <- list(
  elapsed_s = elapsed,
  df_prior = fit$df.prior,
  df_residual = fit$df.residual[[1]],
  design_columns = colnames(design),
  r_version = R.version.string,
  limma_version = as.character(packageVersion("limma")),
  n_genes = nrow(y),
  n_samples = ncol(y)
)
# df.prior can be Inf, which JSON cannot hold: write it as a string then.
if (is.infinite(info$df_prior)) info$df_prior <- "Inf"
writeLines(toJSON(info, auto_unbox = TRUE, pretty = TRUE, digits = NA), info_path)
