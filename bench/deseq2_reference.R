# Reference run of R DESeq2 on exactly the counts, sample table and design our workflow used.
#
# Usage (called by bench/compare_with_r.py; run by hand, not in CI):
#   Rscript bench/deseq2_reference.R COUNTS.tsv COLDATA.tsv "~ sex + severity" ALPHA OUT.tsv TIMING.json [WORKERS]
#
# COUNTS.tsv: genes x samples, first column the gene, integer counts (already expression-filtered).
# COLDATA.tsv: one row per sample (first column the sample id, same order as the count columns);
#   `severity` is mild/severe; character columns become factors with alphabetical levels (as formulaic
#   does in pydeseq2); numeric covariates arrive already standardised by Python and are used as is.
# WORKERS: 1 (default) = single-threaded DESeq(); N > 1 = BiocParallel::MulticoreParam(N).
# Cook's outlier replacement/filtering and independent filtering keep R's defaults.
# Writes the results table (gene, baseMean, log2FoldChange, lfcSE, stat, pvalue, padj, then the per-gene
# intermediates dispGeneEst, dispGeneIter, dispFit, dispMAP, dispIter, dispersion, dispOutlier, maxCooks,
# replace, betaConv) and a JSON with the elapsed seconds of DESeqDataSetFromMatrix + DESeq + results
# (library loading and file reading excluded), the size factors, the dispersion trend and prior, and the
# independent-filtering grid (threshold, theta, rejections per theta, lowess fit).

suppressPackageStartupMessages({
  library(DESeq2)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 6) {
  stop("usage: deseq2_reference.R COUNTS.tsv COLDATA.tsv DESIGN ALPHA OUT.tsv TIMING.json [WORKERS]")
}
counts_path <- args[[1]]
coldata_path <- args[[2]]
design <- as.formula(args[[3]])
alpha <- as.numeric(args[[4]])
out_path <- args[[5]]
timing_path <- args[[6]]
workers <- if (length(args) >= 7) as.integer(args[[7]]) else 1L

counts <- read.delim(counts_path, row.names = 1, check.names = FALSE)
counts <- as.matrix(counts)
storage.mode(counts) <- "integer"
coldata <- read.delim(coldata_path, row.names = 1, check.names = FALSE, stringsAsFactors = FALSE)
if (!identical(colnames(counts), rownames(coldata))) {
  stop("sample order of the count columns and the coldata rows differ")
}
for (name in colnames(coldata)) {
  if (is.character(coldata[[name]]) || is.logical(coldata[[name]])) {
    coldata[[name]] <- factor(as.character(coldata[[name]]))
  }
}
# The reference level is mild, as in the Python workflow.
coldata$severity <- factor(as.character(coldata$severity), levels = c("mild", "severe"))

parallel <- workers > 1
bpparam <- NULL
if (parallel) {
  bpparam <- BiocParallel::MulticoreParam(workers)
}

start <- proc.time()[["elapsed"]]
dds <- DESeqDataSetFromMatrix(countData = counts, colData = coldata, design = design)
if (parallel) {
  dds <- DESeq(dds, quiet = TRUE, parallel = TRUE, BPPARAM = bpparam)
  res <- results(dds, contrast = c("severity", "severe", "mild"), alpha = alpha,
                 parallel = TRUE, BPPARAM = bpparam)
} else {
  dds <- DESeq(dds, quiet = TRUE)
  res <- results(dds, contrast = c("severity", "severe", "mild"), alpha = alpha)
}
elapsed <- proc.time()[["elapsed"]] - start

table <- data.frame(
  gene = rownames(res),
  baseMean = res$baseMean,
  log2FoldChange = res$log2FoldChange,
  lfcSE = res$lfcSE,
  stat = res$stat,
  pvalue = res$pvalue,
  padj = res$padj,
  check.names = FALSE
)
# The per-gene intermediates, for the gene-by-gene comparison (compare_with_r.py --explain).
gene_info <- mcols(dds)
for (name in c("dispGeneEst", "dispGeneIter", "dispFit", "dispMAP", "dispIter", "dispersion",
               "dispOutlier", "maxCooks", "replace", "betaConv")) {
  table[[name]] <- if (name %in% names(gene_info)) as.vector(gene_info[[name]]) else NA
}
write.table(table, out_path, sep = "\t", quote = FALSE, row.names = FALSE, na = "NA")
n_replaced <- if ("replace" %in% names(mcols(dds))) sum(mcols(dds)$replace, na.rm = TRUE) else 0L
disp_fn <- dispersionFunction(dds)
meta <- metadata(res)
info <- list(
  elapsed_s = elapsed,
  workers = workers,
  r_version = R.version.string,
  deseq2_version = as.character(packageVersion("DESeq2")),
  biocparallel_version = as.character(packageVersion("BiocParallel")),
  n_genes = nrow(counts),
  n_samples = ncol(counts),
  n_cooks_replaced_genes = n_replaced,
  size_factors = unname(sizeFactors(dds)),
  disp_trend_coefficients = unname(attr(disp_fn, "coefficients")),
  disp_fit_type = attr(disp_fn, "fitType"),
  var_log_disp_ests = attr(disp_fn, "varLogDispEsts"),
  disp_prior_var = attr(disp_fn, "dispPriorVar"),
  filter_threshold = if (is.null(meta$filterThreshold)) NA else unname(meta$filterThreshold),
  filter_theta = if (is.null(meta$filterTheta)) NA else meta$filterTheta,
  filter_num_rej = if (is.null(meta$filterNumRej)) NA else meta$filterNumRej$numRej,
  filter_lowess = if (is.null(meta$lo.fit)) NA else meta$lo.fit$y,
  loadavg = tryCatch(readLines("/proc/loadavg", n = 1), error = function(e) "")
)
writeLines(toJSON(info, auto_unbox = TRUE, pretty = TRUE, digits = NA), timing_path)
