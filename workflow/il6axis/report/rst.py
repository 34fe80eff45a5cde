"""reStructuredText building blocks of the report's front page: escaping, headings, tables, numbers.

Snakemake renders the front page with docutils, so every value read from a result file (a gene, a sample
name, a note) goes through :func:`rst_escape` or a literal, and numbers are written the same way in every
section (signed effects, p / q values with two significant digits).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Names listed per cohort and kind in the "Samples set aside" section; the rest are counted (and in the TSVs).
MAX_NAMES = 30


def rst_escape(text: object) -> str:
    """Backslash-escape characters that reStructuredText would read as markup (``*``, `````, ``_``, ``|``)."""
    out = str(text).replace("\\", "\\\\")
    for ch in ("*", "`", "_", "|"):
        out = out.replace(ch, "\\" + ch)
    return out


def heading(title: str, char: str = "-") -> list[str]:
    """A section title underlined with ``char``, and the blank line after it."""
    return [title, char * len(title), ""]


def signed(x: float, digits: int = 2) -> str:
    """An effect with its sign ('+0.23'), or NA."""
    return f"{x:+.{digits}f}" if np.isfinite(x) else "NA"


def p_text(x: float) -> str:
    """p / q for text: 2 significant digits, scientific below 0.001."""
    if x is None or not np.isfinite(x):
        return "NA"
    if x >= 0.001:
        text = f"{x:.2g}"
        return "1" if text == "1" else text
    return f"{x:.1e}"


def list_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A ``list-table`` directive with one header row."""
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        for i, cell in enumerate(row):
            lines.append(f"   {'*' if i == 0 else ' '} - {cell}")
    return [*lines, ""]


def literal_names(items: Sequence[object], limit: int = MAX_NAMES) -> str:
    """``a``, ``b`` ... and N more: sample names as literals, never cut silently."""
    items = [str(x) for x in items]
    text = ", ".join(f"``{x}``" for x in items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


def cohort_literals(cohorts: Sequence[str]) -> str:
    """Cohort names as a comma-separated list of literals."""
    return ", ".join(f"``{c}``" for c in cohorts)
