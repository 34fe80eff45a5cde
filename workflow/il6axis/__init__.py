"""IL-6 axis transcriptomics in COVID-19 cohorts: the workflow's importable logic.

``__version__`` is the workflow's one version number: pyproject.toml reads it (dynamic version), the
HTML report shows it (workflow/rules/common.smk) and each cohort's ``results/de/{cohort}/summary.json``
records it. Bump it here, together with a CHANGELOG.md entry, when a release is tagged (``v`` + version).
"""

__version__ = "0.3.0.dev0"
