"""The report's front page, computed from the result tables (rule ``report_summary``).

- :mod:`~il6axis.report.summary`: the rule's entry point (reads the files, writes the text files);
- :mod:`~il6axis.report.headlines`: the headline findings, in reading order, built from the sections in
  :mod:`~il6axis.report.cohorts`, :mod:`~il6axis.report.findings`, :mod:`~il6axis.report.calls`,
  :mod:`~il6axis.report.checks` and, for cohorts counted from reads, :mod:`~il6axis.report.reads`;
- :mod:`~il6axis.report.provenance`: software versions, downloads and the configuration used;
- :mod:`~il6axis.report.groups` (cohorts per contrast kind and stratum) and :mod:`~il6axis.report.rst`
  (escaping, headings, tables, numbers) serve every section.
"""
