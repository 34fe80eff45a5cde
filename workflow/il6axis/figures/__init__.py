"""Figures of the report, by family: per-cohort QC (:mod:`.qc`), DE (:mod:`.de`), IL-6 panel
(:mod:`.panel`) and pathway scores (:mod:`.scores`), drawn together by :mod:`.cohort`; across cohorts
(:mod:`.meta_forest`, :mod:`.meta_heatmap`, :mod:`.meta_orientation`), drawn together by :mod:`.meta`.
Which figures exist is listed once, in :mod:`.registry`.

The matplotlib backend is chosen here, once, before any figure module imports pyplot: Agg (files only, no
display), and a fixed SVG id salt (random by default), so that reruns write byte-identical SVGs.
"""

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.hashsalt"] = "il6axis"
