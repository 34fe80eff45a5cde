"""What a cohort's two groups are: the declared contrast (kind, case label, reference label).

Internally every cohort is recoded to two slots, ``severe`` and ``mild`` (``il6axis.vocabulary``), and
``mild``
is always the reference level of the model. The slot names are plumbing: a cohort whose `mild` slot holds
healthy donors compares acute COVID-19 with health, not severe with mild disease, and one whose `mild` slot
holds patients already on oxygen compares critical with severe disease. The config block ``contrast`` says
which, and every human-facing output (figure titles, table columns, the report, the meta-analysis) reads the
labels from here instead of printing "severe vs mild".

Kinds:

- ``severe_vs_mild``: a severity contrast within COVID-19 (the default; ICU vs ward, hospitalised vs not).
- ``critical_vs_severe``: a severity contrast whose reference is already severe (GSE172114: critical vs
  non-critical patients on oxygen, WHO "severe"); it estimates a different, usually smaller, effect.
- ``disease_vs_healthy``: acute COVID-19 against healthy donors. Not a severity contrast.
- ``other``: anything else; needs its labels and is never pooled with another cohort.

The meta-analysis pools only cohorts of the same kind in its primary fit (:func:`pooling_kind`); pooling
across kinds is a labelled sensitivity analysis (``il6axis.analysis.meta``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from il6axis.errors import InputError
from il6axis.vocabulary import EXCLUDED, MILD, SEVERE

__all__ = [
    "DEFAULT_KIND",
    "DEFAULT_LABELS",
    "KIND_LABEL",
    "KINDS",
    "SEVERITY_KINDS",
    "Contrast",
    "contrast_from_config",
    "contrast_from_summary",
    "contrast_from_uns",
    "group_labels",
    "pooling_kind",
]

SEVERE_VS_MILD = "severe_vs_mild"
CRITICAL_VS_SEVERE = "critical_vs_severe"
DISEASE_VS_HEALTHY = "disease_vs_healthy"
OTHER = "other"
KINDS = (SEVERE_VS_MILD, CRITICAL_VS_SEVERE, DISEASE_VS_HEALTHY, OTHER)
DEFAULT_KIND = SEVERE_VS_MILD
SEVERITY_KINDS = frozenset({SEVERE_VS_MILD, CRITICAL_VS_SEVERE})
# What each kind compares, for headings and axis labels that cover several cohorts of one kind.
KIND_LABEL = {
    SEVERE_VS_MILD: "severe vs mild",
    CRITICAL_VS_SEVERE: "critical vs severe",
    DISEASE_VS_HEALTHY: "disease vs healthy",
    OTHER: "other contrast",
}
# Group labels when the config gives none (`other` has no default: the user must say what it compares).
# workflow/report/workflow.rst repeats this table for the front page (a test keeps the two equal).
DEFAULT_LABELS = {
    SEVERE_VS_MILD: ("severe", "mild"),
    CRITICAL_VS_SEVERE: ("critical", "severe"),
    DISEASE_VS_HEALTHY: ("COVID-19", "healthy"),
}
UNS_KEY = "contrast"  # AnnData uns entry (a JSON string: h5ad stores flat values most simply)


@dataclass(frozen=True)
class Contrast:
    """A cohort's declared contrast: ``case`` is the `severe` slot, ``reference`` the `mild` slot."""

    kind: str = DEFAULT_KIND
    case: str = DEFAULT_LABELS[DEFAULT_KIND][0]
    reference: str = DEFAULT_LABELS[DEFAULT_KIND][1]

    @property
    def is_severity(self) -> bool:
        """True for severity contrasts (severe vs mild, critical vs severe); false for disease vs healthy."""
        return self.kind in SEVERITY_KINDS

    @property
    def kind_label(self) -> str:
        """'severe vs mild', 'critical vs severe', 'disease vs healthy' or 'other contrast'."""
        return KIND_LABEL[self.kind]

    @property
    def label(self) -> str:
        """'ICU vs non-ICU (hospitalised)': the two groups, case first."""
        return f"{self.case} vs {self.reference}"

    def group_label(self, slot: str) -> str:
        """Display name of an internal slot: ``severe`` -> case, ``mild`` -> reference, else the slot."""
        return {SEVERE: self.case, MILD: self.reference}.get(str(slot), str(slot))

    def with_n(self, n_per_group: Mapping[str, int]) -> str:
        """'ICU (n=50) vs non-ICU (n=49)'."""
        return (
            f"{self.case} (n={int(n_per_group.get(SEVERE, 0))}) vs "
            f"{self.reference} (n={int(n_per_group.get(MILD, 0))})"
        )

    def describe(self, n_per_group: Mapping[str, int]) -> str:
        """One line for tables and logs: 'ICU (n=50) vs non-ICU (n=49); reference non-ICU'."""
        return f"{self.with_n(n_per_group)}; reference {self.reference}"

    def direction(self, up: bool) -> str:
        """'up in ICU' / 'down in ICU' (effects are case relative to the reference)."""
        return f"{'up' if up else 'down'} in {self.case}"

    def to_dict(self, n_per_group: Mapping[str, int] | None = None) -> dict[str, Any]:
        """The ``contrast`` object of summary.json: kind, labels, slots (and n, description when given)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "kind_label": self.kind_label,
            "case": self.case,
            "reference": self.reference,
            "is_severity_contrast": self.is_severity,
            "case_slot": SEVERE,
            "reference_slot": MILD,
        }
        if n_per_group is not None:
            out["n_case"] = int(n_per_group.get(SEVERE, 0))
            out["n_reference"] = int(n_per_group.get(MILD, 0))
            out["description"] = self.describe(n_per_group)
        return out

    def to_uns(self) -> str:
        return json.dumps({"kind": self.kind, "case": self.case, "reference": self.reference})


def _make(kind: Any, case: Any, reference: Any, where: str) -> Contrast:
    kind = DEFAULT_KIND if kind is None or kind == "" else str(kind)
    if kind not in KINDS:
        raise InputError(f"{where}: contrast.kind {kind!r} is not one of {list(KINDS)}; fix it in the config")
    default_case, default_reference = DEFAULT_LABELS.get(kind, (None, None))
    case = default_case if case is None or str(case).strip() == "" else str(case).strip()
    reference = (
        default_reference if reference is None or str(reference).strip() == "" else str(reference).strip()
    )
    if case is None or reference is None:
        raise InputError(
            f"{where}: contrast.kind {kind!r} needs `contrast.case` (label of the severity.severe values) "
            f"and `contrast.reference` (label of the severity.mild values), e.g. "
            f"{{kind: other, case: 'day 7', reference: 'day 0'}}."
        )
    if case == reference:
        raise InputError(
            f"{where}: contrast.case and contrast.reference are both {case!r}; give the two groups different "
            f"labels (case = severity.severe values, reference = severity.mild values)."
        )
    return Contrast(kind, case, reference)


def contrast_from_config(spec: Mapping[str, Any], source: str = "cohort") -> Contrast:
    """The contrast of a cohort's config block; a block without ``contrast`` means severe vs mild."""
    block = spec.get("contrast") or {}
    if not isinstance(block, Mapping):
        raise InputError(f"{source}: `contrast` must be a mapping with kind, case, reference; got {block!r}.")
    return _make(block.get("kind"), block.get("case"), block.get("reference"), f"{source}")


def contrast_from_uns(uns: Mapping[str, Any], source: str = "AnnData") -> Contrast:
    """The contrast a cohort AnnData carries (``uns["contrast"]``); none (older files) = severe vs mild."""
    raw = uns.get(UNS_KEY)
    if raw is None:
        return Contrast()
    block = json.loads(raw) if isinstance(raw, str) else dict(raw)
    return _make(block.get("kind"), block.get("case"), block.get("reference"), source)


def contrast_from_summary(summary: Mapping[str, Any], source: str = "summary.json") -> Contrast:
    """The contrast of a DE summary; a summary without the object (older runs) = severe vs mild."""
    block = summary.get("contrast")
    if not isinstance(block, Mapping):
        return Contrast()
    return _make(block.get("kind"), block.get("case"), block.get("reference"), source)


def pooling_kind(kind: str) -> str | None:
    """The primary pooled fit a cohort of this kind enters (its own kind), or None: `other` never pools.

    A declared `other` contrast says only that it is none of the named ones, so two such cohorts may
    compare quite different groups.
    """
    return None if kind == OTHER else kind


def group_labels(contrast: Contrast) -> dict[str, str]:
    """Slot -> display label for every obs ``severity`` value (excluded stays 'excluded')."""
    return {SEVERE: contrast.case, MILD: contrast.reference, EXCLUDED: EXCLUDED}
