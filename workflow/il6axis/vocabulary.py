"""The workflow's shared words: severity labels, tissues, material strata, and the colours that go with them.

Every module that names a group, a tissue or a stratum, or colours one, takes it from here, so that a
new tissue or a renamed stratum is one edit. Plain Python only (no matplotlib): analysis code imports it
too.

- **Severity slots.** Every cohort is recoded to ``severe`` / ``mild`` (the reference level of every
  contrast) / ``excluded``; what the slots mean for one cohort is its declared contrast
  (:mod:`il6axis.cohort.contrast`).
- **Tissues and strata.** A cohort's ``tissue`` (config) decides its material stratum in the
  meta-analysis: whole blood and leukocytes (GSE157103's buffy coat) share cell composition closely enough
  to pool as ``whole_blood``, the primary stratum; PBMC cohorts pool separately. ``all`` is the
  cross-material sensitivity fit.
"""

from __future__ import annotations

from il6axis.errors import InputError

# Severity slots.
SEVERE = "severe"
MILD = "mild"
EXCLUDED = "excluded"
SEVERITY_ORDER = [MILD, SEVERE]  # reference first

# Tissues a bulk cohort can declare (config `tissue`), and what they pool as.
TISSUES = ("whole_blood", "leukocytes", "pbmc", "other")
STRATUM_OF_TISSUE = {
    "whole_blood": "whole_blood",
    "leukocytes": "whole_blood",
    "pbmc": "pbmc",
    "other": "other",
}
ALL_STRATA = "all"
# Strata in reading order: the primary stratum first, the cross-material pooling last (sensitivity).
STRATUM_ORDER = ("whole_blood", "pbmc", "other", ALL_STRATA)

# How tissues and strata are written, by where the words appear.
TISSUE_LABEL = {"whole_blood": "whole blood", "leukocytes": "leukocytes", "pbmc": "PBMC", "other": "other"}
STRATUM_SHORT = {"whole_blood": "whole blood", "pbmc": "PBMC", "other": "other", ALL_STRATA: "all"}
STRATUM_UNIT = {
    "whole_blood": "whole-blood cohorts",
    "pbmc": "PBMC cohorts",
    "other": "other cohorts",
    ALL_STRATA: "cohorts",
}
STRATUM_TITLE = {
    "whole_blood": "Whole blood and leukocytes (primary stratum)",
    "pbmc": "PBMC",
    "other": "Other material",
    ALL_STRATA: "All cohorts pooled across materials (sensitivity analysis)",
}
STRATUM_NAME = {
    "whole_blood": "whole blood and leukocytes",
    "pbmc": "PBMC",
    "other": "other material",
    ALL_STRATA: "pooling across materials",
}
STRATUM_POOLED_LABEL = {
    "whole_blood": "pooled: whole blood + leukocytes",
    "pbmc": "pooled: PBMC",
    "other": "pooled: other material",
    ALL_STRATA: "pooled: all cohorts (sensitivity)",
}

# Colours. Severity: mild (the reference) cool, severe warm, excluded grey. Direction of change in the
# case group relative to the reference. Materials deliberately avoid red/blue, which mean severe/mild or
# up/down elsewhere in the report.
SEVERITY_PALETTE = {MILD: "#4c72b0", SEVERE: "#c44e52", EXCLUDED: "#9e9e9e"}
DIRECTION_PALETTE = {"up in severe": "#c0392b", "down in severe": "#2471a3", "not significant": "#b3b6b7"}
DIVERGING_CMAP = "RdBu_r"  # log2 fold changes and z-scores: blue = lower in the case group, red = higher
TISSUE_PALETTE = {"whole_blood": "#1b9e77", "leukocytes": "#66a61e", "pbmc": "#7570b3", "other": "#a6761d"}
STRATUM_PALETTE = {"whole_blood": "#1b9e77", "pbmc": "#7570b3", "other": "#a6761d", ALL_STRATA: "#222222"}


def stratum_of(tissue: str) -> str:
    """Material stratum of a cohort's tissue: whole blood and leukocytes pool as ``whole_blood``."""
    key = str(tissue).strip().lower()
    if key not in STRATUM_OF_TISSUE:
        raise InputError(
            f"tissue {tissue!r} is not one of {sorted(STRATUM_OF_TISSUE)}; set the cohort's `tissue` in the "
            f"config (or its summary.json) to one of these."
        )
    return STRATUM_OF_TISSUE[key]
