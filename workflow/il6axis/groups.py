"""The labels every cohort is recoded to; ``mild`` is the reference level of every contrast."""

SEVERE = "severe"
MILD = "mild"
EXCLUDED = "excluded"
